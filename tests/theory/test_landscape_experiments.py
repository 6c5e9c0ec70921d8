"""The Fig. 8-9 and speed-up runs (sslkit.theory.landscape_experiments) on small synthetic pairs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sslkit.theory import landscape_experiments as le


def pairs(n: int = 120, m: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, m)) * (0.6 ** np.arange(m))
    return base + 0.2 * rng.standard_normal((n, m)), base + 0.2 * rng.standard_normal((n, m))


def test_speedup_run_measures_what_the_exact_solutions_predict():
    X, Xp = pairs()
    rows, summary = le.run_sharpened_speedup(X, Xp, d=3, alpha=1e-5, seed=0, lr=2e-3, points=4000)
    assert [r["k"] for r in rows] == [1, 2, 3]
    for r in rows:
        # log(1/lambda0 - 1) / (4 log(1/(1 - 2^-1/2))): the speed-up depends on the init depth only
        lam0 = r["lambda0_k"]
        assert r["speedup_theory"] == pytest.approx(np.log(1 / lam0 - 1) / (4 * np.log(1 / (1 - 2**-0.5))), rel=1e-3)
        assert r["speedup_measured"] == pytest.approx(r["speedup_theory"], rel=2e-2)
    assert summary["max_rel_error_t_sharpened"] < 2e-2


def test_fig_runs_follow_their_exact_solutions_and_plot():
    pytest.importorskip("matplotlib")
    from sslkit.viz.plots import fig8_symmetry_breaking, fig9_landscapes

    X, Xp = pairs(seed=1)
    s8, a8 = le.run_fig8(X, Xp, d=3, alpha=1e-4, seed=0, lr=None, lr_supervised=None, points=300)
    assert s8["ssl_max_abs_error_euler_corrected"] < 0.02
    assert s8["supervised_max_abs_error"] < 0.02
    # symmetry breaking: each mode ends at the minimum of its initial sign; supervised at +1
    assert np.allclose(np.sign(a8["ssl_sim"][-1]), np.sign(a8["s0"]))
    assert np.allclose(np.abs(a8["ssl_sim"][-1]), 1, atol=1e-3)
    assert np.allclose(a8["supervised_sim"][-1], 1, atol=0.02)
    s9, a9 = le.run_fig9(X, Xp, d=3, alpha=1e-4, seed=0, lr=None, points=300)
    assert s9["losses"]["sharpened"]["max_rel_error_vs_exact_gd_map"] < 1e-9
    for name in ("original", "smoothed", "sharpened"):
        assert s9["losses"][name]["max_abs_error"] < 0.05, name
    assert len(fig8_symmetry_breaking(a8, s8).axes) == 4
    assert len(fig9_landscapes(a9, s9).axes) == 8


def test_resnet_comparison_and_bad_input():
    X, Xp = pairs()
    with pytest.raises(ValueError, match="theory_figures.lr"):
        le.run_fig9(X, Xp, d=2, alpha=1e-4, seed=0, lr=10.0)
    with pytest.raises(ValueError, match="lower linear.d"):
        le.linear_setup(X, -Xp, d=2, alpha=1e-4, seed=0)
    rows = [{"k": k, "gamma_k": 1.0, "lambda0_k": 1e-9, "speedup_theory": 4.0, "speedup_measured": 4.1}
            for k in (1, 2)]
    factors = pd.DataFrame([
        {"method": "barlow_twins", "init": "small", "variant": "sharpen", "k": 2, "speedup_median": 1.5,
         "speedup_min": 1.2, "speedup_max": 1.8},
        {"method": "barlow_twins", "init": "small", "variant": "baseline", "k": 2, "speedup_median": 1.0,
         "speedup_min": 1.0, "speedup_max": 1.0}])
    out = le.resnet_comparison(rows, factors)
    assert list(out["k"]) == [1, 2]
    assert np.isnan(out.loc[0, "resnet_small_median"]) and out.loc[1, "resnet_small_median"] == 1.5
    with pytest.raises(ValueError, match="no rows for barlow_twins / quartic"):
        le.resnet_comparison(rows, factors, variant="quartic")
    with pytest.raises(ValueError, match="lacks columns"):
        le.resnet_comparison(rows, factors.drop(columns="speedup_max"))


def test_resnet_theory_column_uses_the_initial_eigenvalues():
    rows = [{"k": 1, "gamma_k": 1.0, "lambda0_k": 1e-9, "speedup_theory": 4.0, "speedup_measured": 4.1}]
    factors = pd.DataFrame([{"method": "barlow_twins", "init": "small", "variant": "sharpen", "k": 1,
                             "speedup_median": 1.5, "speedup_min": 1.2, "speedup_max": 1.8}])
    out = le.resnet_comparison(rows, factors, resnet_lambda0={"small": [1e-3, 1e-6, -1e-6]})
    # exact level-1/2 times of the two flows at gamma = 1
    t_orig = np.log(1 / np.array([1e-3, 1e-6]) - 1) / 8
    t_sharp = np.log((1 - np.sqrt([1e-3, 1e-6])) / (1 - 2**-0.5)) / 2
    assert np.allclose(out["resnet_small_theory"][:2], t_orig / t_sharp, rtol=1e-12)
    assert np.isnan(out["resnet_small_theory"][2])  # lambda(0) <= 0: no prediction
