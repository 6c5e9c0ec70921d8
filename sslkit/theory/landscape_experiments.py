"""Experiments behind Figs. 8-9 and the sharpened-loss speed-up (rules/theory_figures.smk).

All three run real gradient descent on the linear model built from the workflow's pairs (Gamma from
``results/linear/{dataset}/pairs.npz``) and set it beside the exact solutions of
``sslkit.theory.landscapes``:

* ``run_fig8``: aligned init with the magnitudes of the effective s_j(0) of the linear run's W(0)
  (seed and alpha of config ``linear``) and alternating signs; original SSL loss vs the supervised
  modewise loss (c~*_j - gamma_j c_j)^2 (kernel regression with Gram matrix Gamma, target
  y = sum_j v_j, i.e. c~*_j = 1), each against its closed form.
* ``run_fig9``: the same aligned init (positive signs) under the four losses of Fig. 9.
* ``run_sharpened_speedup``: the linear run's own iid W(0) (not aligned), original and sharpened loss
  at the linear run's lr; time to rank k (the k-th eigenvalue of C reaches ``level``) measured and
  predicted by the exact aligned solutions with the Gram-Schmidt s_j(0).
"""

from __future__ import annotations

import math
import time

import numpy as np

from sslkit.theory import landscapes as ls
from sslkit.theory.linear import (
    effective_s0,
    eigh_desc,
    euler_time_factor,
    first_crossing,
    gamma_matrix,
    gd_eigenbasis,
    init_weights,
    record_grid,
    saturation_time,
)

__all__ = ["AUTO_LR", "AUTO_LR_SUPERVISED", "linear_setup", "auto_lr", "run_fig8", "run_fig9", "run_sharpened_speedup",
           "resnet_comparison"]

#: lr = AUTO_LR / gamma_1 when none is given: the top mode's Euler lag ~2 lr gamma_1 is 0.6% of its step time
AUTO_LR = 3e-3
#: supervised lr = AUTO_LR_SUPERVISED / gamma_1^2: one step shrinks the top mode's error by 1 - 2%
AUTO_LR_SUPERVISED = 1e-2


def linear_setup(X, Xp, d: int, alpha: float, seed: int) -> dict:
    """Gamma, its eigenpairs, the linear run's W(0) and its effective s_j(0); checks gamma_1..d > 0."""
    G = gamma_matrix(X, Xp)
    g, V = eigh_desc(G)
    m = G.shape[0]
    if not 1 <= d <= m:
        raise ValueError(f"linear.d = {d} must lie in 1..m = {m}")
    if g[d - 1] <= 0:
        raise ValueError(f"gamma_{d} = {g[d - 1]:.3g} <= 0: mode {d} is never learned; lower linear.d")
    W0 = init_weights(d, m, alpha, seed)
    return {"Gamma": G, "gamma": g, "V": V, "W0": W0, "s0": effective_s0(W0, V), "d": d, "m": m}


def auto_lr(lr: float | None, gamma1: float, supervised: bool = False) -> float:
    """``lr``, or when None the automatic AUTO_LR / gamma_1 (SSL) or AUTO_LR_SUPERVISED / gamma_1^2 (supervised)."""
    if lr is not None:
        return float(lr)
    return AUTO_LR_SUPERVISED / gamma1**2 if supervised else AUTO_LR / gamma1


def _check_lr(lr: float, gamma1: float, key: str) -> None:
    if not 0 < lr or 8 * lr * gamma1 >= 1:
        raise ValueError(f"{key} = {lr:g} must be > 0 and below 1 / (8 gamma_1) = {1 / (8 * gamma1):.3g} "
                         f"(stable, monotone steps for every loss), or null (automatic)")


def _record(steps: int, points: int) -> np.ndarray:
    """Log-spaced and uniform record steps (the uniform ones resolve crossings late in the run)."""
    return np.unique(np.concatenate([record_grid(steps, points),
                                     np.linspace(0, steps, points).round().astype(np.int64)]))


def _s_tilde(traj: ls.SpectralTrajectory, g: np.ndarray) -> np.ndarray:
    return np.stack([np.diagonal(c) for c in traj.coef]) * np.sqrt(g)


def run_fig8(X, Xp, *, d: int, alpha: float, seed: int, lr: float | None, lr_supervised: float | None,
             margin: float = 0.2, points: int = 1500) -> tuple[dict, dict]:
    """Fig. 8 C-D: original SSL loss and supervised loss from the same small aligned init."""
    su = linear_setup(X, Xp, d, alpha, seed)
    g, V, G = su["gamma"][:d], su["V"], su["Gamma"]
    lr = auto_lr(lr, g[0])
    lr_supervised = auto_lr(lr_supervised, g[0], supervised=True)
    _check_lr(lr, g[0], "theory_figures.lr")
    if 2 * lr_supervised * g[0] ** 2 >= 1:
        raise ValueError(f"theory_figures.lr_supervised = {lr_supervised:g} must be below 1 / (2 gamma_1^2) = "
                         f"{1 / (2 * g[0] ** 2):.3g}, or null (automatic)")
    signs = np.where(np.arange(d) % 2 == 0, 1.0, -1.0)
    s0 = signs * su["s0"]
    W0 = (V[:, :d] * s0).T
    t_end = (1 + margin) * float(saturation_time(g, np.abs(s0), 0.99).max())
    steps = int(math.ceil(t_end / lr))
    t0 = time.perf_counter()
    traj = ls.gd_spectral(G, W0, lr, steps, "original", record=_record(steps, points))
    ssl_sim = _s_tilde(traj, g)
    ssl_th = ls.original_s_tilde(g, s0, traj.t)
    # Euler steps run each mode's flow at t x log(1 + 4 lr gamma_j) / (4 lr gamma_j) (small s): the residual
    # error after that correction is what is not the Euler lag
    fac = euler_time_factor(g, lr)
    ssl_euler = np.stack([ls.original_s_tilde(g[j], s0[j], traj.t * fac[j])[:, 0] for j in range(d)], axis=1)
    # supervised: c~_j = gamma_j v_j . w -> 1 on the time scale 1 / (2 gamma_j^2)
    y = V[:, :d].sum(axis=1)
    t_sup = (1 + margin) * math.log(1e2) / (2 * g[-1] ** 2)
    steps_sup = int(math.ceil(t_sup / lr_supervised))
    w0 = V[:, :d] @ s0
    rec, Wsup = ls.gd_supervised(G, y, w0, lr_supervised, steps_sup, record=_record(steps_sup, points))
    sup_sim = (Wsup @ V[:, :d]) * g
    t_s = lr_supervised * rec
    sup_th = ls.supervised_c_tilde(g, s0, t_s)
    wall = time.perf_counter() - t0
    summary = {
        "d": d, "alpha": alpha, "seed": seed, "lr": lr, "lr_supervised": lr_supervised,
        "gamma": g.tolist(), "s0": s0.tolist(), "steps": steps, "steps_supervised": steps_sup,
        "ssl_max_abs_error": float(np.abs(ssl_sim - ssl_th).max()),
        "ssl_max_abs_error_euler_corrected": float(np.abs(ssl_sim - ssl_euler).max()),
        "ssl_final_s_tilde": ssl_sim[-1].tolist(),
        "supervised_max_abs_error": float(np.abs(sup_sim - sup_th).max()),
        "supervised_final_c_tilde": sup_sim[-1].tolist(),
        "tau_escape": (np.log(1.0 / (g * s0**2)) / (8 * g)).tolist(),
        "wall_time_s": wall,
    }
    arrays = {"gamma": g, "s0": s0, "t_ssl": traj.t, "ssl_sim": ssl_sim, "ssl_theory": ssl_th,
              "t_supervised": t_s, "supervised_sim": sup_sim, "supervised_theory": sup_th}
    return summary, arrays


def run_fig9(X, Xp, *, d: int, alpha: float, seed: int, lr: float | None, eps: float = ls.DEFAULT_SMOOTH_EPS,
             margin: float = 0.2, points: int = 1500) -> tuple[dict, dict]:
    """Fig. 9: the four modewise losses, GD on the linear model from the same positive aligned init,
    over the original loss's horizon; per loss the simulated and the exact s~_j(t)."""
    su = linear_setup(X, Xp, d, alpha, seed)
    g, V, G = su["gamma"][:d], su["V"], su["Gamma"]
    lr = auto_lr(lr, g[0])
    _check_lr(lr, g[0], "theory_figures.lr")
    s0 = su["s0"]
    W0 = (V[:, :d] * s0).T
    t_end = (1 + margin) * float(saturation_time(g, s0, 0.99).max())
    steps = int(math.ceil(t_end / lr))
    rec = _record(steps, points)
    summary = {"d": d, "alpha": alpha, "seed": seed, "lr": lr, "eps": eps, "steps": steps,
               "gamma": g.tolist(), "s0": s0.tolist(), "losses": {}}
    arrays = {"gamma": g, "s0": s0}
    for name in ls.LOSSES:
        t0 = time.perf_counter()
        traj = ls.gd_spectral(G, W0, lr, steps, name, record=rec, eps=eps)
        sim = _s_tilde(traj, g)
        th = ls.s_tilde_closed_form(name, g, s0, traj.t)
        info = {"max_abs_error": float(np.abs(sim - th).max()), "final_s_tilde": sim[-1].tolist(),
                "t_half_measured": [first_crossing(traj.t, sim[:, j] ** 2) for j in range(d)],
                "wall_time_s": time.perf_counter() - t0}
        if name in ("original", "smoothed"):
            fac = euler_time_factor(g, lr)
            euler = np.stack([ls.original_s_tilde(g[j], s0[j], traj.t * fac[j])[:, 0] for j in range(d)], axis=1)
            info["max_abs_error_euler_corrected"] = float(np.abs(sim - euler).max())
        if name == "sharpened":
            exact_map = ls.sharpened_discrete_s_tilde(g, s0, lr, traj.step)
            info["max_rel_error_vs_exact_gd_map"] = float(np.abs(sim / exact_map - 1).max())
            info["t_half_theory"] = ls.sharpened_step_times(g, s0).tolist()
        summary["losses"][name] = info
        arrays["t"] = traj.t
        arrays[f"{name}_sim"] = sim
        arrays[f"{name}_theory"] = th
    return summary, arrays


def run_sharpened_speedup(X, Xp, *, d: int, alpha: float, seed: int, lr: float, level: float = 0.5,
                          margin: float = 0.1, points: int = 20000) -> tuple[list[dict], dict]:
    """Time to rank k, original vs sharpened loss, in the linear run itself (iid W(0), lr of config linear).

    Rows (one per k = 1..d): gamma_k, lambda_k(0) (Gram-Schmidt s_k(0)), predicted times (exact aligned
    solutions) and factor, measured times and factor."""
    su = linear_setup(X, Xp, d, alpha, seed)
    g, V, G, W0, s0 = su["gamma"], su["V"], su["Gamma"], su["W0"], su["s0"]
    _check_lr(lr, g[0], "linear.lr")
    pred = ls.predicted_speedup(g[:d], s0, level)
    t0 = time.perf_counter()
    steps_o = int(math.ceil((1 + margin) * float(pred["t_original"].max()) / lr))
    orig = gd_eigenbasis(g, V, W0, lr, steps_o, _record(steps_o, points))
    steps_s = int(math.ceil((1 + margin) * float(pred["t_sharpened"].max()) / lr))
    sharp = ls.gd_spectral(G, W0, lr, steps_s, "sharpened", record=_record(steps_s, points))
    wall = time.perf_counter() - t0
    rows = []
    for k in range(1, d + 1):
        to = first_crossing(orig.t, orig.eigs[:, k - 1], level)
        ts = first_crossing(sharp.t, sharp.eigs[:, k - 1], level)
        rows.append({"k": k, "gamma_k": float(g[k - 1]), "lambda0_k": float(g[k - 1] * s0[k - 1] ** 2),
                     "t_original_theory": float(pred["t_original"][k - 1]), "t_original_measured": to,
                     "t_sharpened_theory": float(pred["t_sharpened"][k - 1]), "t_sharpened_measured": ts,
                     "speedup_theory": float(pred["speedup"][k - 1]), "speedup_measured": to / ts})
    summary = {"d": d, "alpha": alpha, "seed": seed, "lr": lr, "level": level, "steps_original": steps_o,
               "steps_sharpened": steps_s, "wall_time_s": wall,
               "max_rel_error_t_original": max(abs(r["t_original_measured"] / r["t_original_theory"] - 1)
                                               for r in rows),
               "max_rel_error_t_sharpened": max(abs(r["t_sharpened_measured"] / r["t_sharpened_theory"] - 1)
                                                for r in rows)}
    return rows, summary


def resnet_comparison(linear_rows, factors, method: str = "barlow_twins", variant: str = "sharpen",
                      resnet_lambda0: dict | None = None, level: float = 0.5):
    """The linear rows beside the ResNet speed-up factors (``speedup_factors.csv`` of rules/speedups.smk:
    ``method``'s ``variant`` rows, one column group per init). ``resnet_lambda0``: init -> the ResNet
    baseline's initial eigenvalues of C (descending); adds ``resnet_{init}_theory``, the aligned linear
    prediction at those lambda_k(0) (gamma-free: log(1/l0 - 1)/8 over log((1 - l0^1/2)/(1 - level^1/2))/2).
    Returns a DataFrame, one row per k."""
    import pandas as pd

    lin = pd.DataFrame(list(linear_rows))
    need = {"method", "init", "variant", "k", "speedup_median", "speedup_min", "speedup_max"}
    missing = need - set(factors.columns)
    if missing:
        raise ValueError(f"speed-up factor table lacks columns {sorted(missing)} (from rule speedups_table)")
    sel = factors[(factors["method"] == method) & (factors["variant"] == variant)]
    if sel.empty:
        raise ValueError(f"speed-up factor table has no rows for {method} / {variant}: add '{variant}' to "
                         f"speedups.methods.{method} in the config")
    out = lin[["k", "gamma_k", "lambda0_k", "speedup_theory", "speedup_measured"]].rename(
        columns={"speedup_theory": "linear_predicted", "speedup_measured": "linear_measured"})
    for init, grp in sel.groupby("init", sort=False):
        part = grp[["k", "speedup_median", "speedup_min", "speedup_max"]].rename(
            columns={c: f"resnet_{init}_{c.split('_')[1]}" for c in ("speedup_median", "speedup_min",
                                                                      "speedup_max")})
        out = out.merge(part, on="k", how="outer")
    for init, lam0 in (resnet_lambda0 or {}).items():
        lam0 = np.asarray(lam0, dtype=np.float64)
        ok = (lam0 > 0) & (lam0 < level)
        pred = np.full(lam0.shape, np.nan)
        pred[ok] = ls.predicted_speedup(np.ones(int(ok.sum())), np.sqrt(lam0[ok]), level)["speedup"]
        col = pd.DataFrame({"k": np.arange(1, lam0.size + 1), f"resnet_{init}_lambda0": lam0,
                            f"resnet_{init}_theory": pred})
        out = out.merge(col, on="k", how="outer")
    return out.sort_values("k").reset_index(drop=True)
