"""Exact aligned-init dynamics of the modewise losses (sslkit.theory.landscapes) against real gradient
descent on the linear model, against an adaptive ODE integration of the matrix flow, and against the
Appendix G loss of the ResNet runs (sslkit.training.speedup_variants)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from sslkit.theory import landscapes as ls
from sslkit.theory.linear import eigh_desc, first_crossing, gamma_matrix, init_weights, step_times


def small_gamma(m: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A symmetric indefinite Gamma (like the linear model's) with its descending eigenpairs."""
    A = np.random.default_rng(seed).standard_normal((m, m))
    G = (A + A.T) / 2
    g, V = eigh_desc(G)
    return G, g, V


def aligned(V: np.ndarray, s0: np.ndarray) -> np.ndarray:
    """W(0) = diag(s0) [v_1..v_d]^T (aligned, U = I)."""
    return (V[:, : s0.size] * s0).T


def s_tilde_of(traj: ls.SpectralTrajectory, g: np.ndarray) -> np.ndarray:
    d = traj.coef.shape[1]
    return np.stack([np.diagonal(c) for c in traj.coef]) * np.sqrt(np.abs(g[:d]))


def test_sharpened_gd_equals_exact_discrete_map_and_rescaled_flow():
    """Real GD of ||g_sqrt(C) - I||_F^2 on the full W (original basis, eigh of C every step) against
    (a) the exact solution of the GD map and (b) the exact flow at the Euler-rescaled time: 1e-6 relative
    is the acceptance bound, float64 rounding gives ~1e-13."""
    G, g, V = small_gamma()
    s0 = np.array([1e-4, 3e-6, 2e-3])
    lr, steps = 2e-3, 4000
    traj = ls.gd_spectral(G, aligned(V, s0), lr, steps, "sharpened", record=np.arange(0, steps + 1, 100))
    S = s_tilde_of(traj, g)
    exact_map = ls.sharpened_discrete_s_tilde(g[:3], s0, lr, traj.step)
    assert np.abs(S / exact_map - 1).max() < 1e-6
    assert np.abs(S / exact_map - 1).max() < 1e-10
    fac = ls.sharpened_euler_time_factor(g[:3], lr)
    flow = np.stack([ls.sharpened_s_tilde(g[j], s0[j], traj.t * fac[j])[:, 0] for j in range(3)], axis=1)
    assert np.abs(S / flow - 1).max() < 1e-10
    # the eigenvalues of C are lambda_j = s~_j^2 (all modes have gamma_j > 0 here)
    assert np.abs(-np.sort(-S**2, axis=1) - traj.eigs).max() < 1e-12


def test_sharpened_flow_is_the_small_lr_limit_of_gd():
    """Without the time rescaling the flow differs from GD by O(lr): halving lr halves the error."""
    G, g, V = small_gamma()
    s0 = np.array([1e-5, 1e-5, 1e-5])
    errs = []
    for lr in (4e-3, 2e-3):
        steps = int(round(1.0 / lr))
        traj = ls.gd_spectral(G, aligned(V, s0), lr, steps, "sharpened", record=[steps])
        flow = ls.sharpened_s_tilde(g[:3], s0, traj.t)
        errs.append(np.abs(s_tilde_of(traj, g) - flow).max())
    assert 1.9 < errs[0] / errs[1] < 2.1
    assert errs[1] < 2 * 2e-3 * g[0] ** 2


@pytest.mark.parametrize("loss", ls.LOSSES)
def test_closed_forms_match_adaptive_integration_of_the_matrix_flow(loss):
    """dW/dt = -2 Q f'(Lambda) Q^T W Gamma integrated by DOP853 (rtol 1e-12), aligned init with one negative
    s_j(0) (symmetry breaking: flows to s~ = -1), against each loss's exact/implicit solution."""
    G, g, V = small_gamma()
    d, m = 3, G.shape[0]
    s0 = np.array([1e-3, 2e-3, -1e-3])
    t = np.linspace(0.0, 4.0, 9)

    def rhs(_, y):
        W = y.reshape(d, m)
        WG = W @ G
        lam, Q = np.linalg.eigh(WG @ W.T)
        return (-2.0 * (Q * ls.eigen_loss_grad(loss, lam)) @ Q.T @ WG).ravel()

    sol = solve_ivp(rhs, (0.0, t[-1]), aligned(V, s0).ravel(), method="DOP853", t_eval=t, rtol=1e-12, atol=1e-20)
    assert sol.success
    S = np.stack([np.diagonal(y.reshape(d, m) @ V[:, :d]) for y in sol.y.T]) * np.sqrt(g[:d])
    theory = ls.s_tilde_closed_form(loss, g[:d], s0, t)
    assert np.abs(S - theory).max() < 1e-9
    assert np.all(np.sign(theory[-1]) == np.sign(s0))


def test_sharpened_negative_and_zero_modes():
    """gamma < 0: |s~| = (1 + u0) e^{-2|gamma| t} - 1 reaches 0 at log(1 + u0) / (2|gamma|) and stays;
    s(0) = 0 is a fixed point (sign(0) = 0); gamma = 0: lambda stays 0. Checked against the ODE on s directly."""
    gam, u0 = -0.7, 0.3
    t_zero = np.log(1 + u0) / (2 * abs(gam))
    s0 = u0 / np.sqrt(abs(gam))
    t = np.array([0.0, 0.5 * t_zero, t_zero, 3 * t_zero])
    st = ls.sharpened_s_tilde([gam], [s0], t)[:, 0]
    # ds/dt = -d/ds (1 + |gamma|^{1/2} |s|)^2 = -2 |gamma|^{1/2} (1 + |gamma|^{1/2} s) for s > 0
    sol = solve_ivp(lambda _, s: -2 * np.sqrt(abs(gam)) * (1 + np.sqrt(abs(gam)) * s), (0, 0.5 * t_zero), [s0],
                    rtol=1e-12, atol=1e-15)
    assert abs(st[1] - np.sqrt(abs(gam)) * sol.y[0, -1]) < 1e-10
    assert abs(st[2]) < 1e-15 and st[3] == 0.0
    assert np.all(ls.sharpened_lambda([gam], [s0], t) <= 0)
    assert np.all(ls.sharpened_s_tilde([1.0], [0.0], t) == 0.0)
    assert np.all(ls.sharpened_lambda([0.0], [0.5], t) == 0.0)
    assert ls.eigen_loss_grad("sharpened", [0.0])[0] == 0.0
    assert np.all(np.isinf(ls.sharpened_step_times([-1.0, 0.0, 1.0], [1e-3, 1e-3, 0.0])))


def test_sharpened_step_time_and_speedup():
    """lambda(t_level) = level exactly; for small init the time tends to log(1/(1 - 2^-1/2)) / (2 gamma),
    independent of s(0), while Eq. 16's tau grows like log(1/lambda(0)); ratio ~ log(1/lambda0) / 4.91."""
    g = np.array([2.0, 0.5, 0.1])
    s0 = np.array([1e-6, 1e-7, 1e-8])
    for level in (0.25, 0.5, 0.9):
        tl = ls.sharpened_step_times(g, s0, level)
        lam = np.array([ls.sharpened_lambda(g[j], s0[j], tl[j])[0, 0] for j in range(3)])
        assert np.allclose(lam, level, rtol=1e-12)
    t_half = ls.sharpened_step_times(g, s0)
    limit = np.log(1 / (1 - 2**-0.5)) / (2 * g)
    assert np.allclose(t_half, limit, rtol=1e-5)
    pred = ls.predicted_speedup(g, s0)
    lam0 = g * s0**2
    assert np.allclose(pred["speedup"], np.log(1 / lam0 - 1) / (4 * np.log(1 / (1 - 2**-0.5))), rtol=1e-5)
    assert np.allclose(pred["t_original"], step_times(g, s0), rtol=1e-9)  # Eq. 16 is exact at level 1/2 to O(lambda0)


def test_quartic_and_supervised_solutions():
    g = np.array([1.5, 0.2])
    s0 = np.array([1e-4, 1e-3])
    t = np.array([0.0, 1.0, 10.0, 1e3, 1e6])
    x = ls.quartic_lambda(g, s0, t)
    # the implicit equation, evaluated independently in x
    F = lambda v: np.log(v / (1 - v)) + 1 / (1 - v) + 1 / (2 * (1 - v) ** 2)  # noqa: E731
    lhs = F(x)
    rhs = F(g * s0**2) + 16 * g * t[:, None]
    assert np.allclose(lhs, rhs, rtol=1e-10, atol=1e-9)
    # late times: 1 - x ~ (32 gamma t)^{-1/2}
    assert np.allclose((1 - x[-1]) * np.sqrt(32 * g * 1e6), 1, rtol=1e-3)
    # supervised: closed form equals the GD map in the limit; the GD map itself against gd_supervised
    G, gam, V = small_gamma(6, seed=3)
    y = V[:, :3].sum(axis=1) * 1.0
    w0 = 1e-3 * V[:, 0]
    lr, steps = 1e-3, 3000
    rec, W = ls.gd_supervised(G, y, w0, lr, steps, record=[0, 1000, 3000])
    c_tilde = (W @ V[:, :3]) * gam[:3]
    exact = ls.supervised_discrete_c_tilde(gam[:3], V[:, :3].T @ w0, lr, rec)
    assert np.abs(c_tilde - exact).max() < 1e-12
    flow = ls.supervised_c_tilde(gam[:3], V[:, :3].T @ w0, lr * rec)
    # (1 - a)^n vs e^{-n a}, a = 2 gamma^2 lr: differ by at most ~ a / (2e) times |c~(0) - c~*| <= 1
    assert 0 < np.abs(c_tilde - flow).max() < lr * gam[0] ** 2 / np.e


def test_landscapes_match_the_resnet_spectral_loss():
    """The modewise landscapes are the Appendix G losses the ResNet runs use, evaluated on C = diag(s~^2)."""
    torch = pytest.importorskip("torch")
    from sslkit.training.speedup_variants import modewise_loss

    s = np.array([0.0, 0.05, 0.4, 0.9, 1.0, 1.3, 2.0])
    C = torch.diag(torch.tensor(s**2, dtype=torch.float64))
    for name, kw in {"original": {}, "sharpened": {"transform": "sqrt"}, "quartic": {"power": 4},
                     "smoothed": {"transform": "smooth", "cfg": {"smooth_eps": 0.1}}}.items():
        ref = float(modewise_loss(C, **kw))
        assert abs(ls.modewise_loss(name, s).sum() - ref) < 1e-12 * max(1.0, ref), name
    # the paper's Fig. 9C form (1 - min(s~^2, 0.9 + 0.1 s~^2))^2
    assert np.allclose(ls.modewise_loss("smoothed", s), (1 - np.minimum(s**2, 0.9 + 0.1 * s**2)) ** 2)
    # symmetric landscapes, minima at |s~| = 1; the supervised one has a single minimum at c~*
    for name in ls.LOSSES:
        assert np.allclose(ls.modewise_loss(name, -s), ls.modewise_loss(name, s))
        assert ls.modewise_loss(name, 1.0) == 0.0
    assert ls.supervised_modewise_loss(1.0) == 0.0 and ls.supervised_modewise_loss(-1.0) == 4.0


def test_sharpened_generic_init_follows_the_aligned_prediction():
    """From an iid N(0, alpha^2) W(0) (not aligned) the time for the k-th eigenvalue of C to reach 1/2
    under the sharpened loss matches the aligned formula with the same s_j(0) (Gram-Schmidt): within 1%."""
    rng = np.random.default_rng(1)
    n, m, d = 200, 10, 3
    base = rng.standard_normal((n, m)) * (0.7 ** np.arange(m))
    X, Xp = base + 0.2 * rng.standard_normal((n, m)), base + 0.2 * rng.standard_normal((n, m))
    G = gamma_matrix(X, Xp)
    g, V = eigh_desc(G)
    W0 = init_weights(d, m, 1e-6, seed=0)
    lr = 1e-3
    t_pred = ls.sharpened_step_times(g[:d], np.full(d, 1e-6))
    steps = int(1.3 * t_pred.max() / lr)
    traj = ls.gd_spectral(G, W0, lr, steps, "sharpened", record=np.arange(steps + 1))
    meas = np.array([first_crossing(traj.t, traj.eigs[:, j]) for j in range(d)])
    assert np.allclose(meas, t_pred, rtol=1e-2)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="unknown modewise loss 'cubic'"):
        ls.modewise_loss("cubic", 0.5)
    with pytest.raises(ValueError, match="overshoots the sharpened minimum"):
        ls.sharpened_euler_time_factor([10.0], 0.1)
    with pytest.raises(ValueError, match="level must lie in"):
        ls.sharpened_step_times([1.0], [1e-3], level=1.5)
    with pytest.raises(ValueError, match="0 < lambda_j"):
        ls.quartic_lambda([1.0], [2.0], [0.0])
    G, g, V = small_gamma()
    with pytest.raises(ValueError, match="diverged"):
        ls.gd_spectral(G, aligned(V, np.array([1.0])), 2.0, 50, "original")
    with pytest.raises(ValueError, match="too large for the supervised map"):
        ls.gd_supervised(G, np.ones(8), np.zeros(8), 10.0, 5)
