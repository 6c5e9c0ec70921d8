"""The analysis rules end to end (rules/analysis.smk) on tiny 30-step digits runs: the output
contracts of analyze / steps / probe / analysis_table, the spectra against numpy on the same pairs,
and that figure jobs read no checkpoints (they run, alone, after the checkpoints are gone)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SMOKE = """
tracking: {enabled: false}
train:
  methods: [barlow_twins]
  inits: [small, standard]
  steps: 30
  threads: 1
  encoder: {arch: resnet18, width: 0.0625, small_stem: true}
  eval: {batch_size: 64, every: 10, log_points: 0, rank_tol: 0.01, mlflow_top: 4}
  checkpoints: {log_points: 4, every: 10}
  progress: false
methods:
  barlow_twins:
    batch_size: 32
    projector: {hidden: [16], dim: 4, batchnorm: true, last_bias: false}
analysis:
  pairs: {n: 150, split: train, seed: 0}
  batch_size: 64
  thresholds: {absolute: [1.0e-4], relative: [1.0e-2]}
  probe: {max_train: 300, max_test: 200, k: 5}
"""
FIGURES = ["fig1cd", "fig3", "fig4", "fig5", "fig7"]  # fig2cf: no SimCLR/VICReg run configured
RUNS = ["barlow_twins-small", "barlow_twins-standard"]
UNCONFIGURED = ["results/steps/digits/byol-small.json", "results/probe/digits/directcopy-standard.csv"]


COPY = ["Snakefile", "rules", "workflow_scripts", "sslkit", "config", "envs", "report", "profiles"]


def smk(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONPATH=str(workdir))
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "smoke.yaml", *args],
                          cwd=workdir, capture_output=True, text=True, timeout=600, env=env)


def jobs_of(r: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    """(rule, output line) of every job a (dry) run printed."""
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    jobs, rule = [], None
    for line in (r.stdout + r.stderr).splitlines():
        if line.lstrip().startswith(("rule ", "localrule ")):  # (indented inside a group job)
            rule = line.split()[1].rstrip(":")
        elif rule and line.strip().startswith("output:"):
            jobs.append((rule, line.strip()))
            rule = None
    return jobs


@pytest.fixture(scope="module")
def analysed(repo, tmp_path_factory):
    """A copy of the workflow (its own sslkit, so touching the plot style is harmless) after:
    1. the analysis tables of two tiny runs; 2. with every checkpoint moved away: the figures, then
    a dry run after editing the plot style; then the checkpoints are put back."""
    work = tmp_path_factory.mktemp("analysis_wf")
    for name in COPY:
        src = repo / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, work / name)
    (work / "smoke.yaml").write_text(SMOKE)
    tables = ["results/tables/digits/analysis.csv"] + [f"results/spectra/digits/{run}.summary.csv" for run in RUNS]
    r = smk(work, "--", *tables)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    figures = [f"results/figures/{name}_digits.png" for name in FIGURES]
    moved = []
    try:
        for run in RUNS:
            ckpt = work / f"results/train/digits/{run}/ckpt"
            moved.append(ckpt.rename(ckpt.with_name("ckpt.moved")))
        # the jobs of this run are those printed (the profile prints every job, as the dry run does)
        first = jobs_of(smk(work, "--", *tables, *figures))
        # Snakemake 9 reruns on an input newer than the outputs only if its checksum changed: edit it
        with open(work / "sslkit/viz/stepwise.mplstyle", "a") as fh:
            fh.write("# edited by the test\n")
        # (one dry run for two checks, since each Snakemake start costs seconds: also runs that are
        # not configured, as the non-contrastive stage asks for them under its own config)
        after_edit = jobs_of(smk(work, "-n", "--", *tables, *figures, *UNCONFIGURED))
    finally:
        for m in moved:
            m.rename(m.with_name("ckpt"))
    return {"work": work, "first": first, "after_edit": after_edit}


def test_outputs_follow_the_contract(analysed):
    analysed = analysed["work"]
    import pandas as pd

    from sslkit.analysis.spectra import read_table
    from sslkit.io import load_json

    table = pd.read_csv(analysed / "results/tables/digits/analysis.csv")
    assert list(table["run"]) == RUNS
    for run in RUNS:
        man = load_json(analysed / f"results/train/digits/{run}/manifest.json")
        steps_expected = [c["step"] for c in man["checkpoints"]]
        h = man["run_config"]["encoder"]
        spec = read_table(analysed / f"results/spectra/digits/{run}.parquet")
        assert list(spec.columns) == ["step", "t", "space", "index", "eigenvalue"]
        assert sorted(spec["step"].unique()) == steps_expected
        counts = spec.groupby(["step", "space"]).size().unstack()
        assert list(counts.columns) == ["embedding_C", "embedding_cov", "hidden_cov"]
        assert (counts["embedding_C"] == 4).all() and (counts["embedding_cov"] == 4).all()
        hidden_dim = counts["hidden_cov"].iloc[0]
        assert (counts["hidden_cov"] == hidden_dim).all() and hidden_dim > 4, h
        lr = man["lr"]
        assert np.allclose(spec["t"], lr * spec["step"])
        summary = pd.read_csv(analysed / f"results/spectra/digits/{run}.summary.csv")
        assert len(summary) == 3 * len(steps_expected)
        assert {"rankme", "n_gt_abs_0.0001", "n_gt_rel_0.01"} <= set(summary.columns)
        # the counts are those of the table's eigenvalues
        last = spec[(spec["step"] == steps_expected[-1]) & (spec["space"] == "embedding_cov")]["eigenvalue"]
        row = summary[(summary["step"] == steps_expected[-1]) & (summary["space"] == "embedding_cov")].iloc[0]
        assert row["n_gt_abs_0.0001"] == (last > 1e-4).sum()
        assert row["n_gt_rel_0.01"] == (last > 0.01 * last.max()).sum()

        steps = load_json(analysed / f"results/steps/digits/{run}.json")
        assert {"step_times", "n_steps", "sequential", "hidden_coincidence", "embedding", "hidden"} <= set(steps)
        assert steps["space"] == "embedding_C" and steps["hidden_space"] == "hidden_cov"
        assert steps["n_steps"] == len(steps["step_times"]) and steps["step_times"] == sorted(steps["step_times"])
        assert all(0 < x <= steps["t_max"] for x in steps["step_times"])
        assert steps["sequential"] in (None, True, False) and (steps["sequential"] is None) == (steps["n_steps"] == 0)
        hc = steps["hidden_coincidence"]
        assert (hc is None) == (steps["n_steps"] == 0) and (hc is None or 0 <= hc <= 1)
        # embedding spectra from the dense history (every row), hidden ones from the checkpoints
        history = pd.read_csv(analysed / f"results/train/digits/{run}/history.csv")
        assert steps["spectra_source"] == "history" and steps["n_spectra"] == history["step"].nunique()
        assert steps["n_spectra"] >= len(steps_expected) and steps["n_checkpoints"] == len(steps_expected)
        bim = steps["bimodality"]
        assert 0 < bim["dip"] <= 0.25 and 0 < bim["p_value"] <= 1 and bim["bimodal"] == (bim["p_value"] < 0.05)
        alpha = steps["alpha_check"]
        assert alpha["top_eigenvalue_init"] == history.loc[history["step"] == 0, "eig_C_0"].iloc[0]
        assert (alpha["passed"] is None) == run.endswith("standard")

        probe = pd.read_csv(analysed / f"results/probe/digits/{run}.csv")
        assert list(probe["step"]) == steps_expected
        assert probe["linear_acc"].between(0, 1).all() and probe["knn_acc"].between(0, 1).all()
        assert (probe["n_train"] == 300).all() and (probe["n_test"] == 200).all()
        row = table[table["run"] == run].iloc[0]
        assert row["n_steps"] == steps["n_steps"] and row["final_linear_acc"] == probe["linear_acc"].iloc[-1]
        assert row["dip"] == steps["bimodality"]["dip"] and row["n_spectra"] == steps["n_spectra"]
        assert row["top_eigenvalue_init"] == steps["alpha_check"]["top_eigenvalue_init"]
    for name in FIGURES:
        assert (analysed / f"results/figures/{name}_digits.pdf").stat().st_size > 0
    assert not (analysed / "results/figures/fig2cf_digits.png").exists()


def test_spectra_match_numpy_on_the_same_pairs(analysed):
    """The last checkpoint's C / covariance / hidden eigenvalues against a direct numpy computation
    on the same evaluation pairs."""
    analysed = analysed["work"]
    import torch

    from sslkit.analysis import checkpoints as analysis
    from sslkit.analysis.spectra import read_table
    from sslkit.data import load_split
    from sslkit.io import load_json
    from sslkit.training.augment import build_augment
    from sslkit.training.engine import load_checkpoint

    torch.set_num_threads(1)
    run = analysed / "results/train/digits/barlow_twins-small"
    ck = load_json(run / "manifest.json")["checkpoints"][-1]
    model, rc = load_checkpoint(run / ck["path"])
    images = load_split(analysed / "results/data/digits", "train").images
    pairs = analysis.make_eval_pairs(images, build_augment(rc, "cpu"), 150, 0)
    # BatchNorm statistics re-estimated on both views in the rule's chunks of 64 (analysis.bn_stats:
    # recompute; recompute_bn_stats itself is checked against numpy in test_analysis_bn.py)
    chunks = [pairs[k][lo:lo + 64] for k in ("x1", "x2") for lo in range(0, 150, 64)]
    analysis.recompute_bn_stats(model, model.embed, chunks)
    with torch.no_grad():
        z1, z2 = (model.embed(pairs[k]).double().numpy() for k in ("x1", "x2"))
        h = torch.cat([model.hidden(pairs["x1"]), model.hidden(pairs["x2"])]).double().numpy()
    z = np.vstack([z1, z2])
    ref = {
        "embedding_C": np.linalg.eigvalsh((z1.T @ z2 + z2.T @ z1) / (2 * len(z1)))[::-1],
        "embedding_cov": np.linalg.eigvalsh(np.cov(z.T, bias=True))[::-1],
        "hidden_cov": np.linalg.eigvalsh(np.cov(h.T, bias=True))[::-1],
    }
    spec = read_table(analysed / "results/spectra/digits/barlow_twins-small.parquet")
    for space, lam in ref.items():
        got = spec[(spec["step"] == ck["step"]) & (spec["space"] == space)].sort_values("index")["eigenvalue"]
        scale = max(abs(lam).max(), 1e-300)
        np.testing.assert_allclose(got.to_numpy(), lam, rtol=1e-6, atol=1e-9 * scale, err_msg=space)


def test_figures_read_no_checkpoints(analysed):
    """With every checkpoint moved away, the figures were the only jobs to run and succeeded (the
    fixture would have failed otherwise); editing the plot style then reruns exactly them."""
    assert sorted(rule for rule, _ in analysed["first"]) == sorted(FIGURES)
    figure_jobs = [rule for rule, _ in analysed["after_edit"] if rule.startswith("fig")]
    assert sorted(figure_jobs) == sorted(FIGURES)
    for name in FIGURES:
        assert (analysed["work"] / f"results/figures/{name}_digits.pdf").stat().st_size > 0


def test_any_method_and_init_can_be_analysed(analysed):
    """analyze / steps / probe are not limited to the configured runs: asking for a BYOL and a
    DirectCopy run's tables plans their training and analysis (and nothing of the configured runs)."""
    other = [(rule, out) for rule, out in analysed["after_edit"] if not rule.startswith("fig")]
    assert sorted(rule for rule, _ in other) == ["analyze", "probe", "steps", "train", "train"]
    assert all("byol-small" in out or "directcopy-standard" in out for _, out in other), other
    outputs = " ".join(out for _, out in other)
    for wanted in ("results/spectra/digits/byol-small.parquet", *UNCONFIGURED):
        assert wanted in outputs, wanted
