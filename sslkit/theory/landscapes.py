"""Modewise loss landscapes of the linear model (paper App. F-G, Figs. 8-9) and their exact dynamics.

Aligned init (``docs/theory.md §14``): W = U diag(s) [v_1..v_d]^T with Gamma v_j = gamma_j v_j.
Every loss here is a spectral function of C = W Gamma W^T, L(C) = sum_i f(lambda_i(C)), so its
gradient is dL/dW = 2 Q diag(f'(lambda)) Q^T W Gamma (C = Q diag(lambda) Q^T), the aligned form
is preserved and mode j decouples, ds_j/dt = -dL_j/ds_j with L_j = f(gamma_j s_j^2). In the
nondimensional coordinate s~_j = gamma_j^{1/2} s_j (gamma_j > 0), lambda_j = s~_j^2 and

=========== ======================== =========================== =========================================
loss        f(lambda)                modewise L_j(s~)            exact solution from s~(0) = u0 > 0
=========== ======================== =========================== =========================================
original    (1 - lambda)^2           (1 - s~^2)^2                Prop. 4.1 (``sslkit.theory.linear``)
sharpened   (1 - g_sqrt(lambda))^2   (1 - |s~|)^2                s~(t) = 1 - (1 - u0) e^{-2 gamma t}
smoothed    (1 - g_smooth)^2         (1 - min(s~^2, 1 + eps      Prop. 4.1 while lambda < 1 (the loss is
            g_smooth = min(l, 1 +    (1 - s~^2)))^2, eps = 0.1:  the original there; the flow never
            eps (1 - l))             the paper's Fig. 9C         crosses lambda = 1 from below)
quartic     (1 - lambda)^4           (1 - s~^2)^4                implicit: F(x(t)) = F(x0) + 16 gamma t,
                                                                 x = s~^2, F(x) = log(x/(1-x)) + 1/(1-x)
                                                                 + 1/(2 (1-x)^2), solved to machine precision
supervised  --                       (c~* - c~)^2, c~ = gamma c  c~(t) = c~* + (c~0 - c~*) e^{-2 gamma^2 t}
=========== ======================== =========================== =========================================

Sharpened loss, sign and zero (g_sqrt(l) = sign(l) |l|^{1/2}): ds~/dt = 2 gamma sign(s~) (1 - |s~|)
for gamma > 0, a force of size 2 gamma at the origin however small s~ is; s~ = 0 itself is a fixed
point by the convention sign(0) = 0 (f'(0) := 0 below; the kink has no gradient). For gamma < 0,
lambda = -|gamma| s^2 < 0 and |s~| = |gamma|^{1/2} |s| obeys d|s~|/dt = -2 |gamma| (1 + |s~|): it reaches
0 at the finite time log(1 + |u0|) / (2 |gamma|) and stays there. Gradient descent with step lr
(t = lr x step) is solved exactly too: 1 - s~_n = (1 - 2 gamma lr)^n (1 - u0), the flow at the
time t x log(1 / (1 - 2 gamma lr)) / (2 gamma lr) (``sharpened_euler_time_factor``).

The simulation (``gd_spectral``) is real full-batch gradient descent of these losses on the linear
model, with the eigendecomposition of C at every step (no use of the closed forms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sslkit.theory.linear import lambda_closed_form, record_grid, saturation_time

__all__ = [
    "LOSSES",
    "DEFAULT_SMOOTH_EPS",
    "modewise_loss",
    "supervised_modewise_loss",
    "eigen_loss",
    "eigen_loss_grad",
    "original_s_tilde",
    "sharpened_s_tilde",
    "sharpened_lambda",
    "sharpened_step_times",
    "sharpened_discrete_s_tilde",
    "sharpened_euler_time_factor",
    "quartic_lambda",
    "quartic_s_tilde",
    "smoothed_s_tilde",
    "supervised_c_tilde",
    "supervised_discrete_c_tilde",
    "s_tilde_closed_form",
    "predicted_speedup",
    "SpectralTrajectory",
    "gd_spectral",
    "gd_supervised",
]

#: the four modewise SSL losses of Fig. 9 (A-D)
LOSSES = ("original", "sharpened", "smoothed", "quartic")
#: eps of g_smooth(l) = min(l, 1 + eps (1 - l)); 0.1 is the paper's Fig. 9C, min(s~^2, 0.9 + 0.1 s~^2)
DEFAULT_SMOOTH_EPS = 0.1


def _check_loss(name: str) -> None:
    if name not in LOSSES:
        raise ValueError(f"unknown modewise loss {name!r}; expected one of {LOSSES}")


# ---------------------------------------------------------------------------------------------
# landscapes
# ---------------------------------------------------------------------------------------------

def eigen_loss(name: str, lam, eps: float = DEFAULT_SMOOTH_EPS) -> np.ndarray:
    """f(lambda) of one eigenvalue of C for loss ``name`` (the loss is sum_i f(lambda_i))."""
    _check_loss(name)
    lam = np.asarray(lam, dtype=np.float64)
    if name == "original":
        return (1.0 - lam) ** 2
    if name == "sharpened":
        return (1.0 - np.sign(lam) * np.sqrt(np.abs(lam))) ** 2
    if name == "smoothed":
        return (1.0 - np.minimum(lam, 1.0 + eps * (1.0 - lam))) ** 2
    return (1.0 - lam) ** 4


def eigen_loss_grad(name: str, lam, eps: float = DEFAULT_SMOOTH_EPS) -> np.ndarray:
    """f'(lambda). Sharpened: sign(l) - |l|^{-1/2}, set to 0 at l = 0 exactly (sign(0) = 0: the
    kink is a fixed point). Smoothed: the left derivative at l = 1."""
    _check_loss(name)
    lam = np.asarray(lam, dtype=np.float64)
    if name == "original":
        return 2.0 * (lam - 1.0)
    if name == "sharpened":
        with np.errstate(divide="ignore"):
            out = np.sign(lam) - 1.0 / np.sqrt(np.abs(lam))
        return np.where(lam == 0, 0.0, out)
    if name == "smoothed":
        return np.where(lam <= 1.0, 2.0 * (lam - 1.0), 2.0 * eps**2 * (lam - 1.0))
    return 4.0 * (lam - 1.0) ** 3


def modewise_loss(name: str, s_tilde, eps: float = DEFAULT_SMOOTH_EPS) -> np.ndarray:
    """L_j(s~) = f(s~^2) for gamma_j > 0 (Fig. 8A, 9A-D): original (1 - s~^2)^2, sharpened (1 - |s~|)^2,
    smoothed (1 - min(s~^2, 1 + eps (1 - s~^2)))^2, quartic (1 - s~^2)^4."""
    return eigen_loss(name, np.asarray(s_tilde, dtype=np.float64) ** 2, eps)


def supervised_modewise_loss(c_tilde, target: float = 1.0) -> np.ndarray:
    """Fig. 8B: (c~* - c~)^2, one eigencoefficient of linearised supervised learning."""
    return (target - np.asarray(c_tilde, dtype=np.float64)) ** 2


# ---------------------------------------------------------------------------------------------
# exact dynamics (aligned init), all on a grid len(t) x len(gamma)
# ---------------------------------------------------------------------------------------------

def _grid(gamma, s0, t):
    gamma = np.atleast_1d(np.asarray(gamma, dtype=np.float64))
    s0 = np.broadcast_to(np.asarray(s0, dtype=np.float64), gamma.shape)
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    if np.any(t < 0):
        raise ValueError("times must be >= 0")
    return gamma[None, :], s0[None, :], t.reshape(-1, 1)


def original_s_tilde(gamma, s0, t) -> np.ndarray:
    """Signed s~_j(t) = sign(s_j(0)) lambda_j(t)^{1/2} under the original loss (Prop. 4.1), gamma_j > 0."""
    g, s, _ = _grid(gamma, s0, t)
    if np.any(g <= 0):
        raise ValueError("original_s_tilde needs gamma_j > 0 (s~ = gamma^{1/2} s)")
    return np.sign(s) * np.sqrt(lambda_closed_form(g[0], np.abs(s[0]), t))


def smoothed_s_tilde(gamma, s0, t) -> np.ndarray:
    """The smoothed loss equals the original for lambda <= 1 and the flow from lambda(0) < 1 never
    reaches 1: the same trajectory as ``original_s_tilde`` (requires lambda_j(0) < 1)."""
    g, s, _ = _grid(gamma, s0, t)
    if np.any(g * s**2 >= 1):
        raise ValueError("smoothed_s_tilde is the Prop. 4.1 trajectory only from lambda_j(0) < 1")
    return original_s_tilde(gamma, s0, t)


def sharpened_s_tilde(gamma, s0, t) -> np.ndarray:
    """Exact signed |gamma|^{1/2} s_j(t) under the sharpened loss ||g_sqrt(C) - I||_F^2, aligned init.

    gamma > 0: s~(t) = sign(u0) [1 - (1 - |u0|) e^{-2 gamma t}] (u0 = 0 stays 0);
    gamma < 0: |s~|(t) = max((1 + |u0|) e^{-2 |gamma| t} - 1, 0) (reaches 0 in finite time, stays);
    gamma = 0: frozen.
    """
    g, s, t = _grid(gamma, s0, t)
    sg = np.sign(s)
    u0 = np.sqrt(np.abs(g)) * np.abs(s)
    with np.errstate(under="ignore"):
        decay = np.exp(-2.0 * np.abs(g) * t)
        grow = 1.0 - (1.0 - u0) * decay
        shrink = np.maximum((1.0 + u0) * decay - 1.0, 0.0)
    u = np.where(g > 0, grow, np.where(g < 0, shrink, u0 + 0.0 * t))
    return sg * u


def sharpened_lambda(gamma, s0, t) -> np.ndarray:
    """lambda_j(t) = gamma_j s_j(t)^2 = sign(gamma_j) s~_j(t)^2 under the sharpened loss."""
    g, _, _ = _grid(gamma, s0, t)
    return np.sign(g) * sharpened_s_tilde(gamma, s0, t) ** 2


def sharpened_step_times(gamma, s0, level: float = 0.5) -> np.ndarray:
    """Time at which lambda_j reaches ``level`` under the sharpened loss:
    t = log((1 - u0) / (1 - level^{1/2})) / (2 gamma_j), u0 = gamma_j^{1/2} |s_j(0)|;
    0 where lambda_j(0) >= level, inf where gamma_j <= 0 or s_j(0) = 0.

    For u0 -> 0 this is log(1 / (1 - 2^{-1/2})) / (2 gamma_j) = 0.614 / gamma_j at level 1/2, independent
    of the init, where the original loss needs tau_j = log(1 / lambda_j(0)) / (8 gamma_j) (Eq. 16)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    gamma = np.atleast_1d(np.asarray(gamma, dtype=np.float64))
    s0 = np.abs(np.broadcast_to(np.asarray(s0, dtype=np.float64), gamma.shape))
    with np.errstate(divide="ignore", invalid="ignore"):
        u0 = np.sqrt(np.abs(gamma)) * s0
        t = np.log((1.0 - u0) / (1.0 - math.sqrt(level))) / (2.0 * gamma)
    t = np.where(u0**2 >= level, 0.0, t)
    return np.where((gamma > 0) & (s0 > 0), t, np.inf)


def sharpened_euler_time_factor(gamma, lr: float) -> np.ndarray:
    """Gradient descent with step lr runs the sharpened flow at time t x log(1/(1 - 2 gamma lr)) / (2 gamma lr)
    exactly (while s~ > 0); 1 where gamma <= 0. Needs 2 gamma lr < 1 (else the step overshoots s~ = 1)."""
    x = 2.0 * lr * np.atleast_1d(np.asarray(gamma, dtype=np.float64))
    if np.any(x >= 1):
        raise ValueError(f"lr = {lr:g} overshoots the sharpened minimum (2 gamma lr = {x.max():.3g} >= 1); "
                         f"lower lr below {lr / x.max():.3g}")
    with np.errstate(divide="ignore", invalid="ignore"):
        f = -np.log1p(-x) / x
    return np.where(x > 0, f, 1.0)


def sharpened_discrete_s_tilde(gamma, s0, lr: float, steps) -> np.ndarray:
    """Exact solution of the gradient-descent map itself (gamma_j > 0, s_j(0) > 0):
    s~_{n+1} = s~_n + 2 gamma lr (1 - s~_n)  =>  1 - s~_n = (1 - 2 gamma lr)^n (1 - u0)."""
    g, s, n = _grid(gamma, s0, steps)
    if np.any(g <= 0) or np.any(s <= 0):
        raise ValueError("the discrete sharpened solution is stated for gamma_j > 0 and s_j(0) > 0")
    sharpened_euler_time_factor(g[0], lr)  # validates 2 gamma lr < 1
    u0 = np.sqrt(g) * s
    return 1.0 - (1.0 - u0) * np.exp(n * np.log1p(-2.0 * g * lr))


def _quartic_F(z):
    """F as a function of z = logit(x): F = z + (1 + e^z) + (1 + e^z)^2 / 2 (strictly increasing)."""
    with np.errstate(over="ignore"):
        e = np.exp(z)
    return z + (1.0 + e) + 0.5 * (1.0 + e) ** 2


def quartic_lambda(gamma, s0, t, iterations: int = 200) -> np.ndarray:
    """lambda_j(t) under the quartic loss sum_j (1 - lambda_j)^4 (aligned init, gamma_j > 0, 0 < lambda_j(0) < 1).

    x = lambda obeys dx/dt = 16 gamma x (1 - x)^3; with 1/(x (1-x)^3) = 1/x + 1/(1-x) + 1/(1-x)^2 + 1/(1-x)^3,
    F(x) = log(x / (1 - x)) + 1/(1 - x) + 1/(2 (1 - x)^2) satisfies F(x(t)) = F(x(0)) + 16 gamma t.
    Solved for z = logit(x) by bisection (``iterations`` halvings: machine precision in z)."""
    g, s, t = _grid(gamma, s0, t)
    x0 = g * s**2
    if np.any(g <= 0) or np.any(x0 <= 0) or np.any(x0 >= 1):
        raise ValueError("quartic_lambda needs gamma_j > 0 and 0 < lambda_j(0) < 1")
    z0 = np.log(x0) - np.log1p(-x0)
    target = _quartic_F(z0) + 16.0 * g * t
    lo = np.broadcast_to(z0, target.shape).copy()
    # F(z) >= z + 1.5 and F(z) >= e^{2z} / 2: both target + 1 and log(max(2 target, 1)) / 2 + 1 lie above the root
    hi = np.minimum(target, 0.5 * np.log(np.maximum(2.0 * target, 1.0))) + 1.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        above = _quartic_F(mid) >= target
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
        if np.all(hi - lo <= 4 * np.finfo(float).eps * np.maximum(np.abs(hi), 1.0)):
            break
    z = 0.5 * (lo + hi)
    return 1.0 / (1.0 + np.exp(-z))


def quartic_s_tilde(gamma, s0, t) -> np.ndarray:
    """Signed s~_j(t) under the quartic loss."""
    _, s, _ = _grid(gamma, s0, t)
    return np.sign(s) * np.sqrt(quartic_lambda(gamma, np.abs(s[0]), t))


def s_tilde_closed_form(name: str, gamma, s0, t) -> np.ndarray:
    """Signed s~_j(t) (len(t) x len(gamma)) of loss ``name`` from aligned init s_j(0), gamma_j > 0."""
    _check_loss(name)
    return {"original": original_s_tilde, "sharpened": sharpened_s_tilde, "smoothed": smoothed_s_tilde,
            "quartic": quartic_s_tilde}[name](gamma, s0, t)


def supervised_c_tilde(gamma, c0, t, target: float = 1.0) -> np.ndarray:
    """Fig. 8D: gradient flow on (c~* - gamma c)^2: c~(t) = c~* + (c~(0) - c~*) e^{-2 gamma^2 t}, c~ = gamma c."""
    g, c, t = _grid(gamma, c0, t)
    with np.errstate(under="ignore"):
        return target + (g * c - target) * np.exp(-2.0 * g**2 * t)


def supervised_discrete_c_tilde(gamma, c0, lr: float, steps, target: float = 1.0) -> np.ndarray:
    """The gradient-descent map of the same loss: c~_n - c~* = (1 - 2 gamma^2 lr)^n (c~(0) - c~*)."""
    g, c, n = _grid(gamma, c0, steps)
    return target + (g * c - target) * (1.0 - 2.0 * g**2 * lr) ** n


def predicted_speedup(gamma, s0, level: float = 0.5) -> dict:
    """Exact aligned-init times to lambda_j = ``level`` under the original (Prop. 4.1 inverted:
    ``sslkit.theory.linear.saturation_time``) and the sharpened loss, and their ratio per mode.
    Time to rank k is mode k's time (both losses keep the order of the gamma_j)."""
    t_orig = saturation_time(gamma, s0, level)
    t_sharp = sharpened_step_times(gamma, s0, level)
    return {"t_original": t_orig, "t_sharpened": t_sharp, "speedup": t_orig / t_sharp}


# ---------------------------------------------------------------------------------------------
# simulation: real gradient descent of L = sum_i f(lambda_i(W Gamma W^T)) on the linear model
# ---------------------------------------------------------------------------------------------

@dataclass
class SpectralTrajectory:
    """A recorded gradient-descent run of a spectral loss.

    step (R,), t = lr x step (R,), loss (R,), eigs: eigenvalues of C, descending (R x d);
    coef: W v_j for the top d eigenvectors, i.e. the d x d matrix W V_d per recorded step (R x d x d):
    its diagonal is the signed s_j(t) for an aligned init with U = I; W: the final weights.
    """

    step: np.ndarray
    t: np.ndarray
    loss: np.ndarray
    eigs: np.ndarray
    coef: np.ndarray
    W: np.ndarray
    lr: float


def gd_spectral(Gamma: np.ndarray, W0: np.ndarray, lr: float, steps: int, loss: str, record=None,
                eps: float = DEFAULT_SMOOTH_EPS) -> SpectralTrajectory:
    """Full-batch gradient descent of L(W) = sum_i f(lambda_i(C)), C = W Gamma W^T, on the linear model.

    Every step: C = W Gamma W^T, C = Q diag(lambda) Q^T (numpy eigh of the symmetrised C),
    W <- W - lr 2 Q diag(f'(lambda)) Q^T W Gamma. ``record``: steps at which loss, spectrum and W V_d
    are recorded (default ``record_grid(steps, 1000)``). Raises ValueError on a non-finite W (name the lr).
    """
    _check_loss(loss)
    Gamma = np.asarray(Gamma, dtype=np.float64)
    W = np.array(W0, dtype=np.float64)
    m = Gamma.shape[0]
    if Gamma.shape != (m, m) or W.ndim != 2 or W.shape[1] != m:
        raise ValueError(f"Gamma must be m x m and W0 d x m, got {Gamma.shape} and {W.shape}")
    if not lr > 0 or steps < 0:
        raise ValueError(f"need lr > 0 and steps >= 0, got lr = {lr}, steps = {steps}")
    d = W.shape[0]
    rec = record_grid(steps, 1000) if record is None else np.unique(np.asarray(record, dtype=np.int64))
    if rec.size == 0 or rec[0] < 0 or rec[-1] > steps:
        raise ValueError(f"record steps must lie in [0, {steps}]")
    Vd = np.linalg.eigh(Gamma)[1][:, ::-1][:, :d]
    out_loss, out_eigs, out_coef = np.empty(rec.size), np.empty((rec.size, d)), np.empty((rec.size, d, d))
    two_lr = 2.0 * lr
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging run is reported below, by name
        _spectral_loop(W, Gamma, Vd, two_lr, steps, rec, loss, eps, out_loss, out_eigs, out_coef)
    if not np.all(np.isfinite(W)):
        raise ValueError(f"gradient descent of the {loss} loss diverged (lr = {lr:g}); lower lr")
    return SpectralTrajectory(rec, lr * rec, out_loss, out_eigs, out_coef, W, lr)


def _spectral_loop(W, Gamma, Vd, two_lr, steps, rec, loss, eps, out_loss, out_eigs, out_coef) -> None:
    k = 0
    for s in range(steps + 1):
        WG = W @ Gamma
        C = WG @ W.T
        try:
            lam, Q = np.linalg.eigh(0.5 * (C + C.T))
        except np.linalg.LinAlgError:  # non-finite C: diverged
            W[...] = np.nan
            return
        if not math.isfinite(lam[-1] + lam[0]):
            W[...] = np.nan
            return
        if k < rec.size and rec[k] == s:
            out_loss[k] = float(eigen_loss(loss, lam, eps).sum())
            out_eigs[k] = lam[::-1]
            out_coef[k] = W @ Vd
            k += 1
        if s == steps:
            break
        W -= ((Q * (two_lr * eigen_loss_grad(loss, lam, eps))) @ Q.T) @ WG


def gd_supervised(Gamma: np.ndarray, y: np.ndarray, w0: np.ndarray, lr: float, steps: int,
                  record=None) -> tuple[np.ndarray, np.ndarray]:
    """Gradient descent on the linearised supervised loss L(w) = ||Gamma w - y||^2 (kernel regression with
    Gram matrix Gamma): w <- w - lr 2 Gamma (Gamma w - y). Returns (recorded steps, w at those steps (R x m)).
    In Gamma's eigenbasis the loss is sum_j (c~*_j - gamma_j c_j)^2 with c_j = v_j.w, c~*_j = v_j.y (Fig. 8B)."""
    Gamma = np.asarray(Gamma, dtype=np.float64)
    w = np.array(w0, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    m = Gamma.shape[0]
    if w.shape != (m,) or y.shape != (m,):
        raise ValueError(f"w0 and y must have length m = {m}, got {w.shape} and {y.shape}")
    top = float(np.abs(np.linalg.eigvalsh(Gamma)).max())
    if 2.0 * lr * top**2 >= 1.0:
        raise ValueError(f"lr = {lr:g} is too large for the supervised map (2 lr gamma_1^2 = "
                         f"{2 * lr * top**2:.3g} >= 1); lower lr below {1 / (2 * top**2):.3g}")
    rec = record_grid(steps, 1000) if record is None else np.unique(np.asarray(record, dtype=np.int64))
    out = np.empty((rec.size, m))
    A = 2.0 * lr * Gamma
    k = 0
    for s in range(steps + 1):
        if k < rec.size and rec[k] == s:
            out[k] = w
            k += 1
        if s == steps:
            break
        w -= A @ (Gamma @ w - y)
    return rec, out
