"""The train rule end to end: a 20-step smoke run of every method on digits (one snakemake call)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sslkit.registry import METHODS, specs

SMOKE = """
train:
  methods: [barlow_twins, simclr, vicreg, byol, directpred, directcopy]
  inits: [small]
  steps: 20
  threads: 1
  encoder: {arch: resnet18, width: 0.0625, small_stem: true}
  eval: {batch_size: 64, every: 5, log_points: 0, rank_tol: 0.01, mlflow_top: 4}
  checkpoints: {log_points: 3, every: 10}
  progress: false
methods:
  barlow_twins:
    batch_size: 32
    projector: {hidden: [16], dim: 4, batchnorm: true, last_bias: false}
  simclr:
    batch_size: 32
    projector: {hidden: [16], dim: 4, batchnorm: true, last_bias: false}
  vicreg:
    batch_size: 32
    projector: {hidden: [16], dim: 4, batchnorm: true, last_bias: false}
  byol:
    batch_size: 32
    projector: {hidden: [16], dim: 4, batchnorm: true, last_bias: false}
    predictor: {hidden: [8], batchnorm: true}
  directpred:
    batch_size: 32
    projector: {hidden: [16], dim: 4, batchnorm: true, last_bias: false}
  directcopy:
    batch_size: 32
    projector: {hidden: [16], dim: 4, batchnorm: true, last_bias: false}
"""


@pytest.fixture
def workdir(repo, tmp_path) -> Path:
    (tmp_path / "config").symlink_to(repo / "config")
    (tmp_path / "smoke.yaml").write_text(SMOKE)
    return tmp_path


def smk(repo: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), *args],
                          cwd=workdir, capture_output=True, text=True, timeout=900, env=env)


def test_smoke_all_methods_through_the_rule(repo, workdir):
    targets = [f"results/train/digits/{m}-small/manifest.json" for m in METHODS]
    targets.append("results/train/digits/barlow_twins-small/curves.png")
    r = smk(repo, workdir, "--cores", "2", "--configfile", "smoke.yaml", "--", *targets)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    from sslkit.io import load_json
    from sslkit.training.engine import load_checkpoint, read_history

    for m in METHODS:
        run = workdir / f"results/train/digits/{m}-small"
        man = load_json(run / "manifest.json")
        assert man["complete"] and man["steps"] == 20 and man["method"] == m
        assert [c["step"] for c in man["checkpoints"]] == [0, 1, 4, 10, 20]
        h = read_history(run / man["history"])
        d = man["run_config"]["method_config"]["projector"]["dim"]
        assert h["step"].iloc[-1] == 20 and np.isfinite(h[f"eig_cov_{d - 1}"]).all()
        model, rc = load_checkpoint(run / man["checkpoints"][-1]["path"])
        assert hasattr(model, "predictor") == (specs()[m].predictor is not None)
        assert (workdir / f"logs/train/digits/{m}-small.log").exists()
    assert (workdir / "results/train/digits/barlow_twins-small/curves.pdf").stat().st_size > 0
    # tracked: one MLflow run per trained model (the invocation run has no rule tag), with eigenvalue metrics
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir}/results/mlflow.db")
    exp = client.get_experiment_by_name("stepwise-ssl")
    runs = [x for x in client.search_runs([exp.experiment_id]) if x.data.tags.get("rule") == "train"]
    assert sorted(x.data.tags["wildcards.method"] for x in runs) == sorted(METHODS)
    hist = client.get_metric_history(runs[0].info.run_id, "eig_cov/00")
    assert sorted(x.step for x in hist) == [0, 1, 4, 5, 10, 15, 20]
    # a second call has nothing to do (the runs are complete)
    r = smk(repo, workdir, "--cores", "2", "--configfile", "smoke.yaml", "-n", "--", *targets)
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr


TINY = """
train:
  methods: [barlow_twins]
  inits: [small]
  steps: 10
  threads: 1
  encoder: {arch: resnet18, width: 0.0625, small_stem: true}
  eval: {batch_size: 64, every: 5, log_points: 0, rank_tol: 0.01, mlflow_top: 4}
  checkpoints: {log_points: 0, every: 5}
  progress: false
methods:
  barlow_twins:
    batch_size: 32
    projector: {hidden: [16], dim: 4, batchnorm: true, last_bias: false}
"""


def test_damaged_checkpoint_and_changed_config_through_the_workflow(repo, tmp_path):
    """Issue 17's probes through Snakemake: (a) a truncated checkpoint of a finished run is noticed by the
    workflow itself (the train job reruns and retrains from the newest intact checkpoint; afterwards nothing
    reruns); (b) a changed hyperparameter keeps the old run, and changing it back restores it without training."""
    from sslkit.io import load_json
    from sslkit.training.engine import config_hash, load_checkpoint

    (tmp_path / "config").symlink_to(repo / "config")
    (tmp_path / "tiny.yaml").write_text(TINY)
    target = "results/train/digits/barlow_twins-small/manifest.json"
    run = tmp_path / "results/train/digits/barlow_twins-small"
    base = ("--cores", "1", "--configfile", "tiny.yaml")
    r = smk(repo, tmp_path, *base, "--", target)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    first = load_json(run / "manifest.json")
    assert [c["step"] for c in first["checkpoints"]] == [0, 5, 10]
    # (a) truncate a checkpoint of the finished run
    bad = run / "ckpt/step_00000005.pt"
    bad.write_bytes(bad.read_bytes()[:1000])
    dry = smk(repo, tmp_path, *base, "-n", "--", target)
    assert dry.returncode == 0 and "rule train:" in dry.stdout, dry.stdout[-3000:] + dry.stderr[-3000:]
    assert "step_00000005.pt has 1000 bytes" in dry.stdout + dry.stderr
    r = smk(repo, tmp_path, *base, "--", target)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    log = (tmp_path / "logs/train/digits/barlow_twins-small.log").read_text()
    assert "damaged checkpoint" in log and "step_00000005.pt" in log and "from step 0" in log
    repaired = load_json(run / "manifest.json")
    assert repaired["integrity_generation"] == 1
    for c in repaired["checkpoints"]:
        load_checkpoint(run / c["path"])  # verified against the manifest's sha256
    dry = smk(repo, tmp_path, *base, "-n", "--", target)
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]
    # (b) change a hyperparameter (a nested --config override), then change it back
    history = (run / "history.csv").read_text()
    r = smk(repo, tmp_path, *base, "--config", "methods={barlow_twins: {optimizer: {lr: 0.1}}}", "--", target)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    changed = load_json(run / "manifest.json")
    assert changed["lr"] == 0.1 and (run / "previous" / repaired["config_hash"] / "ckpt").is_dir()
    r = smk(repo, tmp_path, *base, "--", target)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    back = load_json(run / "manifest.json")
    assert back == repaired and (run / "history.csv").read_text() == history
    assert (run / "previous" / config_hash(changed["run_config"])).is_dir()
    log = (tmp_path / "logs/train/digits/barlow_twins-small.log").read_text()
    assert "restored the earlier run" in log
    dry = smk(repo, tmp_path, *base, "-n", "--", target)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]
