"""``gd_eigenbasis`` simulates only the eigenmodes that can grow (issue 18): the a-priori bound of
``truncation_bound`` against full simulations, and step times equal to the all-mode run."""
from __future__ import annotations

import numpy as np
import pytest

from sslkit.theory import linear as L


def synthetic(m: int, top, seed: int, rest: float = 0.3):
    """Gamma = V diag(gamma) V^T: the given top eigenvalues, the rest uniform in [-rest, rest]."""
    rng = np.random.default_rng(seed)
    gamma = np.concatenate([np.asarray(top, float), np.sort(rng.uniform(-rest, rest, m - len(top)))[::-1]])
    V, _ = np.linalg.qr(rng.standard_normal((m, m)))
    return gamma, V


def step_times(traj, d):
    return np.array([L.first_crossing(traj.t, traj.eigs[:, j]) for j in range(d)])


def test_dropped_columns_grow_at_most_by_the_per_step_factor():
    """||b_k(s)|| <= ||b_k(0)|| f_k^s in a full run (every column simulated), and the bound is nearly
    attained by the largest positive non-top mode while the last top mode is unlearned."""
    d, m, lr = 3, 30, 2e-3
    gamma, V = synthetic(m, [4.0, 2.0, 1.0], seed=1)
    W0 = L.init_weights(d, m, 1e-4, seed=2)
    steps = L.auto_steps(gamma[:d], L.effective_s0(W0, V), lr)
    rec = L.record_grid(steps, 400)
    full = L.gd_eigenbasis(gamma, V, W0, lr, steps, rec, keep_W=True)
    B = full.Ws @ V                                             # R x d x m, in the eigenbasis
    r = np.linalg.norm(B[:, :, d:], axis=1) / np.linalg.norm(B[0, :, d:], axis=0)   # R x (m - d)
    g = gamma[d:]
    x = 4 * lr * np.abs(g)
    f = 1 + x * np.where(g > 0, 1 + L.SPECTRUM_MARGIN, L.SPECTRUM_MARGIN)
    bound = f[None, :] ** rec[:, None]
    assert np.all(r <= bound * (1 + 1e-12))
    assert r[:, 0].max() / bound[-1, 0] > 0.1                   # not vacuous: top dropped mode grows ~ as bounded
    assert r[:, 0].max() > 1.3                                   # ... and it does grow
    # the premise of the bound held in this run
    assert full.eigs.min() >= -L.SPECTRUM_MARGIN and full.eigs.max() <= 1 + L.SPECTRUM_MARGIN


@pytest.mark.parametrize("tol", [1e-4, 1e-5, 1e-6])
def test_truncated_run_within_bound_of_full_run(tol):
    """Leaving out the columns that ``kept_modes`` drops moves the recorded eigenvalues by at most
    the bound (the feedback included); ||C_D(s) - C_D(0)|| (held columns) is below it too."""
    d, m, lr, alpha = 3, 40, 2e-3, 3e-4
    gamma, V = synthetic(m, [4.0, 2.0, 1.0], seed=3)
    W0 = L.init_weights(d, m, alpha, seed=4)
    steps = L.auto_steps(gamma[:d], L.effective_s0(W0, V), lr)
    rec = L.record_grid(steps, 600)
    keep, bound = L.kept_modes(gamma, W0 @ V, lr, steps, tol)
    assert d <= keep.sum() < m and bound <= tol
    # the same set is dropped inside gd_eigenbasis: it is the fewest top modes with bound <= tol
    assert keep[:keep.sum()].all()
    assert L.truncation_bound(gamma, W0 @ V, lr, steps, np.flatnonzero(~keep)[1:]) <= tol < \
        L.truncation_bound(gamma, W0 @ V, lr, steps, np.concatenate([[keep.sum() - 1], np.flatnonzero(~keep)]))
    full = L.gd_eigenbasis(gamma, V, W0, lr, steps, rec, keep_W=True)
    trunc = L.gd_eigenbasis(gamma, V, W0, lr, steps, rec, tol=tol)
    err = np.abs(trunc.eigs - full.eigs).max()
    B = full.Ws @ V
    CD = np.einsum("rik,k,rjk->rij", B[:, :, ~keep], gamma[~keep], B[:, :, ~keep])
    cd = np.linalg.norm(CD - CD[0], ord=2, axis=(1, 2)).max()   # what the bound bounds, measured
    assert cd <= bound and err <= bound, (cd, err, bound)
    assert err > 1e-3 * bound                                   # the truncation does change the run
    np.testing.assert_allclose(step_times(trunc, d), step_times(full, d), rtol=1e-3 * tol ** 0.5)


def test_cifar_like_default_keeps_few_modes_and_equal_step_times():
    """A spectrum like CIFAR-10's (one large mode, a long positive tail, negative ones): with the default
    tol = 1e-12 a fraction of the m columns is simulated; eigenvalues within 1e-11 and step times
    within 1e-9 of the run with every column."""
    d, m, lr, alpha = 4, 200, 1e-3, 1e-7
    rng = np.random.default_rng(5)
    tail = np.sort(np.concatenate([0.2 * rng.random(120) ** 3, -0.3 * rng.random(m - 124)]))[::-1]
    gamma = np.concatenate([[30.0, 3.0, 1.5, 1.0], tail])
    V, _ = np.linalg.qr(rng.standard_normal((m, m)))
    W0 = L.init_weights(d, m, alpha, seed=6)
    steps = L.auto_steps(gamma[:d], L.effective_s0(W0, V), lr)
    rec = L.record_grid(steps, 1000)
    keep, bound = L.kept_modes(gamma, W0 @ V, lr, steps, 1e-11)
    assert keep.sum() < m // 2 and bound <= 1e-11
    full = L.gd_eigenbasis(gamma, V, W0, lr, steps, rec, tol=None)
    fast = L.gd_eigenbasis(gamma, V, W0, lr, steps, rec)
    np.testing.assert_allclose(fast.eigs, full.eigs, rtol=0, atol=1e-11)
    np.testing.assert_allclose(fast.loss, full.loss, rtol=0, atol=1e-10)
    np.testing.assert_allclose(step_times(fast, d), step_times(full, d), rtol=1e-9)
    assert np.all(np.isfinite(step_times(full, d)))


def test_digits_step_times_equal_the_all_mode_run():
    """Digits pairs (m = 36, the workflow's default dataset), d = 6: same step times to 1e-9."""
    from sslkit.data import load_digits_dataset, make_pairs

    pairs = make_pairs(load_digits_dataset().splits["train"].images, n=500, crop=6, seed=0)
    gamma, V = L.eigh_desc(L.gamma_matrix(pairs["X"], pairs["Xp"]))
    d, lr = 6, 1e-3
    W0 = L.init_weights(d, gamma.size, 1e-7, seed=0)
    steps = L.auto_steps(gamma[:d], L.effective_s0(W0, V), lr)
    rec = L.record_grid(steps, 2000)
    keep, _ = L.kept_modes(gamma, W0 @ V, lr, steps, 1e-11)
    assert keep.sum() < gamma.size
    full = L.gd_eigenbasis(gamma, V, W0, lr, steps, rec, tol=None)
    fast = L.gd_eigenbasis(gamma, V, W0, lr, steps, rec)
    np.testing.assert_allclose(step_times(fast, d), step_times(full, d), rtol=1e-9)
    np.testing.assert_allclose(fast.eigs, full.eigs, rtol=0, atol=1e-11)


def test_spectrum_outside_the_premise_falls_back_to_every_column():
    """At 4 lr gamma_1 = 0.8 the top eigenvalue overshoots 1 + 1e-3: the bound's premise fails and
    gd_eigenbasis reruns with every column, so the result is the all-column run's, bit for bit."""
    d, m = 2, 20
    gamma, V = synthetic(m, [5.0, 1.0], seed=7)
    lr = 0.8 / (4 * gamma[0])
    W0 = L.init_weights(d, m, 1e-3, seed=8)
    steps = 400
    rec = np.arange(steps + 1)
    keep, _ = L.kept_modes(gamma, W0 @ V, lr, steps, 1e-3)
    assert keep.sum() < m                                        # a truncation was possible ...
    full = L.gd_eigenbasis(gamma, V, W0, lr, steps, rec, tol=None)
    assert full.eigs.max() > 1 + L.SPECTRUM_MARGIN               # ... but its premise fails
    fast = L.gd_eigenbasis(gamma, V, W0, lr, steps, rec, tol=1e-3)
    np.testing.assert_array_equal(fast.eigs, full.eigs)
    np.testing.assert_array_equal(fast.W, full.W)
