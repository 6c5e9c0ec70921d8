"""Linear model of Barlow Twins (paper Sec. 3-4, App. C; ``docs/theory.md`` §1-§5): exact theory.

Model f(x) = W x with W in R^{d x m}; C = W Gamma W^T with Gamma = (X^T X' + X'^T X) / 2n;
loss L = ||C - I||_F^2; gradient flow dW/dt = -4 (W Gamma W^T - I) W Gamma.

From small init the singular values of W in Gamma's eigenbasis follow (Prop. 4.1)

    s_j(t) = e^{4 g t} / sqrt(s_j(0)^-2 + (e^{8 g t} - 1) g),        g = gamma_j,
    lambda_j(t) = g s_j(t)^2 = 1 / (e^{-8 g t} / (g s_j(0)^2) + 1 - e^{-8 g t}),

and mode j is learned at tau_j = log(1 / (s_j(0)^2 g)) / (8 g) (Eq. 16).

The module has three parts:

* theory: closed forms of Prop. 4.1 / Eq. 16 / Eq. 19-20, evaluated overflow-safely;
* simulation: full-batch gradient descent on L (the real discrete Euler steps, t = lr x step),
  as a plain original-basis reference (``gd_reference``, O(d m^2) per step) and as the identical
  map run in Gamma's eigenbasis (``gd_eigenbasis``, O(d^2 m) per step), plus the comparison of
  a simulated trajectory with the theory (``compare_with_theory``);
* Appendix C (Fig. 6): the unapproximated dynamics dA/dt = (I - A Lambda A^T) A Lambda of the
  coefficient matrix A and its predictions Eq. 47-48 (``appendix_c_*``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

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
    "saturation_time",
    "auto_steps",
    "init_weights",
    "record_grid",
    "GDTrajectory",
    "gd_reference",
    "gd_eigenbasis",
    "truncation_bound",
    "kept_modes",
    "first_crossing",
    "compare_with_theory",
    "euler_time_factor",
    "run_linear_experiment",
    "appendix_c_gamma",
    "appendix_c_init",
    "appendix_c_simulate",
    "appendix_c_predictions",
    "appendix_c_compare",
    "run_appendix_c",
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
    with np.errstate(divide="ignore", over="ignore", invalid="ignore", under="ignore"):
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
    with np.errstate(divide="ignore", over="ignore", invalid="ignore", under="ignore"):
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
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
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


def saturation_time(gamma, s0, level: float = 0.99) -> np.ndarray:
    """Time at which the closed-form lambda_j(t) reaches ``level`` (0 < level < 1).

    From lambda = 1 / (e^{-8 g t} (1/(g s0^2) - 1) + 1): t = [log(1/(g s0^2) - 1) - log(1/level - 1)]
    / (8 g); 0 where lambda_j(0) >= level already; inf where gamma_j <= 0 (never learned).
    At level = 1/2 this is the exact half-way time, which Eq. 16 approximates for small s_j(0).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    gamma = np.asarray(gamma, dtype=np.float64)
    s0 = np.broadcast_to(np.asarray(s0, dtype=np.float64), gamma.shape)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        x = gamma * s0**2                                  # lambda_j(0)
        t = (np.log1p(-x) - np.log(x) - math.log(1.0 / level - 1.0)) / (8.0 * gamma)
    t = np.where(x >= level, 0.0, t)
    return np.where(gamma > 0, t, np.inf)


def auto_steps(gamma, s0, lr: float, margin: float = 0.1, level: float = 0.99) -> int:
    """Number of Euler steps after which every mode has saturated, with a relative margin.

    ``ceil((1 + margin) * max_j t_j(level) / lr)`` with ``t_j(level)`` from ``saturation_time``:
    by the last step the slowest mode's theory eigenvalue has reached ``level`` and the run has
    gone on for ``margin`` of that time again (room for the Euler lag and the late plateau).
    """
    t_sat = saturation_time(gamma, s0, level)
    if not np.all(np.isfinite(t_sat)):
        bad = [j + 1 for j in np.flatnonzero(~np.isfinite(t_sat))]
        raise ValueError(f"modes {bad} have gamma_j <= 0 and are never learned; lower d "
                         f"(gamma = {np.asarray(gamma).tolist()})")
    return int(math.ceil((1.0 + margin) * float(t_sat.max()) / lr))


# ---------------------------------------------------------------------------------------------
# Simulation: full-batch gradient descent on L = ||W Gamma W^T - I||_F^2 (discrete Euler steps)
# ---------------------------------------------------------------------------------------------


def init_weights(d: int, m: int, alpha: float, seed: int) -> np.ndarray:
    """W(0) iid N(0, alpha^2), d x m, float64, from ``numpy.random.default_rng(seed)``."""
    return alpha * np.random.default_rng(seed).standard_normal((d, m))


def record_grid(steps: int, points: int) -> np.ndarray:
    """Steps at which a run is recorded: 0, then ~``points`` log-spaced steps up to ``steps``.

    Every step is kept where log spacing would be finer than one step, so fast early modes are
    resolved step by step; ``steps`` itself is always included.
    """
    if steps < 0 or points < 1:
        raise ValueError(f"need steps >= 0 and points >= 1, got {steps}, {points}")
    if steps == 0:
        return np.zeros(1, dtype=np.int64)
    grid = np.round(np.geomspace(1, steps, points)).astype(np.int64)
    return np.unique(np.concatenate([[0], grid, [steps]]))


@dataclass
class GDTrajectory:
    """A recorded gradient-descent run.

    step: recorded step indices (R,); t = lr * step (R,); loss: ||C - I||_F^2 (R,);
    eigs: eigenvalues of C = W Gamma W^T, descending (R x d); W: final weights (d x m);
    Ws: W at every recorded step (R x d x m) when requested, else None.
    """

    step: np.ndarray
    t: np.ndarray
    loss: np.ndarray
    eigs: np.ndarray
    W: np.ndarray
    lr: float
    Ws: np.ndarray | None = None


def _check_run(W0: np.ndarray, m: int, lr: float, steps: int, record) -> tuple[np.ndarray, np.ndarray]:
    W0 = np.asarray(W0, dtype=np.float64)
    if W0.ndim != 2 or W0.shape[1] != m:
        raise ValueError(f"W0 must be d x m with m = {m}, got shape {W0.shape}")
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    rec = record_grid(steps, 1000) if record is None else np.unique(np.asarray(record, dtype=np.int64))
    if rec.size == 0 or rec[0] < 0 or rec[-1] > steps:
        raise ValueError(f"record steps must lie in [0, {steps}]")
    return W0, rec


def _single_thread_blas():
    """Limit BLAS to one thread: the d x m products here are too small to gain from threads
    (two OpenBLAS threads make a CIFAR-10 step ~1.5x slower than one)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _spectrum(C: np.ndarray) -> np.ndarray:
    return np.linalg.eigvalsh((C + C.T) / 2)[::-1]


def gd_reference(Gamma: np.ndarray, W0: np.ndarray, lr: float, steps: int, record=None,
                 keep_W: bool = False) -> GDTrajectory:
    """Plain full-batch gradient descent in the original basis (the reference; O(d m^2) per step).

    W <- W - lr * 4 (W Gamma W^T - I) W Gamma, ``steps`` times, recording loss and the spectrum
    of C at the steps in ``record`` (default: ``record_grid(steps, 1000)``).
    """
    Gamma = np.asarray(Gamma, dtype=np.float64)
    W0, rec = _check_run(W0, Gamma.shape[0], lr, steps, record)
    W = W0.copy()
    d = W.shape[0]
    eye = np.eye(d)
    loss, eigs, Ws = [], [], []
    with _single_thread_blas():
        _reference_loop(W, Gamma, eye, lr, steps, rec, keep_W, loss, eigs, Ws)
    return GDTrajectory(rec, lr * rec, np.array(loss), np.array(eigs), W, lr,
                        np.array(Ws) if keep_W else None)


def _reference_loop(W, Gamma, eye, lr, steps, rec, keep_W, loss, eigs, Ws) -> None:
    k = 0
    for s in range(steps + 1):
        WG = W @ Gamma
        C = WG @ W.T
        if k < rec.size and rec[k] == s:
            loss.append(float(((C - eye) ** 2).sum()))
            eigs.append(_spectrum(C))
            if keep_W:
                Ws.append(W.copy())
            k += 1
        if s == steps:
            break
        W -= ((C - eye) * (4.0 * lr)) @ WG


SPECTRUM_MARGIN = 1e-3
"""Assumed bound on how far the eigenvalues of C leave [0, 1] during a run (``truncation_bound``)."""


def truncation_bound(gamma: np.ndarray, B0: np.ndarray, lr: float, steps: int, dropped: np.ndarray,
                     margin: float = SPECTRUM_MARGIN) -> float:
    """A-priori bound on ||C_D(s) - C_D(0)||_2 over a run, C_D = sum_{k dropped} gamma_k b_k b_k^T, times
    a first-order feedback factor: the error of holding the dropped columns at their initial value.

    In Gamma's eigenbasis column k of B = W V evolves as b_k <- (I + 4 lr gamma_k (I - C)) b_k. If the
    eigenvalues of C stay in [-margin, 1 + margin], the per-step factor
    f_k = 1 + 4 lr gamma_k (1 + margin) for gamma_k > 0 and 1 + 4 lr |gamma_k| margin for gamma_k < 0
    (when 4 lr |gamma_k| (1 + margin) <= 2; else 1 + 4 lr |gamma_k| (1 + margin)) multiplies its norm at most,
    and one step changes it by at most 4 lr |gamma_k| (1 + margin) ||b_k||: ||b_k(s) - b_k(0)|| <= r_k (e_k^s - 1),
    e_k = 1 + 4 lr |gamma_k| (1 + margin), r_k = ||b_k(0)||, and ||b b^T - a a^T|| <= min(||b - a|| (||b|| + ||a||),
    max(||a||, ||b||)^2), so ||C_D(s) - C_D(0)||_2 <= sum_k |gamma_k| r_k^2 min(e_k^2N - 1, f_k^2N) =: E.
    By Weyl's inequality E bounds the direct change of the eigenvalues of C. The dropped columns
    also feed back into the kept ones: a perturbation delta of C shifts log s_j of a mode escaping its
    saddle by at most 4 gamma_j delta tau_j, i.e. lambda_j by 2 gamma_j tau_j delta = log(1/lambda_j(0)) delta / 4
    (first order); the bound returned is E (1 + max_j log(1/lambda_j(0)) / 4) over the top d = rows of B0
    modes, checked against full runs in tests/theory/test_linear_truncation.py.

    Args:
        gamma: eigenvalues of Gamma (m,); B0: W(0) V (d x m); dropped: bool mask or indices of the
            columns held at their initial value.
    """
    gamma = np.asarray(gamma, dtype=np.float64)
    B0 = np.asarray(B0, dtype=np.float64)
    g = gamma[dropped]
    r2 = (B0[:, dropped] ** 2).sum(axis=0)
    x = 4.0 * lr * np.abs(g)
    rho = np.where((g > 0) | (x * (1.0 + margin) > 2.0), 1.0 + margin, margin)
    with np.errstate(over="ignore"):
        change = np.expm1(2.0 * steps * np.log1p(x * (1.0 + margin)))     # (f_k^2N - 1), increments
        size = np.exp(2.0 * steps * np.log1p(x * rho))                      # ||b_k||^2 / r_k^2 <= this
        direct = float((np.abs(g) * r2 * np.minimum(change, size)).sum())
    d = B0.shape[0]
    top = np.argsort(-gamma, kind="stable")[:d]
    lam0 = gamma[top] * alignment_transform(B0[:, top])[1] ** 2
    with np.errstate(divide="ignore"):
        feedback = float(np.clip(-np.log(np.where(lam0 > 0, lam0, np.inf)), 0.0, None).max(initial=0.0)) / 4.0
    return direct * (1.0 + feedback)


def kept_modes(gamma: np.ndarray, B0: np.ndarray, lr: float, steps: int, tol: float | None,
               active: np.ndarray | None = None, margin: float = SPECTRUM_MARGIN) -> tuple[np.ndarray, float]:
    """The columns of B to simulate: the fewest largest-gamma ones whose complement, held at its initial
    value, has ``truncation_bound <= tol`` (all ``active`` ones when ``tol`` is None). Returns (mask, bound).

    Columns outside ``active`` (Gamma's numerical null space) are never simulated and count as zero.
    """
    g = np.asarray(gamma, dtype=np.float64)
    m = g.size
    active = np.ones(m, dtype=bool) if active is None else np.asarray(active, dtype=bool)
    if tol is None:
        return active.copy(), 0.0
    order = np.flatnonzero(active)[np.argsort(-g[active], kind="stable")]

    def bound(k: int) -> float:
        return truncation_bound(g, B0, lr, steps, order[k:], margin) if k < order.size else 0.0

    lo, hi = 0, order.size           # bound(k) is non-increasing in k: bisect for the smallest k <= tol
    while lo < hi:
        mid = (lo + hi) // 2
        if bound(mid) <= tol:
            hi = mid
        else:
            lo = mid + 1
    keep = np.zeros(m, dtype=bool)
    keep[order[:lo]] = True
    return keep, bound(lo)


def gd_eigenbasis(gamma: np.ndarray, V: np.ndarray, W0: np.ndarray, lr: float, steps: int,
                  record=None, keep_W: bool = False, tol: float | None = 1e-11) -> GDTrajectory:
    """The same gradient descent, run in Gamma's eigenbasis: B = W V (O(d^2 K) per step, K <= m modes).

    With Gamma = V diag(gamma) V^T, multiplying the update of ``gd_reference`` by V on the right
    gives exactly B <- B - lr * 4 (B diag(gamma) B^T - I) B diag(gamma), and C = B diag(gamma) B^T,
    so the two runs agree step for step up to float64 rounding. Columns with gamma_k numerically
    zero (Gamma's null space, e.g. the m - 2n directions when m > 2n) receive a zero update and add
    nothing to C; they are held fixed rather than multiplied by zero.

    Only the K columns that can grow are simulated (``kept_modes``): the others stay O(alpha) and are
    held at their initial value, their part of C with them (added to C at every step at no cost), and
    ``truncation_bound`` bounds what that does to the eigenvalues of C by ``tol``
    (absolute; the eigenvalues saturate at 1). ``tol=None`` simulates every non-null column, as does
    ``keep_W=True``. The bound assumes the spectrum of C stays in [-1e-3, 1 + 1e-3]; the recorded
    spectra are checked against that and the run is repeated with every column if they leave it.
    The held columns of the returned ``W`` are those of W(0).

    The loop does four BLAS / ufunc calls per step into preallocated buffers (``_eigenbasis_loop``),
    with BLAS held to one thread. Returns W = B V^T.

    Args:
        gamma: eigenvalues of Gamma (m,), any order matching the columns of ``V``.
        V: orthonormal eigenvectors of Gamma, m x m (columns).
        W0: initial weights d x m (original basis).
        tol: bound on the eigenvalue error from the columns left out, or None for all columns.
    """
    gamma = np.asarray(gamma, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    m = gamma.shape[0]
    if V.shape != (m, m):
        raise ValueError(f"V must be m x m = {m} x {m}, got {V.shape}")
    W0, rec = _check_run(W0, m, lr, steps, record)
    d = W0.shape[0]
    B_all = W0 @ V
    null_tol = np.finfo(np.float64).eps * m * max(float(np.abs(gamma).max(initial=0.0)), 1e-300)
    nonnull = np.abs(gamma) > null_tol
    active, _ = kept_modes(gamma, B_all, lr, steps, None if keep_W else tol, nonnull)
    B = np.ascontiguousarray(B_all[:, active])
    g = np.ascontiguousarray(gamma[active])
    held = nonnull & ~active
    C_held = (B_all[:, held] * gamma[held]) @ B_all[:, held].T      # their fixed part of C
    C = np.empty((d, d))
    eye = np.eye(d)
    loss = np.empty(rec.size)
    eigs = np.empty((rec.size, d))
    Ws = np.empty((rec.size, d, m)) if keep_W else None
    with _single_thread_blas():
        _eigenbasis_loop(B, g, B_all, active, V, C, C_held, eye, 4.0 * lr, steps, rec, loss, eigs, Ws)
    inside = eigs.min() >= -SPECTRUM_MARGIN and eigs.max() <= 1.0 + SPECTRUM_MARGIN
    if (active != nonnull).any() and not inside:     # the bound's premise failed: simulate every column
        return gd_eigenbasis(gamma, V, W0, lr, steps, rec, keep_W, tol=None)
    B_all[:, active] = B
    return GDTrajectory(rec, lr * rec, loss, eigs, B_all @ V.T, lr, Ws)


def _eigenbasis_loop(B, g, B_all, active, V, C, C_held, eye, four_lr, steps, rec, loss, eigs, Ws) -> None:
    """The hot loop of ``gd_eigenbasis``: four calls per step, no Python branches between records.

    The state is held transposed, X = B^T (K x d), inside a (K + d) x d buffer whose last d rows
    are the constant -q (I - C_held), q = sqrt(4 lr); XL = diag(q gamma) X sits likewise on top of
    the constant rows I. One GEMM of the stacked buffers then gives
    C' = X^T XL - q (I - C_held) = q (C_true - I), with C_true = B diag(gamma) B^T + C_held (the held
    columns' fixed part of C enters at no cost), and the update is
    X <- X - XL C'^T = (B - 4 lr (C_true - I) B diag(gamma))^T, as in ``gd_reference``. Every write
    goes to a contiguous block (the first K rows of a buffer). Recorded quantities are recomputed
    unscaled at the recorded steps only. The row scales are tiled to K x d: a same-shape multiply
    takes numpy's fast path, a broadcast one its general iterator (~2x the call overhead at K ~ 50).
    """
    multiply, dot, subtract = np.multiply, np.dot, np.subtract
    K, d = B.shape[1], B.shape[0]
    q = math.sqrt(four_lr)
    Xa = np.empty((K + d, d))          # [X; -q (I - C_held)]
    XLa = np.empty((K + d, d))         # [diag(q gamma) X; I]
    Xa[:K] = B.T
    Xa[K:] = -q * (eye - C_held)
    XLa[K:] = eye
    X, XL, XaT = Xa[:K], XLa[:K], Xa.T
    gq = np.ascontiguousarray(np.broadcast_to((g * q)[:, None], X.shape))
    g_full = np.ascontiguousarray(np.broadcast_to(g[:, None], X.shape))
    T = np.empty_like(X)               # the update
    CT = C.T

    def run(n_steps: int) -> None:
        for _ in range(n_steps):
            multiply(X, gq, out=XL)
            dot(XaT, XLa, out=C)
            dot(XL, CT, out=T)
            subtract(X, T, out=X)

    done = 0
    for k, r in enumerate(rec):
        run(int(r) - done)
        done = int(r)
        C_true = dot(X.T, X * g_full) + C_held
        loss[k] = float(((C_true - eye) ** 2).sum())
        eigs[k] = _spectrum(C_true)
        if Ws is not None:
            B_all[:, active] = X.T
            Ws[k] = B_all @ V.T
    run(steps - done)
    B[:] = X.T


def first_crossing(t: np.ndarray, y: np.ndarray, level: float = 0.5) -> float:
    """First time ``y`` reaches ``level``, linearly interpolated between recorded points (nan if never)."""
    t, y = np.asarray(t, dtype=np.float64), np.asarray(y, dtype=np.float64)
    above = np.flatnonzero(y >= level)
    if above.size == 0:
        return float("nan")
    i = int(above[0])
    if i == 0:
        return float(t[0])
    y0, y1 = y[i - 1], y[i]
    return float(t[i - 1] + (level - y0) / (y1 - y0) * (t[i] - t[i - 1]))


def compare_with_theory(traj: GDTrajectory, gamma_d: np.ndarray, s0: np.ndarray,
                        learned: float = 0.9, unlearned: float = 0.1) -> dict:
    """Compare a simulated run with the closed form of the aligned solution (same effective s_j(0)).

    Sorted eigenvalues are compared with sorted theory eigenvalues at every recorded time.
    ``tau_measured[j]``: first time the (j+1)-th largest eigenvalue of C reaches 1/2; ``tau_theory``:
    Eq. 16. A mode counts as learned in its own step when, at its ``tau_measured``, the previous mode
    is above ``learned`` and the next one below ``unlearned``. ``plateau_loss[j]``: the simulated loss
    at the geometric mean of tau_j and tau_{j+1} (theory: d - j - 1 on the plateau).

    Returns a dict of plain lists/floats plus the arrays ``theory_eigs`` (R x d) and ``theory_loss`` (R,).
    """
    gamma_d = np.asarray(gamma_d, dtype=np.float64)
    d = gamma_d.size
    if traj.eigs.shape[1] != d:
        raise ValueError(f"trajectory has {traj.eigs.shape[1]} eigenvalues per step but {d} modes given")
    theory = lambda_closed_form(gamma_d, s0, traj.t)
    theory_sorted = -np.sort(-theory, axis=1)
    theory_loss = ((1.0 - theory) ** 2).sum(axis=1)
    tau_theory = step_times(gamma_d, s0)
    tau_meas = np.array([first_crossing(traj.t, traj.eigs[:, j]) for j in range(d)])
    rel = np.abs(tau_meas - tau_theory) / tau_theory
    err = np.abs(traj.eigs - theory_sorted)
    separated = []
    for j in range(d):
        if not np.isfinite(tau_meas[j]):
            separated.append(False)
            continue
        ok = True
        if j > 0:
            ok &= bool(np.interp(tau_meas[j], traj.t, traj.eigs[:, j - 1]) >= learned)
        if j < d - 1:
            ok &= bool(np.interp(tau_meas[j], traj.t, traj.eigs[:, j + 1]) <= unlearned)
        separated.append(ok)
    plateau = []
    for j in range(d - 1):
        if np.isfinite(tau_meas[j]) and np.isfinite(tau_meas[j + 1]):
            plateau.append(float(np.interp(math.sqrt(tau_meas[j] * tau_meas[j + 1]), traj.t, traj.loss)))
        else:
            plateau.append(float("nan"))
    return {
        "tau_theory": tau_theory.tolist(),
        "tau_measured": tau_meas.tolist(),
        "tau_rel_error": rel.tolist(),
        "max_abs_eig_error": float(err.max()),
        "max_abs_eig_error_per_mode": err.max(axis=0).tolist(),
        "all_modes_learned": bool(np.all(np.isfinite(tau_meas))),
        "separated_steps": separated,
        "n_separated_steps": int(sum(separated)),
        "plateau_loss": plateau,
        "final_loss": float(traj.loss[-1]),
        "final_eigs": traj.eigs[-1].tolist(),
        "theory_final_loss": float(theory_loss[-1]),
        "theory_eigs": theory_sorted,
        "theory_loss": theory_loss,
    }


def euler_time_factor(gamma, lr: float) -> np.ndarray:
    """Per-mode ratio of the Euler growth rate to the flow's: log(1 + 4 lr g) / (4 lr g).

    One Euler step multiplies a small s_j by 1 + 4 lr gamma_j where the flow multiplies it by
    e^{4 lr gamma_j}, so the discrete run follows the closed form at the slower time t x factor_j.
    ``1 - factor`` ~ 2 lr gamma_j is the relative lag of mode j's step (2.7% for CIFAR-10's top
    mode at lr = 5e-5, gamma_1 = 284); 1 where gamma_j <= 0 or lr -> 0.
    """
    x = 4.0 * lr * np.asarray(gamma, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        f = np.log1p(x) / x
    return np.where(x > 0, f, 1.0)


def run_linear_experiment(X: np.ndarray, Xp: np.ndarray, d: int, alpha: float, lr: float,
                          steps: int | None = None, steps_margin: float = 0.1, seed: int = 0,
                          record_points: int = 2000) -> tuple[dict, dict]:
    """The paper's linear experiment (Sec. 4.4) on pairs ``X, Xp`` (n x m): simulate and compare.

    Builds Gamma, draws W(0) iid N(0, alpha^2), takes the effective s_j(0) of that W(0) (QR route),
    runs ``steps`` Euler steps (null: ``auto_steps`` with ``steps_margin``) in the eigenbasis and
    compares with the closed form. Returns ``(summary, arrays)``: the summary dict (plain JSON
    types) and the arrays of the trajectory (t, step, loss, eigs, theory_eigs, theory_loss,
    tau_theory, gamma).

    Raises ValueError when a top-d eigenvalue of Gamma is <= 0 (mode never learned: lower d) or
    when the Euler step is unstable for the top mode (8 lr gamma_1 >= 2: lower lr).
    """
    import time

    X, Xp = np.asarray(X, dtype=np.float64), np.asarray(Xp, dtype=np.float64)
    n, m = X.shape
    if not 1 <= d <= m:
        raise ValueError(f"d = {d} must lie in 1..m = {m}")
    Gamma = gamma_matrix(X, Xp)
    gamma, V = eigh_desc(Gamma)
    if gamma[d - 1] <= 0:
        raise ValueError(f"only {(gamma > 0).sum()} eigenvalues of Gamma are positive "
                         f"(gamma_{d} = {gamma[d - 1]:.3g}): mode {d} is never learned; lower d")
    if 8 * lr * gamma[0] >= 2:
        raise ValueError(f"lr = {lr:g} makes the Euler step unstable for the top mode "
                         f"(8 lr gamma_1 = {8 * lr * gamma[0]:.3g} >= 2); lower lr below {1 / (4 * gamma[0]):.3g}")
    W0 = init_weights(d, m, alpha, seed)
    s0 = effective_s0(W0, V)
    gd = gamma[:d]
    if steps is None:
        steps = auto_steps(gd, s0, lr, margin=steps_margin)
    rec = record_grid(steps, record_points)
    t0 = time.perf_counter()
    traj = gd_eigenbasis(gamma, V, W0, lr, steps, rec)
    wall = time.perf_counter() - t0
    cmp = compare_with_theory(traj, gd, s0)
    factor = euler_time_factor(gd, lr)
    euler = np.stack([lambda_closed_form(gd[j:j + 1], s0[j:j + 1], traj.t * factor[j])[:, 0]
                      for j in range(d)], axis=1)
    euler_err = np.abs(traj.eigs - (-np.sort(-euler, axis=1)))
    theory_eigs, theory_loss = cmp.pop("theory_eigs"), cmp.pop("theory_loss")
    summary = {
        "n": n, "m": m, "d": d, "alpha": alpha, "lr": lr, "steps": int(steps), "seed": seed,
        "gamma": gd.tolist(),
        "gamma_next": float(gamma[d]) if d < m else None,
        "s0_effective": s0.tolist(),
        **cmp,
        "euler_time_factor": factor.tolist(),
        "max_abs_eig_error_euler": float(euler_err.max()),
        "max_abs_eig_error_euler_per_mode": euler_err.max(axis=0).tolist(),
        "t_end": float(lr * steps),
        "n_recorded": int(rec.size),
        "wall_time_s": wall,
        "steps_per_s": steps / wall if wall > 0 else None,
    }
    arrays = {"t": traj.t, "step": traj.step, "loss": traj.loss, "eigs": traj.eigs,
              "theory_eigs": theory_eigs, "theory_loss": theory_loss,
              "tau_theory": np.asarray(cmp["tau_theory"]), "gamma": gd}
    return summary, arrays


# ---------------------------------------------------------------------------------------------
# Appendix C (Fig. 6): dA/dt = (I - A Lambda A^T) A Lambda with A(0) upper triangular
# ---------------------------------------------------------------------------------------------


def appendix_c_gamma(m: int) -> np.ndarray:
    """gamma_j = 2^{-j}, j = 1..m (Appendix C)."""
    return 2.0 ** -np.arange(1, m + 1, dtype=np.float64)


def appendix_c_init(d: int, m: int, scale: float, seed: int) -> np.ndarray:
    """Random upper-triangular A(0) (d x m): iid N(0, scale^2) on and above the diagonal, zero below,
    the diagonal made positive (s_j(0) = |.| > 0, as Appendix C requires)."""
    if d > m:
        raise ValueError(f"Appendix C needs d <= m, got d = {d}, m = {m}")
    A = np.triu(scale * np.random.default_rng(seed).standard_normal((d, m)))
    idx = np.arange(d)
    A[idx, idx] = np.abs(A[idx, idx])
    return A


def appendix_c_simulate(gamma: np.ndarray, A0: np.ndarray, t: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
    """Integrate Eq. 45, dA/dt = (I - A Lambda A^T) A Lambda (time rescaled by 4), with an adaptive
    8th-order Runge-Kutta (scipy DOP853); returns A at the times ``t`` (len(t) x d x m).

    Tolerances: relative ``rtol`` and an absolute floor far below every entry's scale, so entries that
    start at zero (below the diagonal) are resolved down to ~1e-30 as well.
    """
    from scipy.integrate import solve_ivp

    gamma = np.asarray(gamma, dtype=np.float64)
    A0 = np.asarray(A0, dtype=np.float64)
    d, m = A0.shape
    eye = np.eye(d)

    def rhs(_, y):
        A = y.reshape(d, m)
        AL = A * gamma
        return ((eye - AL @ A.T) @ AL).ravel()

    t = np.asarray(t, dtype=np.float64)
    sol = solve_ivp(rhs, (0.0, float(t[-1])), A0.ravel(), method="DOP853", t_eval=t,
                    rtol=rtol, atol=1e-30)
    if not sol.success:
        raise RuntimeError(f"Appendix C integration failed: {sol.message}")
    return sol.y.T.reshape(len(t), d, m)


def appendix_c_predictions(gamma: np.ndarray, A0: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 47-48 in the rescaled time of Eq. 45.

    Returns ``s`` (len(t) x d): s_j(t) = e^{g t} / sqrt(s_j(0)^-2 + (e^{2 g t} - 1) g), i.e.
    Prop. 4.1 at time t/4; and ``a`` (len(t) x d x m): a_jk(0) (s_j(t)/s_j(0))^{gamma_k/gamma_j}
    for j < k, nan on and below the diagonal (no prediction beyond "stays ~0").
    """
    gamma = np.asarray(gamma, dtype=np.float64)
    A0 = np.asarray(A0, dtype=np.float64)
    d, m = A0.shape
    s0 = np.diag(A0[:, :d]).copy()
    s = s_closed_form(gamma[:d], s0, np.asarray(t, dtype=np.float64) / 4.0)
    a = np.full((len(s), d, m), np.nan)
    for j in range(d):
        for k in range(j + 1, m):
            a[:, j, k] = A0[j, k] * (s[:, j] / s0[j]) ** (gamma[k] / gamma[j])
    return s, a


def appendix_c_compare(gamma: np.ndarray, A0: np.ndarray, t: np.ndarray, A: np.ndarray,
                       saturation: float = 0.5) -> dict:
    """Numbers behind Fig. 6: how closely the simulated A(t) follows Eq. 47-48.

    ``s_max_rel_error[j]``: max over the run of |A_jj(t) - s_j(t)| / s_j(t). ``a_ratio_min/max[j][k]``
    (j < k): range of A_jk(t) / prediction over the times where the predicted gamma_j s_j(t)^2 <=
    ``saturation`` (before mode j saturates); nan on and below the diagonal.
    ``below_diag_max_abs``: the largest |A_jk(t)|, j > k, over the run (theory: stays ~0).
    """
    gamma = np.asarray(gamma, dtype=np.float64)
    d, m = A0.shape
    s_pred, a_pred = appendix_c_predictions(gamma, A0, t)
    s_sim = np.stack([A[:, j, j] for j in range(d)], axis=1)
    s_rel = (np.abs(s_sim - s_pred) / s_pred).max(axis=0)
    lam = gamma[:d] * s_pred**2
    rmin = np.full((d, m), np.nan)
    rmax = np.full((d, m), np.nan)
    for j in range(d):
        before = lam[:, j] <= saturation
        for k in range(j + 1, m):
            r = A[before, j, k] / a_pred[before, j, k]
            rmin[j, k], rmax[j, k] = r.min(), r.max()
    below = [abs(A[:, j, k]).max() for j in range(d) for k in range(min(j, m))]
    return {
        "s_max_rel_error": s_rel.tolist(),
        "a_ratio_min": rmin.tolist(),
        "a_ratio_max": rmax.tolist(),
        "below_diag_max_abs": float(max(below)) if below else 0.0,
        "final_lambda": (gamma[:d] * s_sim[-1] ** 2).tolist(),
    }


def run_appendix_c(d: int = 3, m: int = 5, scale: float = 1e-9, seed: int = 0, points: int = 1500,
                   level: float = 0.99) -> tuple[dict, dict]:
    """Appendix C experiment: integrate Eq. 45 from a random upper-triangular A(0), compare with Eq. 47-48.

    Times: ``points`` equally spaced from 0 to 1.2 x the (rescaled) time at which mode d's theory
    eigenvalue reaches ``level``. Returns ``(summary, arrays)`` with arrays t, A (T x d x m),
    s_pred (T x d), a_pred (T x d x m, nan where no prediction), gamma (m,), A0.
    """
    gamma = appendix_c_gamma(m)
    A0 = appendix_c_init(d, m, scale, seed)
    s0 = np.diag(A0[:, :d]).copy()
    t_sat = 4.0 * saturation_time(gamma[:d], s0, level)    # Eq. 45 runs in time 4t
    t = np.linspace(0.0, 1.2 * float(t_sat.max()), points)
    A = appendix_c_simulate(gamma, A0, t)
    s_pred, a_pred = appendix_c_predictions(gamma, A0, t)
    cmp = appendix_c_compare(gamma, A0, t, A)
    summary = {"d": d, "m": m, "scale": scale, "seed": seed, "points": points,
               "gamma": gamma.tolist(), "s0": s0.tolist(),
               "tau_theory": (4.0 * step_times(gamma[:d], s0)).tolist(),
               "t_end": float(t[-1]), **cmp}
    arrays = {"t": t, "A": A, "s_pred": s_pred, "a_pred": a_pred, "gamma": gamma, "A0": A0}
    return summary, arrays
