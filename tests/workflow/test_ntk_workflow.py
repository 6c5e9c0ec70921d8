"""rules/ntk.smk end to end: two 10-step smoke runs -> ntk_pairs -> ntk_alignment -> tables (~30 s on an
idle 2-core CPU; two methods keep it to one wave of jobs per stage)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SMOKE = """
tracking: {enabled: false}
train:
  methods: [barlow_twins, vicreg]
  inits: [small]
  steps: 10
  threads: 1
  encoder: {arch: resnet18, width: 0.0625, small_stem: true}
  eval: {batch_size: 64, every: 5, log_points: 0, rank_tol: 0.01, mlflow_top: 4}
  checkpoints: {log_points: 2, every: null}
  progress: false
methods:
  barlow_twins:
    batch_size: 32
    projector: {hidden: [16], dim: 4, batchnorm: true, last_bias: false}
  vicreg:
    batch_size: 32
    projector: {hidden: [16, 16], dim: 4, batchnorm: true, last_bias: false}
ntk:
  methods: [barlow_twins, vicreg]
  init: small
  pairs: {n: 40, split: train, seed: 1, augment_from: vicreg}
  chunk_size: 16
  memory_budget_mb: 200
  random_trials: 50
"""


@pytest.fixture
def workdir(repo, tmp_path) -> Path:
    (tmp_path / "config").symlink_to(repo / "config")
    (tmp_path / "smoke.yaml").write_text(SMOKE)
    return tmp_path


def smk(repo: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), *args],
                          cwd=workdir, capture_output=True, text=True, timeout=600, env=env)


def test_ntk_alignment_and_tables_through_the_rules(repo, workdir):
    import pandas as pd

    from sslkit.analysis import tables as tb
    from sslkit.io import load_json
    from sslkit.theory import kernel as kn
    from sslkit.theory.alignment import stacked_points
    from sslkit.theory.ntk import empirical_ntk
    from sslkit.training.engine import load_checkpoint

    methods = ["barlow_twins", "vicreg"]
    targets = [f"results/tables/digits/table{i}.{e}" for i in (1, 2) for e in ("csv", "md", "tex")]
    r = smk(repo, workdir, "--cores", "2", "--configfile", "smoke.yaml", "--", *targets)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]

    ntk = workdir / "results/ntk/digits"
    pairs = np.load(ntk / "pairs.npz")
    assert pairs["x1"].shape == pairs["x2"].shape == (40, 1, 8, 8) and str(pairs["augment_from"]) == "vicreg"
    t1 = tb.read_csv(workdir / "results/tables/digits/table1.csv")
    assert [row["method"] for row in t1] == methods
    P = {}
    for m, row in zip(methods, t1):
        s = load_json(ntk / f"{m}.json")
        z = np.load(ntk / f"{m}.npz")
        K, f_exp = z["K"], z["f_exp"]
        assert K.shape == (80, 80) and f_exp.shape == (4, 80) and np.allclose(K, K.T)
        np.testing.assert_array_equal(z["index"], pairs["index"])  # every method saw the same points
        # the stored subspaces and scalars are those of the stored K and f_exp (Eq. 49)
        spec = kn.kernel_gamma(K)
        P_th = kn.right_singular_subspace(kn.predicted_embeddings(spec, 4))
        assert kn.alignment(z["P_th"], P_th) == pytest.approx(1.0, abs=1e-8)
        assert s["a_exp_th"] == pytest.approx(kn.alignment(kn.right_singular_subspace(f_exp), P_th), abs=1e-8)
        assert s["a_exp_ntk"] == pytest.approx(kn.alignment(z["P_exp"], z["P_NTK"]), abs=1e-10)
        assert (s["n"], s["d"], s["init"], s["checkpoint_step"]) == (40, 4, "small", 10)
        assert s["ntk_time_s"] > 0 and s["ntk_peak_bytes"] is not None
        assert s["feature_rank"] <= 32 and 0 < s["random_feature_span"] <= 1  # h = 512 x 0.0625 features
        assert row == tb.table1_rows({m: s})[0]
        # the initial eNTK is that of the run's step-0 checkpoint on the same points (footnote 22)
        run = workdir / f"results/train/digits/{m}-small"
        man = load_json(run / "manifest.json")
        assert s["initial_checkpoint_step"] == 0 == man["checkpoints"][0]["step"]
        model0, _ = load_checkpoint(run / man["checkpoints"][0]["path"])
        K0 = empirical_ntk(model0, stacked_points(pairs["x1"], pairs["x2"]), chunk_size=16).K
        assert row["a_exp_ntk_init"] == pytest.approx(kn.alignment(z["P_exp"], kn.top_eigvec_subspace(K0, 4)),
                                                      abs=1e-6)
        assert 0 < row["a_exp_th_init"] <= 1
        # the alpha check reads the history row of step 0
        hist = pd.read_csv(run / "history.csv")
        top0 = hist.loc[hist["step"] == 0, "eig_C_0" if m == "barlow_twins" else "eig_cov_0"].iloc[0]
        assert row["top_eigenvalue_init"] == top0 and row["alpha_paper_value"] == 1e-3
        assert row["alpha_check_passed"] == (abs(np.log10(top0 / 1e-3)) <= 1)
        assert row["random_analytic"] == 4 / 80
        P[m] = z["P_exp"]
    t2 = tb.read_csv(workdir / "results/tables/digits/table2.csv")
    assert [(x["method_a"], x["method_b"]) for x in t2] == [("barlow_twins", "vicreg")]
    for x in t2:
        assert x["alignment"] == pytest.approx(kn.alignment(P[x["method_a"]], P[x["method_b"]]), abs=1e-12)
    md = (workdir / "results/tables/digits/table1.md").read_text()
    assert "0.615" in md and "Barlow Twins" in md and "d = 4, n = 40" in md
    assert "random in feature span" in md and "initial eNTK" in md
    assert r"\toprule" in (workdir / "results/tables/digits/table2.tex").read_text()
    assert (workdir / "logs/ntk_alignment/digits/vicreg.log").exists()

