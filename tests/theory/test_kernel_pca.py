"""Kernel PCA as a special case of the kernelised theory (paper Sec. 5): with X = X' the stacked kernel is
K = [[K_x, K_x], [K_x, K_x]], P K^{1/2} = K^{1/2}, so K_Gamma = K / 2n: its eigenvectors are K's and the final
embeddings are (uncentred) kernel-PCA projections."""
from __future__ import annotations

import numpy as np

from sslkit.theory import kernel as kn
from sslkit.theory.linear import eigh_desc, gamma_matrix, top_spectral_W


def rbf(A: np.ndarray, B: np.ndarray, width: float = 2.0) -> np.ndarray:
    d2 = ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * width**2))


def test_kgamma_is_k_over_2n_for_identical_views():
    rng = np.random.default_rng(0)
    n, d = 30, 5
    X = rng.standard_normal((n, 4)) * np.array([2.0, 1.0, 0.5, 0.25])
    Z = np.concatenate([X, X])
    K = rbf(Z, Z)
    spec = kn.kernel_gamma(K)
    assert np.abs(spec.K_gamma - K / (2 * n)).max() < 1e-10 * np.abs(K).max() / (2 * n)
    # eigenvalues: those of K_x / n (each eigenvalue mu of K_x appears as 2 mu in K)
    mu, U = eigh_desc(rbf(X, X))
    assert np.allclose(spec.gamma[:n], mu / n, rtol=1e-9, atol=1e-12)
    # eigenvectors b_j = [u_j; u_j] / sqrt(2): the top-d subspaces of K_Gamma and K coincide
    Bd = spec.top(d)[1]
    ref = np.concatenate([U[:, :d], U[:, :d]]) / np.sqrt(2)
    assert np.allclose(np.abs((Bd * ref).sum(0)), 1.0, atol=1e-9)
    assert abs(kn.alignment(Bd.T, kn.top_eigvec_subspace(K, d)) - 1.0) < 1e-9
    # Eq. 24 at new points = sqrt(n / mu_j) x the kernel-PCA projection u_j . k_x(x) / sqrt(mu_j)
    Xnew = rng.standard_normal((7, 4))
    kx = rbf(X, Xnew)
    f = kn.predict_embeddings_at(spec, d, np.concatenate([kx, kx]))
    kpca = (U[:, :d].T @ kx) / np.sqrt(mu[:d])[:, None]
    expected = np.sqrt(n / mu[:d])[:, None] * kpca
    assert np.allclose(np.abs(f), np.abs(expected), rtol=1e-7, atol=1e-10)
    signs = np.sign((f * expected).sum(1))
    assert np.allclose(f, signs[:, None] * expected, rtol=1e-7, atol=1e-10)


def test_linear_kernel_with_identical_views_is_pca_of_the_features():
    """Explicit features: Gamma = X^T X / n (uncentred second moment), and the top-spectral linear model's
    embeddings are the PCA projections v_j . x scaled by gamma_j^{-1/2}; the kernel route agrees."""
    rng = np.random.default_rng(1)
    n, m, d = 25, 6, 3
    X = rng.standard_normal((n, m)) * (0.6 ** np.arange(m))
    G = gamma_matrix(X, X)
    assert np.allclose(G, X.T @ X / n, atol=1e-14)
    g, V = eigh_desc(X.T @ X / n)                       # PCA of the (uncentred) features
    W = top_spectral_W(G, d)
    Z = np.concatenate([X, X])
    spec = kn.kernel_gamma(Z @ Z.T)
    Xnew = rng.standard_normal((4, m))
    f_kernel = kn.predict_embeddings_at(spec, d, Z @ Xnew.T)
    f_pca = (V[:, :d].T @ Xnew.T) / np.sqrt(g[:d])[:, None]
    assert np.allclose(np.abs(W @ Xnew.T), np.abs(f_pca), rtol=1e-9)
    assert np.allclose(np.abs(f_kernel), np.abs(f_pca), rtol=1e-7, atol=1e-10)
