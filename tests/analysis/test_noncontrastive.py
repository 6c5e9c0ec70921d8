"""Predictor-vs-correlation measures of sslkit.analysis.noncontrastive against constructed cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sslkit.analysis import noncontrastive as N
from sslkit.training import losses as L

torch.set_num_threads(1)


def test_linearise_recovers_an_affine_map_and_reports_r2():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((200, 4))
    w = rng.standard_normal((4, 4))
    b = rng.standard_normal(4)
    w_fit, b_fit, r2 = N.linearise_predictor(z, z @ w.T + b)
    np.testing.assert_allclose(w_fit, w, atol=1e-10)
    np.testing.assert_allclose(b_fit, b, atol=1e-10)
    assert r2 == pytest.approx(1.0)
    _, _, r2_relu = N.linearise_predictor(z, np.maximum(z, 0))
    assert 0.3 < r2_relu < 0.95


def _corr(seed=0, d=5):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s = np.array([2.0, 0.5, 0.1, 0.02, 0.004])[:d]
    return q @ np.diag(s) @ q.T, q, s


def test_aligned_eigenvalues_of_a_commuting_predictor():
    F, q, s = _corr()
    p = np.array([1.0, -0.3, 0.7, 0.2, 0.05])
    a = N.aligned_eigenvalues(F, q @ np.diag(p) @ q.T)
    np.testing.assert_allclose(a["s"], s, rtol=1e-10)
    np.testing.assert_allclose(a["p"], p, atol=1e-10)
    assert a["alignment"] == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    assert N.aligned_eigenvalues(F, rng.standard_normal((5, 5)))["alignment"] < 0.9


def test_invariance_slope_is_one_for_directpred_and_one_half_for_directcopy():
    F, _, _ = _corr()
    ft = torch.tensor(F)
    dp = N.aligned_eigenvalues(F, L.directpred_predictor(ft, eps=0.0).numpy())
    fit = N.invariance_fit(dp["s"], dp["p"], floor_rel=1e-6)
    assert fit["slope"] == pytest.approx(1.0, abs=1e-9) and fit["spread_decades"] == pytest.approx(0, abs=1e-9)
    dc = N.aligned_eigenvalues(F, L.directcopy_predictor(ft, eps=0.0).numpy())
    assert N.invariance_fit(dc["s"], dc["p"], floor_rel=1e-6)["slope"] == pytest.approx(0.5, abs=1e-9)
    # modes below floor_rel x s_1 are left out
    assert N.invariance_fit(dp["s"], dp["p"], floor_rel=0.03)["n_modes"] == 3
