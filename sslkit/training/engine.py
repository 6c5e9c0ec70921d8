"""The SSL training engine: one run = one method at one init scale, tracked, checkpointed, resumable.

Outputs of a run in ``run_dir = results/train/{dataset}/{method}-{init}/`` (the interface later
stages consume)::

    manifest.json   {"dataset", "method", "init", "lr", "steps", "batch_size", "image_size",
                     "checkpoints": [{"step", "t", "t_eff", "epoch", "path"}], "run_config",
                     "history": "history.csv", "complete": true, "wall_time_s", "cpu_time_s"
                     (all sessions of the run), "session_wall_time_s", "device", ...}
                    written last, only when the run has finished.
    history.csv     one row per evaluated step: step, t, t_eff, epoch, loss, loss_eval, lr,
                    images_per_s, rank, eig_C_0..eig_C_{d-1}, eig_cov_0..eig_cov_{d-1} (descending).
    ckpt/step_XXXXXXXX.pt   checkpoints (model, optimiser, scheduler, RNG states, step, run_config).

Definitions:

- step k = after k optimiser updates; row k of the history and checkpoint k describe the parameters
  theta_k. ``t = lr * step`` with ``lr`` the base learning rate of the weights (the manifest's
  ``lr``); ``t_eff`` = sum of the scheduled learning rates of steps 0..k-1 (equal to ``t`` without
  warm-up/decay). ``epoch = step * batch_size / n_train``.
- ``loss``: mean training loss of the steps since the previous row (empty at step 0).
  ``loss_eval``: the loss on the fixed evaluation pair batch at theta_k (smooth, for staircases).
- Eigenvalues: on a fixed evaluation batch (``eval.batch_size`` training images, two augmented
  views drawn once from the run's seed), embeddings z1, z2 (N x d) of the online network in train
  mode (batch statistics; running statistics are restored afterwards). ``eig_C``: eigenvalues of
  the symmetrised cross-correlation C = (z1^T z2 + z2^T z1) / 2N of the raw embeddings (no
  batchnorm, no centring; docs/theory.md §1). ``eig_cov``: eigenvalues of the centred covariance of the 2N
  embeddings [z1; z2] (N - 1 normalisation). The paper reports C for Barlow Twins, covariance
  for the others (App. D.4); both are stored for every method. ``rank``: number of eigenvalues of
  that matrix above ``eval.rank_tol`` x the largest.
- ``images_per_s``: source images per second (each gives two views) over the steps since the
  previous row, wall clock, including augmentation.

Checkpoints are written atomically at the steps of ``checkpoint_steps`` (step 0, log-spaced steps
so that early steps are resolved, every ``checkpoints.every`` steps, and the last step), each with
the history written just before it. A rerun resumes from the newest checkpoint whose run config
matches (``runtime`` and the data path may differ) and continues identically: batch order is a
function of (seed, epoch), augmentation and global RNG states are restored, so on the CPU the
losses equal those of an uninterrupted run. A non-finite loss (or non-finite parameters at a
checkpoint) stops the run with :class:`NonFiniteLossError`; checkpoints already written are
untouched.

``load_checkpoint(path) -> (model, run_config)`` gives an eval-mode :class:`~sslkit.training.networks.SSLModel`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from sslkit.training import speedup_variants as speedups
from sslkit.training.augment import build_augment
from sslkit.config import ConfigError, deep_update
from sslkit.io import atomic_path, save_json
from sslkit.registry import INITS, METHODS
from sslkit.training.methods import make_method
from sslkit.training.networks import build_model
from sslkit.training.optim import LrSchedule, build_optimizer, build_scheduler

log = logging.getLogger(__name__)

__all__ = [
    "NonFiniteLossError",
    "TrainResult",
    "resolve_run_config",
    "data_stats",
    "load_training_images",
    "select_device",
    "checkpoint_steps",
    "eval_steps",
    "embedding_spectra",
    "train",
    "load_checkpoint",
    "checkpoint_path",
    "find_checkpoints",
    "read_history",
    "CHECKPOINT_FORMAT",
]

CHECKPOINT_FORMAT = 1
_CKPT_RE = re.compile(r"^step_(\d{8})\.pt$")


class NonFiniteLossError(FloatingPointError):
    """The training loss (or the parameters) became NaN/inf; the message says where and what to do."""


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------

def data_stats(images: np.ndarray) -> dict:
    """Per-channel mean/std in [0, 1] units, channels and image shape of uint8 N x H x W x C images."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 N x H x W x C, got {images.dtype} {images.shape}")
    n, h, w, c = images.shape
    sub = np.asarray(images[:: max(1, n // 20000)], dtype=np.float64) / 255.0
    mean = sub.mean(axis=(0, 1, 2))
    std = sub.std(axis=(0, 1, 2))
    return {"n_train": int(n), "height": int(h), "width": int(w), "channels": int(c),
            "mean": [round(float(m), 6) for m in mean],
            "std": [round(float(max(s, 1e-3)), 6) for s in std]}


def load_training_images(data_dir: str | os.PathLike, splits: list[str]) -> np.ndarray:
    """uint8 N x H x W x C training images: the canonical arrays of ``splits`` concatenated."""
    from sslkit.data import load_split

    parts = [np.asarray(load_split(data_dir, s).images) for s in splits]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def resolve_run_config(config: Mapping[str, Any], method: str, init: str, stats: Mapping[str, Any],
                       dataset: str | None = None) -> dict:
    """The fully resolved configuration of one run (saved in every checkpoint and the manifest).

    Merges ``config['methods'][method]`` with its ``small``/``standard``/``ntk`` override block and the
    ``train`` section; ``stats`` is :func:`data_stats` of the training images (plus optional
    ``dir``/``splits``). Raises ``ConfigError`` naming the key when something is missing or
    inconsistent.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; expected one of {METHODS}")
    if init not in INITS:
        raise ConfigError(f"unknown init {init!r}; expected one of {INITS}")
    methods = config.get("methods") or {}
    if method not in methods:
        raise ConfigError(f"config key 'methods.{method}' is missing: add the method's hyperparameters "
                          f"(see config/config.yaml) or remove it from train.methods")
    mcfg = copy.deepcopy(dict(methods[method]))
    overrides = {k: mcfg.pop(k) for k in INITS if k in mcfg}
    if init not in overrides:
        raise ConfigError(f"config key 'methods.{method}.{init}' is missing (needs at least init_scale)")
    ov = copy.deepcopy(overrides[init])
    init_scale = ov.pop("init_scale", None)
    if init_scale is None:
        raise ConfigError(f"config key 'methods.{method}.{init}.init_scale' is missing")
    deep_update(mcfg, ov)
    tcfg = config["train"]
    batch = int(mcfg["batch_size"])
    n_train = int(stats["n_train"])
    if batch > n_train:
        raise ConfigError(f"config key 'methods.{method}.batch_size': {batch} is larger than the "
                          f"{n_train} training images")
    steps_per_epoch = n_train // batch
    if tcfg.get("steps") is not None:
        steps = int(tcfg["steps"])
    elif mcfg.get("steps") is not None:
        steps = int(mcfg["steps"])
    elif mcfg.get("epochs") is not None:
        steps = int(math.ceil(float(mcfg["epochs"]) * steps_per_epoch))
    else:
        raise ConfigError(f"config keys 'methods.{method}.steps' and '.epochs' are both null: set one")
    sched = mcfg["schedule"]
    warmup_steps = int(round(float(sched.get("warmup_epochs", 0) or 0) * steps_per_epoch))
    image_size = tcfg.get("image_size") or int(stats["height"])
    opt = dict(mcfg["optimizer"])
    loss = dict(mcfg["loss"])
    rc = {
        "format": CHECKPOINT_FORMAT,
        "dataset": dataset or config.get("dataset"),
        "method": method,
        "init": init,
        "seed": int(tcfg.get("seed", 0)),
        "init_scale": float(init_scale),
        "encoder": dict(tcfg["encoder"]),
        "image_size": int(image_size),
        "batch_size": batch,
        "steps": steps,
        "steps_per_epoch": steps_per_epoch,
        "epochs": steps / steps_per_epoch,
        "lr": float(opt["lr"]),
        "optimizer": opt,
        "schedule": {"warmup_steps": min(warmup_steps, steps), "decay": sched["decay"],
                     "final_factor": float(sched.get("final_factor", 0.0))},
        "loss": loss,
        "method_config": {k: mcfg[k] for k in ("projector", "predictor") if k in mcfg},
        "augment": dict(mcfg["augment"]),
        "checkpoints": dict(tcfg["checkpoints"]),
        "eval": dict(tcfg["eval"]),
        "data": {k: stats[k] for k in ("n_train", "height", "width", "channels", "mean", "std")},
        "runtime": {k: tcfg[k] for k in ("device", "compile", "precision", "progress")},
    }
    for k in ("dir", "splits"):
        if k in stats:
            rc["data"][k] = stats[k]
    # Appendix G speed-ups: recorded only when switched on, so that runs without them keep the
    # run config (and resumable checkpoints) they had before the speedups block existed
    sp = mcfg.get("speedups")
    if speedups.is_active(sp):
        try:
            rc["speedups"] = speedups.validate_speedups(sp, method)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    if rc["eval"]["batch_size"] > n_train:
        rc["eval"]["batch_size"] = n_train
    return rc


def _fingerprint(rc: Mapping[str, Any]) -> dict:
    """What must match for a checkpoint to be resumed: everything but runtime and the data path."""
    fp = copy.deepcopy(dict(rc))
    fp.pop("runtime", None)
    fp.get("data", {}).pop("dir", None)
    return fp


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff_keys(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} -> {b!r}"]


# ---------------------------------------------------------------------------------------------
# schedules, device, spectra
# ---------------------------------------------------------------------------------------------

def select_device(name: str = "auto") -> torch.device:
    """``auto``: cuda if available, else mps, else cpu; otherwise the named device (checked)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("config train.device is 'mps' but MPS is not available; use 'auto' or 'cpu'")
    return dev


def _log_spaced(total: int, points: int) -> set[int]:
    if points <= 0 or total <= 0:
        return set()
    return {int(round(s)) for s in np.geomspace(1, total, points)}


def checkpoint_steps(total: int, log_points: int, every: int | None) -> list[int]:
    """Steps with a checkpoint: 0, ``log_points`` log-spaced steps in [1, total], multiples of
    ``every`` (0/None: none) and ``total``; sorted, unique."""
    steps = {0, total} | _log_spaced(total, log_points)
    if every:
        steps |= set(range(every, total + 1, every))
    return sorted(s for s in steps if 0 <= s <= total)


def eval_steps(total: int, every: int | None, log_points: int, extra: list[int] | None = None) -> list[int]:
    """Steps with an evaluation row: 0, log-spaced points, multiples of ``every``, ``extra``, total."""
    steps = {0, total} | _log_spaced(total, log_points) | set(extra or [])
    if every:
        steps |= set(range(every, total + 1, every))
    return sorted(s for s in steps if 0 <= s <= total)


def embedding_spectra(z1: torch.Tensor, z2: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending, float64) of the symmetrised cross-correlation C of N x d embeddings
    z1, z2 and of the centred covariance of the 2N rows of [z1; z2]."""
    a = z1.detach().double().cpu()
    b = z2.detach().double().cpu()
    n = a.shape[0]
    c = (a.T @ b + b.T @ a) / (2 * n)
    z = torch.cat([a, b])
    zc = z - z.mean(dim=0)
    cov = zc.T @ zc / max(z.shape[0] - 1, 1)
    eig_c = torch.linalg.eigvalsh(c).flip(0).numpy()
    eig_cov = torch.linalg.eigvalsh(0.5 * (cov + cov.T)).flip(0).numpy()
    return eig_c, eig_cov


def effective_rank(eigs: np.ndarray, tol: float) -> int:
    """Number of eigenvalues above ``tol`` x the largest (0 when all are <= 0)."""
    top = float(np.max(eigs)) if len(eigs) else 0.0
    return int(np.sum(eigs > tol * top)) if top > 0 else 0


# ---------------------------------------------------------------------------------------------
# checkpoints and history
# ---------------------------------------------------------------------------------------------

def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / "ckpt" / f"step_{step:08d}.pt"


def find_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints in ``run_dir/ckpt``, ascending (temporary files ignored)."""
    d = Path(run_dir) / "ckpt"
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _CKPT_RE.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def _torch_load(path: str | os.PathLike, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> tuple[torch.nn.Module, dict]:
    """``(model, run_config)`` of a checkpoint; the model is in eval mode on ``map_location``.

    The model has ``.encoder`` (N x C x H x W -> N x h), ``.projector`` (N x h -> N x d),
    ``.hidden(x)``, ``.embed(x)`` and ``.predictor`` where the method has one. Inputs are images
    normalised as ``sslkit.training.augment.eval_transform(images, run_config)`` does.
    """
    ckpt = _torch_load(path, map_location)
    rc = ckpt["run_config"]
    with torch.random.fork_rng(devices=[]):
        model = build_model(rc)
    model.load_state_dict(ckpt["model"])
    return model.to(map_location).eval(), rc


def read_history(path: str | os.PathLike):
    """history.csv as a pandas DataFrame (see the module docstring for its columns)."""
    import pandas as pd

    return pd.read_csv(path)


def _write_history(path: Path, rows: list[dict]) -> None:
    import pandas as pd

    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.9g")


def _rng_state(aug_gen: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "augment": aug_gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping, aug_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"].cpu())
    aug_gen.set_state(state["augment"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    """What :func:`train` did in this process."""

    run_dir: Path
    complete: bool
    start_step: int
    last_step: int
    losses: dict[int, float] = field(default_factory=dict)  # training loss of each step run here
    manifest: dict | None = None
    wall_time_s: float = 0.0
    cpu_time_s: float = 0.0


def _batch_indices(seed: int, step: int, steps_per_epoch: int, n: int, batch: int) -> torch.Tensor:
    """Indices of the images of ``step``: the epoch's permutation (a function of seed and epoch)."""
    epoch, pos = divmod(step, steps_per_epoch)
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + 7919 * epoch + 17)
    perm = torch.randperm(n, generator=g)
    return perm[pos * batch:(pos + 1) * batch]


@torch.no_grad()
def _snapshot_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.named_buffers()}


@torch.no_grad()
def _restore_buffers(model: torch.nn.Module, snap: Mapping[str, torch.Tensor]) -> None:
    for k, v in model.named_buffers():
        v.copy_(snap[k])


def _finite_params(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def train(run_config: dict, images: np.ndarray, run_dir: str | os.PathLike, tracker=None, *,
          resume: bool = True, stop_at: int | None = None,
          step_hook: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train one run (see the module docstring); return a :class:`TrainResult`.

    Args:
        run_config: from :func:`resolve_run_config`.
        images: uint8 N x H x W x C training images (moved to the device once).
        run_dir: output folder (manifest.json, history.csv, ckpt/).
        tracker: an ``sslkit.tracking.Tracker`` (or None): params, metrics per row, artifacts.
        resume: continue from the newest matching checkpoint; False deletes old checkpoints first.
        stop_at: stop (as if killed) when this step is reached, before training on it; for tests.
        step_hook: called as ``step_hook(step, loss)`` after every optimiser step.
    """
    t_wall0, t_cpu0 = time.perf_counter(), time.process_time()
    rc = run_config
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    history_path = run_dir / "history.csv"
    rt = rc["runtime"]
    device = select_device(rt["device"])
    cuda = device.type == "cuda"
    precision = rt["precision"]
    if precision == "auto":
        precision = "bf16" if cuda else "fp32"
    if precision == "bf16" and device.type == "cpu":
        log.warning("bf16 autocast requested on the CPU: it is slow there; consider precision 'fp32'")
    autocast_dtype = torch.bfloat16 if precision == "bf16" else None
    seed = int(rc["seed"])
    total = int(rc["steps"])
    batch = int(rc["batch_size"])
    n_train = int(images.shape[0])
    spe = int(rc["steps_per_epoch"])
    if n_train != rc["data"]["n_train"]:
        raise ValueError(f"run config was resolved for {rc['data']['n_train']} images, got {n_train}")

    # model, method, optimiser (initial state drawn from the seed)
    torch.manual_seed(seed)
    model = build_model(rc).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    embed = torch.compile(model.embed) if rt["compile"] else None
    method = make_method(model, rc, embed)
    optimizer = build_optimizer(model.online_parameters(), rc["optimizer"])
    sched_cfg = rc["schedule"]
    scheduler = build_scheduler(optimizer, LrSchedule(total, sched_cfg["warmup_steps"], sched_cfg["decay"],
                                                      sched_cfg["final_factor"]))
    augment = build_augment(rc, device)
    aug_gen = torch.Generator(device=device).manual_seed(seed + 1)

    data = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True)).to(device)

    def views(idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = data[idx.to(device)]
        v1, v2 = augment(x, gen, 0), augment(x, gen, 1)
        if cuda:
            v1 = v1.contiguous(memory_format=torch.channels_last)
            v2 = v2.contiguous(memory_format=torch.channels_last)
        return v1, v2

    # fixed evaluation pair batch (same on every resume)
    ecfg = rc["eval"]
    eval_idx = torch.from_numpy(np.sort(np.random.default_rng(seed + 2).choice(
        n_train, size=min(int(ecfg["batch_size"]), n_train), replace=False)))
    ev1, ev2 = views(eval_idx, torch.Generator(device=device).manual_seed(seed + 3))

    ccfg = rc["checkpoints"]
    ckpt_steps = set(checkpoint_steps(total, int(ccfg["log_points"]), ccfg.get("every")))
    row_steps = set(eval_steps(total, ecfg.get("every"), int(ecfg["log_points"]), sorted(ckpt_steps)))
    lr0 = float(rc["lr"])
    primary = "C" if rc["method"] == "barlow_twins" else "cov"

    # state that is checkpointed besides model/optimiser/scheduler
    start = 0
    t_eff = 0.0
    # running loss since the last history row; wall/CPU seconds of earlier sessions (resumes)
    acc = {"loss_sum": 0.0, "loss_count": 0, "wall_s": 0.0, "cpu_s": 0.0}
    rows: list[dict] = []

    existing = find_checkpoints(run_dir)
    if existing and not resume:
        for _, p in existing:
            p.unlink()
        existing = []
    for step_found, path in reversed(existing):
        try:
            ckpt = _torch_load(path, device)
        except Exception as exc:  # a damaged file: fall back to the previous checkpoint
            log.warning("cannot read checkpoint %s (%s); trying an older one", path, exc)
            continue
        diff = _diff_keys(_fingerprint(ckpt["run_config"]), _fingerprint(rc))
        if diff:
            raise ConfigError(
                f"checkpoint {path} was written with a different run config ({'; '.join(diff[:5])}). "
                f"Delete {path.parent} to train afresh with the new config, or restore the old values.")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"], aug_gen)
        start, t_eff = int(ckpt["step"]), float(ckpt["t_eff"])
        acc.update(ckpt["log_state"])
        if history_path.exists():
            # the history written with this checkpoint ends with the row of step `start`
            rows = [r for r in read_history(history_path).to_dict("records") if r["step"] <= start]
        log.info("resuming %s from step %d (%s)", run_dir, start, path)
        break
    if start == 0:
        rows = []

    prior_wall, prior_cpu = float(acc["wall_s"]), float(acc["cpu_s"])
    if tracker is not None:
        tracker.log_params({"run": {k: v for k, v in rc.items() if k not in ("data",)}})
        tracker.log_params({"data": rc["data"]})
        tracker.set_tags({"device": str(device), "precision": precision, "resumed_from": start})

    pending: list[dict] = []

    def flush_tracker() -> None:
        """Send the rows logged since the last flush to MLflow in one batch per metric."""
        if tracker is None or not pending:
            return
        top = int(ecfg.get("mlflow_top", 32))
        keys = ["loss", "loss_eval", "lr", "images_per_s", "rank", "t", "t_eff", "epoch"]
        keys += [f"eig_C_{j}" for j in range(top)] + [f"eig_cov_{j}" for j in range(top)]
        values: dict[str, list[float]] = {}
        steps_of: dict[str, list[int]] = {}
        for r in pending:
            for k in keys:
                v = r.get(k)
                if v is not None and math.isfinite(float(v)):
                    values.setdefault(k, []).append(float(v))
                    steps_of.setdefault(k, []).append(int(r["step"]))
        groups: dict[tuple, dict[str, list[float]]] = {}
        for k in values:  # one batched MLflow call per distinct step list (usually one or two)
            groups.setdefault(tuple(steps_of[k]), {})[k] = values[k]
        for steps, series in groups.items():
            tracker.log_series(series, list(steps))
        pending.clear()

    def autocast():
        if autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=autocast_dtype)

    def evaluate(step: int, lr_now: float, images_per_s: float) -> dict:
        snap = _snapshot_buffers(model)
        # float32 throughout, also on a bf16 run: bf16-rounded embeddings would bury the small
        # ("ungrown") eigenvalues under a rounding floor ~1e-5 of the top one
        with torch.no_grad():
            loss_eval, z1, z2 = method.loss(ev1, ev2, step, update=False)
        _restore_buffers(model, snap)
        if not (torch.isfinite(z1).all() and torch.isfinite(z2).all()):
            raise NonFiniteLossError(
                f"embeddings of the evaluation batch are not finite at step {step} of {rc['method']}-{rc['init']} "
                f"(lr {lr0}); the run diverged. {_nan_remedy(run_dir)}")
        eig_c, eig_cov = embedding_spectra(z1, z2)
        mean_loss = acc["loss_sum"] / acc["loss_count"] if acc["loss_count"] else float("nan")
        acc["loss_sum"], acc["loss_count"] = 0.0, 0
        row = {"step": step, "t": lr0 * step, "t_eff": t_eff, "epoch": step * batch / n_train,
               "loss": mean_loss, "loss_eval": float(loss_eval), "lr": lr_now,
               "images_per_s": images_per_s,
               "rank": effective_rank(eig_c if primary == "C" else eig_cov, float(ecfg["rank_tol"]))}
        row.update({f"eig_C_{j}": float(v) for j, v in enumerate(eig_c)})
        row.update({f"eig_cov_{j}": float(v) for j, v in enumerate(eig_cov)})
        return row

    def save_checkpoint(step: int) -> None:
        if not _finite_params(model):
            raise NonFiniteLossError(
                f"parameters are not finite at step {step} of {rc['method']}-{rc['init']} (lr {lr0}); "
                f"no checkpoint written. {_nan_remedy(run_dir)}")
        _write_history(history_path, rows)
        ckpt = {"format": CHECKPOINT_FORMAT, "step": step, "t": lr0 * step, "t_eff": t_eff,
                "epoch": step * batch / n_train, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": _rng_state(aug_gen), "run_config": rc,
                "log_state": {**acc, "wall_s": prior_wall + time.perf_counter() - t_wall0,
                              "cpu_s": prior_cpu + time.process_time() - t_cpu0}}
        with atomic_path(checkpoint_path(run_dir, step)) as tmp:
            torch.save(ckpt, tmp)
        flush_tracker()

    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    bar = None
    if tqdm is not None and rt.get("progress", True):
        bar = tqdm(total=total, initial=start, desc=f"{rc['method']}-{rc['init']}", mininterval=2.0,
                   dynamic_ncols=True)

    result = TrainResult(run_dir, False, start, start)
    model.train()
    t_last, step_last = time.perf_counter(), start
    step = start
    while True:
        lr_now = optimizer.param_groups[0]["lr"]
        resumed_here = step == start and start > 0 and any(r["step"] == start for r in rows)
        if step in row_steps and not resumed_here:
            now = time.perf_counter()
            ips = (step - step_last) * batch / (now - t_last) if step > step_last else float("nan")
            row = evaluate(step, lr_now, ips)
            rows.append(row)
            pending.append(row)
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss_eval']:.4g}", rank=row["rank"], refresh=False)
            t_last, step_last = time.perf_counter(), step
        if step in ckpt_steps and not resumed_here:
            save_checkpoint(step)
        if step >= total or (stop_at is not None and step >= stop_at):
            break
        idx = _batch_indices(seed, step, spe, n_train, batch)
        x1, x2 = views(idx, aug_gen)
        with autocast():
            loss, _, _ = method.loss(x1, x2, step)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(
                f"loss is {loss_value} at step {step} of {rc['method']}-{rc['init']} (lr {lr0}, "
                f"init_scale {rc['init_scale']}). {_nan_remedy(run_dir)}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        method.after_step(step)
        t_eff += lr_now
        acc["loss_sum"] += loss_value
        acc["loss_count"] += 1
        result.losses[step] = loss_value
        if step_hook is not None:
            step_hook(step, loss_value)
        step += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    result.last_step = step
    result.wall_time_s = time.perf_counter() - t_wall0
    result.cpu_time_s = time.process_time() - t_cpu0
    if step < total:
        flush_tracker()
        return result

    manifest = {
        "dataset": rc["dataset"], "method": rc["method"], "init": rc["init"], "lr": lr0, "steps": total,
        "batch_size": batch, "image_size": rc["image_size"],
        "checkpoints": [{"step": s, "t": lr0 * s, "t_eff": _t_eff_of(rows, s), "epoch": s * batch / n_train,
                         "path": str(checkpoint_path(run_dir, s).relative_to(run_dir))}
                        for s, _ in find_checkpoints(run_dir) if s in ckpt_steps],
        "run_config": rc, "history": history_path.name, "complete": True,
        "device": str(device), "precision": precision, "resumed_from": start,
        # over all sessions of the run (a resumed run adds the earlier sessions' time up to its
        # checkpoint); session_*: this process only
        "wall_time_s": round(prior_wall + result.wall_time_s, 3),
        "cpu_time_s": round(prior_cpu + result.cpu_time_s, 3),
        "session_wall_time_s": round(result.wall_time_s, 3),
        "session_cpu_time_s": round(result.cpu_time_s, 3),
    }
    save_json(run_dir / "manifest.json", manifest)
    result.manifest = manifest
    result.complete = True
    if tracker is not None:
        flush_tracker()
        tracker.log_metrics({"train_wall_time_s": result.wall_time_s, "train_cpu_time_s": result.cpu_time_s}, total)
        tracker.log_artifacts([history_path, run_dir / "manifest.json"])
    return result


def _t_eff_of(rows: list[dict], step: int) -> float | None:
    for r in rows:
        if r["step"] == step:
            return float(r["t_eff"])
    return None


def _nan_remedy(run_dir: Path) -> str:
    ck = find_checkpoints(run_dir)
    where = f"the last good checkpoint is {ck[-1][1]}" if ck else "no checkpoint was written"
    return (f"Training stopped; {where} (left intact). Lower the learning rate "
            f"(methods.<method>.optimizer.lr or the init override) or raise init_scale, then delete "
            f"{run_dir / 'ckpt'} to restart (or keep it to resume from the last good step).")
