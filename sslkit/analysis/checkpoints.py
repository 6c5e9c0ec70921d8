"""Glue of the analysis stage: from a run's checkpoints to spectra, steps and probe tables.

Pure Python on top of ``sslkit.analysis.spectra``, ``sslkit.analysis.steps`` and
``sslkit.analysis.probes``; the workflow scripts of rules/analysis.smk only read config and files
and call these functions. The model interface is duck-typed: a checkpoint loads
(``load_fn(path) -> (model, run_config)``, by default ``sslkit.training.engine.load_checkpoint``)
into a model with ``.hidden(x)`` and ``.embed(x)`` on normalised NCHW float batches; the run's
augmentation is ``build_augment(run_config, device)`` (default
``sslkit.training.augment.build_augment``), a callable ``(uint8 NHWC tensor, torch.Generator) ->
normalised NCHW float batch``.

BatchNorm statistics (``bn_stats``). A checkpoint's running BatchNorm statistics are an exponential
average (momentum 0.1) over past training batches, so they lag the network: right after a
small-init start they still hold their initial values (mean 0, variance 1) while the activations
are orders of magnitude smaller, and eval-mode embeddings then come out ~alpha^(#layers) too small
(measured on the digits Barlow Twins small-init run: top eigenvalue of C 1e-8 at step 1 in eval
mode vs 1.8e-3 with batch statistics, the value the training history records; the others 1e-20
vs 5e-5, and a spurious simultaneous rise of every mode once the running statistics catch up,
~20-30 steps later). ``bn_stats="recompute"`` (default) therefore re-estimates every BatchNorm
layer of the network being evaluated from the evaluation inputs themselves before evaluating in
eval mode ("precise BN": train-mode forward passes without gradients, cumulative average, i.e.
momentum None): the population statistics of the current weights, which the training batches
estimate, and a result independent of the evaluation batch size. ``"running"`` uses the
checkpoint's stored statistics as they are.

Evaluation pairs (``make_eval_pairs``): ``n`` images drawn with a seeded generator (without
replacement when n <= number of images, else with replacement), each augmented twice (as the
training's view 0 and view 1, whose blur/solarisation probabilities differ) with a torch
generator seeded by the same seed, in chunks of ``chunk`` images -- so the pairs depend only on
(images, augmentation, n, seed, chunk) and are identical for every checkpoint of a run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from sslkit.analysis import probes as probe_mod
from sslkit.analysis import spectra as spectrum
from sslkit.analysis import steps

log = logging.getLogger(__name__)

__all__ = [
    "EMBEDDING_SPACE",
    "BN_STATS",
    "recompute_bn_stats",
    "embedding_space",
    "select_checkpoints",
    "eval_indices",
    "make_eval_pairs",
    "to_float_nchw",
    "extract_features",
    "checkpoint_spectra",
    "spectra_over_checkpoints",
    "probe_over_checkpoints",
    "step_config",
    "steps_from_table",
    "PAPER_INIT_TOP",
    "INIT_TOP_TOLERANCE_DECADES",
    "alpha_check",
]

#: how BatchNorm statistics are set before evaluating a checkpoint (module docstring)
BN_STATS = ("recompute", "running")

#: the embedding spectrum the paper reports per method (App. D.4); others: "embedding_cov"
EMBEDDING_SPACE = {"barlow_twins": "embedding_C"}


def embedding_space(method: str) -> str:
    """``embedding_C`` for Barlow Twins (the theory's C), ``embedding_cov`` for every other method."""
    return EMBEDDING_SPACE.get(method, "embedding_cov")


def select_checkpoints(checkpoints: Iterable[Mapping[str, Any]], every: int = 1) -> list[dict]:
    """Checkpoints sorted by step, every ``every``-th kept; the first and the last are always kept."""
    if every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {every}")
    cks = sorted((dict(c) for c in checkpoints), key=lambda c: c["step"])
    if not cks:
        return []
    keep = set(range(0, len(cks), every)) | {len(cks) - 1}
    return [c for i, c in enumerate(cks) if i in keep]


def eval_indices(n_images: int, n: int, seed: int) -> np.ndarray:
    """The ``n`` image indices of the evaluation pairs (seeded; with replacement only if n > n_images)."""
    if n_images < 1 or n < 1:
        raise ValueError(f"need at least one image and one pair, got {n_images} images, n = {n}")
    rng = np.random.default_rng(seed)
    return rng.choice(n_images, size=n, replace=n > n_images)


def make_eval_pairs(images: np.ndarray, augment: Callable, n: int, seed: int, *, device: str = "cpu",
                    chunk: int = 512) -> dict[str, Any]:
    """``n`` positive pairs: two augmentations of each of ``n`` seeded images (module docstring).

    ``images``: uint8 N x H x W x C (a memory map is fine). Returns ``{"x1", "x2"}`` (torch tensors
    on ``device``, n x C x H' x W') and ``"index"`` (the image indices, numpy).
    """
    import torch

    idx = eval_indices(len(images), n, seed)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    v1, v2 = [], []
    for lo in range(0, n, chunk):
        batch = torch.from_numpy(np.ascontiguousarray(images[idx[lo:lo + chunk]])).to(device)
        with torch.no_grad():
            v1.append(augment(batch, gen, view=0))
            v2.append(augment(batch, gen, view=1))
    return {"x1": torch.cat(v1), "x2": torch.cat(v2), "index": idx}


def to_float_nchw(batch, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
    """Un-augmented view of a uint8 NHWC batch (tensor or array): float NCHW in [0, 1], then
    ``(x - mean) / std`` per channel when given (use the training normalisation for probes)."""
    import torch

    x = torch.as_tensor(batch).permute(0, 3, 1, 2).float().div_(255.0)
    if mean is not None:
        x = x - torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    if std is not None:
        x = x / torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x


def extract_features(fn: Callable, images: np.ndarray, *, transform: Callable = to_float_nchw,
                     batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """``fn(transform(images))`` in batches under ``torch.no_grad()``: float32 N x D (flattened)."""
    import torch

    out = []
    with torch.no_grad():
        for lo in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[lo:lo + batch_size])).to(device)
            f = fn(transform(batch))
            out.append(f.detach().reshape(f.shape[0], -1).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _prepare(model, device: str):
    if hasattr(model, "to"):
        model = model.to(device)
    if hasattr(model, "eval"):
        model.eval()
    return model


def _check_bn_stats(bn_stats: str) -> None:
    if bn_stats not in BN_STATS:
        raise ValueError(f"bn_stats must be one of {BN_STATS}, got {bn_stats!r}")


def recompute_bn_stats(model, fn: Callable, batches: Iterable) -> int:
    """Precise BatchNorm: set the running mean/variance of the BatchNorm layers that ``fn`` uses to
    the cumulative average of their batch statistics over ``batches`` (``fn(x)`` in train mode,
    without gradients), then put ``model`` in eval mode. Layers ``fn`` does not reach (an EMA
    target, a predictor) keep their statistics. Returns the number of layers re-estimated.
    """
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    used: set[int] = set()
    hooks = [m.register_forward_pre_hook(lambda mod, _inp: used.add(id(mod))) for m in bns]
    saved = {id(m): (m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in bns if m.track_running_stats}
    for m in bns:
        if m.track_running_stats:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    try:
        with torch.no_grad():
            for x in batches:
                fn(x)
    finally:
        for h in hooks:
            h.remove()
        for m in bns:
            if id(m) in saved:
                m.momentum = saved[id(m)][0]
                if id(m) not in used:  # not on fn's path: put its statistics back
                    m.running_mean.copy_(saved[id(m)][1])
                    m.running_var.copy_(saved[id(m)][2])
                    m.num_batches_tracked.copy_(saved[id(m)][3])
        model.eval()
    return sum(id(m) in used for m in bns)


def checkpoint_spectra(model, pairs: Mapping[str, Any], *, batch_size: int = 256, absolute: Sequence[float] = (),
                       relative: Sequence[float] = (), device: str = "cpu",
                       bn_stats: str = "recompute") -> dict[str, Any]:
    """``spectrum.compute_checkpoint_spectra`` of a model (eval mode) on ``make_eval_pairs`` output;
    with ``bn_stats="recompute"`` its BatchNorm statistics are first re-estimated on both views."""
    _check_bn_stats(bn_stats)
    model = _prepare(model, device)
    if bn_stats == "recompute" and hasattr(model, "modules"):
        chunks = (pairs[k][lo:lo + batch_size] for k in ("x1", "x2") for lo in range(0, len(pairs[k]), batch_size))
        recompute_bn_stats(model, model.embed, chunks)
    return spectrum.compute_checkpoint_spectra(model.embed, model.hidden, pairs["x1"], pairs["x2"],
                                               batch_size=batch_size, absolute=absolute, relative=relative)


def _default_loader():
    from sslkit.training.engine import load_checkpoint  # the training stage (issue 5)

    return load_checkpoint


def _default_augment():
    from sslkit.training.augment import build_augment  # the training stage (issue 5)

    return build_augment


def spectra_over_checkpoints(checkpoints: Sequence[Mapping[str, Any]], images: np.ndarray, *, n_pairs: int,
                             seed: int, load_fn: Callable | None = None, build_augment: Callable | None = None,
                             device: str = "cpu", batch_size: int = 256, absolute: Sequence[float] = (),
                             relative: Sequence[float] = (), bn_stats: str = "recompute") -> list[dict[str, Any]]:
    """Spectra of every checkpoint ({step, t, epoch, path}) on one set of evaluation pairs.

    The pairs are built once, with the augmentation of the first checkpoint's run config. Returns
    one record per checkpoint: ``{"step", "t", "epoch", **compute_checkpoint_spectra(...)}`` --
    the input of ``spectrum.spectra_table`` / ``summary_table``.
    """
    load_fn = load_fn or _default_loader()
    build_augment = build_augment or _default_augment()
    pairs = None
    records = []
    for ck in checkpoints:
        model, run_config = load_fn(ck["path"])
        if pairs is None:
            pairs = make_eval_pairs(images, build_augment(run_config, device), n_pairs, seed, device=device)
        try:
            res = checkpoint_spectra(model, pairs, batch_size=batch_size, absolute=absolute, relative=relative,
                                     device=device, bn_stats=bn_stats)
        except ValueError as err:
            raise ValueError(f"checkpoint {ck['path']} (step {ck['step']}): {err}; if training diverged, "
                             f"lower its learning rate or analyse earlier checkpoints only") from err
        records.append({"step": int(ck["step"]), "t": float(ck["t"]), "epoch": ck.get("epoch"), **res})
        log.info("spectra of step %s: top C eigenvalue %.3g, RankMe %.2f", ck["step"],
                 res["eigenvalues"]["embedding_C"][0], res["rankme"]["embedding"])
    return records


def probe_over_checkpoints(checkpoints: Sequence[Mapping[str, Any]], train, test, *, load_fn: Callable | None = None,
                           transform: Callable = to_float_nchw, device: str = "cpu", batch_size: int = 256,
                           C: float = probe_mod.DEFAULTS["C"], max_iter: int = probe_mod.DEFAULTS["max_iter"],
                           k: int = probe_mod.DEFAULTS["k"], max_train: int | None = probe_mod.DEFAULTS["max_train"],
                           max_test: int | None = probe_mod.DEFAULTS["max_test"],
                           seed: int = probe_mod.DEFAULTS["seed"], bn_stats: str = "recompute"):
    """Probe table of a run: one row per checkpoint with step, t, epoch, linear_acc, knn_acc (+ sizes).

    ``train`` / ``test``: ``sslkit.data.Split`` (images uint8 NHWC, labels; -1 = unlabelled, dropped).
    The caps subsample the *images* (seeded, the same for every checkpoint) before features are
    computed; features are the model's hidden representations of the un-augmented images
    (``transform``, e.g. ``to_float_nchw`` with the training normalisation). With
    ``bn_stats="recompute"`` the encoder's BatchNorm statistics are re-estimated on the (subsampled)
    train-split images first, the same inputs the probe is fitted on.
    """
    _check_bn_stats(bn_stats)
    import pandas as pd
    import torch

    load_fn = load_fn or _default_loader()

    def labelled_subset(split, cap, s):
        lab = np.nonzero(np.asarray(split.labels) >= 0)[0]
        if lab.size == 0:
            raise ValueError("split has no labelled images for the probe")
        return lab[probe_mod.subsample(lab.size, cap, s)]

    itr, ite = labelled_subset(train, max_train, seed), labelled_subset(test, max_test, seed + 1)
    xtr_img, ytr = train.images[itr], np.asarray(train.labels)[itr]
    xte_img, yte = test.images[ite], np.asarray(test.labels)[ite]
    rows = []
    for ck in checkpoints:
        model, _ = load_fn(ck["path"])
        model = _prepare(model, device)
        if bn_stats == "recompute" and hasattr(model, "modules"):
            batches = (transform(torch.from_numpy(np.ascontiguousarray(xtr_img[lo:lo + batch_size])).to(device))
                       for lo in range(0, len(xtr_img), batch_size))
            recompute_bn_stats(model, model.hidden, batches)
        ftr = extract_features(model.hidden, xtr_img, transform=transform, batch_size=batch_size, device=device)
        fte = extract_features(model.hidden, xte_img, transform=transform, batch_size=batch_size, device=device)
        r = probe_mod.probe_features(ftr, ytr, fte, yte, C=C, max_iter=max_iter, k=k, max_train=None,
                                     max_test=None, seed=seed)
        rows.append({"step": int(ck["step"]), "t": float(ck["t"]), "epoch": ck.get("epoch"), **r})
        log.info("probe of step %s: linear %.4f, kNN %.4f", ck["step"], r["linear_acc"], r["knn_acc"])
    return pd.DataFrame(rows)


def step_config(cfg: Mapping[str, Any] | None) -> tuple[dict[str, Any], int | None, int | None]:
    """Split config ``analysis.steps`` into (detect_steps params, max_modes, hidden_max_modes)."""
    cfg = dict(cfg or {})
    n_modes = cfg.pop("max_modes", None)
    hidden_modes = cfg.pop("hidden_max_modes", None)
    return cfg, n_modes, hidden_modes


def steps_from_table(table, method: str, step_cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``steps.analyze_run`` on a run's tidy spectra table: the method's embedding space (BT: C,
    others: covariance) and, when present, ``hidden_cov``. Adds ``space`` and ``hidden_space``."""
    params, n_modes, hidden_modes = step_config(step_cfg)
    space = embedding_space(method)
    _, t, emb = spectrum.trajectories(table, space)
    hidden = None
    if (table["space"] == "hidden_cov").any():
        _, th, hidden = spectrum.trajectories(table, "hidden_cov")
    else:
        th = None
    res = steps.analyze_run(t, emb, hidden, t_hidden=th, params=params, n_modes=n_modes, hidden_modes=hidden_modes)
    res["space"] = space
    res["hidden_space"] = "hidden_cov" if hidden is not None else None
    return res


#: App. D.2, "Values of alpha": "a useful heuristic is to choose alpha such that the top eigenvalue at
#: init is roughly 10^-3 for Barlow Twins and VICReg and 10^-6 for SimCLR" (small init; BT: C, others: Cov)
PAPER_INIT_TOP = {"barlow_twins": 1e-3, "vicreg": 1e-3, "simclr": 1e-6}
#: "roughly": within this many decades of the paper's value
INIT_TOP_TOLERANCE_DECADES = 1.0


def alpha_check(history, method: str, init: str, tolerance: float = INIT_TOP_TOLERANCE_DECADES) -> dict[str, Any]:
    """The paper's rule of thumb for the small-init scale alpha (``PAPER_INIT_TOP``) on a run's history.

    The top eigenvalue of the method's space (``embedding_space``: C for Barlow Twins, the covariance
    otherwise) in the history row of step 0 -- the embeddings of the initial network on the evaluation
    batch, batch statistics -- against the paper's value. ``passed`` = within ``tolerance`` decades
    (None where the rule says nothing: standard init, methods the paper gives no value for).
    Returns ``space``, ``top_eigenvalue_init``, ``paper_value``, ``log10_ratio``, ``tolerance_decades``
    and ``passed``.
    """
    space = embedding_space(method)
    prefix = spectrum.HISTORY_SPACES[space]
    rows = history[history["step"] == 0]
    if rows.empty:
        raise ValueError(f"history has no row of step 0 for {method}-{init}: cannot check the init scale "
                         f"(the engine records it at the start of every run; retrain the run)")
    top = float(rows.iloc[-1][f"{prefix}0"])
    target = PAPER_INIT_TOP.get(method) if init == "small" else None
    ratio = math.log10(top / target) if target is not None and top > 0 else None
    passed = None
    if target is not None:
        passed = bool(ratio is not None and abs(ratio) <= tolerance)
    return {"space": space, "top_eigenvalue_init": top, "paper_value": target, "log10_ratio": ratio,
            "tolerance_decades": float(tolerance), "passed": passed}
