"""Kernelised theory (sslkit.theory.kernel) against the explicit linear model, and subspace alignment."""
from __future__ import annotations

import numpy as np
import pytest

from sslkit.theory import kernel as kn
from sslkit.theory.linear import effective_s0, eigh_desc, gamma_matrix, lambda_closed_form, top_spectral_W


def correlated_pairs(n: int, m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positive pairs sharing a low-rank signal with a decaying spectrum, plus view noise."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, m)) * (0.8 ** np.arange(m))
    return base + 0.3 * rng.standard_normal((n, m)), base + 0.3 * rng.standard_normal((n, m))


def linear_kernel(X, Xp):
    Z = np.concatenate([X, Xp])
    return Z @ Z.T, Z


@pytest.mark.parametrize("n,m", [(40, 12), (15, 45)])  # K singular (m < 2n) and full rank (m > 2n)
def test_kgamma_eigenvalues_equal_gamma(n, m):
    X, Xp = correlated_pairs(n, m)
    K, _ = linear_kernel(X, Xp)
    spec = kn.kernel_gamma(K)
    g_lin = eigh_desc(gamma_matrix(X, Xp))[0]
    # nonzero spectra agree: pad the shorter one with zeros, compare sorted lists
    size = max(2 * n, m)
    a = np.sort(np.concatenate([spec.gamma, np.zeros(size - 2 * n)]))
    b = np.sort(np.concatenate([g_lin, np.zeros(size - m)]))
    scale = np.abs(b).max()
    assert np.abs(a - b).max() <= 1e-8 * scale
    big = np.abs(b) > 1e-3 * scale  # every eigenvalue not tiny: 1e-8 relative individually
    assert np.all(np.abs(a - b)[big] <= 1e-8 * np.abs(b)[big])
    assert spec.rank == min(2 * n, m)
    # the stable form equals the literal definition K^{-1/2} Z K^{-1/2}
    literal = spec.K_inv_half @ kn.z_matrix(K) @ spec.K_inv_half
    assert np.abs(literal - spec.K_gamma).max() <= 1e-8 * scale


def test_z_matrix_and_swap():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((8, 8))
    K = A @ A.T
    P = kn.swap_matrix(4)
    assert np.allclose(P @ P, np.eye(8)) and np.allclose(P, P.T)
    assert np.allclose(kn.z_matrix(K), K @ P @ K / 8, atol=1e-12)


def test_eq49_equals_top_spectral_linear_embeddings():
    n, m, d = 40, 12, 5
    X, Xp = correlated_pairs(n, m, seed=2)
    K, Z = linear_kernel(X, Xp)
    spec = kn.kernel_gamma(K)
    f_th = kn.predicted_embeddings(spec, d)                 # d x 2n
    f_lin = top_spectral_W(gamma_matrix(X, Xp), d) @ Z.T     # d x 2n
    a = kn.alignment(kn.right_singular_subspace(f_th), kn.right_singular_subspace(f_lin))
    assert abs(a - 1.0) <= 1e-8
    # stronger: equal up to a rotation U means equal Gram matrices F^T F
    assert np.abs(f_th.T @ f_th - f_lin.T @ f_lin).max() <= 1e-8 * np.abs(f_lin.T @ f_lin).max()
    # zero loss: C = F P F^T / 2n = I
    C = f_th @ kn.swap_matrix(n) @ f_th.T / (2 * n)
    assert np.allclose(C, np.eye(d), atol=1e-8)


def test_eq24_new_points_match_linear_model():
    n, m, d = 40, 12, 4
    X, Xp = correlated_pairs(n, m, seed=3)
    K, Z = linear_kernel(X, Xp)
    spec = kn.kernel_gamma(K)
    W = top_spectral_W(gamma_matrix(X, Xp), d)
    new = np.random.default_rng(4).standard_normal((7, m))
    f_new = kn.predict_embeddings_at(spec, d, Z @ new.T)     # d x 7
    # the same rotation maps kernel to linear embeddings on training AND new points
    both_k = np.concatenate([kn.predicted_embeddings(spec, d), f_new], axis=1)
    both_l = np.concatenate([W @ Z.T, W @ new.T], axis=1)
    assert np.abs(both_k.T @ both_k - both_l.T @ both_l).max() <= 1e-8 * np.abs(both_l.T @ both_l).max()
    # on training points Eq. 24 reduces to Eq. 49
    assert np.allclose(kn.predict_embeddings_at(spec, d, K), kn.predicted_embeddings(spec, d), atol=1e-9)


def test_kernel_dynamics_match_linear_init():
    """Eq. 42 recovers the linear model's effective s_j(0) (Eq. 19) from embeddings alone."""
    n, m, d = 40, 12, 4
    X, Xp = correlated_pairs(n, m, seed=5)
    K, Z = linear_kernel(X, Xp)
    spec = kn.kernel_gamma(K)
    W0 = 1e-6 * np.random.default_rng(6).standard_normal((d, m))
    g_lin, V = eigh_desc(gamma_matrix(X, Xp))
    t = np.logspace(-3, 1, 30)
    dyn = kn.kernel_dynamics(spec, W0 @ Z.T, t)
    assert np.allclose(dyn.s0, effective_s0(W0, V), rtol=1e-8)
    assert np.allclose(dyn.gamma, g_lin[:d], rtol=1e-10)
    assert np.allclose(dyn.lam, lambda_closed_form(g_lin[:d], effective_s0(W0, V), t), rtol=1e-7)
    assert np.allclose(dyn.U @ dyn.U.T, np.eye(d), atol=1e-12)
    # the predicted embeddings have C with eigenvalues lambda_j(t)
    F = dyn.embeddings(spec, len(t) - 1)
    C = F @ kn.swap_matrix(n) @ F.T / (2 * n)
    assert np.allclose(np.sort(np.linalg.eigvalsh(C))[::-1], dyn.lam[-1], atol=1e-8)
    assert np.all(np.diff(dyn.tau) > 0)  # distinct gammas -> ordered steps


def test_kernel_dynamics_match_gradient_descent():
    """Predicted lambda_j(t) follow small-init gradient descent of a random-feature model."""
    n, m, d, lr = 30, 8, 3, 2e-3
    X, Xp = correlated_pairs(n, m, seed=7)
    K, Z = linear_kernel(X, Xp)
    spec = kn.kernel_gamma(K)
    G = gamma_matrix(X, Xp)
    W = 1e-5 * np.random.default_rng(8).standard_normal((d, m))
    dyn = kn.kernel_dynamics(spec, W @ Z.T, lr * np.arange(1, 1 + 4000))
    for k in range(4000):
        W = W - lr * 4 * (W @ G @ W.T - np.eye(d)) @ W @ G
        if k in (999, 1999, 3999):
            lam = np.sort(np.linalg.eigvalsh(W @ G @ W.T))[::-1]
            assert np.allclose(lam, dyn.lam[k], atol=0.03), (k, lam, dyn.lam[k])


def test_alignment_identical_orthogonal_random():
    rng = np.random.default_rng(0)
    N, d = 100, 5
    Q = np.linalg.qr(rng.standard_normal((N, 2 * d)))[0].T
    P1, P2 = Q[:d], Q[d:]
    assert kn.alignment(P1, P1) == pytest.approx(1.0, abs=1e-12)
    # same subspace, different basis
    R = np.linalg.qr(rng.standard_normal((d, d)))[0]
    assert kn.alignment(P1, R @ P1) == pytest.approx(1.0, abs=1e-12)
    assert kn.alignment(P1, P2) == pytest.approx(0.0, abs=1e-12)
    mean, std = kn.random_alignment_empirical(d, N, trials=300, seed=1)
    assert kn.random_alignment(d, N) == d / N
    assert abs(mean - d / N) <= 0.1 * d / N
    assert 0 < std < d / N
    # a fixed P against random Q has the same expectation
    mean_fixed, _ = kn.random_alignment_empirical(d, N, trials=300, seed=2, P=P1)
    assert abs(mean_fixed - d / N) <= 0.1 * d / N


def test_subspace_helpers():
    rng = np.random.default_rng(3)
    F = rng.standard_normal((4, 50))
    P = kn.right_singular_subspace(F)
    assert P.shape == (4, 50) and np.allclose(P @ P.T, np.eye(4), atol=1e-12)
    assert np.allclose(F @ P.T @ P, F, atol=1e-10)  # rows of F lie in the subspace
    A = rng.standard_normal((20, 20))
    K = A @ A.T
    Pk = kn.top_eigvec_subspace(K, 3)
    w = np.linalg.eigvalsh(K)[::-1]
    assert np.allclose(np.diag(Pk @ K @ Pk.T), w[:3])


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="square"):
        kn.kernel_gamma(np.ones((4, 6)))
    with pytest.raises(ValueError, match="even"):
        kn.kernel_gamma(np.eye(5))
    with pytest.raises(ValueError, match="symmetric"):
        kn.kernel_gamma(np.triu(np.ones((4, 4))))
    with pytest.raises(ValueError, match="rank"):
        kn.right_singular_subspace(np.outer(np.ones(3), np.arange(10.0)))
    with pytest.raises(ValueError, match="orthonormal"):
        kn.alignment(np.ones((2, 5)), np.ones((2, 5)))
    X, Xp = correlated_pairs(10, 3)
    spec = kn.kernel_gamma(linear_kernel(X, Xp)[0])
    with pytest.raises(ValueError, match="positive eigenvalues"):
        kn.predicted_embeddings(spec, 6)  # rank 3: cannot embed 6 dimensions
