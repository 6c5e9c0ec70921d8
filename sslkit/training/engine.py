"""The SSL training engine: one run = one method at one init scale, tracked, checkpointed, resumable.

Outputs of a run in ``run_dir = results/train/{dataset}/{method}-{init}/`` (the interface later
stages consume)::

    manifest.json   {"dataset", "method", "init", "lr", "steps", "batch_size", "image_size",
                     "checkpoints": [{"step", "t", "t_eff", "epoch", "path", "sha256", "bytes", "mtime_ns"}],
                     "run_config", "config_hash", "integrity_generation",
                     "history": "history.csv", "complete": true, "wall_time_s", "cpu_time_s"
                     (all sessions of the run), "session_wall_time_s", "session_eval_forward_s" and
                     "session_monitor_s" (parts of it: evaluation forwards, the monitor's own work), "device", ...}
                    written last, only when the run has finished.
    history.csv     one row per evaluated step: step, t, t_eff, epoch, loss, loss_eval, lr,
                    images_per_s, rank, rankme, steps_so_far, next_step_t, eig_C_0..eig_C_{d-1},
                    eig_cov_0..eig_cov_{d-1} (descending).
    ckpt/step_XXXXXXXX.pt   checkpoints (model, optimiser, scheduler, RNG states, step, run_config).
    ckpt/digests.json       sha256, size and mtime of each checkpoint, recorded as it is written.
    ckpt/manifest.json      a copy of manifest.json (Snakemake deletes the output before rerunning a job).
    previous/<config_hash>/ earlier runs set aside when the run config changed: ckpt/, history.csv.

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
  embeddings [z1; z2] (divided by 2N - 1; StepwiseMonitor.update divides by 2N, a factor 1 - 1/2N that
  moves no step). The paper reports C for Barlow Twins, covariance
  for the others (App. D.4); both are stored for every method. ``rank``: number of eigenvalues of
  that matrix above ``eval.rank_tol`` x the largest. These, ``rankme`` (RankMe of the 2N uncentred
  embeddings), ``steps_so_far`` (steps detected on the history up to this row) and ``next_step_t``
  (the forecast t of the next step, NaN when none) come from the run's
  :class:`sslkit.analysis.monitor.StepwiseMonitor` (``docs/theory.md`` §16), the monitor any
  PyTorch loop can use; a resumed run replays its history into it first.
- ``images_per_s``: source images per second (each gives two views) over the steps since the
  previous row, wall clock, including augmentation.

Checkpoints are written atomically at the steps of ``checkpoint_steps`` (step 0, log-spaced steps
so that early steps are resolved, every ``checkpoints.every`` steps, and the last step), each with
the history written just before it. A rerun resumes from the newest intact checkpoint and continues
identically: batch order is a function of (seed, epoch), augmentation and global RNG states are
restored, so on the CPU the losses equal those of an uninterrupted run. A non-finite loss (or
non-finite parameters at a checkpoint) stops the run with :class:`NonFiniteLossError`; checkpoints
already written are untouched.

Integrity and safe reruns (:func:`resume_run`). Every checkpoint's sha256 is recorded when it is
written (``ckpt/digests.json``) and listed in the manifest; :func:`load_checkpoint` verifies it and
names the file and the remedy on a mismatch (:class:`CheckpointIntegrityError`). A rerun verifies
every checkpoint: from the first damaged one on (logged by name), the run is retrained from the
newest intact checkpoint before it. A rerun whose run config differs (apart from ``runtime`` and
the data path) from that of the checkpoints present never deletes them: ``ckpt/`` and the history
are moved to ``previous/<hash of the old config>/`` (logged), and if ``previous/<hash of the new
config>/`` exists -- the config was changed back -- it is moved into place and the run resumes
from it (a finished one at once, its manifest restored as it was). ``config_hash`` is
:func:`config_hash` of the run config.

Random streams: every draw of a run comes from one ``numpy.random.SeedSequence(seed)`` (``seed`` =
config ``train.seed``) through named children (:class:`RunSeeds`, ``SEED_STREAMS``): ``init``
(seeds torch's global RNG before the model is built), ``batch_order`` with the epoch as a further
spawn key (that epoch's permutation of the images), ``augment`` (the training views' generator),
``eval_images`` and ``eval_augment`` (the fixed evaluation batch and its two views). Each stream is
a pure function of (seed, name, key), not of how far the run got, which is what makes a resumed
run draw what an uninterrupted one draws.

``load_checkpoint(path) -> (model, run_config)`` gives an eval-mode :class:`~sslkit.training.networks.SSLModel`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslkit.analysis.spectra import rankme_from_gram
from sslkit.config import ConfigError, deep_update
from sslkit.io import atomic_path, load_json, save_json, sha256_file
from sslkit.plan import speedups_active, validate_speedups
from sslkit.registry import INITS, METHODS
from sslkit.training.augment import build_augment
from sslkit.training.methods import make_method
from sslkit.training.networks import build_model
from sslkit.training.optim import LrSchedule, build_optimizer, build_scheduler

log = logging.getLogger(__name__)

__all__ = [
    "NonFiniteLossError",
    "CheckpointIntegrityError",
    "config_hash",
    "verify_checkpoint",
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


class CheckpointIntegrityError(OSError):
    """A checkpoint is unreadable or differs from the digest recorded when it was written; the message
    names the file and the remedy."""


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
    encoder = {**dict(config["train"]["encoder"]), **dict(ov.pop("encoder", None) or {})}
    deep_update(mcfg, ov)
    tcfg = config["train"]
    batch = int(mcfg["batch_size"])
    n_train = int(stats["n_train"])
    if batch > n_train:
        raise ConfigError(f"config key 'methods.{method}.batch_size': {batch} is larger than the "
                          f"{n_train} training images")
    steps_per_epoch = n_train // batch
    steps = _resolve_steps(tcfg, mcfg, method, steps_per_epoch)
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
        "encoder": encoder,
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
        "data": _data_block(stats),
        "runtime": {k: tcfg[k] for k in ("device", "compile", "precision", "progress")},
    }
    # Appendix G speed-ups: recorded only when switched on, so that runs without them keep the
    # run config (and resumable checkpoints) they had before the speedups block existed
    sp = mcfg.get("speedups")
    if speedups_active(sp):
        rc["speedups"] = _validated_speedups(sp, method)
    if rc["eval"]["batch_size"] > n_train:
        rc["eval"]["batch_size"] = n_train
    return rc


def _resolve_steps(tcfg: Mapping[str, Any], mcfg: Mapping[str, Any], method: str, steps_per_epoch: int) -> int:
    """Steps of a run: ``train.steps``, else ``methods.<method>.steps``, else its ``epochs`` (rounded up)."""
    if tcfg.get("steps") is not None:
        return int(tcfg["steps"])
    if mcfg.get("steps") is not None:
        return int(mcfg["steps"])
    if mcfg.get("epochs") is not None:
        return int(math.ceil(float(mcfg["epochs"]) * steps_per_epoch))
    raise ConfigError(f"config keys 'methods.{method}.steps' and '.epochs' are both null: set one")


def _data_block(stats: Mapping[str, Any]) -> dict:
    """The run config's ``data``: the image statistics, and where the images came from if known."""
    out = {k: stats[k] for k in ("n_train", "height", "width", "channels", "mean", "std")}
    out.update({k: stats[k] for k in ("dir", "splits") if k in stats})
    return out


def _validated_speedups(sp: Mapping[str, Any], method: str) -> dict:
    try:
        return validate_speedups(sp, method)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _fingerprint(rc: Mapping[str, Any]) -> dict:
    """What must match for a checkpoint to be resumed: everything but runtime and the data path."""
    fp = copy.deepcopy(dict(rc))
    fp.pop("runtime", None)
    fp.get("data", {}).pop("dir", None)
    return fp


def config_hash(rc: Mapping[str, Any]) -> str:
    """12 hex digits of the sha256 of the run config's fingerprint (what must match to resume)."""
    text = json.dumps(_fingerprint(rc), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


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


DIGESTS_FILE = "digests.json"


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"bytes": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _read_digests(run_dir: Path) -> dict[str, dict]:
    """{checkpoint file name: {"sha256", "bytes", "mtime_ns"}} of ``run_dir/ckpt/digests.json`` ({} if none)."""
    path = Path(run_dir) / "ckpt" / DIGESTS_FILE
    if not path.exists():
        return {}
    try:
        return dict(load_json(path))
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (%s); checkpoints are verified by loading them only", path, exc)
        return {}


def _record_digest(run_dir: Path, path: Path) -> dict:
    """Hash the checkpoint just written and record it in ``ckpt/digests.json`` (atomically)."""
    entry = {"sha256": sha256_file(path), **_stamp(path)}
    digests = _read_digests(run_dir)
    digests[path.name] = entry
    save_json(Path(run_dir) / "ckpt" / DIGESTS_FILE, digests)
    return entry


def _integrity_remedy(path: Path) -> str:
    run_dir = path.parent.parent
    return (f"Rerun the workflow (`snakemake ...` as before): the train job of {run_dir.name} notices the "
            f"damaged checkpoint and retrains from the newest intact one before it. Outside the workflow: "
            f"delete {path} and rerun sslkit.training.engine.train on {run_dir}.")


def verify_checkpoint(path: str | os.PathLike, expected: Mapping[str, Any] | None) -> str | None:
    """What is wrong with checkpoint ``path`` against its recorded ``expected`` {"sha256", "bytes"}
    (None: nothing, or nothing recorded to compare with)."""
    path = Path(path)
    if not path.exists():
        return f"{path} is missing"
    if not expected or "sha256" not in expected:
        return None
    size = path.stat().st_size
    if "bytes" in expected and size != int(expected["bytes"]):
        return f"{path} has {size} bytes, {int(expected['bytes'])} were recorded when it was written"
    found = sha256_file(path)
    if found != expected["sha256"]:
        return f"{path} has sha256 {found[:16]}..., {str(expected['sha256'])[:16]}... was recorded when it was written"
    return None


def _recorded_digest(path: Path) -> dict | None:
    """The digest of checkpoint ``path`` recorded by its run: the manifest's entry, else ckpt/digests.json."""
    run_dir = path.parent.parent
    man = run_dir / "manifest.json"
    if man.exists():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            for c in load_json(man)["checkpoints"]:
                if (run_dir / c["path"]).resolve() == path.resolve() and "sha256" in c:
                    return c
    return _read_digests(run_dir).get(path.name)


def load_checkpoint(path: str | os.PathLike, map_location="cpu", *, expected: Mapping[str, Any] | None = None,
                    verify: bool = True) -> tuple[torch.nn.Module, dict]:
    """``(model, run_config)`` of a checkpoint; the model is in eval mode on ``map_location``.

    The model has ``.encoder`` (N x C x H x W -> N x h), ``.projector`` (N x h -> N x d),
    ``.hidden(x)``, ``.embed(x)`` and ``.predictor`` where the method has one. Inputs are images
    normalised as ``sslkit.training.augment.eval_transform(images, run_config)`` does.

    With ``verify`` (default) the file is first checked against ``expected`` ({"sha256", "bytes"}),
    by default the digest its run recorded (the manifest's entry, else ``ckpt/digests.json``);
    a mismatch or an unreadable file raises :class:`CheckpointIntegrityError` naming the file and
    the remedy.
    """
    path = Path(path)
    if verify:
        problem = verify_checkpoint(path, expected if expected is not None else _recorded_digest(path))
        if problem:
            raise CheckpointIntegrityError(f"damaged checkpoint: {problem}. {_integrity_remedy(path)}")
    try:
        ckpt = _torch_load(path, map_location)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise CheckpointIntegrityError(f"cannot read checkpoint {path} ({type(exc).__name__}: {exc}); the file "
                                       f"is truncated or damaged. {_integrity_remedy(path)}") from exc
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


# ---------------------------------------------------------------------------------------------
# random streams
# ---------------------------------------------------------------------------------------------

#: the named random streams of a run: children of ``numpy.random.SeedSequence(seed)``, the name's
#: position being its spawn key (append new names at the end: the others' streams stay the same)
SEED_STREAMS = ("init", "batch_order", "augment", "eval_images", "eval_augment")


@dataclass(frozen=True)
class RunSeeds:
    """The random streams of a run, all derived from the run config's one integer ``seed``.

    ``root = numpy.random.SeedSequence(seed)``; stream ``name`` is the child
    ``root.spawn(len(SEED_STREAMS))[SEED_STREAMS.index(name)]`` and ``sequence(name, *key)`` its
    descendant ``child.spawn(key[0] + 1)[key[0]]...`` -- computed directly as
    ``SeedSequence(seed, spawn_key=(index, *key))``, which is what ``spawn`` returns, without the
    spawn counter: a stream is a pure function of (seed, name, key), so a resumed run draws the
    same numbers as an uninterrupted one. The streams:

    - ``init``: seeds torch's global RNG before the model is built (initial parameters; any later
      draw from the global RNG continues from it and is checkpointed);
    - ``batch_order``, key ``epoch``: the permutation of the training images of that epoch;
    - ``augment``: the generator of the training views (one stream for the run; checkpointed);
    - ``eval_images``: which ``eval.batch_size`` training images form the evaluation batch;
    - ``eval_augment``: the generator of the evaluation batch's two views (drawn once).
    """

    seed: int

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ConfigError(f"config key 'train.seed' must be a non-negative integer, got {self.seed!r}")

    def sequence(self, name: str, *key: int) -> np.random.SeedSequence:
        """The ``SeedSequence`` of stream ``name`` (further ``key``: its descendants, e.g. the epoch)."""
        if name not in SEED_STREAMS:
            raise KeyError(f"unknown random stream {name!r}; expected one of {SEED_STREAMS}")
        return np.random.SeedSequence(int(self.seed), spawn_key=(SEED_STREAMS.index(name), *map(int, key)))

    def torch_seed(self, name: str, *key: int) -> int:
        """A 63-bit integer seed for ``torch.manual_seed`` / ``torch.Generator.manual_seed``."""
        return int(self.sequence(name, *key).generate_state(1, np.uint64)[0] >> np.uint64(1))

    def numpy_rng(self, name: str, *key: int) -> np.random.Generator:
        return np.random.default_rng(self.sequence(name, *key))

    def torch_generator(self, name: str, *key: int, device: str | torch.device = "cpu") -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.torch_seed(name, *key))


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seeds: RunSeeds, epoch: int, n: int) -> torch.Tensor:
    return torch.randperm(n, generator=seeds.torch_generator("batch_order", epoch))


def batch_indices(seeds: RunSeeds, step: int, steps_per_epoch: int, n: int, batch: int) -> torch.Tensor:
    """Indices of the images of ``step``: a slice of its epoch's permutation (stream ``batch_order``)."""
    epoch, pos = divmod(step, steps_per_epoch)
    return _epoch_permutation(seeds, epoch, n)[pos * batch:(pos + 1) * batch]


def eval_batch_indices(seeds: RunSeeds, n_train: int, size: int) -> torch.Tensor:
    """The sorted indices of the fixed evaluation batch (stream ``eval_images``, without replacement)."""
    rng = seeds.numpy_rng("eval_images")
    return torch.from_numpy(np.sort(rng.choice(n_train, size=min(int(size), n_train), replace=False)))


# ---------------------------------------------------------------------------------------------
# the state of a run
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunPlan:
    """What a run does, fixed by its run config and the number of images: sizes, cadences, paths."""

    rc: dict
    run_dir: Path
    seeds: RunSeeds
    total: int
    batch: int
    n_train: int
    steps_per_epoch: int
    lr0: float
    ckpt_steps: frozenset[int]
    row_steps: frozenset[int]

    @property
    def name(self) -> str:
        return f"{self.rc['method']}-{self.rc['init']}"

    @property
    def history_path(self) -> Path:
        return self.run_dir / "history.csv"

    @property
    def primary(self) -> str:
        """The matrix whose eigenvalues give the rank: C for Barlow Twins, the covariance otherwise."""
        return "C" if self.rc["method"] == "barlow_twins" else "cov"

    def epoch(self, step: int) -> float:
        return step * self.batch / self.n_train


def plan_run(rc: dict, n_train: int, run_dir: str | os.PathLike) -> RunPlan:
    """The :class:`RunPlan` of a run config; ``n_train`` must be the count it was resolved for."""
    if n_train != rc["data"]["n_train"]:
        raise ValueError(f"run config was resolved for {rc['data']['n_train']} images, got {n_train}")
    total = int(rc["steps"])
    ccfg, ecfg = rc["checkpoints"], rc["eval"]
    ckpt_steps = checkpoint_steps(total, int(ccfg["log_points"]), ccfg.get("every"))
    row_steps = eval_steps(total, ecfg.get("every"), int(ecfg["log_points"]), ckpt_steps)
    return RunPlan(rc=rc, run_dir=Path(run_dir), seeds=RunSeeds(rc["seed"]), total=total,
                   batch=int(rc["batch_size"]), n_train=int(n_train), steps_per_epoch=int(rc["steps_per_epoch"]),
                   lr0=float(rc["lr"]), ckpt_steps=frozenset(ckpt_steps), row_steps=frozenset(row_steps))


@dataclass
class RunState:
    """The mutable state of a run in this process: what a checkpoint saves and the bookkeeping around it."""

    device: torch.device
    precision: str                      # "fp32" or "bf16" (autocast of the training loss)
    model: torch.nn.Module
    method: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    augment: Callable
    aug_gen: torch.Generator            # stream "augment"; checkpointed
    data: torch.Tensor                  # the training images on the device, uint8
    eval_views: tuple[torch.Tensor, torch.Tensor]
    tracker: Any = None
    loss_fn: Callable | None = None     # the training loss: method.loss, or its torch.compile (compile_enabled)
    step: int = 0                       # optimiser updates so far
    start: int = 0                      # the step this session started at (resumed from)
    t_eff: float = 0.0                  # sum of the scheduled learning rates of steps 0..step-1
    loss_sum: float = 0.0               # training loss since the last history row
    loss_count: int = 0
    prior_wall_s: float = 0.0           # wall/CPU seconds of earlier sessions (up to their checkpoint)
    prior_cpu_s: float = 0.0
    wall0: float = field(default_factory=time.perf_counter)     # this session's clocks
    cpu0: float = field(default_factory=time.process_time)
    row_time: float = 0.0               # perf_counter at the last history row, and its step
    row_step: int = 0
    rows: list[dict] = field(default_factory=list)              # the history
    pending: list[dict] = field(default_factory=list)           # rows not yet sent to the tracker
    losses: dict[int, float] = field(default_factory=dict)      # training loss of each step run here
    bar: Any = None                     # progress: tqdm bar in the log and/or console lines, or None
    tracking_run_id: str | None = None  # the MLflow run of the model (stored in checkpoints' log_state)
    logged_through: int = -1            # the last step whose history row the tracker already has
    monitor: Any = None                 # sslkit.analysis.monitor.StepwiseMonitor: rank, steps so far, forecast
    eval_forward_s: float = 0.0         # this session's seconds in the evaluation batch's forward passes ...
    monitor_s: float = 0.0              # ... and in the monitor's own work on them (spectra, detector, forecast)

    @property
    def lr(self) -> float:
        """The scheduled learning rate of the next step."""
        return float(self.optimizer.param_groups[0]["lr"])

    def wall_s(self) -> float:
        return time.perf_counter() - self.wall0

    def cpu_s(self) -> float:
        return time.process_time() - self.cpu0


def _precision(device: torch.device, requested: str) -> str:
    precision = ("bf16" if device.type == "cuda" else "fp32") if requested == "auto" else requested
    if precision == "bf16" and device.type == "cpu":
        log.warning("bf16 autocast requested on the CPU: it is slow there; consider precision 'fp32'")
    return precision


#: inductor options of the compiled training loss on the CPU. Layout optimisation (inductor turning the
#: convolutions channels-last) is off: with the default encoder (ResNet-18 of width 1/16: 4-channel first
#: stage) the compiled backward corrupted the heap and aborted the process (torch 2.14, AVX2 CPU).
CPU_COMPILE_OPTIONS = {"layout_optimization": False}


def compile_enabled(setting: bool | str, device: torch.device) -> bool:
    """Whether config ``train.compile`` (true | false | auto) compiles the training step on ``device``:
    ``auto`` compiles on CUDA only (on the CPU the compile time does not pay for itself within the default
    runs: bench/compile_step.py)."""
    if setting == "auto":
        return device.type == "cuda"
    if isinstance(setting, bool):
        return setting
    raise ConfigError(f"config key 'train.compile' must be true, false or auto, got {setting!r}")


def compiled_loss(method: Any, device: torch.device) -> Callable:
    """``torch.compile`` (inductor) of ``method.loss``: the forward of both views and the method's loss in
    one graph (several where the method's Python breaks it), whose backward AOTAutograd compiles with it,
    so ``loss.backward()`` runs compiled kernels as well: forward, loss and backward of a training step.

    The optimiser step, the EMA update and the evaluation rows stay eager (the evaluation: the same
    float32 numbers as an uncompiled run). Compilation happens at the first step of a session (again
    after a resume, from inductor's on-disk cache when it has the graph); on the CPU the compiled
    kernels are deterministic, so a resumed run continues bit-identically to an uninterrupted one.
    """
    options = CPU_COMPILE_OPTIONS if device.type == "cpu" else None
    return torch.compile(method.loss, options=options)


def _views(data: torch.Tensor, augment: Callable, idx: torch.Tensor,
           gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The two augmented views of ``data[idx]`` (channels-last on CUDA)."""
    x = data[idx.to(data.device)]
    v1, v2 = augment(x, gen, 0), augment(x, gen, 1)
    if data.device.type == "cuda":
        v1 = v1.contiguous(memory_format=torch.channels_last)
        v2 = v2.contiguous(memory_format=torch.channels_last)
    return v1, v2


def make_monitor(plan: RunPlan):
    """The run's stepwise monitor (``sslkit.analysis.monitor``) on the space the paper plots for the method,
    at the history's cadence; the engine logs its numbers with the history (no MLflow calls of its own)."""
    from sslkit.analysis.monitor import StepwiseMonitor

    ecfg = plan.rc["eval"]
    return StepwiseMonitor(space="C" if plan.primary == "C" else "cov", lr=plan.lr0, every=ecfg.get("every"),
                           log_points=int(ecfg["log_points"]), rank_tol=float(ecfg["rank_tol"]),
                           log_to_mlflow=False)


def _replay_monitor(state: RunState) -> None:
    """Feed the history rows of earlier sessions to the monitor, so a resumed run's steps so far and
    forecasts are those of a run trained straight through."""
    if state.monitor is None or not state.rows:
        return
    first = state.rows[0]
    kc = sorted((k for k in first if k.startswith("eig_C_")), key=lambda k: int(k[6:]))
    kv = sorted((k for k in first if k.startswith("eig_cov_")), key=lambda k: int(k[8:]))
    for r in state.rows:
        rm = r.get("rankme")
        state.monitor.observe(int(r["step"]), t=float(r["t"]), eig_c=[float(r[k]) for k in kc],
                              eig_cov=[float(r[k]) for k in kv],
                              rankme=None if rm is None or not math.isfinite(float(rm)) else float(rm))


def build_run_state(plan: RunPlan, images: np.ndarray, tracker=None,
                    clock: tuple[float, float] | None = None) -> RunState:
    """Model, method, optimiser, schedule, augmentation and data of a fresh run on its device.

    ``clock``: (``time.perf_counter()``, ``time.process_time()``) at the start of the session.
    """
    rc, seeds = plan.rc, plan.seeds
    rt = rc["runtime"]
    device = select_device(rt["device"])
    torch.manual_seed(seeds.torch_seed("init"))
    model = build_model(rc).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    method = make_method(model, rc)
    loss_fn = compiled_loss(method, device) if compile_enabled(rt["compile"], device) else method.loss
    optimizer = build_optimizer(model.online_parameters(), rc["optimizer"])
    sc = rc["schedule"]
    scheduler = build_scheduler(optimizer, LrSchedule(plan.total, sc["warmup_steps"], sc["decay"], sc["final_factor"]))
    augment = build_augment(rc, device)
    data = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True)).to(device)
    eval_idx = eval_batch_indices(seeds, plan.n_train, int(rc["eval"]["batch_size"]))
    eval_views = _views(data, augment, eval_idx, seeds.torch_generator("eval_augment", device=device))
    state = RunState(device=device, precision=_precision(device, rt["precision"]), model=model, method=method,
                     optimizer=optimizer, scheduler=scheduler, augment=augment,
                     aug_gen=seeds.torch_generator("augment", device=device), data=data, eval_views=eval_views,
                     tracker=tracker, loss_fn=loss_fn, monitor=make_monitor(plan))
    if clock is not None:
        state.wall0, state.cpu0 = clock
    return state


# ---------------------------------------------------------------------------------------------
# resume, evaluate, checkpoint, log
# ---------------------------------------------------------------------------------------------

def discard_checkpoints(run_dir: Path) -> None:
    """Delete the checkpoints of ``run_dir`` and their digests (a run started afresh with ``resume=False``;
    runs of other configs set aside under ``previous/`` are kept)."""
    for _, p in find_checkpoints(run_dir):
        p.unlink()
    for name in (DIGESTS_FILE, "manifest.json"):
        with contextlib.suppress(FileNotFoundError):
            (Path(run_dir) / "ckpt" / name).unlink()


def _checkpoints_config(run_dir: Path, device) -> dict | None:
    """The run config of the newest readable checkpoint of ``run_dir`` (None: none readable)."""
    for _, path in reversed(find_checkpoints(run_dir)):
        try:
            return _torch_load(path, device)["run_config"]
        except Exception:  # damaged: an older one tells the config as well
            continue
    return None


def _move_run_files(src: Path, dst: Path) -> list[str]:
    """Move ``ckpt/`` and ``history.csv`` (and a stray ``manifest.json``) from ``src`` to ``dst``."""
    moved = []
    for name in ("ckpt", "history.csv", "manifest.json"):
        if (src / name).exists():
            dst.mkdir(parents=True, exist_ok=True)
            os.replace(src / name, dst / name)
            moved.append(name)
    return moved


def switch_config_set(plan: RunPlan, device="cpu") -> None:
    """Set aside checkpoints written with another run config; bring back those of this one.

    ``ckpt/`` and ``history.csv`` of another config go to ``previous/<its config_hash>/`` (nothing
    is deleted); ``previous/<config_hash(plan.rc)>/``, if there, is moved into place. Both are logged,
    with the list of the config sets kept under ``previous/``.
    """
    run_dir, new = plan.run_dir, config_hash(plan.rc)
    old_rc = _checkpoints_config(run_dir, device) if find_checkpoints(run_dir) else None
    if old_rc is not None and config_hash(old_rc) != new:
        old = config_hash(old_rc)
        diff = _diff_keys(_fingerprint(old_rc), _fingerprint(plan.rc))
        dest = run_dir / "previous" / old
        if dest.exists():  # a stale copy of the same config: keep both
            os.replace(dest, dest.with_name(f"{old}-{time.strftime('%Y%m%d-%H%M%S')}"))
        moved = _move_run_files(run_dir, dest)
        log.warning("the run config of %s changed (%s): its earlier run (config %s: %s) is kept in %s; changing "
                    "the config back restores it", run_dir, "; ".join(diff[:5]), old, ", ".join(moved), dest)
    elif old_rc is None and find_checkpoints(run_dir):
        log.warning("no checkpoint of %s is readable; they are replaced as the run is retrained", run_dir)
    src = run_dir / "previous" / new
    if src.is_dir() and not find_checkpoints(run_dir):
        for name in ("history.csv", "manifest.json"):  # leftovers of a run that never checkpointed
            with contextlib.suppress(FileNotFoundError):
                (run_dir / name).unlink()
        moved = _move_run_files(src, run_dir)
        with contextlib.suppress(OSError):
            src.rmdir()
        log.info("restored the earlier run of config %s from %s (%s)", new, src, ", ".join(moved))
    kept = sorted(p.name for p in (run_dir / "previous").iterdir()) if (run_dir / "previous").is_dir() else []
    if kept:
        log.info("runs of other configs kept under %s: %s", run_dir / "previous", ", ".join(kept))


def damaged_checkpoints(run_dir: Path) -> list[tuple[int, str]]:
    """(step, what is wrong) of the checkpoints of ``run_dir`` that differ from their recorded digest."""
    digests = _read_digests(run_dir)
    out = []
    for step, path in find_checkpoints(run_dir):
        problem = verify_checkpoint(path, digests.get(path.name))
        if problem:
            out.append((step, problem))
    return out


def resume_run(state: RunState, plan: RunPlan) -> None:
    """Continue from the newest intact checkpoint of ``plan.run_dir`` (none: start at step 0).

    First the checkpoints of another run config are set aside and those of this one brought back
    (:func:`switch_config_set`). Then every checkpoint is verified against its recorded digest:
    from the first damaged one on, checkpoints are not used (each is logged by name; the run is
    retrained from the newest intact checkpoint before it and rewrites them). An unreadable
    checkpoint without a digest is skipped likewise.
    """
    switch_config_set(plan, state.device)
    damaged = damaged_checkpoints(plan.run_dir)
    for _, problem in damaged:
        log.warning("damaged checkpoint: %s; it is not used and will be rewritten", problem)
    first_bad = damaged[0][0] if damaged else None
    candidates = [(s, p) for s, p in find_checkpoints(plan.run_dir) if first_bad is None or s < first_bad]
    if first_bad is not None:
        log.warning("retraining %s from step %d, the newest intact checkpoint before step %d", plan.run_dir,
                    candidates[-1][0] if candidates else 0, first_bad)
    for _, path in reversed(candidates):
        try:
            ckpt = _torch_load(path, state.device)
        except Exception as exc:  # a damaged file: fall back to the previous checkpoint
            log.warning("cannot read checkpoint %s (%s); trying an older one", path, exc)
            continue
        diff = _diff_keys(_fingerprint(ckpt["run_config"]), _fingerprint(plan.rc))
        if diff:  # mixed configs in one ckpt/ (not written by this engine): set nothing aside, refuse
            raise ConfigError(
                f"checkpoint {path} was written with a different run config ({'; '.join(diff[:5])}) than "
                f"the newer checkpoints beside it. Move {path.parent} aside to train afresh.")
        _restore(state, plan, ckpt)
        log.info("resuming %s from step %d (%s)", plan.run_dir, state.start, path)
        return


def _restore(state: RunState, plan: RunPlan, ckpt: Mapping[str, Any]) -> None:
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    _set_rng_state(ckpt["rng"], state.aug_gen)
    state.start = state.step = int(ckpt["step"])
    state.t_eff = float(ckpt["t_eff"])
    ls = ckpt["log_state"]
    state.loss_sum, state.loss_count = float(ls["loss_sum"]), int(ls["loss_count"])
    state.prior_wall_s, state.prior_cpu_s = float(ls["wall_s"]), float(ls["cpu_s"])
    state.tracking_run_id = ls.get("mlflow_run_id")
    if state.start > 0 and plan.history_path.exists():
        # the history written with this checkpoint ends with the row of step `start`
        state.rows = [r for r in read_history(plan.history_path).to_dict("records") if r["step"] <= state.start]
        _replay_monitor(state)


def evaluate(state: RunState, plan: RunPlan) -> dict:
    """The history row of the current step: losses, learning rate, throughput and spectra.

    The evaluation batch's embeddings are computed in float32 with the model in train mode (batch
    statistics); its buffers (running statistics) are restored afterwards. Resets the running loss.
    """
    step, (ev1, ev2) = state.step, state.eval_views
    now = time.perf_counter()
    ips = (step - state.row_step) * plan.batch / (now - state.row_time) if step > state.row_step else float("nan")
    snap = _snapshot_buffers(state.model)
    t_forward = time.perf_counter()
    # float32 throughout, also on a bf16 run: bf16-rounded embeddings would bury the small
    # ("ungrown") eigenvalues under a rounding floor ~1e-5 of the top one
    with torch.no_grad():
        loss_eval, z1, z2 = state.method.loss(ev1, ev2, step, update=False)
    _restore_buffers(state.model, snap)
    t_monitor = time.perf_counter()
    state.eval_forward_s += t_monitor - t_forward
    if not (torch.isfinite(z1).all() and torch.isfinite(z2).all()):
        raise NonFiniteLossError(
            f"embeddings of the evaluation batch are not finite at step {step} of {plan.name} "
            f"(lr {plan.lr0}); the run diverged. {_nan_remedy(plan.run_dir)}")
    eig_c, eig_cov = embedding_spectra(z1, z2)
    z = torch.cat([z1, z2]).detach().double().cpu()
    rankme = rankme_from_gram((z.T @ z).numpy())
    mean_loss = state.loss_sum / state.loss_count if state.loss_count else float("nan")
    state.loss_sum, state.loss_count = 0.0, 0
    mon = state.monitor.observe(step, t=plan.lr0 * step, eig_c=eig_c, eig_cov=eig_cov, rankme=rankme)
    state.monitor_s += time.perf_counter() - t_monitor
    row = {"step": step, "t": plan.lr0 * step, "t_eff": state.t_eff, "epoch": plan.epoch(step),
           "loss": mean_loss, "loss_eval": float(loss_eval), "lr": state.lr, "images_per_s": ips, "rank": mon["rank"],
           "rankme": rankme, "steps_so_far": mon["n_steps"],
           "next_step_t": float("nan") if mon["next_t"] is None else mon["next_t"]}
    row.update({f"eig_C_{j}": float(v) for j, v in enumerate(eig_c)})
    row.update({f"eig_cov_{j}": float(v) for j, v in enumerate(eig_cov)})
    return row


def record_row(state: RunState, plan: RunPlan) -> None:
    """Evaluate, append the row to the history (and the tracker's queue), restart the throughput clock."""
    row = evaluate(state, plan)
    state.rows.append(row)
    state.pending.append(row)
    if state.bar is not None:
        post = {"loss": f"{row['loss_eval']:.4g}", "rank": row["rank"], "steps": row["steps_so_far"]}
        if math.isfinite(row["next_step_t"]):
            post["next_t"] = f"{row['next_step_t']:.4g}"
        state.bar.set_postfix(**post, refresh=False)
    state.row_time, state.row_step = time.perf_counter(), state.step


def save_checkpoint(state: RunState, plan: RunPlan) -> None:
    """Write the history, then (atomically) the checkpoint of the current step; flush the tracker."""
    step = state.step
    if not _finite_params(state.model):
        raise NonFiniteLossError(
            f"parameters are not finite at step {step} of {plan.name} (lr {plan.lr0}); "
            f"no checkpoint written. {_nan_remedy(plan.run_dir)}")
    _write_history(plan.history_path, state.rows)
    log_state = {"loss_sum": state.loss_sum, "loss_count": state.loss_count,
                 "wall_s": state.prior_wall_s + state.wall_s(), "cpu_s": state.prior_cpu_s + state.cpu_s(),
                 "mlflow_run_id": getattr(state.tracker, "run_id", None) or state.tracking_run_id}
    ckpt = {"format": CHECKPOINT_FORMAT, "step": step, "t": plan.lr0 * step, "t_eff": state.t_eff,
            "epoch": plan.epoch(step), "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
            "rng": _rng_state(state.aug_gen), "run_config": plan.rc, "log_state": log_state}
    with atomic_path(checkpoint_path(plan.run_dir, step)) as tmp:
        torch.save(ckpt, tmp)
    _record_digest(plan.run_dir, checkpoint_path(plan.run_dir, step))
    log_rows(state, plan)


#: history columns sent to the tracker, as metrics ``train/<column>`` (plus the top ``eval.mlflow_top``
#: eigenvalues of C and cov, as ``eig_C/00``, ``eig_cov/00``, ...: the MLflow UI groups charts by prefix)
_TRACKED = ("loss", "loss_eval", "lr", "images_per_s", "rank", "rankme", "steps_so_far", "next_step_t", "t", "t_eff",
            "epoch")
#: the metric whose last step tells how far the tracker has the history
_PROBE_METRIC = "train/loss_eval"


def metric_names(top: int) -> dict[str, str]:
    """History column -> MLflow metric name, for the tracked columns and ``top`` eigenvalues."""
    width = max(2, len(str(max(top - 1, 0))))
    names = {k: f"train/{k}" for k in _TRACKED}
    for j in range(top):
        names[f"eig_C_{j}"] = f"eig_C/{j:0{width}d}"
        names[f"eig_cov_{j}"] = f"eig_cov/{j:0{width}d}"
    return names


def log_rows(state: RunState, plan: RunPlan) -> None:
    """Send the rows recorded since the last call to the tracker, one batched call per step list.

    Rows of steps the tracker already has (``state.logged_through``: an earlier session got further
    than its last checkpoint) are not sent again, so a resumed run's metric history has each step once.
    """
    if state.tracker is None or not state.pending:
        return
    names = metric_names(int(plan.rc["eval"].get("mlflow_top", 32)))
    values: dict[str, list[float]] = {}
    steps_of: dict[str, list[int]] = {}
    for r in state.pending:
        if int(r["step"]) <= state.logged_through:
            continue
        for k, name in names.items():
            v = r.get(k)
            if v is not None and math.isfinite(float(v)):
                values.setdefault(name, []).append(float(v))
                steps_of.setdefault(name, []).append(int(r["step"]))
    groups: dict[tuple, dict[str, list[float]]] = {}
    for k in values:  # one batched MLflow call per distinct step list (usually one or two)
        groups.setdefault(tuple(steps_of[k]), {})[k] = values[k]
    for steps, series in groups.items():
        state.tracker.log_series(series, list(steps))
    state.logged_through = max([state.logged_through, *(int(r["step"]) for r in state.pending)])
    state.pending.clear()


def start_tracking(state: RunState, plan: RunPlan) -> None:
    """Open the model's MLflow run and log the run config as parameters, device/precision/resume point as tags.

    With a model tracker (``Tracker(kind="model")``, from ``script_run(model=...)``) the run is the
    one stored in the resumed checkpoint (else found by model key and run-config hash, else new);
    the history rows up to the resume step that it lacks (a session killed between checkpoint and
    logging, a wiped store) are sent now, so that its metric history is complete and has no gap.
    """
    tracker = state.tracker
    if tracker is None:
        return
    if getattr(tracker, "kind", None) == "model":
        from sslkit.tracking import run_config_hash

        state.tracking_run_id = tracker.open_model(run_config_hash(plan.rc), state.tracking_run_id,
                                                   fresh=state.start == 0)
        last = tracker.last_step(_PROBE_METRIC)
        state.logged_through = -1 if last is None else int(last)
        state.pending = [r for r in state.rows if int(r["step"]) > state.logged_through]
    data = {k: v for k, v in plan.rc["data"].items() if k != "dir"}
    # params cannot change in MLflow: what may differ between sessions (runtime, data path) are tags
    tracker.log_params({"run": {k: v for k, v in plan.rc.items() if k not in ("data", "runtime")}})
    tracker.log_params({"data": data})
    tracker.set_tags({"device": str(state.device), "precision": state.precision, "resumed_from": state.start,
                      **{f"runtime.{k}": v for k, v in plan.rc["runtime"].items()},
                      "data.dir": plan.rc["data"].get("dir", "")})
    log_rows(state, plan)


class _Progress:
    """The tqdm bar (in the job's log, if ``runtime.progress``) and the console lines of a run."""

    def __init__(self, plan: RunPlan, initial: int, model: str | None = None):
        from sslkit.rule_script import Progress

        self.bar = None
        if plan.rc["runtime"].get("progress", True):
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=plan.total, initial=initial, desc=plan.name, mininterval=2.0,
                                dynamic_ncols=True)
            except ImportError:  # pragma: no cover
                pass
        label = "train " + (model or f"{plan.rc.get('dataset')}/{plan.name}")
        self.console = Progress(label, plan.total, "step", start=initial)
        self.step = initial

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)
        self.step += n
        self.console.update(self.step)

    def set_postfix(self, **kwargs) -> None:
        if self.bar is not None:
            self.bar.set_postfix(**kwargs)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress_bar(plan: RunPlan, initial: int, model: str | None = None) -> _Progress:
    return _Progress(plan, initial, model)


# ---------------------------------------------------------------------------------------------
# the training loop
# ---------------------------------------------------------------------------------------------

def _autocast(state: RunState):
    if state.precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(state.device.type, dtype=torch.bfloat16)


def train_step(state: RunState, plan: RunPlan) -> float:
    """One optimiser update on the batch of ``state.step``; returns its training loss."""
    step, lr_now = state.step, state.lr
    idx = batch_indices(plan.seeds, step, plan.steps_per_epoch, plan.n_train, plan.batch)
    x1, x2 = _views(state.data, state.augment, idx, state.aug_gen)
    with _autocast(state):
        loss, _, _ = (state.loss_fn or state.method.loss)(x1, x2, step)
    loss_value = float(loss.detach())
    if not math.isfinite(loss_value):
        raise NonFiniteLossError(
            f"loss is {loss_value} at step {step} of {plan.name} (lr {plan.lr0}, "
            f"init_scale {plan.rc['init_scale']}). {_nan_remedy(plan.run_dir)}")
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    state.scheduler.step()
    state.method.after_step(step)
    state.t_eff += lr_now
    state.loss_sum += loss_value
    state.loss_count += 1
    state.losses[step] = loss_value
    state.step += 1
    if state.bar is not None:
        state.bar.update(1)
    return loss_value


def at_cadence(state: RunState, plan: RunPlan) -> None:
    """The history row and the checkpoint of the current step, where the schedules have them."""
    if state.step in plan.row_steps:
        record_row(state, plan)
    if state.step in plan.ckpt_steps:
        save_checkpoint(state, plan)


def _manifest_checkpoints(state: RunState, plan: RunPlan) -> list[dict]:
    """The manifest's checkpoint list: step, times, path, and the sha256 recorded when each was written
    (computed now for checkpoints written before digests were recorded) with its current size and mtime."""
    run_dir, digests = plan.run_dir, _read_digests(plan.run_dir)
    out = []
    for s, path in find_checkpoints(run_dir):
        if s not in plan.ckpt_steps:
            continue
        digest = digests.get(path.name) or _record_digest(run_dir, path)
        out.append({"step": s, "t": plan.lr0 * s, "t_eff": _t_eff_of(state.rows, s), "epoch": plan.epoch(s),
                    "path": str(path.relative_to(run_dir)), "sha256": digest["sha256"], **_stamp(path)})
    return out


def write_manifest(state: RunState, plan: RunPlan, session_wall_s: float, session_cpu_s: float) -> dict:
    """manifest.json of a finished run (see the module docstring), and its copy ``ckpt/manifest.json``;
    returns it. A session that trained nothing (the run was finished: resumed or restored at its last
    step) restores the copy as it was, with fresh file stamps, so the manifest keeps telling how the
    run was trained."""
    rc, run_dir = plan.rc, plan.run_dir
    checkpoints = _manifest_checkpoints(state, plan)
    generation = int(rc["runtime"].get("integrity_generation", 0))
    copy_path = run_dir / "ckpt" / "manifest.json"
    saved = None
    if state.start == plan.total and copy_path.exists():
        with contextlib.suppress(OSError, ValueError):
            saved = load_json(copy_path)
    same = (saved is not None and config_hash(saved.get("run_config", {})) == config_hash(rc)
            and [(c["step"], c.get("sha256")) for c in saved.get("checkpoints", [])]
            == [(c["step"], c["sha256"]) for c in checkpoints])
    if same:
        manifest = {**saved, "checkpoints": checkpoints, "integrity_generation": generation}
    else:
        manifest = {
            "dataset": rc["dataset"], "method": rc["method"], "init": rc["init"], "lr": plan.lr0,
            "steps": plan.total, "batch_size": plan.batch, "image_size": rc["image_size"],
            "checkpoints": checkpoints,
            "run_config": rc, "config_hash": config_hash(rc), "history": plan.history_path.name, "complete": True,
            "device": str(state.device), "precision": state.precision, "resumed_from": state.start,
            # over all sessions of the run (a resumed run adds the earlier sessions' time up to its
            # checkpoint); session_*: this process only
            "wall_time_s": round(state.prior_wall_s + session_wall_s, 3),
            "cpu_time_s": round(state.prior_cpu_s + session_cpu_s, 3),
            "session_wall_time_s": round(session_wall_s, 3),
            "session_cpu_time_s": round(session_cpu_s, 3),
            # of the session's wall time: the evaluation batch's forward passes at every history row (the
            # dense spectra) and the stepwise monitor's own work on those embeddings (eigenvalues, RankMe,
            # online step detection, forecast): the monitor's overhead, measured in the run itself
            "session_eval_forward_s": round(state.eval_forward_s, 3),
            "session_monitor_s": round(state.monitor_s, 3),
            # the train rule's integrity generation (sslkit.plan.run_integrity): raised by one when the
            # workflow found a damaged checkpoint, so that Snakemake reruns the job exactly once
            "integrity_generation": generation,
        }
    save_json(copy_path, manifest)
    save_json(run_dir / "manifest.json", manifest)
    return manifest


def finish(state: RunState, plan: RunPlan) -> TrainResult:
    """The session's :class:`TrainResult`; at the last step also the manifest and the tracker's artifacts."""
    result = TrainResult(plan.run_dir, False, state.start, state.step, losses=state.losses,
                         wall_time_s=state.wall_s(), cpu_time_s=state.cpu_s())
    if state.step < plan.total:
        log_rows(state, plan)
        return result
    result.manifest = write_manifest(state, plan, result.wall_time_s, result.cpu_time_s)
    result.complete = True
    if state.tracker is not None:
        log_rows(state, plan)
        state.tracker.log_metrics({"train/wall_time_s": result.wall_time_s, "train/cpu_time_s": result.cpu_time_s},
                                  plan.total)
        state.tracker.log_artifacts([plan.history_path, plan.run_dir / "manifest.json"])
    return result


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

    Random draws come from the named streams of :class:`RunSeeds` (``SeedSequence(seed)``).
    """
    clock = time.perf_counter(), time.process_time()
    plan = plan_run(run_config, int(images.shape[0]), run_dir)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    state = build_run_state(plan, images, tracker, clock)
    if not resume:
        discard_checkpoints(plan.run_dir)
    resume_run(state, plan)
    start_tracking(state, plan)
    # a resumed run has the row and checkpoint of its start step already
    resumed_row = state.start > 0 and any(r["step"] == state.start for r in state.rows)
    state.bar = _progress_bar(plan, state.start, getattr(tracker, "model", None))
    state.model.train()
    state.row_time, state.row_step = time.perf_counter(), state.start
    while True:
        if not (resumed_row and state.step == state.start):
            at_cadence(state, plan)
        if state.step >= plan.total or (stop_at is not None and state.step >= stop_at):
            break
        loss_value = train_step(state, plan)
        if step_hook is not None:
            step_hook(state.step - 1, loss_value)
    if state.bar is not None:
        state.bar.close()
    return finish(state, plan)


def _t_eff_of(rows: list[dict], step: int) -> float | None:
    for r in rows:
        if r["step"] == step:
            return float(r["t_eff"])
    return None


def _nan_remedy(run_dir: Path) -> str:
    ck = find_checkpoints(run_dir)
    where = f"the last good checkpoint is {ck[-1][1]}" if ck else "no checkpoint was written"
    return (f"Training stopped; {where} (left intact). Lower the learning rate "
            f"(methods.<method>.optimizer.lr or the init override) or raise init_scale and rerun: the new run "
            f"config trains afresh from step 0, and the diverged run's checkpoints are moved to "
            f"{run_dir / 'previous'}/<config hash>/ (restored if the old values come back). Rerunning with "
            f"the same config resumes from the last good checkpoint and diverges again.")
