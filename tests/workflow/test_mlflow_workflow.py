"""MLflow through Snakemake: `kill -9` during training, then a rerun, leaves exactly one MLflow run for the
model with its full metric history; tags, params and the dataset input are there; analysis jobs nest
under the model run; long jobs print progress lines on the console (Snakemake's stderr)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TINY = """
train:
  methods: [barlow_twins]
  inits: [small]
  steps: 400
  threads: 1
  encoder: {arch: resnet18, width: 0.0625, small_stem: true}
  eval: {batch_size: 64, every: 20, log_points: 0, rank_tol: 0.01, mlflow_top: 4}
  checkpoints: {log_points: 0, every: 40}
  progress: false
methods:
  barlow_twins:
    batch_size: 32
    projector: {hidden: [16], dim: 4, batchnorm: true, last_bias: false}
"""
MODEL = "digits/barlow_twins-small"
TARGET = "results/train/digits/barlow_twins-small/manifest.json"


def smk_cmd(repo: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--cores", "1",
            "--configfile", "tiny.yaml", *args]


def env() -> dict:
    e = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    e.pop("SSLKIT_INVOCATION", None)
    return e


@pytest.mark.slow
def test_kill9_then_rerun_leaves_one_run_with_full_history(repo, tmp_path):
    (tmp_path / "config").symlink_to(repo / "config")
    (tmp_path / "tiny.yaml").write_text(TINY)
    ckpt = tmp_path / "results/train/digits/barlow_twins-small/ckpt"
    proc = subprocess.Popen(smk_cmd(repo, "--", TARGET), cwd=tmp_path, env=env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (ckpt / "step_00000120.pt").exists():
        assert proc.poll() is None, "snakemake ended before it could be killed"
        assert time.time() < deadline, "no checkpoint at step 120 within 10 minutes"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and the training job, mid-run
    proc.wait()
    assert not (ckpt.parent / "manifest.json").exists()

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/results/mlflow.db"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("stepwise-ssl")
    killed = client.search_runs([exp.experiment_id], "tags.`sslkit.kind` = 'model'")
    assert len(killed) == 1 and killed[0].info.status == "RUNNING"

    subprocess.run(smk_cmd(repo, "--unlock"), cwd=tmp_path, env=env(), check=True, capture_output=True)
    r = subprocess.run(smk_cmd(repo, "--rerun-incomplete", "--", TARGET,
                               "results/probe/digits/barlow_twins-small.csv"),
                       cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-6000:]

    # progress on the console: about every 10 % of the resumed session (steps 120..400), k/N, rate, ETA
    lines = re.findall(rf"train {MODEL}: step (\d+)/400 \((\d+)%\), [\d.e+]+ step/s, ETA \S+", r.stderr)
    assert len(lines) >= 6 and lines[-1] == ("400", "100"), r.stderr[-3000:]
    assert re.search(rf"probe {MODEL}: checkpoint \d+/\d+ \(100%\)", r.stderr)
    log_text = (tmp_path / "logs/train/digits/barlow_twins-small.log").read_text()
    assert "resuming" in log_text and "step 400/400" in log_text

    runs = client.search_runs([exp.experiment_id], "tags.`sslkit.kind` = 'model'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_id == killed[0].info.run_id and run.info.status == "FINISHED"
    from sslkit.training.engine import read_history

    expected = read_history(ckpt.parent / "history.csv")["step"].tolist()
    assert expected == list(range(0, 401, 20))
    for name in ("train/loss_eval", "eig_C/00", "eig_cov/03"):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, name)) == expected, name
    tags, params = run.data.tags, run.data.params
    assert tags["sslkit.model"] == MODEL and len(tags["git.commit"]) == 40 and tags["git.dirty"] in ("true", "false")
    assert tags["version.snakemake"] and tags["version.sslkit"] and tags["sslkit.invocation"]
    assert params["run.steps"] == "400" and params["run.method"] == "barlow_twins"
    # the dataset as an MLflow input, its digest from the data manifest
    from sslkit.io import load_json
    from sslkit.tracking import dataset_digest

    inputs = run.inputs.dataset_inputs
    manifest = load_json(tmp_path / "results/data/digits/manifest.json")
    assert [i.dataset.digest for i in inputs] == [dataset_digest(manifest, ["train"])]
    # the probe job: a child run of the model, its summary in the model's row
    assert 0 < run.data.metrics["probe/linear_acc_final"] <= 1
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    assert [c.data.tags["rule"] for c in children] == ["probe"]
    # benchmark files of the jobs
    assert (tmp_path / "benchmarks/train/digits/barlow_twins-small.tsv").is_file()
