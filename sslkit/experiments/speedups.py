"""The Appendix G speed-up experiment (rules/speedups.smk): run configs, time-to-rank-k, summaries.

One run = (method, init, variant, seed), trained by ``sslkit.training.engine`` in its own folder
``results/speedups/{dataset}/{method}-{init}-{variant}-s{seed}/`` with the method's block of the
config, the variant's ``speedups`` overrides (``sslkit.training.speedup_variants``), the experiment's
step budget and its own ``seed``. One process (``run_group``; rule speedups_run) trains all runs of a
(method, init): the interpreter, torch and MLflow start once per group instead of once per run; each
run keeps its own folder, manifest, probe and MLflow model run. A run whose folder already holds its
finished result (same run-config hash) is not trained again (an interrupted group resumes).

Step budget (``budget_steps``): the baseline runs (every seed) train for the cap ``speedups.steps``;
then K = max(ks), the grown-band threshold of the baseline runs pooled, and s_K = the step at which
the slowest baseline seed first has K eigenvalues in the grown band; every other variant trains for
B = min(cap, ceil(margin x s_K / eval_every) x eval_every) steps (``speedups.budget_margin``; null:
B = cap). B = cap when a baseline seed never reaches rank K (or diverged). All measures of a group
are taken on steps <= B (equal budgets: the baseline's rows beyond B are not used) and the baseline's
probe is taken from its checkpoint at step B (it checkpoints every ``eval_every`` steps). What the
budget gives up: a variant that is slower than the baseline by more than the margin at rank K is
censored at B (factor 0, as a variant that never reaches rank k within the run was before).

Measures (``run_measures``), from the run's history.csv (the embedding eigenvalues of the fixed
evaluation batch, every ``eval_every`` steps):

- time_to_rank_k: the first t = lr x step at which at least k eigenvalues of the method's
  embedding matrix (Barlow Twins: C; others: covariance) are in the grown band, i.e. >= the
  band threshold (NaN when never within the run: censored at the run's end);
- final_rank: the number of eigenvalues in the grown band at the last row (step B);
- the threshold is the lower edge ``theta_hi`` of the grown band of ``sslkit.analysis.steps.estimate_bands``
  on the eigenvalues of ALL runs of the same (method, init) pooled (baseline and every variant and
  seed): one definition of "grown" for every run that is compared.

Speed-up factor of a variant (``speedup_table``): for each seed and k, time_to_rank_k(baseline) /
time_to_rank_k(variant) (same seed: same initial weights, batches and augmentations); summarised
by the median and the min-max over seeds. A variant that never reaches rank k while the baseline
does gets factor 0 (slower than the run allows to measure); if neither does, NaN. A run that
diverged (non-finite loss at the method's lr; ``diverged`` column, NaN measures) gives no factor
and is counted in the ``diverged`` column of the summary.

Largest stable learning rate (G.3's claim; rule speedups_lr, ``run_lr_sweep``: all runs of the
sweep in one process): a short run at lr = factor x the method's lr per factor and variant;
stable = finite loss throughout and the variant's own loss lower at the end
than at step 0; bounded = stable and the largest eigenvalue of the embedding matrix at the end
<= ``blowup`` (g_smooth's loss is flat for every lambda >= 1, so eigenvalues can run away without
any loss divergence). ``largest_stable`` reports the largest stable (or bounded) factor per variant.
"""

from __future__ import annotations

import contextlib
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
    "truncate_history",
    "budget_steps",
    "group_manifests",
    "run_group",
    "run_lr_sweep",
    "lr_verdict",
]

TABLE_COLUMNS = ["method", "init", "variant", "seed", "k", "time_to_rank_k", "final_rank", "probe_accuracy",
                 "diverged"]


def run_name(method: str, init: str, variant: str, seed: int) -> str:
    return f"{method}-{init}-{variant}-s{seed}"


def variant_method_config(config: Mapping[str, Any], method: str, variant: Mapping[str, Any] | None, *,
                          steps: int, seed: int, eval_every: int | None = None, lr_factor: float = 1.0,
                          log_points: int | None = None, checkpoint_every: int | None = None) -> dict:
    """A copy of ``config`` whose ``methods.<method>`` has the variant's speedups, ``steps`` steps
    (epochs off), and whose ``train`` section has ``seed`` (and ``eval.every``, checkpoint
    ``log_points`` and ``every`` when given). ``lr_factor`` multiplies the method's lr (both init blocks
    too)."""
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
    if checkpoint_every is not None:
        deep_update(train, {"checkpoints": {"every": int(checkpoint_every)}})
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
                        lr_factor: float = 1.0, checkpoint_every: int | None = None) -> dict:
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
                                log_points=int(sc["checkpoint_log_points"]), checkpoint_every=checkpoint_every)
    return resolve_run_config(cfg, method, init, stats, dataset)


def probe_final(manifest: Mapping[str, Any], run_dir, data_dir, probe_cfg: Mapping[str, Any],
                step: int | None = None) -> dict:
    """Linear probe and k-NN (``sslkit.analysis.probes``) on the hidden representation of the run's last
    checkpoint (or the one at ``step``), un-augmented train/test images (config ``analysis.probe``)."""
    from pathlib import Path

    from sslkit.analysis.checkpoints import probe_over_checkpoints
    from sslkit.data import load_split
    from sslkit.training.augment import eval_transform

    rc = manifest["run_config"]
    if step is None:
        last = max(manifest["checkpoints"], key=lambda c: c["step"])
    else:
        found = [c for c in manifest["checkpoints"] if int(c["step"]) == int(step)]
        if not found:
            raise ValueError(f"{run_dir}: no checkpoint at step {step} to probe (has "
                             f"{[c['step'] for c in manifest['checkpoints']]}); delete the run folder to retrain it")
        last = found[0]
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


def truncate_history(history, steps: int | None):
    """The rows of a history.csv DataFrame at steps <= ``steps`` (None: all)."""
    if history is None or steps is None:
        return history
    return history[history["step"] <= int(steps)].reset_index(drop=True)


def budget_steps(baseline_histories: Sequence[Any], method: str, ks: Sequence[int], *, cap: int, eval_every: int,
                 margin: float | None, floor_rel: float = steps_mod.DEFAULTS["floor_rel"],
                 band_margin: float = steps_mod.DEFAULTS["band_margin"]) -> dict[str, Any]:
    """The step budget B of the non-baseline variants of a (method, init) (module docstring).

    ``baseline_histories``: the history.csv DataFrames of the baseline seeds (None: diverged). Returns
    {steps, cap, margin, k, threshold, baseline_steps (per seed: first step with rank k, None: never),
    reason}."""
    k = int(max(ks))
    out: dict[str, Any] = {"steps": int(cap), "cap": int(cap), "margin": margin, "k": k, "threshold": None,
                           "baseline_steps": []}
    if margin is None:
        return {**out, "reason": "speedups.budget_margin is null: every run trains for the cap"}
    if float(margin) < 1:
        raise ValueError(f"config key 'speedups.budget_margin' must be >= 1 (or null), got {margin}")
    hists = list(baseline_histories)
    if not hists or any(h is None for h in hists):
        return {**out, "reason": "no baseline run, or a baseline seed diverged: the cap"}
    thr = grown_threshold([eigen_history(h, method)[1] for h in hists], floor_rel=floor_rel,
                          band_margin=band_margin)["upper"]
    firsts = []
    for h in hists:
        _, eigs = eigen_history(h, method)
        hit = np.nonzero((eigs >= thr).sum(axis=1) >= k)[0]
        firsts.append(int(h["step"].iloc[hit[0]]) if hit.size else None)
    out.update(threshold=float(thr), baseline_steps=firsts)
    if any(f is None for f in firsts):
        return {**out, "reason": f"a baseline seed does not reach rank {k} within the cap: the cap"}
    every = max(int(eval_every), 1)
    steps = int(math.ceil(float(margin) * max(firsts) / every)) * every
    steps = min(max(steps, every), int(cap))
    return {**out, "steps": steps,
            "reason": f"{margin:g} x the slowest baseline seed's step to rank {k} ({max(firsts)}), "
                      f"rounded up to eval_every, at most the cap"}


def group_manifests(group_paths: Sequence[Any], variant: str | None = None) -> list:
    """manifest.json paths of the runs listed in speedups_run group records (only ``variant``'s if given)."""
    from pathlib import Path

    from sslkit.io import load_json

    out = []
    for gp in group_paths:
        rec = load_json(gp)
        for r in rec["runs"]:
            if variant is None or r["variant"] == variant:
                out.append(Path(gp).parent.parent / r["dir"] / "manifest.json")
    return out


def _finished(run_dir, rc: Mapping[str, Any], probe_step: int | None, *, check_probe: bool = True) -> dict | None:
    """The saved result {manifest, probe} of a run whose folder is finished for this run config (and, with
    ``check_probe``, probed at ``probe_step``), else None."""
    from pathlib import Path

    from sslkit.io import load_json
    from sslkit.training.engine import config_hash

    man_p, probe_p = Path(run_dir) / "manifest.json", Path(run_dir) / "probe.json"
    try:
        man, probe = load_json(man_p), (load_json(probe_p) if probe_p.exists() else None)
    except (OSError, ValueError):
        return None
    if man.get("config_hash") != config_hash(rc):
        return None
    if man.get("diverged"):
        return {"manifest": man, "probe": probe}
    if not man.get("complete"):
        return None
    if check_probe and (probe is None or probe.get("probed_step") != probe_step):
        return None
    return {"manifest": man, "probe": probe}


def _train_one(rc: dict, images, run_dir, tracker, *, resume: bool) -> dict:
    """Train one run; a non-finite loss is recorded as a diverged manifest (a result, not a failure)."""
    from sslkit.io import save_json
    from sslkit.training.engine import NonFiniteLossError, config_hash, train

    try:
        result = train(rc, images, run_dir, tracker, resume=resume)
    except NonFiniteLossError as exc:
        # a variant that diverges at the method's lr is a result of this experiment, not a failure:
        # record it (history.csv up to the last checkpoint stays) and leave the probe empty
        man = {"dataset": rc["dataset"], "method": rc["method"], "init": rc["init"], "lr": rc["lr"],
               "steps": rc["steps"], "complete": False, "diverged": True, "error": str(exc),
               "history": "history.csv", "checkpoints": [], "run_config": rc, "config_hash": config_hash(rc)}
        save_json(run_dir / "probe.json", {"linear_acc": None, "knn_acc": None, "diverged": True})
        save_json(run_dir / "manifest.json", man)
        return man
    return result.manifest


def _history_of(r: dict, root):
    """The history.csv DataFrame of a group's run record (None: diverged or absent)."""
    from sslkit.training.engine import read_history

    hpath = root / r["dir"] / "history.csv"
    return None if r["diverged"] or not hpath.exists() else read_history(hpath)


def _set_probe_step(r: dict, step: int | None, root) -> None:
    """The baseline's probe step, known once the budget is: a kept probe taken at another step is redone."""
    r["probe_step"] = step
    # a kept baseline was accepted without its probe (one(): check_probe off): check it now, also when
    # the step is unchanged (no budget: None), so that a job killed before the probe probes on its rerun
    if r["skipped"] and not r["diverged"]:
        r["skipped"] = _finished(root / r["dir"], r["rc"], step) is not None


def run_group(config: Mapping[str, Any], dataset: str, method: str, init: str, data_dir, root, *,
              make_tracker=None, log=None) -> dict:
    """Train and probe every (variant, seed) run of ``method`` at ``init`` in this process (module
    docstring: baseline first, then the budget B, then the other variants); return the group record
    {method, init, budget, runs: [{variant, seed, dir, steps, probe_step, diverged, skipped}]}.

    ``root``: results/speedups/{dataset}/ (run folders are created in it); ``make_tracker(variant, seed)``:
    the MLflow model tracker of a run (None: no tracking); ``log``: progress messages (callable).
    """
    from pathlib import Path

    from sslkit.config import ConfigError
    from sslkit.io import save_json
    from sslkit.training.engine import data_stats, load_training_images

    log = log or (lambda msg: None)
    sc = config["speedups"]
    variants = list(sc["methods"].get(method) or [])
    if not variants:
        raise ConfigError(f"config key 'speedups.methods.{method}' lists no variants; remove {method} from the "
                          f"targets or list variants (from speedups.variants: {sorted(sc['variants'])})")
    seeds = [int(s) for s in sc["seeds"]]
    cap, every = int(sc["steps"][method]), int(sc["eval_every"])
    margin = sc.get("budget_margin")
    ks = [int(k) for k in sc["ks"]]
    sp = config["analysis"]["steps"]
    root = Path(root)
    splits = list(config["train"]["splits"])
    images = load_training_images(data_dir, splits)
    stats = {**data_stats(images), "dir": str(data_dir), "splits": splits}
    resume = bool(config["train"]["resume"])
    has_base = "baseline" in variants
    order = (["baseline"] if has_base else []) + [v for v in variants if v != "baseline"]
    runs: dict[tuple[str, int], dict] = {}

    def one(variant: str, seed: int, steps: int, ckpt_every: int | None, probe_step: int | None) -> dict:
        name = run_name(method, init, variant, seed)
        run_dir = root / name
        rc = resolve_variant_run(config, method, init, variant, seed, stats, dataset, steps=steps,
                                 checkpoint_every=ckpt_every)
        rc["runtime"]["progress"] = False
        # the baseline's probe step is known only once the budget is (_set_probe_step checks it then)
        done = _finished(run_dir, rc, probe_step, check_probe=variant != "baseline")
        rec = {"variant": variant, "seed": seed, "dir": name, "steps": steps, "probe_step": probe_step}
        if done is not None:
            log(f"speedups {dataset}/{name}: finished earlier (same run config), kept")
            return {**rec, "diverged": bool(done["manifest"].get("diverged", False)), "skipped": True,
                    "manifest": done["manifest"], "rc": rc, "tracker": None}
        tracker = make_tracker(variant, seed) if make_tracker is not None else None
        log(f"speedups {dataset}/{name}: {steps} steps")
        if tracker is not None:
            with tracker:
                man = _train_one(rc, images, run_dir, tracker, resume=resume)
                tracker.set_tags({"experiment": "speedups", "variant": variant,
                                  **({"diverged": "true"} if man.get("diverged") else {})})
        else:
            man = _train_one(rc, images, run_dir, None, resume=resume)
        return {**rec, "diverged": bool(man.get("diverged", False)), "skipped": False, "manifest": man, "rc": rc,
                "tracker": tracker}

    def probe(r: dict) -> None:
        if r["diverged"] or r["skipped"]:
            return
        run_dir = root / r["dir"]
        pr = probe_final(r["manifest"], run_dir, data_dir, config["analysis"]["probe"], step=r["probe_step"])
        pr["probed_step"] = r["probe_step"]
        save_json(run_dir / "probe.json", pr)
        tr = r["tracker"]
        if tr is not None:
            # the model run is finished; reopen it to add the probe (as the separate probe jobs do)
            tr.log_dataset(Path(data_dir) / "manifest.json", splits)
            tr.log_metrics({"probe/linear_acc": pr["linear_acc"], "probe/knn_acc": pr["knn_acc"]},
                           r["probe_step"])

    # 1. the baseline at the cap, checkpointed every eval_every steps (its probe is taken at step B)
    ckpt_every = every if (has_base and margin is not None) else None
    for seed in seeds:
        if has_base:
            runs[("baseline", seed)] = one("baseline", seed, cap, ckpt_every, None)
    # 2. the budget from the baseline's measured time to rank max(ks)
    hists = [_history_of(runs[("baseline", seed)], root) for seed in (seeds if has_base else [])]
    budget = budget_steps(hists, method, ks, cap=cap, eval_every=every, margin=margin if has_base else None,
                          floor_rel=sp["floor_rel"], band_margin=sp["band_margin"])
    log(f"speedups {dataset}/{method}-{init}: budget {budget['steps']} steps ({budget['reason']})")
    for seed in seeds if has_base else []:
        r = runs[("baseline", seed)]
        _set_probe_step(r, budget["steps"] if ckpt_every else None, root)
        probe(r)
    # 3. the other variants at the budget
    for variant in order[1 if has_base else 0:]:
        for seed in seeds:
            r = runs[(variant, seed)] = one(variant, seed, budget["steps"], None, None)
            probe(r)
    keep = ("variant", "seed", "dir", "steps", "probe_step", "diverged", "skipped")
    return {"dataset": dataset, "method": method, "init": init, "budget": budget,
            "runs": [{k: r[k] for k in keep} for r in runs.values()]}


def lr_verdict(history, method: str, blowup: float) -> dict:
    """stable / bounded verdict of one lr-sweep run from its history (module docstring)."""
    _, eigs = eigen_history(history, method)
    top = float(eigs[-1].max())
    loss0, loss1 = float(history["loss_eval"].iloc[0]), float(history["loss_eval"].iloc[-1])
    # stable: finite and the variant's own loss went down; bounded: the top eigenvalue stayed <= blowup
    # (for g_smooth every lambda >= 1 is a minimum, so a large eigenvalue is not a loss divergence)
    stable = math.isfinite(loss1) and loss1 < loss0
    return {"stable": bool(stable), "bounded": bool(stable and top <= float(blowup)), "final_top_eigenvalue": top,
            "initial_loss": loss0, "final_loss": loss1}


def run_lr_sweep(config: Mapping[str, Any], dataset: str, method: str, init: str, data_dir, root, *,
                 make_tracker=None, log=None) -> list[dict]:
    """Every run of the learning-rate sweep (config ``speedups.lr_sweep``: variants x factors, seed
    ``speedups.seeds[0]``) in this process; each verdict is also saved as
    ``root/{method}-{init}-{variant}-x{factor}/status.json`` (a finished one with the same run config is
    kept). ``make_tracker(variant, factor)``: the MLflow tracker of a run (None: no tracking)."""
    import shutil
    from pathlib import Path

    from sslkit.io import load_json, save_json
    from sslkit.training import engine as E

    log = log or (lambda msg: None)
    sc = config["speedups"]
    sweep = sc["lr_sweep"]
    splits = list(config["train"]["splits"])
    images = E.load_training_images(data_dir, splits)
    stats = {**E.data_stats(images), "dir": str(data_dir), "splits": splits}
    records = []
    for variant in sweep["variants"]:
        for factor in [float(f) for f in sweep["factors"]]:
            name = f"{method}-{init}-{variant}-x{factor:g}"
            status_p = Path(root) / name / "status.json"
            rc = resolve_variant_run(config, method, init, variant, int(sc["seeds"][0]), stats, dataset,
                                     steps=int(sweep["steps"]), lr_factor=factor)
            rc["runtime"]["progress"] = False
            if status_p.exists():
                old = load_json(status_p)
                if old.get("config_hash") == E.config_hash(rc) and old.get("blowup") == float(sweep["blowup"]):
                    log(f"speedups lr {name}: finished earlier (same run config), kept")
                    records.append(old)
                    continue
            run_dir = status_p.parent / "run"
            tracker = make_tracker(variant, factor) if make_tracker is not None else None
            log(f"speedups lr {name}: {rc['steps']} steps at lr {rc['lr']:g}")
            error, verdict = None, {"stable": False, "bounded": False, "final_top_eigenvalue": None,
                                    "initial_loss": None, "final_loss": None}
            with (tracker if tracker is not None else contextlib.nullcontext()):
                try:
                    E.train(rc, images, run_dir, tracker, resume=False)
                except E.NonFiniteLossError as exc:  # divergence is the measurement here, not a failure
                    error = str(exc).split(". ")[0]
                if error is None:
                    verdict = lr_verdict(E.read_history(run_dir / "history.csv"), method, float(sweep["blowup"]))
                if tracker is not None:
                    tracker.set_tags({"experiment": "speedups_lr", "variant": variant})
                    tracker.log_metrics({"stable": float(verdict["stable"]), "bounded": float(verdict["bounded"])})
            status = {"method": method, "init": init, "variant": variant, "factor": factor, "lr": rc["lr"],
                      "steps": rc["steps"], **verdict, "error": error, "config_hash": E.config_hash(rc),
                      "blowup": float(sweep["blowup"])}
            save_json(status_p, status)
            shutil.rmtree(run_dir / "ckpt", ignore_errors=True)  # only the verdict (and history.csv) is kept
            records.append(status)
    return records
