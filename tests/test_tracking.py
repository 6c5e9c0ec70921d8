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
