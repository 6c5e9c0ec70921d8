"""MLflow tracking: concurrent writers to one sqlite store lose no run and no metric."""
from __future__ import annotations

import multiprocessing as mp

from sslkit.tracking import Tracker, config_hash, flatten

N_PROC, N_STEPS = 8, 25


def _worker(args):
    uri, artifacts, i, art_file = args
    with Tracker(f"job{i}", {"rule": "test", "wildcards.i": str(i)}, uri=uri, experiment="concurrency",
                 artifact_root=artifacts) as tr:
        tr.log_params({"model": {"width": i}, "lr": 0.1 * i})
        for s in range(N_STEPS):          # one call per step: the worst case for lock contention
            tr.log_metrics({"loss": float(i * 1000 + s)}, step=s)
        tr.log_series({"eig_0": [float(s) for s in range(N_STEPS)]})
        tr.log_artifact(art_file)
        return tr.run_id


def test_concurrent_processes_lose_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    art = tmp_path / "out.txt"
    art.write_text("hello")
    ctx = mp.get_context("spawn")
    with ctx.Pool(N_PROC) as pool:
        run_ids = pool.map(_worker, [(uri, str(tmp_path / "art"), i, str(art)) for i in range(N_PROC)])
    assert len(set(run_ids)) == N_PROC

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exps = [e for e in client.search_experiments() if e.name == "concurrency"]
    assert len(exps) == 1  # the creation race produced one experiment
    runs = client.search_runs([exps[0].experiment_id], max_results=100)
    assert sorted(r.info.run_id for r in runs) == sorted(run_ids)
    for r in runs:
        i = int(r.data.tags["wildcards.i"])
        assert r.info.status == "FINISHED"
        assert r.data.params["model.width"] == str(i)
        hist = client.get_metric_history(r.info.run_id, "loss")
        assert sorted((m.step, m.value) for m in hist) == [(s, float(i * 1000 + s)) for s in range(N_STEPS)]
        assert len(client.get_metric_history(r.info.run_id, "eig_0")) == N_STEPS
        assert [a.path for a in client.list_artifacts(r.info.run_id)] == ["out.txt"]


def test_failed_block_marks_run_failed(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    try:
        with Tracker("boom", uri=uri, artifact_root=str(tmp_path / "a")) as tr:
            raise RuntimeError("x")
    except RuntimeError:
        pass
    from mlflow.tracking import MlflowClient

    assert MlflowClient(uri).get_run(tr.run_id).info.status == "FAILED"


def test_disabled_tracker_is_a_noop(tmp_path):
    uri = f"sqlite:///{tmp_path}/x.db"
    with Tracker("off", uri=uri, enabled=False) as tr:
        tr.log_metrics({"a": 1.0})
        tr.log_params({"b": 2})
    assert tr.run_id is None and not (tmp_path / "x.db").exists()


def test_config_hash_and_flatten():
    assert config_hash({"a": 1, "b": {"c": 2}}) == config_hash({"b": {"c": 2}, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": 3}) == {"a.b": 1, "a.c.d": [1, 2], "e": 3}


def test_progress_prints_about_every_tenth_with_rate_and_eta():
    import io

    from sslkit.rule_script import Progress

    now = [0.0]
    out = io.StringIO()
    p = Progress("train digits/x", 200, "step", start=40, stream=out, clock=lambda: now[0])
    for k in range(41, 201):
        now[0] = float(k - 40)  # one second per step
        p.update(k)
    lines = out.getvalue().splitlines()
    # buckets of 20 steps from the resume point 40: 60, 80, ..., 200
    assert [int(x.split("step ")[1].split("/")[0]) for x in lines] == list(range(60, 201, 20))
    # 20 steps in 20 s -> 1 step/s; 140 steps left -> ETA 140 s = 2.3 min
    assert lines[0] == "train digits/x: step 60/200 (30%), 1 step/s, ETA 2.3 min"
    assert lines[-1].startswith("train digits/x: step 200/200 (100%)") and lines[-1].endswith("ETA 0 s")
    assert list(Progress("a", 3, "item", stream=out).wrap("xyz")) == ["x", "y", "z"]


def test_dataset_digest_and_run_config_hash():
    from sslkit.tracking import dataset_digest, run_config_hash

    m = {"splits": {"train": {"sha256": "a", "labels_sha256": "b"}, "test": {"sha256": "c", "labels_sha256": "d"}}}
    assert dataset_digest(m, ["train"]) != dataset_digest(m)
    assert dataset_digest(m, ["train"]) == dataset_digest({**m, "splits": {"train": m["splits"]["train"]}})
    assert dataset_digest({**m, "digest": "xyz"}) == "xyz"
    rc = {"lr": 0.1, "runtime": {"device": "cpu"}, "data": {"n_train": 5, "dir": "/a"}}
    same = {"lr": 0.1, "runtime": {"device": "cuda"}, "data": {"n_train": 5, "dir": "/b"}}
    assert run_config_hash(rc) == run_config_hash(same) != run_config_hash({**rc, "lr": 0.2})


def test_job_runs_nest_under_the_invocation_run_and_attach_shares_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLKIT_INVOCATION", "inv-1")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    kw = {"uri": uri, "artifact_root": str(tmp_path / "a")}
    with Tracker("job", {"rule": "linear_sim"}, **kw) as job:
        job.log_params({"n": 1})
        job.log_params({"n": 1})          # idempotent
        job.log_params({"n": 2})          # a changed value becomes a tag, not an error
    art = tmp_path / "fig.png"
    art.write_bytes(b"png")
    figs = []
    for name in ("fig1", "fig3"):
        with Tracker(name, {"rule": name}, kind="attach", prefix=name, artifact_dir=name, **kw) as fig:
            fig.log_artifact(art)
            fig.log_metrics({"x": 1.0})
            figs.append(fig.run_id)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    inv = client.get_run(figs[0])
    assert figs[0] == figs[1] and inv.data.tags["sslkit.kind"] == "invocation"
    assert sorted(a.path for a in client.list_artifacts(figs[0])) == ["fig1", "fig3"]
    assert set(inv.data.metrics) == {"fig1/x", "fig3/x"}
    run = client.get_run(job.run_id)
    assert run.data.tags["mlflow.parentRunId"] == figs[0] and run.data.params["n"] == "1"
    assert run.data.tags["param_changed.n"] == "1 -> 2"


def test_invocation_run_created_twice_keeps_the_oldest_and_ends_the_copy(tmp_path, monkeypatch):
    """Through a server two jobs can both find no invocation run and both create one: the later copy is
    ended (KILLED) and deleted, and both jobs use the oldest."""
    monkeypatch.setenv("SSLKIT_INVOCATION", "inv-race")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    kw = {"uri": uri, "artifact_root": str(tmp_path / "a")}
    first = Tracker("fig1", {"rule": "fig1"}, kind="attach", **kw).start()
    second = Tracker("fig3", {"rule": "fig3"}, kind="attach", **kw)
    real_search = second._search
    calls = []

    def search_missing_the_first_time(key):     # the other job's run is not yet visible at the first look
        calls.append(key)
        return [] if len(calls) == 1 else real_search(key)

    monkeypatch.setattr(second, "_search", search_missing_the_first_time)
    second.start()
    assert second.run_id == first.run_id and len(calls) == 2
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("stepwise-ssl")
    deleted = client.search_runs([exp.experiment_id], run_view_type=ViewType.DELETED_ONLY)
    assert len(deleted) == 1 and deleted[0].info.run_id != first.run_id
    assert deleted[0].info.status == "KILLED" and deleted[0].data.tags["sslkit.kind"] == "invocation"
    active = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in active] == [first.run_id]
