"""Linear model of Barlow Twins: closed forms, the gradient-descent simulators, Appendix C.

Every number is checked against an independent computation written here (finite differences,
Gram-Schmidt vs QR, chi-distribution moments, a plain RK4, the original-basis simulator) or
against the theory the paper states (docs/theory.md §1-§5).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from sslkit.theory import linear as L


def random_pairs(n: int, m: int, seed: int, noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Two correlated views: X iid N(0, 1), X' = X + noise * N(0, 1)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, m))
    return X, X + noise * rng.standard_normal((n, m))


def synthetic_gamma(top, m: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gamma = V diag(gamma) V^T with the given top eigenvalues and the rest in [-0.05, 0.05]."""
    rng = np.random.default_rng(seed)
    rest = rng.uniform(-0.05, 0.05, m - len(top))
    gamma = np.concatenate([np.asarray(top, dtype=float), np.sort(rest)[::-1]])
    V, _ = np.linalg.qr(rng.standard_normal((m, m)))
    return V @ np.diag(gamma) @ V.T, gamma, V


# ---------------------------------------------------------------------------------------------
# theory
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("g,s0", [(2.0, 1e-3), (0.3, 1e-7), (5.0, 1e-12), (-0.7, 1e-2), (0.05, 1e-12)])
def test_closed_form_solves_its_ode(g, s0):
    """ds/dt = 4 s (1 - g s^2) g (Prop. 4.1 / Eq. 12), checked by central differences."""
    tau = L.step_times([abs(g)], [s0])[0] if g > 0 else 1.0
    t = np.linspace(0.0, 2.5 * tau, 400)[1:]
    h = 1e-6 * max(tau, 1.0)
    s = L.s_closed_form([g], [s0], t)[:, 0]
    ds = (L.s_closed_form([g], [s0], t + h)[:, 0] - L.s_closed_form([g], [s0], t - h)[:, 0]) / (2 * h)
    rhs = 4 * s * (1 - g * s**2) * g
    assert np.all(np.isfinite(s)) and s[0] > 0
    # relative to the size of the two terms 4 g s and 4 g^2 s^3 (their difference -> 0 at saturation)
    scale = 4 * abs(g) * s * (1 + abs(g) * s**2)
    np.testing.assert_array_less(np.abs(ds - rhs), 1e-6 * scale)
    assert np.abs(ds - rhs).max() < 1e-3 * np.abs(rhs).max()
    # initial value and lambda = g s^2
    assert L.s_closed_form([g], [s0], [0.0])[0, 0] == pytest.approx(s0, rel=1e-12)
    np.testing.assert_allclose(L.lambda_closed_form([g], [s0], t)[:, 0], g * s**2, rtol=1e-10, atol=1e-300)


def test_closed_form_is_overflow_safe_to_saturation():
    gamma = np.array([300.0, 1.0, 0.01, 0.0, -0.5])
    s0 = np.array([1e-12, 1e-12, 1e-12, 1e-12, 1e-12])
    t = np.geomspace(1e-6, 1e5, 500)   # far past the slowest step (tau_3 ~ 690)
    with np.errstate(all="raise"):
        lam = L.lambda_closed_form(gamma, s0, t)
        s = L.s_closed_form(gamma, s0, t)
    assert np.all(np.isfinite(lam)) and np.all(np.isfinite(s))
    np.testing.assert_allclose(lam[-1, :3], 1.0, rtol=1e-12)            # saturated at gamma_j s^2 = 1
    np.testing.assert_allclose(s[-1, :3], gamma[:3] ** -0.5, rtol=1e-12)
    assert s[-1, 3] == pytest.approx(1e-12) and s[-1, 4] == 0.0          # frozen, decayed
    assert np.all(np.diff(lam[:, :3], axis=0) >= 0)                       # monotone growth
    # lambda(tau) ~ 1/2 for small init (Eq. 16)
    tau = L.step_times(gamma[:3], s0[:3])
    lam_tau = np.diag(L.lambda_closed_form(gamma[:3], s0[:3], tau))
    np.testing.assert_allclose(lam_tau, 0.5, atol=1e-6)


def test_saturation_time_and_auto_steps():
    gamma, s0 = np.array([3.0, 0.4]), np.array([1e-7, 2e-7])
    for level in (0.5, 0.99):
        ts = L.saturation_time(gamma, s0, level)
        np.testing.assert_allclose(np.diag(L.lambda_closed_form(gamma, s0, ts)), level, rtol=1e-10)
    steps = L.auto_steps(gamma, s0, lr=1e-3, margin=0.1)
    assert steps == math.ceil(1.1 * L.saturation_time(gamma, s0, 0.99).max() / 1e-3)
    with pytest.raises(ValueError, match="never learned"):
        L.auto_steps(np.array([1.0, -0.1]), s0, lr=1e-3)


def test_gram_schmidt_equals_qr():
    rng = np.random.default_rng(3)
    for d, m in [(1, 4), (5, 20), (10, 12)]:
        W0 = rng.standard_normal((d, m)) * 1e-7
        V, _ = np.linalg.qr(rng.standard_normal((m, m)))
        np.testing.assert_allclose(L.effective_s0(W0, V), L.effective_s0_gram_schmidt(W0, V), rtol=1e-10)
        U, s = L.alignment_transform(W0 @ V[:, :d])
        np.testing.assert_allclose(U.T @ U, np.eye(d), atol=1e-12)
        assert np.all(s >= 0)


def test_iid_init_effective_s0_statistics():
    """For W(0) iid N(0, alpha^2), s_j(0)/alpha is chi-distributed with d - j + 1 degrees of freedom:
    RMS = sqrt(d - j + 1) (Eq. 21) exactly, mean = E chi_k (close to sqrt(k) for large k)."""
    d, m, alpha, draws = 6, 30, 1e-7, 3000
    _, gamma, V = synthetic_gamma([4, 3, 2, 1.5, 1, 0.5], m, seed=0)
    s = np.array([L.effective_s0(L.init_weights(d, m, alpha, seed), V) for seed in range(draws)]) / alpha
    k = d - np.arange(d)                                   # d - j + 1 for j = 1..d
    chi_mean = np.array([math.sqrt(2) * math.exp(math.lgamma((kk + 1) / 2) - math.lgamma(kk / 2)) for kk in k])
    np.testing.assert_allclose(np.sqrt((s**2).mean(axis=0)), np.sqrt(k), rtol=0.04)
    np.testing.assert_allclose(s.mean(axis=0), chi_mean, rtol=0.04)
    np.testing.assert_allclose(s.mean(axis=0), np.sqrt(k), rtol=0.25)   # the paper's "roughly"


def test_top_spectral_W_is_zero_loss_min_norm():
    X, Xp = random_pairs(300, 12, seed=1)
    G = L.gamma_matrix(X, Xp)
    W = L.top_spectral_W(G, 4)
    np.testing.assert_allclose(W @ G @ W.T, np.eye(4), atol=1e-10)
    g, _ = L.eigh_desc(G)
    assert np.linalg.norm(W) ** 2 == pytest.approx((1 / g[:4]).sum(), rel=1e-10)


# ---------------------------------------------------------------------------------------------
# simulation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,m,d", [(200, 40, 5), (12, 40, 4)], ids=["full-rank", "null-space"])
def test_eigenbasis_simulator_equals_reference_step_for_step(n, m, d):
    """Identical Euler steps in both bases: relative difference of W <= 1e-10 at every one of 2,000 steps.
    (The second case has m > 2n, so Gamma has a null space whose columns the fast simulator skips.)"""
    X, Xp = random_pairs(n, m, seed=7)
    G = L.gamma_matrix(X, Xp)
    gamma, V = L.eigh_desc(G)
    W0 = L.init_weights(d, m, 1e-3, seed=2)
    lr, steps = 0.25 / (8 * gamma[0]), 2000
    rec = np.arange(steps + 1)
    ref = L.gd_reference(G, W0, lr, steps, rec, keep_W=True)
    fast = L.gd_eigenbasis(gamma, V, W0, lr, steps, rec, keep_W=True)
    assert ref.loss[-1] < 0.5 * ref.loss[0]        # the run actually learns modes in 2,000 steps
    rel = np.linalg.norm(fast.Ws - ref.Ws, axis=(1, 2)) / np.linalg.norm(ref.Ws, axis=(1, 2))
    assert rel.max() <= 1e-10, rel.max()
    np.testing.assert_allclose(fast.loss, ref.loss, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fast.eigs, ref.eigs, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(fast.W, ref.W, rtol=0, atol=1e-10 * np.abs(ref.W).max())


def test_simulation_matches_theory_on_separated_spectrum():
    """Synthetic Gamma with well separated eigenvalues: every tau_rel_error <= 2%, curves agree."""
    d, m, alpha, lr = 4, 30, 1e-6, 5e-4
    G, gamma, V = synthetic_gamma([4.0, 2.0, 1.0, 0.5], m, seed=4)
    g, Vd = L.eigh_desc(G)
    W0 = L.init_weights(d, m, alpha, seed=5)
    s0 = L.effective_s0(W0, Vd)
    steps = L.auto_steps(g[:d], s0, lr)
    traj = L.gd_eigenbasis(g, Vd, W0, lr, steps, L.record_grid(steps, 1500))
    res = L.compare_with_theory(traj, g[:d], s0)
    assert max(res["tau_rel_error"]) <= 0.02, res["tau_rel_error"]
    assert res["max_abs_eig_error"] <= 0.05
    assert res["separated_steps"] == [True] * d
    np.testing.assert_allclose(res["plateau_loss"], [3, 2, 1], atol=0.1)   # Eq. 20 staircase
    assert res["final_loss"] < 1e-3


def test_euler_lag_explains_large_learning_rate():
    """At lr gamma_1 = 1e-2 the top step comes late by the factor log(1 + 4 lr g)/(4 lr g)."""
    d, m, alpha = 2, 20, 1e-6
    G, gamma, V = synthetic_gamma([5.0, 1.0], m, seed=6)
    g, Vd = L.eigh_desc(G)
    lr = 1e-2 / g[0]
    W0 = L.init_weights(d, m, alpha, seed=1)
    s0 = L.effective_s0(W0, Vd)
    steps = L.auto_steps(g[:d], s0, lr)
    traj = L.gd_eigenbasis(g, Vd, W0, lr, steps, L.record_grid(steps, 3000))
    res = L.compare_with_theory(traj, g[:d], s0)
    factor = L.euler_time_factor(g[:d], lr)
    lag = np.array(res["tau_measured"]) / np.array(res["tau_theory"])
    assert lag[0] - 1 > 0.015                                   # a visible lag (~2 lr gamma_1 = 2%)
    np.testing.assert_allclose(lag, 1 / factor, rtol=2e-3)


def test_run_linear_experiment_errors_name_the_remedy():
    X, Xp = random_pairs(50, 8, seed=0, noise=3.0)   # weakly correlated: few positive eigenvalues
    g, _ = L.eigh_desc(L.gamma_matrix(X, Xp))
    npos = int((g > 0).sum())
    with pytest.raises(ValueError, match="lower d"):
        L.run_linear_experiment(X, Xp, d=npos + 1, alpha=1e-7, lr=1e-4)
    with pytest.raises(ValueError, match="lower lr"):
        L.run_linear_experiment(X, Xp, d=1, alpha=1e-7, lr=1.0 / g[0])


# ---------------------------------------------------------------------------------------------
# Appendix C
# ---------------------------------------------------------------------------------------------


def rk4(gamma, A0, t_end, dt):
    """Independent fixed-step RK4 of dA/dt = (I - A Lambda A^T) A Lambda."""
    d = A0.shape[0]

    def f(A):
        AL = A * gamma
        return (np.eye(d) - AL @ A.T) @ AL

    A = A0.copy()
    for _ in range(int(round(t_end / dt))):
        k1 = f(A)
        k2 = f(A + dt / 2 * k1)
        k3 = f(A + dt / 2 * k2)
        k4 = f(A + dt * k3)
        A = A + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return A


def test_appendix_c_matches_eq47_48():
    summary, arr = L.run_appendix_c(d=3, m=5, scale=1e-9, seed=0, points=600)
    A0, t, A = arr["A0"], arr["t"], arr["A"]
    assert np.all(np.tril(A0, -1) == 0) and np.all(np.diag(A0) > 0)
    assert max(summary["s_max_rel_error"]) <= 0.05                  # s_j within 5% over the whole run
    up = [(j, k) for j in range(3) for k in range(j + 1, 5)]
    lo = min(summary["a_ratio_min"][j][k] for j, k in up)
    hi = max(summary["a_ratio_max"][j][k] for j, k in up)
    assert 0.5 <= lo and hi <= 2.0, (lo, hi)                          # a_jk within a factor 2 of Eq. 48
    np.testing.assert_allclose(summary["final_lambda"], 1.0, atol=1e-3)  # every mode saturated
    assert summary["below_diag_max_abs"] < 1e-3                       # j > k stays ~0
    # the adaptive integrator agrees with a plain RK4 (at a time when modes 1-2 have saturated)
    i = len(t) // 2
    ref = rk4(arr["gamma"], A0, t[i], t[i] / 4000)
    np.testing.assert_allclose(A[i], ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())


# ---------------------------------------------------------------------------------------------
# experiment driver and config
# ---------------------------------------------------------------------------------------------


def test_run_linear_experiment_summary_and_explicit_steps():
    X, Xp = random_pairs(300, 16, seed=2, noise=0.1)
    scales = 2.0 ** -np.arange(16)                     # well separated variances -> separated gammas
    X, Xp = X * scales, Xp * scales
    summary, arr = L.run_linear_experiment(X, Xp, d=3, alpha=1e-6, lr=2e-3, steps=None, record_points=300)
    g, V = L.eigh_desc(L.gamma_matrix(X, Xp))
    np.testing.assert_allclose(summary["gamma"], g[:3])
    np.testing.assert_allclose(summary["s0_effective"], L.effective_s0(L.init_weights(3, 16, 1e-6, 0), V))
    assert summary["steps"] == L.auto_steps(g[:3], summary["s0_effective"], 2e-3, margin=0.1)
    assert summary["n_separated_steps"] == 3 and summary["final_loss"] < 1e-3
    R = len(arr["t"])
    assert arr["eigs"].shape == arr["theory_eigs"].shape == (R, 3) and arr["loss"].shape == (R,)
    short, _ = L.run_linear_experiment(X, Xp, d=3, alpha=1e-6, lr=2e-3, steps=50, record_points=20)
    assert short["steps"] == 50 and short["t_end"] == pytest.approx(0.1)
    assert not short["all_modes_learned"] and np.isnan(short["tau_measured"][-1])


@pytest.mark.parametrize("overlay,key", [({"linear": {"d": 0}}, "linear.d"),
                                         ({"linear": {"lr": 0}}, "linear.lr"),
                                         ({"linear": {"steps": "auto"}}, "linear.steps"),
                                         ({"linear": {"dd": 3}}, "linear.dd"),
                                         ({"appendix_c": {"scale": -1.0}}, "appendix_c.scale")])
def test_linear_config_rejects_bad_values(overlay, key):
    from sslkit import config as cfgmod

    with pytest.raises(cfgmod.ConfigError) as err:
        cfgmod.load_config(overlay)
    assert f"'{key}'" in str(err.value)


def test_linear_config_defaults_and_cifar10_overlay(repo):
    from sslkit import config as cfgmod

    cfg = cfgmod.load_config()
    assert cfg["linear"]["steps"] is None and cfg["linear"]["alpha"] == 1e-7 and cfg["linear"]["lr"] == 5e-5
    paper = cfgmod.load_config(repo / "config" / "cifar10.yaml")
    assert (paper["linear"]["d"], paper["linear"]["alpha"], paper["linear"]["lr"]) == (10, 1e-7, 5e-5)
    assert (paper["pairs"]["n"], paper["pairs"]["crop"]) == (500, 20)
