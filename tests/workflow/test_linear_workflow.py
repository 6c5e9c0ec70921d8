"""The linear stage through Snakemake: linear_sim, appendix_c and both figures in a scratch dir."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SNAKEMAKE = [sys.executable, "-m", "snakemake"]

SMALL = """\
pairs:
  n: 200
  seed: 1
linear:
  d: 3
  lr: 1.0e-3
  record_points: 400
appendix_c:
  points: 300
"""


def smk_in(repo: Path, workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([*SNAKEMAKE, "-s", str(repo / "Snakefile"), *args], cwd=workdir,
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def workdir(repo, tmp_path) -> Path:
    (tmp_path / "config").symlink_to(repo / "config")
    return tmp_path


def test_linear_stage_runs_and_is_tracked(repo, workdir):
    (workdir / "small.yaml").write_text(SMALL)
    targets = ["results/figures/fig1ab_linear_digits.png", "results/figures/fig1ab_linear_digits.pdf",
               "results/figures/fig6_appendix_c.png", "results/figures/fig6_appendix_c.pdf"]
    r = smk_in(repo, workdir, "--cores", "2", "--configfile", "small.yaml", "--", *targets)
    assert r.returncode == 0, r.stdout + r.stderr
    for t in targets:
        assert (workdir / t).stat().st_size > 1000

    s = json.loads((workdir / "results/linear/digits/summary.json").read_text())
    for key in ("n", "m", "d", "alpha", "lr", "steps", "seed", "gamma", "s0_effective", "tau_theory",
                "tau_measured", "tau_rel_error", "max_abs_eig_error", "final_loss"):
        assert key in s, key
    assert (s["n"], s["m"], s["d"], s["lr"]) == (200, 36, 3, 1e-3)
    assert len(s["gamma"]) == len(s["tau_rel_error"]) == 3
    assert s["n_separated_steps"] == 3 and max(s["tau_rel_error"]) < 0.05 and s["final_loss"] < 1e-2
    z = np.load(workdir / "results/linear/digits/trajectory.npz")
    assert z["eigs"].shape == z["theory_eigs"].shape == (len(z["t"]), 3)
    assert np.all(np.diff(z["eigs"], axis=1) <= 0)                 # sorted descending
    np.testing.assert_allclose(z["t"], s["lr"] * z["step"])
    c = json.loads((workdir / "results/linear/appendix_c/summary.json").read_text())
    assert max(c["s_max_rel_error"]) < 0.05

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir}/results/mlflow.db")
    exp = client.get_experiment_by_name("stepwise-ssl")
    runs = {r.data.tags.get("rule"): r for r in client.search_runs([exp.experiment_id])}
    # jobs: nested runs of the invocation run, which holds the figures (no runs of their own)
    assert {"linear_sim", "appendix_c"} <= set(runs) and not {"fig1ab_linear", "fig6_appendix_c"} & set(runs)
    inv = client.get_run(runs["linear_sim"].data.tags["mlflow.parentRunId"])
    assert {a.path for a in client.list_artifacts(inv.info.run_id)} >= {"fig1ab_linear", "fig6_appendix_c"}
    sim = runs["linear_sim"]
    assert sim.data.params["d"] == "3"
    assert sim.data.metrics["max_abs_eig_error"] == pytest.approx(s["max_abs_eig_error"])
    hist = client.get_metric_history(sim.info.run_id, "eig_1")
    assert [m.step for m in hist] == z["step"].tolist()
    arts = {a.path for a in client.list_artifacts(sim.info.run_id)}
    assert {"trajectory.npz", "summary.json"} <= arts

