"""Kernelised Barlow Twins theory (paper Sec. 5, App. B; ``docs/theory.md`` §6, §7) and subspace alignment.

Conventions. The 2n training points are the two views stacked as ``[X; X']``: index ``i < n`` is
``x_i`` and index ``n + i`` is its positive partner ``x'_i``. ``K`` is the 2n x 2n kernel matrix
over those points, ``P`` swaps the two views. Embeddings of the 2n points are stored as a
``d x 2n`` matrix ``F`` (column ``i`` is f of point ``i``), so that C = F P F^T / 2n.

Theory (all matrices are 2n x 2n unless stated):

    Z       = (1/2n) K P K
    K_Gamma = K^{-1/2} Z K^{-1/2}          (pseudo-inverse square root where K is singular)
            = (1/2n) R P R,   R = Pi K^{1/2},  Pi = projector on the kept eigenvectors of K
    (gamma_j, b_j)   eigenpairs of K_Gamma, descending; nonzero gamma_j are the eigenvalues of
                     Gamma = (1/2n) sum_i [phi(x_i) phi(x'_i)^T + phi(x'_i) phi(x_i)^T] (Prop. 5.1a)
    f(x)    = U S [b_1..b_d]^T K^{-1/2} k(x),  S = diag(gamma_j^{-1/2})      (Eq. 24)
    f_th    = S [b_1..b_d]^T K^{1/2}        on the 2n training points          (Eq. 49)
    f(x, t) = U S(t) [b_1..b_d]^T K^{-1/2} k(x),  U S(0) = A(F(0) K^{-1/2} [b_1..b_d])  (Eq. 40-42)

with s_j(t) and lambda_j(t) = gamma_j s_j(t)^2 from ``sslkit.theory.linear`` (Prop. 4.1) and ``A`` the
alignment transform. The second form of K_Gamma is algebraically identical to the first
(K^{+1/2} K = Pi K^{1/2}) and is how it is computed: it never multiplies by the inverse square
root of small eigenvalues, so it is accurate even when K is nearly singular.

Subspaces are ``d x N`` matrices with orthonormal rows; the alignment of two of them is
a(P, P') = (1/d) ||P P'^T||_F^2 (1 for equal subspaces, d/N in expectation for random ones).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sslkit.theory.linear import alignment_transform, eigh_desc, lambda_closed_form, s_closed_form, step_times

__all__ = [
    "DEFAULT_RTOL",
    "KernelSpectrum",
    "swap_matrix",
    "z_matrix",
    "psd_sqrt",
    "kernel_gamma",
    "predicted_embeddings",
    "predict_embeddings_at",
    "initial_alignment",
    "KernelDynamics",
    "kernel_dynamics",
    "right_singular_subspace",
    "top_eigvec_subspace",
    "alignment",
    "random_alignment",
    "random_alignment_empirical",
    "random_subspace",
]

#: default relative tolerance of the pseudo-inverse: eigenvalues of K below rtol * max eigenvalue
#: are treated as zero (K from float32 Jacobians is accurate to ~1e-7 relative; see ``psd_sqrt``)
DEFAULT_RTOL = 1e-10


# --------------------------------------------------------------------------------------------
# kernel matrices
# --------------------------------------------------------------------------------------------

def _check_kernel(K: np.ndarray) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"kernel matrix must be square (2n x 2n), got shape {K.shape}")
    if K.shape[0] % 2:
        raise ValueError(f"kernel matrix must cover the 2n points [X; X'] (even size), got {K.shape[0]}")
    if not np.all(np.isfinite(K)):
        raise ValueError("kernel matrix has non-finite entries")
    asym = np.abs(K - K.T).max()
    if asym > 1e-6 * max(np.abs(K).max(), np.finfo(float).tiny):
        raise ValueError(f"kernel matrix is not symmetric (max |K - K^T| = {asym:.3g})")
    return (K + K.T) / 2


def swap_matrix(n: int) -> np.ndarray:
    """P = [[0, I_n], [I_n, 0]] (2n x 2n): swaps the two views of the stacked points."""
    P = np.zeros((2 * n, 2 * n))
    idx = np.arange(n)
    P[idx, n + idx] = 1.0
    P[n + idx, idx] = 1.0
    return P


def _swap_rows(A: np.ndarray) -> np.ndarray:
    """P @ A without forming P (A has 2n rows)."""
    n = A.shape[0] // 2
    return np.concatenate([A[n:], A[:n]], axis=0)


def z_matrix(K: np.ndarray) -> np.ndarray:
    """Z = (1/2n) K P K for a 2n x 2n kernel matrix over ``[X; X']`` (2n x 2n, symmetric)."""
    K = _check_kernel(K)
    Z = K @ _swap_rows(K) / K.shape[0]
    return (Z + Z.T) / 2


def psd_sqrt(K: np.ndarray, rtol: float = DEFAULT_RTOL) -> tuple[np.ndarray, np.ndarray, int]:
    """Square root and pseudo-inverse square root of a symmetric PSD matrix.

    Eigenvalues ``w <= rtol * max(w)`` (including the small negative ones that round-off gives a
    PSD matrix) are treated as exact zeros. Returns ``(K^{1/2}, K^{+1/2}, rank)``, both N x N.
    """
    if not rtol >= 0:
        raise ValueError(f"rtol must be >= 0, got {rtol}")
    w, V = eigh_desc(np.asarray(K, dtype=np.float64))
    if w[0] <= 0:
        raise ValueError("kernel matrix has no positive eigenvalue (all-zero kernel?)")
    keep = w > rtol * w[0]
    Vk, wk = V[:, keep], w[keep]
    root = (Vk * np.sqrt(wk)) @ Vk.T
    inv_root = (Vk / np.sqrt(wk)) @ Vk.T
    return root, inv_root, int(keep.sum())


@dataclass
class KernelSpectrum:
    """K_Gamma and its eigen-decomposition for one kernel matrix (N = 2n).

    Attributes:
        K: the kernel matrix, N x N (symmetrised).
        K_gamma: K^{-1/2} Z K^{-1/2}, N x N.
        gamma: all N eigenvalues of K_Gamma, descending (may be negative).
        B: eigenvectors b_j as columns, N x N (same order as ``gamma``).
        K_half: K^{1/2} restricted to the kept eigenspace, N x N.
        K_inv_half: pseudo-inverse square root K^{+1/2}, N x N.
        rank: number of eigenvalues of K kept (> rtol * largest).
        rtol: the relative tolerance used.
    """

    K: np.ndarray
    K_gamma: np.ndarray
    gamma: np.ndarray
    B: np.ndarray
    K_half: np.ndarray
    K_inv_half: np.ndarray
    rank: int
    rtol: float

    @property
    def n(self) -> int:
        """Number of positive pairs (the kernel covers 2n points)."""
        return self.K.shape[0] // 2

    def top(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        """``(gamma[:d], B[:, :d])``: the d leading eigenpairs; raises if any gamma_j <= 0."""
        if not 1 <= d <= self.K.shape[0]:
            raise ValueError(f"d = {d} must be between 1 and 2n = {self.K.shape[0]}")
        g = self.gamma[:d]
        floor = self.rtol * np.abs(self.gamma).max()  # below this an eigenvalue is round-off
        if g[-1] <= floor:
            raise ValueError(f"K_Gamma has only {(self.gamma > floor).sum()} positive eigenvalues above "
                             f"round-off (at most n = {self.n}, the number of pairs); the top-spectral "
                             f"solution needs d = {d} of them: compare on more pairs (config key "
                             f"ntk.pairs.n, well above d) or use a smaller embedding dimension")
        return g, self.B[:, :d]


def kernel_gamma(K: np.ndarray, rtol: float = DEFAULT_RTOL) -> KernelSpectrum:
    """K_Gamma = K^{-1/2} Z K^{-1/2} of a 2n x 2n kernel over ``[X; X']`` and its eigenpairs.

    ``rtol``: eigenvalues of K below ``rtol`` times the largest are treated as zero (pseudo-inverse).
    """
    K = _check_kernel(K)
    root, inv_root, rank = psd_sqrt(K, rtol)
    # K^{+1/2} Z K^{+1/2} = (1/2n) (K^{+1/2} K) P (K K^{+1/2}) and K^{+1/2} K = Pi K^{1/2} = root
    Kg = root @ _swap_rows(root) / K.shape[0]
    Kg = (Kg + Kg.T) / 2
    gamma, B = eigh_desc(Kg)
    return KernelSpectrum(K=K, K_gamma=Kg, gamma=gamma, B=B, K_half=root, K_inv_half=inv_root,
                          rank=rank, rtol=rtol)


# --------------------------------------------------------------------------------------------
# predictions
# --------------------------------------------------------------------------------------------

def predicted_embeddings(spec: KernelSpectrum, d: int) -> np.ndarray:
    """Eq. 49: f_th = S [b_1..b_d]^T K^{1/2} on the 2n training points (``d x 2n``, U = I)."""
    g, Bd = spec.top(d)
    return (Bd.T @ spec.K_half) / np.sqrt(g)[:, None]


def predict_embeddings_at(spec: KernelSpectrum, d: int, k_new: np.ndarray) -> np.ndarray:
    """Eq. 24 at new points: f(x) = S [b_1..b_d]^T K^{-1/2} k(x) (U = I).

    Args:
        spec: from ``kernel_gamma``.
        d: embedding dimension.
        k_new: ``2n x q`` matrix with ``k_new[i, a] = K(z_i, x_a)`` between the 2n training points
            ``z = [X; X']`` and q new points.

    Returns:
        ``d x q`` embeddings of the new points. With ``k_new = K`` this equals ``predicted_embeddings``.
    """
    k_new = np.asarray(k_new, dtype=np.float64)
    if k_new.ndim == 1:
        k_new = k_new[:, None]
    if k_new.shape[0] != spec.K.shape[0]:
        raise ValueError(f"k_new must have 2n = {spec.K.shape[0]} rows (one per training point), "
                         f"got shape {k_new.shape}")
    g, Bd = spec.top(d)
    return (Bd.T @ (spec.K_inv_half @ k_new)) / np.sqrt(g)[:, None]


def initial_alignment(spec: KernelSpectrum, F0: np.ndarray, d: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 42: ``U S(0) = A(F(0) K^{-1/2} [b_1..b_d])``; returns ``(U, s0)``.

    Args:
        F0: initial embeddings of the 2n training points, ``d x 2n``.
        d: number of modes (default: ``F0.shape[0]``).

    Returns:
        ``U`` (d x d orthogonal) and ``s0`` (d,), the effective initial singular values.
    """
    F0 = np.asarray(F0, dtype=np.float64)
    if F0.ndim != 2 or F0.shape[1] != spec.K.shape[0]:
        raise ValueError(f"F0 must be d x 2n = d x {spec.K.shape[0]}, got shape {F0.shape}")
    d = F0.shape[0] if d is None else d
    Bd = spec.B[:, :d]
    return alignment_transform(F0 @ spec.K_inv_half @ Bd)


@dataclass
class KernelDynamics:
    """Kernelised small-init dynamics (Eq. 40-42) on a time grid.

    Attributes:
        t: times (T,), t = learning_rate x step.
        gamma: the d leading eigenvalues of K_Gamma (d,).
        s0: effective initial singular values (d,).
        U: the rotation of Eq. 42 (d x d).
        s: s_j(t), T x d.
        lam: embedding eigenvalues lambda_j(t) = gamma_j s_j(t)^2, T x d.
        loss: sum_j (1 - lambda_j(t))^2, T.
        tau: step times (Eq. 16), d (inf where gamma_j <= 0).
    """

    t: np.ndarray
    gamma: np.ndarray
    s0: np.ndarray
    U: np.ndarray
    s: np.ndarray
    lam: np.ndarray
    loss: np.ndarray
    tau: np.ndarray

    def embeddings(self, spec: KernelSpectrum, k: int) -> np.ndarray:
        """Predicted embeddings of the 2n training points at ``t[k]``: U S(t) B_d^T K^{1/2} (d x 2n)."""
        d = len(self.gamma)
        return self.U @ (self.s[k][:, None] * (spec.B[:, :d].T @ spec.K_half))


def kernel_dynamics(spec: KernelSpectrum, F0: np.ndarray, t: np.ndarray) -> KernelDynamics:
    """Predicted s_j(t), lambda_j(t) and loss from initial embeddings ``F0`` (``d x 2n``), Eq. 40-42.

    Modes with gamma_j <= 0 are kept (they decay, lambda_j -> 0); ``t`` is any 1-d time grid.
    """
    F0 = np.asarray(F0, dtype=np.float64)
    d = F0.shape[0]
    U, s0 = initial_alignment(spec, F0, d)
    g = spec.gamma[:d]
    t = np.asarray(t, dtype=np.float64).ravel()
    lam = lambda_closed_form(g, s0, t)
    return KernelDynamics(t=t, gamma=g, s0=s0, U=U, s=s_closed_form(g, s0, t), lam=lam,
                          loss=((1.0 - lam) ** 2).sum(axis=1), tau=step_times(g, s0))


# --------------------------------------------------------------------------------------------
# subspace alignment
# --------------------------------------------------------------------------------------------

def right_singular_subspace(F: np.ndarray, d: int | None = None) -> np.ndarray:
    """Top-``d`` right singular vectors of an embedding matrix ``F`` (d x N) as rows: ``d x N``.

    ``d`` defaults to ``F.shape[0]``. Raises if F has rank < d (the subspace would be arbitrary).
    """
    F = np.asarray(F, dtype=np.float64)
    if F.ndim != 2:
        raise ValueError(f"embedding matrix must be d x N, got shape {F.shape}")
    d = F.shape[0] if d is None else d
    if not 1 <= d <= min(F.shape):
        raise ValueError(f"d = {d} must be between 1 and min(F.shape) = {min(F.shape)}")
    _, sv, Vt = np.linalg.svd(F, full_matrices=False)
    if sv[d - 1] <= sv[0] * max(F.shape) * np.finfo(float).eps:
        raise ValueError(f"embedding matrix has rank < {d} (singular values {sv[:d]}); "
                         "its right singular subspace is not defined")
    return Vt[:d]


def top_eigvec_subspace(K: np.ndarray, d: int) -> np.ndarray:
    """P_NTK: the top-``d`` eigenvectors of a symmetric matrix ``K`` (N x N) as rows, ``d x N``."""
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"K must be square, got shape {K.shape}")
    if not 1 <= d <= K.shape[0]:
        raise ValueError(f"d = {d} must be between 1 and N = {K.shape[0]}")
    return eigh_desc((K + K.T) / 2)[1][:, :d].T


def alignment(P: np.ndarray, Q: np.ndarray) -> float:
    """a(P, Q) = (1/d) ||P Q^T||_F^2 for two ``d x N`` matrices with orthonormal rows.

    1 when the row spaces coincide, 0 when they are orthogonal, d/N in expectation for random ones.
    """
    P, Q = np.asarray(P, dtype=np.float64), np.asarray(Q, dtype=np.float64)
    if P.ndim != 2 or P.shape != Q.shape:
        raise ValueError(f"subspaces must both be d x N, got shapes {P.shape} and {Q.shape}")
    for name, M in (("P", P), ("Q", Q)):
        err = np.abs(M @ M.T - np.eye(M.shape[0])).max()
        if err > 1e-6:
            raise ValueError(f"{name} does not have orthonormal rows (max |M M^T - I| = {err:.3g}); "
                             "use right_singular_subspace / top_eigvec_subspace")
    return float(np.sum((P @ Q.T) ** 2) / P.shape[0])


def random_alignment(d: int, N: int) -> float:
    """Expected alignment of a fixed and a uniformly random d-dimensional subspace of R^N: d/N."""
    if not 1 <= d <= N:
        raise ValueError(f"need 1 <= d <= N, got d = {d}, N = {N}")
    return d / N


def random_subspace(d: int, N: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly (Haar) random d-dimensional subspace of R^N as ``d x N`` orthonormal rows."""
    Q, R = np.linalg.qr(rng.standard_normal((N, d)))
    return (Q * np.sign(np.diag(R))).T


def random_alignment_empirical(d: int, N: int, trials: int = 200, seed: int = 0,
                               P: np.ndarray | None = None) -> tuple[float, float]:
    """Monte-Carlo mean and standard deviation of a(P, Q) for random ``Q``.

    ``P`` (d x N) defaults to another random subspace; the mean estimates ``random_alignment``.
    """
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(trials):
        A = random_subspace(d, N, rng) if P is None else P
        vals.append(alignment(A, random_subspace(d, N, rng)))
    vals = np.asarray(vals)
    return float(vals.mean()), float(vals.std(ddof=1) if trials > 1 else 0.0)
