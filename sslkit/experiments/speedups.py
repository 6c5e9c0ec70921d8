"""The Appendix G speed-up experiment (rules/speedups.smk): run configs, time-to-rank-k, summaries.

One run = (method, init, variant, seed), trained by ``sslkit.training.engine`` in its own folder
``results/speedups/{dataset}/{method}-{init}-{variant}-s{seed}/`` with the method's block of the
config, the variant's ``speedups`` overrides (``sslkit.training.speedup_variants``), the experiment's shorter
``steps`` (the same for every variant of a method: equal budgets) and its own ``seed``.

Measures (``run_measures``), from the run's history.csv (the embedding eigenvalues of the fixed
evaluation batch, every ``eval_every`` steps):

- time_to_rank_k: the first t = lr x step at which at least k eigenvalues of the method's
  embedding matrix (Barlow Twins: C; others: covariance) are in the grown band, i.e. >= the
  band threshold (NaN when never within the run: censored at the run's end);
- final_rank: the number of eigenvalues in the grown band at the last row;
- the threshold is the lower edge ``theta_hi`` of the grown band of ``sslkit.analysis.steps.estimate_bands``
  on the eigenvalues of ALL runs of the same (method, init) pooled (baseline and every variant and
  seed): one definition of "grown" for every run that is compared.

Speed-up factor of a variant (``speedup_table``): for each seed and k, time_to_rank_k(baseline) /
time_to_rank_k(variant) (same seed: same initial weights, batches and augmentations); summarised
by the median and the min-max over seeds. A variant that never reaches rank k while the baseline
does gets factor 0 (slower than the run allows to measure); if neither does, NaN. A run that
diverged (non-finite loss at the method's lr; ``diverged`` column, NaN measures) gives no factor
and is counted in the ``diverged`` column of the summary.

Largest stable learning rate (G.3's claim; rule speedups_lr): a short run at lr = factor x the
method's lr per factor; stable = finite loss throughout and the variant's own loss lower at the end
than at step 0; bounded = stable and the largest eigenvalue of the embedding matrix at the end
<= ``blowup`` (g_smooth's loss is flat for every lambda >= 1, so eigenvalues can run away without
any loss divergence). ``largest_stable`` reports the largest stable (or bounded) factor per variant.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sslkit.analysis import steps as steps_mod
from sslkit.config import deep_update

__all__ = [
    "TABLE_COLUMNS",
    "run_name",
    "variant_method_config",
    "eigen_history",
    "primary_prefix",
    "grown_threshold",
    "rank_times",
    "run_measures",
    "speedup_table",
    "largest_stable",
    "resolve_variant_run",
    "probe_final",
    "rank_curve",
]

TABLE_COLUMNS = ["method", "init", "variant", "seed", "k", "time_to_rank_k", "final_rank", "probe_accuracy",
                 "diverged"]


def run_name(method: str, init: str, variant: str, seed: int) -> str:
    return f"{method}-{init}-{variant}-s{seed}"


def variant_method_config(config: Mapping[str, Any], method: str, variant: Mapping[str, Any] | None, *,
                          steps: int, seed: int, eval_every: int | None = None, lr_factor: float = 1.0,
                          log_points: int | None = None) -> dict:
    """A copy of ``config`` whose ``methods.<method>`` has the variant's speedups, ``steps`` steps
    (epochs off), and whose ``train`` section has ``seed`` (and ``eval.every``, checkpoint
    ``log_points`` when given). ``lr_factor`` multiplies the method's lr (both init blocks too)."""
    cfg = copy.deepcopy(dict(config))
    block = cfg["methods"][method]
    block["speedups"] = dict(variant or {})
    block["steps"] = int(steps)
    block["epochs"] = None
    for init in ("small", "standard"):
        blk = block.get(init) or {}
        blk.pop("steps", None)
        blk.pop("epochs", None)
    if lr_factor != 1.0:
        block["optimizer"]["lr"] = float(block["optimizer"]["lr"]) * lr_factor
        for init in ("small", "standard"):
            opt = (block.get(init) or {}).get("optimizer")
            if opt and "lr" in opt:
                opt["lr"] = float(opt["lr"]) * lr_factor
    train = cfg["train"]
    train["steps"] = None
    train["seed"] = int(seed)
    if eval_every is not None:
        deep_update(train, {"eval": {"every": int(eval_every)}})
    if log_points is not None:
        deep_update(train, {"checkpoints": {"log_points": int(log_points)}})
    return cfg


def primary_prefix(method: str) -> str:
    """History column prefix of the embedding matrix the paper reports (BT: C; others: covariance)."""
    return "eig_C_" if method == "barlow_twins" else "eig_cov_"


def eigen_history(history, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(t (T,), eigenvalues T x d descending) of a history.csv DataFrame for the method's matrix."""
    prefix = primary_prefix(method)
    cols = sorted((c for c in history.columns if c.startswith(prefix)), key=lambda c: int(c[len(prefix):]))
    return history["t"].to_numpy(float), history[cols].to_numpy(float)


def grown_threshold(eig_arrays: Sequence[np.ndarray], floor_rel: float = steps_mod.DEFAULTS["floor_rel"],
                    band_margin: float = steps_mod.DEFAULTS["band_margin"]) -> dict:
    """Bands (``sslkit.analysis.steps.estimate_bands``) of the pooled eigenvalues of several runs; the
    grown-band threshold is ``bands['upper']``."""
    finite = [np.asarray(a, float) for a in eig_arrays if np.asarray(a).size]
    pooled = np.concatenate([a.reshape(-1, 1) for a in finite])
    pooled = pooled[np.isfinite(pooled[:, 0])]
    return dict(steps_mod.estimate_bands(pooled, floor_rel=floor_rel, band_margin=band_margin))


def rank_times(t: np.ndarray, eigs: np.ndarray, threshold: float, ks: Sequence[int]) -> dict[int, float]:
    """First t at which at least k eigenvalues (row of ``eigs``) are >= threshold; NaN if never."""
    counts = (np.asarray(eigs) >= threshold).sum(axis=1)
    out = {}
    for k in ks:
        hit = np.nonzero(counts >= k)[0]
        out[int(k)] = float(t[hit[0]]) if hit.size else math.nan
    return out


def run_measures(history, method: str, threshold: float, ks: Sequence[int]) -> dict[str, Any]:
    """time_to_rank_k per k and final_rank of one run (module docstring)."""
    t, eigs = eigen_history(history, method)
    counts = (eigs >= threshold).sum(axis=1)
    return {"times": rank_times(t, eigs, threshold, ks), "final_rank": int(counts[-1]),
            "t_end": float(t[-1])}


def _factor(base: float, var: float) -> float:
    if math.isnan(base) and math.isnan(var):
        return math.nan
    if math.isnan(var):
        return 0.0
    if math.isnan(base):
        return math.inf
    if var == 0:
        return math.inf if base > 0 else 1.0
    return base / var


def _nanmedian(x) -> float:
    x = np.asarray(x, float)
    return float(np.nanmedian(x)) if np.isfinite(x).any() else math.nan


def speedup_table(table, baseline: str = "baseline"):
    """Speed-up factors per (method, init, variant, k): median, min, max over seeds, n_seeds, and the
    medians of final_rank and probe_accuracy. ``table``: DataFrame with ``TABLE_COLUMNS``."""
    import pandas as pd

    rows = []
    for (method, init), grp in table.groupby(["method", "init"], sort=False):
        base = grp[grp["variant"] == baseline].set_index(["seed", "k"])
        for variant, vg in grp.groupby("variant", sort=False):
            for k, kg in vg.groupby("k"):
                facs = []
                div = kg["diverged"].astype(bool) if "diverged" in kg else pd.Series(False, index=kg.index)
                for _, r in kg[~div].iterrows():
                    key = (r["seed"], k)
                    if key in base.index and not bool(base.loc[key].get("diverged", False)):
                        facs.append(_factor(float(base.loc[key, "time_to_rank_k"]), float(r["time_to_rank_k"])))
                f = np.array(facs, float)
                ok = f[~np.isnan(f)]
                rows.append({"method": method, "init": init, "variant": variant, "k": int(k), "n_seeds": len(kg),
                             "diverged": int(div.sum()),
                             "speedup_median": float(np.median(ok)) if ok.size else math.nan,
                             "speedup_min": float(ok.min()) if ok.size else math.nan,
                             "speedup_max": float(ok.max()) if ok.size else math.nan,
                             "time_median": (float(np.nanmedian(kg["time_to_rank_k"]))
                                             if kg["time_to_rank_k"].notna().any() else math.nan),
                             "reached": int(kg["time_to_rank_k"].notna().sum()),
                             "final_rank_median": _nanmedian(kg["final_rank"]),
                             "probe_accuracy_median": _nanmedian(kg["probe_accuracy"])})
    return pd.DataFrame(rows)


def largest_stable(records: Sequence[Mapping[str, Any]], key: str = "stable") -> dict[str, float | None]:
    """Largest lr factor per variant whose record has ``key`` (stable | bounded) true; None if none."""
    out: dict[str, float | None] = {}
    for r in records:
        v = r["variant"]
        out.setdefault(v, None)
        if r.get(key) and (out[v] is None or r["factor"] > out[v]):
            out[v] = float(r["factor"])
    return out


def resolve_variant_run(config: Mapping[str, Any], method: str, init: str, variant: str, seed: int,
                        stats: Mapping[str, Any], dataset: str, *, steps: int | None = None,
                        lr_factor: float = 1.0) -> dict:
    """The ``sslkit.training.engine`` run config of one speed-up run (config section ``speedups``)."""
    from sslkit.config import ConfigError
    from sslkit.training.engine import resolve_run_config

    sc = config["speedups"]
    if variant not in sc["variants"]:
        raise ConfigError(f"config key 'speedups.variants.{variant}' is missing (variants: {sorted(sc['variants'])})")
    if steps is None:
        if method not in sc["steps"]:
            raise ConfigError(f"config key 'speedups.steps.{method}' is missing: give the run length")
        steps = int(sc["steps"][method])
    cfg = variant_method_config(config, method, sc["variants"][variant], steps=steps, seed=seed,
                                eval_every=int(sc["eval_every"]), lr_factor=lr_factor,
                                log_points=int(sc["checkpoint_log_points"]))
    return resolve_run_config(cfg, method, init, stats, dataset)


def probe_final(manifest: Mapping[str, Any], run_dir, data_dir, probe_cfg: Mapping[str, Any]) -> dict:
    """Linear probe and k-NN (``sslkit.analysis.probes``) on the hidden representation of the run's last
    checkpoint, un-augmented train/test images (config ``analysis.probe``)."""
    from pathlib import Path

    from sslkit.analysis.checkpoints import probe_over_checkpoints
    from sslkit.data import load_split
    from sslkit.training.augment import eval_transform

    rc = manifest["run_config"]
    last = max(manifest["checkpoints"], key=lambda c: c["step"])
    ck = {**last, "path": str(Path(run_dir) / last["path"])}
    train, test = load_split(data_dir, "train"), load_split(data_dir, "test")
    table = probe_over_checkpoints(
        [ck], train, test, transform=lambda b: eval_transform(b, rc), device="cpu",
        C=float(probe_cfg["C"]), max_iter=int(probe_cfg["max_iter"]), k=int(probe_cfg["k"]),
        max_train=probe_cfg["max_train"], max_test=probe_cfg["max_test"], seed=int(probe_cfg["seed"]))
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in table.iloc[0].to_dict().items()}


def rank_curve(history, method: str, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(t, number of eigenvalues >= threshold) over a run's history (the figure's staircases)."""
    t, eigs = eigen_history(history, method)
    return t, (eigs >= threshold).sum(axis=1)
