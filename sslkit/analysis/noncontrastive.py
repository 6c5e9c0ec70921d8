"""Predictor vs correlation eigenvalues of BYOL, DirectPred and DirectCopy (``docs/theory.md`` §13).

Tian et al.'s analysis of non-contrastive SSL: when the eigenspaces of the predictor W_p and of the
correlation F = E[f f^T] of the online embeddings align, the eigenvalues evolve with the invariance
s_j(t) = p_j(t)^2 / alpha_p + e^{-2 eta t} c_j, i.e. s_j ~ p_j^2 (up to one factor) once weight decay
has removed the initial term. DirectPred sets p_j = sqrt(s_j) + eps max s (the invariance by
construction, plus the eps offset), DirectCopy sets W_p = F / ||F|| + eps I (p_j ~ s_j, not sqrt);
BYOL learns W_p by gradient descent, so the invariance is a measurement there.

Definitions (per checkpoint, on fixed evaluation embeddings f_i, N x d, of the online network in
eval mode):

- F = (1/N) sum_i f_i f_i^T (uncentred, as Tian's F); eigenpairs (s_j, u_j), descending.
- W_p: the predictor as a d x d matrix. DirectPred/DirectCopy: their linear weight. BYOL's MLP
  predictor (Linear-BN-ReLU-Linear) is linearised by the least-squares fit p(f) ~ W f + b over the
  evaluation embeddings (``linearise_predictor``; its R^2 says how linear it is there).
- p_j = u_j^T W_sym u_j with W_sym = (W + W^T)/2: the predictor's eigenvalue along F's j-th
  eigenvector (equal to W_p's eigenvalues when the eigenspaces are aligned).
- alignment = ||diag(U^T W_sym U)||^2 / ||U^T W_sym U||_F^2 (1: W_p diagonal in F's eigenbasis).
- invariance: log-log slope of s_j against p_j^2 over the modes with s_j above ``floor_rel`` x s_1
  (1 when s_j ~ p_j^2; DirectCopy's p_j ~ s_j gives 1/2) and the spread (std of log10(s_j / p_j^2)).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "correlation",
    "linearise_predictor",
    "predictor_matrix",
    "aligned_eigenvalues",
    "invariance_fit",
    "checkpoint_record",
    "summarise",
    "predictor_records",
]


def correlation(f: np.ndarray) -> np.ndarray:
    """Uncentred correlation F = f^T f / N (d x d) of N x d embeddings, float64."""
    f = np.asarray(f, dtype=np.float64)
    return f.T @ f / f.shape[0]


def linearise_predictor(z: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares affine fit p ~ z W^T + b of predictor outputs ``p`` (N x d) on inputs ``z``
    (N x d). Returns (W d x d, b (d,), R^2 of the fit)."""
    z = np.asarray(z, np.float64)
    p = np.asarray(p, np.float64)
    a = np.hstack([z, np.ones((z.shape[0], 1))])
    coef, *_ = np.linalg.lstsq(a, p, rcond=None)
    w, b = coef[:-1].T, coef[-1]
    resid = p - a @ coef
    tot = ((p - p.mean(axis=0)) ** 2).sum()
    r2 = 1.0 - float((resid ** 2).sum() / tot) if tot > 0 else float("nan")
    return w, b, r2


def predictor_matrix(model, z) -> tuple[np.ndarray, float]:
    """(W_p d x d, R^2): the linear predictor's weight, or BYOL's MLP linearised on embeddings z
    (torch N x d). The model is used as is (eval mode for BatchNorm with running statistics)."""
    import torch

    pred = model.predictor
    if isinstance(pred, torch.nn.Linear) and pred.bias is None:
        return pred.weight.detach().double().cpu().numpy(), 1.0
    with torch.no_grad():
        out = pred(z.to(next(pred.parameters()).dtype)).double().cpu().numpy()
    w, _, r2 = linearise_predictor(z.double().cpu().numpy(), out)
    return w, r2


def aligned_eigenvalues(F: np.ndarray, W: np.ndarray) -> dict[str, Any]:
    """s_j (descending), p_j = u_j^T W_sym u_j, and the alignment of W_sym with F's eigenbasis."""
    s, u = np.linalg.eigh(0.5 * (F + F.T))
    order = np.argsort(s)[::-1]
    s, u = s[order], u[:, order]
    ws = 0.5 * (W + W.T)
    m = u.T @ ws @ u
    tot = float((m ** 2).sum())
    alignment = float((np.diag(m) ** 2).sum() / tot) if tot > 0 else float("nan")
    return {"s": s, "p": np.diag(m).copy(), "alignment": alignment,
            "w_eigenvalues": np.sort(np.linalg.eigvalsh(ws))[::-1]}


def invariance_fit(s: np.ndarray, p: np.ndarray, floor_rel: float = 1e-3) -> dict[str, Any]:
    """Slope and intercept of log10 s_j vs log10 p_j^2 (modes with s_j > floor_rel s_1 and p_j != 0),
    the spread std(log10 s_j / p_j^2) and the number of modes used."""
    s = np.asarray(s, np.float64)
    p2 = np.asarray(p, np.float64) ** 2
    keep = (s > floor_rel * s.max()) & (p2 > 0)
    n = int(keep.sum())
    if n < 2:
        return {"slope": None, "intercept": None, "spread_decades": None, "n_modes": n}
    x, y = np.log10(p2[keep]), np.log10(s[keep])
    if np.ptp(x) == 0:
        slope, icpt = None, None
    else:
        slope, icpt = (float(v) for v in np.polyfit(x, y, 1))
    return {"slope": slope, "intercept": icpt, "spread_decades": float(np.std(y - x)), "n_modes": n}


def checkpoint_record(model, z, floor_rel: float = 1e-3) -> dict[str, Any]:
    """Everything above for one checkpoint: s, p, W_p eigenvalues, alignment, R^2, invariance fit.
    ``z``: torch N x d online embeddings of the evaluation images (model in eval mode)."""
    F = correlation(z.double().cpu().numpy())
    W, r2 = predictor_matrix(model, z)
    a = aligned_eigenvalues(F, W)
    fit = invariance_fit(a["s"], a["p"], floor_rel)
    return {"s": a["s"].tolist(), "p": a["p"].tolist(), "w_eigenvalues": a["w_eigenvalues"].tolist(),
            "alignment": a["alignment"], "linear_r2": r2, **{f"invariance_{k}": v for k, v in fit.items()}}


def summarise(records: list[Mapping[str, Any]], steps: Mapping[str, Any]) -> dict[str, Any]:
    """Summary of one run: its steps (from the analysis stage) and the final checkpoint's record."""
    final = records[-1]
    return {"n_steps": steps.get("n_steps"), "sequential": steps.get("sequential"),
            "step_times": steps.get("step_times"), "hidden_coincidence": steps.get("hidden_coincidence"),
            "final": {k: final[k] for k in final if k not in ("s", "p", "w_eigenvalues")},
            "final_s": final["s"], "final_p": final["p"]}


def predictor_records(checkpoints, images: np.ndarray, *, n_pairs: int, seed: int, floor_rel: float = 1e-3,
                      batch_size: int = 512) -> list[dict[str, Any]]:
    """``checkpoint_record`` of every checkpoint ({step, t, path}) of a BYOL-family run, on one set of
    evaluation pairs (``sslkit.analysis.checkpoints.make_eval_pairs`` with the run's augmentation; both views)."""
    import torch

    from sslkit.analysis.checkpoints import make_eval_pairs
    from sslkit.training.augment import build_augment
    from sslkit.training.engine import load_checkpoint

    pairs = None
    out = []
    for ck in checkpoints:
        model, rc = load_checkpoint(ck["path"])
        if not hasattr(model, "predictor"):
            raise ValueError(f"checkpoint {ck['path']}: method {rc['method']} has no predictor "
                             f"(noncontrastive.methods must be byol, directpred or directcopy)")
        if pairs is None:
            pairs = make_eval_pairs(images, build_augment(rc, "cpu"), n_pairs, seed)
        with torch.no_grad():
            z = torch.cat([torch.cat([model.embed(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
                           for x in (pairs["x1"], pairs["x2"])]).double()
        if not torch.isfinite(z).all():
            raise ValueError(f"checkpoint {ck['path']} (step {ck['step']}): embeddings are not finite")
        out.append({"step": int(ck["step"]), "t": float(ck["t"]), **checkpoint_record(model, z, floor_rel)})
    return out
