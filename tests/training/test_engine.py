"""Training engine: outputs, resume identical to an uninterrupted run, NaN handling, config errors."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sslkit.config import ConfigError, load_config
from sslkit.io import sha256_file
from sslkit.training import engine as T
from sslkit.training.augment import eval_transform


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.rint(d.images * 255 / 16).astype(np.uint8)[:400, :, :, None]


def tiny_config(method="barlow_twins", steps=20):
    cfg = load_config()
    cfg["train"].update({"encoder": {"arch": "resnet18", "width": 0.0625, "small_stem": True},
                         "checkpoints": {"log_points": 0, "every": 5},
                         "eval": {"batch_size": 64, "every": 2, "log_points": 0, "rank_tol": 0.01,
                                  "mlflow_top": 4},
                         "progress": False})
    m = cfg["methods"][method]
    m.update({"batch_size": 32, "steps": steps})
    m["projector"].update({"hidden": [16], "dim": 4})
    if "predictor" in m:
        m["predictor"]["hidden"] = [8]
    return cfg


def resolve(cfg, method, digits, init="small"):
    return T.resolve_run_config(cfg, method, init, T.data_stats(digits), "digits")


def test_outputs_follow_the_contract(tmp_path, digits):
    torch.set_num_threads(1)
    rc = resolve(tiny_config(), "barlow_twins", digits)
    res = T.train(rc, digits, tmp_path / "run")
    m = res.manifest
    assert m["complete"] and res.complete
    assert {k: m[k] for k in ("dataset", "method", "init", "steps", "batch_size", "image_size")} == {
        "dataset": "digits", "method": "barlow_twins", "init": "small", "steps": 20, "batch_size": 32,
        "image_size": 8}
    assert [c["step"] for c in m["checkpoints"]] == [0, 5, 10, 15, 20]
    for c in m["checkpoints"]:
        assert c["t"] == pytest.approx(m["lr"] * c["step"]) and c["epoch"] == pytest.approx(c["step"] * 32 / 400)
        assert (tmp_path / "run" / c["path"]).is_file()
    assert m["run_config"]["loss"] == {"lambda": 1.0, "batchnorm": False, "scale": 1.0, "symmetric": True}
    h = T.read_history(tmp_path / "run" / m["history"])
    assert list(h["step"]) == sorted(set(range(0, 21, 2)) | {5, 15})
    d = rc["method_config"]["projector"]["dim"]
    eig_c = h[[f"eig_C_{j}" for j in range(d)]].to_numpy()
    assert np.all(np.diff(eig_c, axis=1) <= 1e-12)           # descending
    assert {"t", "t_eff", "epoch", "loss", "loss_eval", "lr", "images_per_s", "rank"} <= set(h.columns)
    assert np.isnan(h["loss"][0]) and np.all(np.isfinite(h["loss"][1:]))
    # the history's mean loss between rows equals the mean of the per-step losses
    assert h["loss"][1] == pytest.approx(np.mean([res.losses[0], res.losses[1]]), rel=1e-6)
    # load_checkpoint: eval-ready model with the documented interface
    model, rc2 = T.load_checkpoint(tmp_path / "run" / m["checkpoints"][-1]["path"])
    assert rc2 == m["run_config"] and not model.training
    x = eval_transform(torch.from_numpy(digits[:5]), rc2)
    assert model.hidden(x).shape == (5, 32) and model.embed(x).shape == (5, d)


def test_resume_after_kill_is_identical(tmp_path, digits):
    """k steps, a simulated kill between checkpoints, resume to 2k == the uninterrupted 2k run."""
    torch.set_num_threads(1)
    rc = resolve(tiny_config("byol", steps=20), "byol", digits)
    full = T.train(rc, digits, tmp_path / "full")
    part = T.train(copy.deepcopy(rc), digits, tmp_path / "part", stop_at=13)
    assert not part.complete and not (tmp_path / "part" / "manifest.json").exists()
    assert [s for s, _ in T.find_checkpoints(tmp_path / "part")] == [0, 5, 10]
    rest = T.train(copy.deepcopy(rc), digits, tmp_path / "part")
    assert rest.start_step == 10 and rest.complete
    # the manifest's time covers both sessions (the first one up to its checkpoint at step 10)
    assert rest.manifest["cpu_time_s"] > rest.manifest["session_cpu_time_s"] > 0
    # the evaluation forwards and the monitor's own work are parts of the session's wall time
    m = rest.manifest
    assert 0 < m["session_monitor_s"] and 0 < m["session_eval_forward_s"]
    assert m["session_monitor_s"] + m["session_eval_forward_s"] < m["session_wall_time_s"]
    assert {s: rest.losses[s] for s in range(10, 20)} == {s: full.losses[s] for s in range(10, 20)}
    a = torch.load(tmp_path / "full/ckpt/step_00000020.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part/ckpt/step_00000020.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    ha = T.read_history(tmp_path / "full/history.csv").drop(columns=["images_per_s"])
    hb = T.read_history(tmp_path / "part/history.csv").drop(columns=["images_per_s"])
    assert ha.equals(hb)


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(tmp_path, digits, monkeypatch):
    torch.set_num_threads(1)
    rc = resolve(tiny_config("simclr"), "simclr", digits)
    from sslkit.training import methods

    simclr = methods.METHODS["simclr"]
    orig = simclr.loss

    def poisoned(self, x1, x2, step, update=True):
        loss, z1, z2 = orig(self, x1, x2, step, update)
        return (loss * float("nan") if step >= 7 and update else loss), z1, z2

    monkeypatch.setattr(simclr, "loss", poisoned)
    with pytest.raises(T.NonFiniteLossError, match=r"loss is nan at step 7 of simclr-small") as err:
        T.train(rc, digits, tmp_path / "run")
    assert "step_00000005.pt" in str(err.value) and "learning rate" in str(err.value)
    assert "trains afresh from step 0" in str(err.value) and "keep it to resume" not in str(err.value)
    assert not (tmp_path / "run" / "manifest.json").exists()
    model, _ = T.load_checkpoint(tmp_path / "run/ckpt/step_00000005.pt")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_changed_config_sets_the_old_run_aside_and_restores_it(tmp_path, digits):
    """The issue's probe: a hyperparameter changed and changed back. The first change keeps the old run
    (under previous/<hash>/) instead of refusing; changing back restores it without a training step."""
    torch.set_num_threads(1)
    run = tmp_path / "run"
    rc = resolve(tiny_config(steps=10), "barlow_twins", digits)
    first = T.train(copy.deepcopy(rc), digits, run)
    hist1 = (run / "history.csv").read_text()
    ck1 = {p.name: p.read_bytes() for _, p in T.find_checkpoints(run)}
    rc2 = copy.deepcopy(rc)
    rc2["optimizer"]["lr"] = rc2["lr"] = 0.123
    second = T.train(copy.deepcopy(rc2), digits, run)
    assert second.complete and second.start_step == 0 and len(second.losses) == 10
    assert second.manifest["lr"] == 0.123 and second.manifest["config_hash"] == T.config_hash(rc2)
    kept = run / "previous" / T.config_hash(rc)
    assert {"ckpt", "history.csv"} <= {p.name for p in kept.iterdir()}  # (+ manifest.json outside Snakemake)
    assert (kept / "history.csv").read_text() == hist1
    with pytest.raises(ValueError, match="resolved for 400 images, got 300"):
        T.train(rc, digits[:300], run)
    third = T.train(copy.deepcopy(rc), digits, run)  # changed back: restored at once
    assert third.complete and third.start_step == 10 and third.losses == {}
    assert third.manifest == first.manifest
    assert (run / "history.csv").read_text() == hist1
    assert {p.name: p.read_bytes() for _, p in T.find_checkpoints(run)} == ck1
    assert sorted(p.name for p in (run / "previous").iterdir()) == [T.config_hash(rc2)]
    rc3 = copy.deepcopy(rc)
    rc3["runtime"]["progress"] = True   # runtime settings may change between sessions
    assert T.train(rc3, digits, run).start_step == 10


def test_truncated_checkpoint_in_a_finished_run(tmp_path, digits):
    """The issue's probe: a truncated checkpoint of a finished run. Loaders name the file; a rerun
    retrains from the newest intact checkpoint before it and rewrites it identically (CPU)."""
    torch.set_num_threads(1)
    run = tmp_path / "run"
    rc = resolve(tiny_config(steps=20), "barlow_twins", digits)
    first = T.train(copy.deepcopy(rc), digits, run)
    for c in first.manifest["checkpoints"]:
        assert c["sha256"] == sha256_file(run / c["path"]) and c["bytes"] == (run / c["path"]).stat().st_size
    bad = run / "ckpt/step_00000010.pt"
    good = bad.read_bytes()
    good_model = torch.load(bad, weights_only=True)["model"]
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(T.CheckpointIntegrityError) as err:
        T.load_checkpoint(bad)
    assert str(bad) in str(err.value) and "bytes" in str(err.value) and "Rerun the workflow" in str(err.value)
    # a same-size corruption of a later checkpoint is caught by its digest
    later = run / "ckpt/step_00000015.pt"
    blob = bytearray(later.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    later.write_bytes(bytes(blob))
    with pytest.raises(T.CheckpointIntegrityError, match="sha256"):
        T.load_checkpoint(later)
    again = T.train(copy.deepcopy(rc), digits, run)
    assert again.start_step == 5 and again.complete
    rewritten = torch.load(bad, weights_only=True)["model"]  # (the zip records the temporary file's name)
    assert all(torch.equal(good_model[k], rewritten[k]) for k in good_model)
    assert {s: again.losses[s] for s in range(5, 20)} == {s: first.losses[s] for s in range(5, 20)}
    for c in again.manifest["checkpoints"]:
        assert c["sha256"] == sha256_file(run / c["path"])
        T.load_checkpoint(run / c["path"])


def test_load_checkpoint_without_digest_names_the_file(tmp_path, digits):
    """A checkpoint with no recorded digest (older runs) that cannot be read: the error names it."""
    torch.set_num_threads(1)
    rc = resolve(tiny_config(steps=5), "barlow_twins", digits)
    T.train(rc, digits, tmp_path / "run")
    (tmp_path / "run/manifest.json").unlink()
    (tmp_path / "run/ckpt/digests.json").unlink()
    path = tmp_path / "run/ckpt/step_00000005.pt"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(T.CheckpointIntegrityError, match=r"cannot read checkpoint .*step_00000005.pt"):
        T.load_checkpoint(path)


def test_resolve_errors_name_the_key(digits):
    cfg = tiny_config()
    del cfg["methods"]["vicreg"]
    with pytest.raises(ConfigError, match="methods.vicreg"):
        resolve(cfg, "vicreg", digits)
    cfg = tiny_config()
    cfg["methods"]["simclr"]["batch_size"] = 10_000
    with pytest.raises(ConfigError, match="methods.simclr.batch_size"):
        resolve(cfg, "simclr", digits)


def test_standard_init_and_schedule_resolution(digits):
    cfg = tiny_config()
    cfg["methods"]["barlow_twins"].update({"steps": None, "epochs": 3})
    cfg["methods"]["barlow_twins"]["schedule"] = {"warmup_epochs": 1, "decay": "cosine", "final_factor": 0.001}
    rc = resolve(cfg, "barlow_twins", digits, init="standard")
    assert rc["steps"] == 3 * (400 // 32) and rc["schedule"]["warmup_steps"] == 400 // 32
    assert rc["init_scale"] == 1.0 and rc["loss"]["lambda"] == cfg["methods"]["barlow_twins"]["loss"]["lambda"]


def test_checkpoint_schedule_resolves_early_steps():
    s = T.checkpoint_steps(10_000, 12, 2500)
    assert s[0] == 0 and s[-1] == 10_000 and {1, 2500, 5000, 7500} <= set(s)
    assert sum(1 for x in s if x < 100) >= 5


def test_seed_streams_are_named_spawned_children_distinct_and_reproducible():
    seeds = T.RunSeeds(3)
    # reference: what SeedSequence.spawn gives (child = stream index, grandchild = epoch)
    root = np.random.SeedSequence(3)
    children = root.spawn(len(T.SEED_STREAMS))
    for i, name in enumerate(T.SEED_STREAMS):
        assert np.array_equal(seeds.sequence(name).generate_state(4), children[i].generate_state(4))
    epoch7 = children[T.SEED_STREAMS.index("batch_order")].spawn(8)[7]
    assert np.array_equal(seeds.sequence("batch_order", 7).generate_state(4), epoch7.generate_state(4))
    # distinct across names, epochs and run seeds; equal for equal inputs
    drawn = [seeds.torch_seed(n) for n in T.SEED_STREAMS] + [seeds.torch_seed("batch_order", e) for e in range(50)]
    drawn += [T.RunSeeds(s).torch_seed("init") for s in (0, 1, 2, 4)]
    assert len(set(drawn)) == len(drawn) and all(0 <= s < 2**63 for s in drawn)
    assert T.RunSeeds(3).torch_seed("augment") == seeds.torch_seed("augment")
    a = seeds.torch_generator("augment")
    b = T.RunSeeds(3).torch_generator("augment")
    assert torch.equal(torch.rand(100, generator=a), torch.rand(100, generator=b))
    with pytest.raises(KeyError, match="unknown random stream 'dropout'"):
        seeds.sequence("dropout")
    with pytest.raises(ConfigError, match="train.seed.*non-negative"):
        T.RunSeeds(-1)


def test_batch_order_is_a_permutation_per_epoch_and_independent_of_history():
    seeds, n, batch, spe = T.RunSeeds(0), 100, 32, 3
    epoch0 = torch.cat([T.batch_indices(seeds, s, spe, n, batch) for s in range(spe)])
    assert len(epoch0) == 96 and len(set(epoch0.tolist())) == 96 and int(epoch0.max()) < n
    epoch1 = torch.cat([T.batch_indices(seeds, s, spe, n, batch) for s in range(spe, 2 * spe)])
    assert not torch.equal(epoch0, epoch1)
    # the reference: torch.randperm from the epoch's stream, whatever ran before (resume at any step)
    T._epoch_permutation.cache_clear()
    ref = torch.randperm(n, generator=torch.Generator().manual_seed(seeds.torch_seed("batch_order", 5)))
    assert torch.equal(T.batch_indices(seeds, 5 * spe + 1, spe, n, batch), ref[batch:2 * batch])
    assert not torch.equal(T.batch_indices(T.RunSeeds(1), 0, spe, n, batch), epoch0[:batch])
    ev = T.eval_batch_indices(seeds, n, 40)
    assert len(set(ev.tolist())) == 40 and torch.equal(ev, ev.sort().values)
    assert torch.equal(ev, T.eval_batch_indices(T.RunSeeds(0), n, 40))
    assert len(T.eval_batch_indices(seeds, n, 500)) == n


def test_checkpoint_contents_and_seeded_initialisation(tmp_path, digits):
    torch.set_num_threads(1)
    rc = resolve(tiny_config(steps=6), "barlow_twins", digits)
    res = T.train(rc, digits, tmp_path / "run")
    ck = torch.load(tmp_path / "run/ckpt/step_00000005.pt", weights_only=True)
    assert set(ck) == {"format", "step", "t", "t_eff", "epoch", "model", "optimizer", "scheduler", "rng",
                       "run_config", "log_state"}
    assert ck["step"] == 5 and ck["format"] == T.CHECKPOINT_FORMAT and ck["run_config"] == rc
    assert set(ck["rng"]) >= {"torch", "augment"}
    # rows at 0, 2, 4 (every 2) and 5 (checkpoint); the row of step 5 (the loss of step 4) is recorded
    # before its checkpoint, so the checkpoint's running loss is empty
    assert ck["log_state"]["loss_count"] == 0 and ck["log_state"]["loss_sum"] == 0.0
    h = T.read_history(tmp_path / "run/history.csv")
    assert list(h["step"]) == [0, 2, 4, 5, 6]
    assert h["loss"][3] == pytest.approx(res.losses[4], rel=1e-6)
    # constant schedule: t_eff = sum of the 5 learning rates = t = 5 lr
    assert rc["schedule"]["decay"] == "constant" and rc["schedule"]["warmup_steps"] == 0
    assert ck["t_eff"] == pytest.approx(5 * rc["lr"], rel=1e-12) == ck["t"]
    assert np.allclose(h["t_eff"], h["step"] * rc["lr"], rtol=1e-9) and np.all(h["lr"] == rc["lr"])
    # step 0 is the model built from the "init" stream, independently of the engine
    torch.manual_seed(T.RunSeeds(rc["seed"]).torch_seed("init"))
    ref = T.build_model(rc).state_dict()
    ck0 = torch.load(tmp_path / "run/ckpt/step_00000000.pt", weights_only=True)["model"]
    assert all(torch.equal(ref[k], ck0[k]) for k in ref)
    # the same seed gives the same run; another seed another one
    again = T.train(copy.deepcopy(rc), digits, tmp_path / "again")
    assert again.losses == res.losses
    rc2 = copy.deepcopy(rc)
    rc2["seed"] = 1
    other = T.train(rc2, digits, tmp_path / "other")
    assert other.losses[0] != res.losses[0]


def test_resumed_run_replays_its_history_into_the_monitor():
    """The monitor of a resumed run holds the earlier sessions' rows: its steps so far are the detector's
    on the history (four logistic rises at rates 8 gamma_j, as in Prop. 4.1)."""
    from types import SimpleNamespace

    from sslkit.analysis.monitor import StepwiseMonitor
    from sslkit.analysis.steps import detect_steps

    t = np.geomspace(0.01, 20.0, 200)
    rates = np.array([8.0, 4.0, 2.0, 1.0])
    eig = 1.0 / (1.0 + (1e6 - 1.0) * np.exp(-np.outer(t, rates)))
    rows = [{"step": i, "t": float(ti), **{f"eig_C_{j}": float(v) for j, v in enumerate(e)},
             **{f"eig_cov_{j}": float(v) for j, v in enumerate(e)}, "rankme": float("nan")}
            for i, (ti, e) in enumerate(zip(t, np.sort(eig, axis=1)[:, ::-1], strict=True))]
    state = SimpleNamespace(monitor=StepwiseMonitor(space="C", log_to_mlflow=False), rows=rows)
    T._replay_monitor(state)
    offline = detect_steps(t, np.sort(eig, axis=1)[:, ::-1])
    assert offline["n_steps"] == 4
    assert state.monitor.steps_so_far()["step_times"] == pytest.approx(offline["step_times"])
    assert len(state.monitor.records) == len(rows)


def test_compile_setting_resolves_per_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not T.compile_enabled("auto", cpu) and T.compile_enabled("auto", cuda)
    assert T.compile_enabled(True, cpu) and not T.compile_enabled(False, cuda)
    with pytest.raises(ConfigError, match="train.compile.*'yes'"):
        T.compile_enabled("yes", cpu)
    with pytest.raises(ConfigError, match="train.compile"):
        load_config({"train": {"compile": "yes"}})


@pytest.mark.slow
def test_compiled_step_follows_the_eager_loss_curve(tmp_path, digits):
    """train.compile: true compiles forward, loss and backward (the loss comes out of an AOTAutograd compiled
    function); over 20 steps from the same seed the losses stay within 1e-4 (relative) of the eager run's
    and the history's evaluation losses and eigenvalues (computed eagerly) within 1e-3. Measured on the
    development CPU: the compiled losses equal the eager ones exactly."""
    torch.set_num_threads(1)
    rc = resolve(tiny_config(steps=20), "barlow_twins", digits)
    eager = T.train(copy.deepcopy(rc), digits, tmp_path / "eager")
    rc["runtime"]["compile"] = True
    compiled = T.train(copy.deepcopy(rc), digits, tmp_path / "compiled")
    le = np.array([eager.losses[s] for s in range(20)])
    lc = np.array([compiled.losses[s] for s in range(20)])
    assert np.allclose(lc, le, rtol=1e-4, atol=0)
    assert le[-1] < le[0] - 1e-3                      # the curve moves: the comparison is not of constants
    he = T.read_history(tmp_path / "eager/history.csv")
    hc = T.read_history(tmp_path / "compiled/history.csv")
    cols = ["loss_eval"] + [c for c in he.columns if c.startswith("eig_C_")]
    assert np.allclose(hc[cols].to_numpy(), he[cols].to_numpy(), rtol=1e-3, atol=1e-9)
    # what ran is the compiled forward + loss + backward, not the eager method
    plan = T.plan_run(rc, len(digits), tmp_path / "probe")
    state = T.build_run_state(plan, digits)
    idx = T.batch_indices(plan.seeds, 0, plan.steps_per_epoch, plan.n_train, plan.batch)
    loss, _, _ = state.loss_fn(*T._views(state.data, state.augment, idx, state.aug_gen), 0)
    assert type(loss.grad_fn).__name__ == "CompiledFunctionBackward"


@pytest.mark.slow
def test_resume_with_compile_is_identical(tmp_path, digits):
    """With train.compile on, on the CPU: 20 steps straight == 13 steps (killed; checkpoint at 10) + a resumed
    session, which compiles again: the same losses, checkpoint and history, bit for bit."""
    torch.set_num_threads(1)
    rc = resolve(tiny_config(steps=20), "barlow_twins", digits)
    rc["runtime"]["compile"] = True
    full = T.train(copy.deepcopy(rc), digits, tmp_path / "full")
    part = T.train(copy.deepcopy(rc), digits, tmp_path / "part", stop_at=13)
    assert not part.complete and [s for s, _ in T.find_checkpoints(tmp_path / "part")] == [0, 5, 10]
    rest = T.train(copy.deepcopy(rc), digits, tmp_path / "part")
    assert rest.start_step == 10 and rest.complete
    assert {s: rest.losses[s] for s in range(10, 20)} == {s: full.losses[s] for s in range(10, 20)}
    for step in (15, 20):
        a = torch.load(tmp_path / f"full/ckpt/step_{step:08d}.pt", weights_only=True)
        b = torch.load(tmp_path / f"part/ckpt/step_{step:08d}.pt", weights_only=True)
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
        assert all(torch.equal(a["optimizer"]["state"][i]["mu"], b["optimizer"]["state"][i]["mu"])
                   for i in a["optimizer"]["state"])
    ha = T.read_history(tmp_path / "full/history.csv").drop(columns=["images_per_s"])
    hb = T.read_history(tmp_path / "part/history.csv").drop(columns=["images_per_s"])
    assert ha.equals(hb)
