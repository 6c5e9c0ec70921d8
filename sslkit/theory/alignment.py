"""Alignment of a trained network's embeddings with the eNTK theory (paper App. E; ``docs/theory.md`` §7).

For a trained network f (d outputs) and n positive pairs stacked as the 2n points ``Z = [X; X']``
(index ``i < n`` is ``x_i``, ``n + i`` its partner ``x'_i``):

    f_exp   = the network's embeddings of the 2n points                  (d x 2n)
    K       = its scalarised empirical NTK on them (``sslkit.theory.ntk``)      (2n x 2n)
    f_th    = S [b_1..b_d]^T K^{1/2}                 (Eq. 49, ``sslkit.theory.kernel.predicted_embeddings``)
    P_exp, P_th = top-d right singular vectors of f_exp, f_th (rows, d x 2n, orthonormal)
    P_NTK   = top-d eigenvectors of K (rows)
    a(P, P') = (1/d) ||P P'^T||_F^2;  random subspaces: d / (2n) in expectation

``theory_alignment`` does the algebra on given arrays (tested exactly on the linear model, where
the theory is exact); ``network_alignment`` computes f_exp and K of a torch module first;
``augmented_pairs`` draws the shared evaluation pairs (the same 2n points for every method, so
that Table 2 compares subspaces of one space); ``pairwise_alignments`` gives Table 2.
Everything here reuses ``sslkit.theory.kernel`` (theory, alignment, random baselines) and
``sslkit.theory.ntk`` (chunked eNTK); nothing is re-derived.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from sslkit.plan import ntk_methods
from sslkit.theory import kernel as kn

__all__ = [
    "ARRAY_KEYS",
    "initial_ntk_alignment",
    "augmented_pairs",
    "stacked_points",
    "network_embeddings",
    "theory_alignment",
    "network_alignment",
    "pairwise_alignments",
    "feature_baselines",
    "ntk_methods",
]

#: arrays stored per method in results/ntk/{dataset}/{method}.npz
ARRAY_KEYS = ("K", "f_exp", "f_th", "P_exp", "P_th", "P_NTK")


def augmented_pairs(images: np.ndarray, augment: Callable, n: int, seed: int, *, device: str = "cpu",
                    chunk: int = 512) -> dict[str, Any]:
    """``n`` positive pairs: two augmentations (views 0 and 1) of each of ``n`` seeded images.

    Args:
        images: uint8 N x H x W x C (a memory map is fine).
        augment: ``augment(uint8 NHWC tensor, torch.Generator, view=0|1) -> float NCHW`` (normalised),
            e.g. ``sslkit.training.augment.build_augment(run_config)``; view 1 applies the second view's
            blur/solarisation probabilities, as in training.
        n: number of pairs; images are drawn without replacement when n <= N
            (``sslkit.analysis.checkpoints.eval_indices``).
        seed: seed of the image choice and of the augmentation generator.

    Returns:
        ``{"x1", "x2"}``: float32 numpy arrays n x C x S x S, and ``"index"``: the image indices.
    """
    import torch

    from sslkit.analysis.checkpoints import eval_indices

    idx = eval_indices(len(images), int(n), int(seed))
    gen = torch.Generator(device=device).manual_seed(int(seed))
    v1, v2 = [], []
    with torch.no_grad():
        for lo in range(0, len(idx), chunk):
            batch = torch.from_numpy(np.ascontiguousarray(images[idx[lo:lo + chunk]])).to(device)
            v1.append(augment(batch, gen, view=0).float().cpu())
            v2.append(augment(batch, gen, view=1).float().cpu())
    return {"x1": torch.cat(v1).numpy(), "x2": torch.cat(v2).numpy(), "index": np.asarray(idx)}


def stacked_points(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """The 2n points ``[X; X']`` (2n x ...) in the order ``sslkit.theory.kernel`` expects."""
    x1, x2 = np.asarray(x1), np.asarray(x2)
    if x1.shape != x2.shape or x1.ndim < 2:
        raise ValueError(f"the two views must have the same shape n x ..., got {x1.shape} and {x2.shape}")
    return np.concatenate([x1, x2])


def network_embeddings(model, points, *, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """Embeddings of ``points`` (N x ...) by ``model`` in eval mode: float64 ``d x N`` (f_exp)."""
    import torch

    was_training = model.training
    model.eval()
    try:
        out = []
        with torch.no_grad():
            for lo in range(0, len(points), batch_size):
                x = torch.as_tensor(np.asarray(points[lo:lo + batch_size]), dtype=torch.float32, device=device)
                out.append(model(x).reshape(len(x), -1).double().cpu().numpy())
    finally:
        model.train(was_training)
    F = np.concatenate(out).T
    if not np.all(np.isfinite(F)):
        raise FloatingPointError("the network's embeddings are not finite (did its training diverge?)")
    return F


def theory_alignment(K: np.ndarray, f_exp: np.ndarray, d: int | None = None, *, random_trials: int = 1000,
                     seed: int = 0, rtol: float = kn.DEFAULT_RTOL) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Subspace alignments of trained embeddings with the kernel theory.

    Args:
        K: 2n x 2n kernel over ``[X; X']`` (the eNTK after training).
        f_exp: d x 2n embeddings of the same points.
        d: subspace dimension (default: ``f_exp.shape[0]``).
        random_trials: Haar-random subspaces for the empirical baseline a(P_exp, random).
        seed: seed of those random subspaces.
        rtol: pseudo-inverse tolerance of ``sslkit.theory.kernel.kernel_gamma``.

    Returns:
        ``(arrays, scalars)``: arrays ``K, f_exp, f_th`` (d x 2n), ``P_exp, P_th, P_NTK`` (d x 2n) and
        ``gamma`` (top 2d eigenvalues of K_Gamma); scalars ``a_exp_th``, ``a_exp_ntk``,
        ``a_th_ntk``, ``random_analytic`` (d/2n), ``random_empirical`` (mean) and
        ``random_empirical_std``, ``n``, ``d``, ``kernel_rank``, ``random_trials``.
    """
    K = np.asarray(K, dtype=np.float64)
    f_exp = np.asarray(f_exp, dtype=np.float64)
    if f_exp.ndim != 2 or K.shape != (f_exp.shape[1], f_exp.shape[1]):
        raise ValueError(f"f_exp must be d x 2n and K 2n x 2n over the same points, got {f_exp.shape} "
                         f"and {K.shape}")
    d = f_exp.shape[0] if d is None else int(d)
    N = K.shape[0]
    spec = kn.kernel_gamma(K, rtol)
    f_th = kn.predicted_embeddings(spec, d)
    P_exp = kn.right_singular_subspace(f_exp, d)
    P_th = kn.right_singular_subspace(f_th, d)
    P_ntk = kn.top_eigvec_subspace(spec.K, d)
    rand_mean, rand_std = kn.random_alignment_empirical(d, N, trials=random_trials, seed=seed, P=P_exp)
    arrays = {"K": spec.K, "f_exp": f_exp, "f_th": f_th, "P_exp": P_exp, "P_th": P_th, "P_NTK": P_ntk,
              "gamma": spec.gamma[: 2 * d]}
    scalars = {
        "a_exp_th": kn.alignment(P_exp, P_th),
        "a_exp_ntk": kn.alignment(P_exp, P_ntk),
        "a_th_ntk": kn.alignment(P_th, P_ntk),
        "random_analytic": kn.random_alignment(d, N),
        "random_empirical": rand_mean,
        "random_empirical_std": rand_std,
        "random_trials": int(random_trials),
        "n": N // 2,
        "d": d,
        "kernel_rank": spec.rank,
        "gamma_top": spec.gamma[: 2 * d],
        "f_exp_singular_values": np.linalg.svd(f_exp, compute_uv=False)[:d],
    }
    return arrays, scalars


def network_alignment(model, points, *, chunk_size: int = 32, row_chunk_size: int | None = None,
                      device: str = "cpu", batch_size: int = 256, random_trials: int = 1000,
                      seed: int = 0, on_progress: Callable[[int, int], None] | None = None,
                      jacobian: str = "auto") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``theory_alignment`` of a torch module on the 2n points ``[X; X']`` (``stacked_points``).

    Computes f_exp (``network_embeddings``) and the eNTK (``sslkit.theory.ntk.empirical_ntk`` with the given
    chunk plan, e.g. from ``sslkit.theory.ntk.plan_chunks``). The scalars gain ``ntk`` (the engine's
    stats: ``time_s``, ``peak_bytes``, ``n_params``, chunk sizes, device) and ``embedding_time_s``.
    ``on_progress(done, total)``: per-point Jacobian passes of the eNTK, ``jacobian``: how they are
    computed (both as in ``empirical_ntk``).
    """
    import time

    from sslkit.theory.ntk import empirical_ntk

    pts = np.asarray(points)
    if len(pts) % 2:
        raise ValueError(f"points must be the 2n views [X; X'] (even count), got {len(pts)}")
    t0 = time.perf_counter()
    model = model.to(device)
    f_exp = network_embeddings(model, pts, batch_size=batch_size, device=device)
    t_emb = time.perf_counter() - t0
    res = empirical_ntk(model, pts, chunk_size=chunk_size, row_chunk_size=row_chunk_size, device=device,
                        on_progress=on_progress, jacobian=jacobian)
    arrays, scalars = theory_alignment(res.K, f_exp, random_trials=random_trials, seed=seed)
    scalars["embedding_time_s"] = t_emb
    scalars["ntk"] = dict(res.stats)
    return arrays, scalars


def pairwise_alignments(subspaces: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Table 2: a(P_a, P_b) for every unordered pair of named subspaces (input order kept).

    All subspaces must be d x 2n over the same points. Returns rows ``{method_a, method_b, alignment}``.
    """
    names = list(subspaces)
    shapes = {subspaces[k].shape for k in names}
    if len(shapes) > 1:
        raise ValueError(f"subspaces must all have the same shape d x 2n to be compared, got "
                         f"{ {k: subspaces[k].shape for k in names} }")
    return [{"method_a": a, "method_b": b, "alignment": kn.alignment(subspaces[a], subspaces[b])}
            for a, b in itertools.combinations(names, 2)]


def initial_ntk_alignment(K0: np.ndarray, P_exp: np.ndarray, rtol: float = kn.DEFAULT_RTOL) -> dict[str, Any]:
    """The trained embeddings vs the theory built on the eNTK at initialisation K0 (paper, App. E,
    footnote 22: "Agreement with predictions from the initial NTK ... is generally worse but still
    greater than chance"). ``P_exp``: d x 2n subspace of the trained embeddings; K0: 2n x 2n eNTK of
    the initial network on the same points. Returns ``a_exp_th_init`` = a(P_exp, P_th(K0)) (Eq. 49
    with K0) and ``a_exp_ntk_init`` = a(P_exp, top-d eigenvectors of K0)."""
    P_exp = np.asarray(P_exp, dtype=np.float64)
    K0 = np.asarray(K0, dtype=np.float64)
    if K0.shape != (P_exp.shape[1], P_exp.shape[1]):
        raise ValueError(f"K0 must be 2n x 2n over the points of P_exp (2n = {P_exp.shape[1]}), got {K0.shape}")
    d = P_exp.shape[0]
    spec = kn.kernel_gamma(K0, rtol)
    P_th0 = kn.right_singular_subspace(kn.predicted_embeddings(spec, d), d)
    return {"a_exp_th_init": kn.alignment(P_exp, P_th0),
            "a_exp_ntk_init": kn.alignment(P_exp, kn.top_eigvec_subspace(spec.K, d))}


def feature_baselines(P_exp: np.ndarray, H: np.ndarray, rtol: float = 1e-10) -> dict[str, Any]:
    """Baselines that know the network's penultimate features H (h x 2n, e.g. ``model.hidden``).

    The d/(2n) baseline treats every direction of R^{2n} as possible; a network whose embeddings
    are computed from h features lives near the span S of H's rows (rank r <= h), so subspaces
    there align far above d/(2n) by construction. Returns:

    * ``a_exp_hidden_pcs``: a(P_exp, top-d right singular vectors of H) -- what the top principal
      directions of the features (uncentred) alone predict;
    * ``random_feature_span``: E a(P_exp, Q) for Q uniformly random in S, = ||P_exp Pi_S||_F^2 / r
      (E[Q^T Q] = (d/r) Pi_S);
    * ``feature_rank`` r and ``exp_in_feature_span`` = ||P_exp Pi_S||_F^2 / d (1: f_exp is inside S).
    """
    P_exp = np.asarray(P_exp, dtype=np.float64)
    H = np.asarray(H, dtype=np.float64)
    if H.ndim != 2 or H.shape[1] != P_exp.shape[1]:
        raise ValueError(f"features must be h x 2n = h x {P_exp.shape[1]}, got {H.shape}")
    d = P_exp.shape[0]
    _, sv, Vt = np.linalg.svd(H, full_matrices=False)
    r = int((sv > rtol * sv[0]).sum())
    S = Vt[:r]
    inside = float(np.sum((P_exp @ S.T) ** 2))
    return {"a_exp_hidden_pcs": kn.alignment(P_exp, Vt[:d]) if r >= d else None,
            "random_feature_span": inside / r, "feature_rank": r, "exp_in_feature_span": inside / d}
