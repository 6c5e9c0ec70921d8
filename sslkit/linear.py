"""Linear model of Barlow Twins (paper Sec. 3-4; ``theory.md`` §1): exact theory.

Model f(x) = W x with W in R^{d x m}; C = W Gamma W^T with Gamma = (X^T X' + X'^T X) / 2n;
loss L = ||C - I||_F^2; gradient flow dW/dt = -4 (W Gamma W^T - I) W Gamma.

From small init the singular values of W in Gamma's eigenbasis follow (Prop. 4.1)

    s_j(t) = e^{4 g t} / sqrt(s_j(0)^-2 + (e^{8 g t} - 1) g),        g = gamma_j,
    lambda_j(t) = g s_j(t)^2 = 1 / (e^{-8 g t} / (g s_j(0)^2) + 1 - e^{-8 g t}),

and mode j is learned at tau_j = log(1 / (s_j(0)^2 g)) / (8 g) (Eq. 16).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "gamma_matrix",
    "eigh_desc",
    "alignment_transform",
    "effective_s0",
    "effective_s0_gram_schmidt",
    "s_closed_form",
    "lambda_closed_form",
    "step_times",
    "loss_closed_form",
    "loss_staircase",
    "top_spectral_W",
]


def gamma_matrix(X: np.ndarray, Xp: np.ndarray) -> np.ndarray:
    """Gamma = (X^T X' + X'^T X) / 2n for ``X, Xp`` of shape n x m (m x m, symmetric)."""
    X, Xp = np.asarray(X, dtype=np.float64), np.asarray(Xp, dtype=np.float64)
    if X.shape != Xp.shape or X.ndim != 2:
        raise ValueError(f"X and X' must both be n x m, got {X.shape} and {Xp.shape}")
    G = X.T @ Xp
    return (G + G.T) / (2 * X.shape[0])


def eigh_desc(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and unit eigenvectors (columns) of a symmetric matrix."""
    w, V = np.linalg.eigh(S)
    return w[::-1].copy(), V[:, ::-1].copy()


def alignment_transform(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The alignment transform A(M) = Q diag(R) of ``M`` (d x d, or d x k with k <= d).

    QR-factorise ``M = Q R`` with the signs fixed so that diag(R) >= 0. Returns ``(U, s)``:
    ``U = Q`` (orthonormal columns) and ``s = diag(R)``, the effective initial singular values
    (Gram-Schmidt of the columns of M in order, Eq. 19). ``U diag(s)`` is the aligned initial
    condition that reproduces the small-init dynamics of the unaligned ``M``.
    """
    M = np.asarray(M, dtype=np.float64)
    Q, R = np.linalg.qr(M)
    signs = np.sign(np.diag(R))
    signs[signs == 0] = 1.0
    return Q * signs, np.abs(np.diag(R))


def effective_s0(W0: np.ndarray, V: np.ndarray) -> np.ndarray:
    """Effective s_j(0) of an arbitrary init ``W0`` (d x m): diag of R in QR(W0 [v_1..v_d])."""
    d = W0.shape[0]
    return alignment_transform(W0 @ V[:, :d])[1]


def effective_s0_gram_schmidt(W0: np.ndarray, V: np.ndarray) -> np.ndarray:
    """Eq. 19 literally: Gram-Schmidt of u_j = W0 v_j in order; s_j(0) = ||u_j_perp||."""
    d = W0.shape[0]
    perps: list[np.ndarray] = []
    s = np.empty(d)
    for j in range(d):
        u = W0 @ V[:, j]
        for p in perps:
            u = u - (p @ u) / (p @ p) * p
        perps.append(u)
        s[j] = np.linalg.norm(u)
    return s


def _as_grid(gamma, s0, t):
    gamma = np.asarray(gamma, dtype=np.float64)
    s0 = np.broadcast_to(np.asarray(s0, dtype=np.float64), gamma.shape)
    t = np.asarray(t, dtype=np.float64)
    return gamma[None, :], s0[None, :], t.reshape(-1, 1)


def lambda_closed_form(gamma, s0, t) -> np.ndarray:
    """lambda_j(t) = gamma_j s_j(t)^2 on a grid: returns ``len(t) x len(gamma)``.

    Evaluated in log space so that it neither overflows for large t nor underflows for s_j(0)
    down to 1e-12 and below; exact for gamma_j < 0 too (decays to 0) and gamma_j = 0 (frozen).
    """
    g, s, t = _as_grid(gamma, s0, t)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        # s_j(t)^2 = 1 / (e^{-8 g t} / s0^2 + (1 - e^{-8 g t}) g)
        a = -8.0 * g * t
        expm = np.exp(a)                       # e^{-8 g t}; may overflow only for g < 0
        one_minus = -np.expm1(a)               # 1 - e^{-8 g t}, accurate for small g t
        denom = expm / s**2 + one_minus * g
        s2 = 1.0 / denom
        s2 = np.where(g == 0, s**2, s2)
        s2 = np.where(np.isinf(expm), 0.0, s2)  # g < 0, long times: s_j -> 0
    return g * s2


def s_closed_form(gamma, s0, t) -> np.ndarray:
    """s_j(t) (Prop. 4.1) on a grid, ``len(t) x len(gamma)``; s_j(t) -> gamma_j^{-1/2}."""
    g, s, t = _as_grid(gamma, s0, t)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        a = -8.0 * g * t
        expm = np.exp(a)
        s2 = 1.0 / (expm / s**2 - np.expm1(a) * g)
        s2 = np.where(g == 0, s**2, s2)
        s2 = np.where(np.isinf(expm), 0.0, s2)
    return np.sqrt(s2)


def step_times(gamma, s0) -> np.ndarray:
    """tau_j = log(1 / (s_j(0)^2 gamma_j)) / (8 gamma_j) (Eq. 16); inf where gamma_j <= 0."""
    gamma = np.asarray(gamma, dtype=np.float64)
    s0 = np.broadcast_to(np.asarray(s0, dtype=np.float64), gamma.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = np.log(1.0 / (s0**2 * gamma)) / (8.0 * gamma)
    return np.where(gamma > 0, tau, np.inf)


def loss_closed_form(gamma, s0, t) -> np.ndarray:
    """Loss of the aligned solution, sum_j (1 - lambda_j(t))^2, for each t."""
    return ((1.0 - lambda_closed_form(gamma, s0, t)) ** 2).sum(axis=1)


def loss_staircase(tau, t) -> np.ndarray:
    """Eq. 20: L(t) ~ number of modes not yet learned (tau_j > t)."""
    tau = np.asarray(tau, dtype=np.float64)
    return (tau[None, :] > np.asarray(t, dtype=np.float64).reshape(-1, 1)).sum(axis=1).astype(float)


def top_spectral_W(Gamma: np.ndarray, d: int, U: np.ndarray | None = None) -> np.ndarray:
    """Definition 4.2: W = U diag(gamma_j^{-1/2}) [v_1..v_d]^T, the min-norm zero-loss solution.

    Requires the top d eigenvalues of Gamma to be positive.
    """
    g, V = eigh_desc(Gamma)
    if g[d - 1] <= 0:
        raise ValueError(f"Gamma has only {(g > 0).sum()} positive eigenvalues; cannot embed d = {d}")
    W = (V[:, :d] / np.sqrt(g[:d])).T
    return W if U is None else U @ W
