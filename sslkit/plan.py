"""What a configuration plans, decided without torch, numpy or matplotlib.

``rules/common.smk`` reads this module while Snakemake parses the workflow, so that parsing stays
light (no torch, no matplotlib). The library reads it too, so both sides agree:

- :data:`SPEEDUP_DEFAULTS`, :func:`speedups_active`, :func:`validate_speedups`: the App. G switches of
  ``methods.<method>.speedups`` (``sslkit.training.speedup_variants`` implements them);
- :func:`ntk_methods`: the methods of Tables 1-2, each checked to have the run that ``ntk.init`` names;
- :func:`cuda_visible` and :func:`gpu_per_job`: whether GPU rules' jobs will run on a GPU here;
- :func:`run_integrity`: whether a finished training run's checkpoints are still those its manifest lists.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "SPEEDUP_DEFAULTS",
    "SPEEDUP_TRANSFORMS",
    "speedups_active",
    "validate_speedups",
    "ntk_methods",
    "cuda_visible",
    "gpu_per_job",
    "run_integrity",
]

#: methods.<method>.speedups: every key, all off by default (docs/theory.md, App. G)
SPEEDUP_DEFAULTS: dict = {
    "precondition": False,  # G.1 on/off
    "precondition_alpha": 0.1,  # a of (F^T F + a I)^{-1}
    "precondition_relative": True,  # a relative to the top eigenvalue of F^T F / 2N
    "transform": "identity",  # G.2/G.3 spectral function of C: identity | sqrt | smooth
    "smooth_eps": 0.0,  # g_smooth(l) = min(l, 1 + eps (1 - l))
    "power": 2,  # 2: ||g(C) - I||^2; 4: tr (g(C) - I)^4 (G.3 quartic)
    "sqrt_floor": 1.0e-8,  # g_sqrt'(l) = 1 / (2 sqrt(max(|l|, floor)))
    "degenerate_tol": 1.0e-6,  # |l_i - l_j| below this x max(1, |l|_max): use g' at the midpoint
}
SPEEDUP_TRANSFORMS = ("identity", "sqrt", "smooth")


def speedups_active(cfg: Mapping | None) -> bool:
    """True when a ``speedups`` block switches anything on (differs from all-off)."""
    c = {**SPEEDUP_DEFAULTS, **(cfg or {})}
    return bool(c["precondition"]) or c["transform"] != "identity" or int(c["power"]) != 2


def validate_speedups(cfg: Mapping | None, method: str) -> dict:
    """The full speedups block (defaults filled in); raises ValueError naming the key when a
    Barlow-Twins-only variant (transform, power) is set for another method or a value is bad."""
    unknown = set(cfg or {}) - set(SPEEDUP_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown key(s) methods.{method}.speedups.{sorted(unknown)}; "
                         f"known: {sorted(SPEEDUP_DEFAULTS)}")
    c = {**SPEEDUP_DEFAULTS, **(cfg or {})}
    if c["transform"] not in SPEEDUP_TRANSFORMS:
        raise ValueError(f"methods.{method}.speedups.transform = {c['transform']!r}; "
                         f"expected one of {SPEEDUP_TRANSFORMS}")
    if int(c["power"]) not in (2, 4):
        raise ValueError(f"methods.{method}.speedups.power = {c['power']!r}; expected 2 or 4")
    if method != "barlow_twins" and (c["transform"] != "identity" or int(c["power"]) != 2):
        raise ValueError(f"methods.{method}.speedups: transform/power (G.2, G.3) act on the Barlow Twins "
                         f"correlation matrix; for {method} only precondition (G.1) is available")
    return c


def ntk_methods(config: Mapping[str, Any]) -> list[str]:
    """The methods of Tables 1-2 (config ``ntk.methods``), each checked to have the override block of
    the training run ``ntk.init`` names; raises ``ConfigError`` naming the missing key."""
    from sslkit.config import ConfigError

    init = config["ntk"]["init"]
    n_pairs = int(config["ntk"]["pairs"]["n"])
    for method in config["ntk"]["methods"]:
        block = (config.get("methods") or {}).get(method, {})
        if init not in block:
            raise ConfigError(f"ntk.init is '{init}' but the config has no methods.{method}.{init} block: add it "
                              f"(at least init_scale; see config/paper.yaml) or set ntk.init to small or standard")
        # K_Gamma = K^1/2 Z K^1/2 / 2n has at most n positive eigenvalues (Z: n pairs swapped, eigenvalues
        # +-1, n each), so the top-spectral solution of a d-dimensional embedding needs n >= d pairs.
        d = ((block[init] or {}).get("projector") or {}).get("dim", (block.get("projector") or {}).get("dim"))
        if d is not None and n_pairs < int(d):
            raise ConfigError(f"config key 'ntk.pairs.n': {n_pairs} pairs are fewer than the embedding dimension "
                              f"d = {d} of the run {method}-{init} (methods.{method}.{init}.projector.dim or "
                              f"methods.{method}.projector.dim); K_Gamma has at most n positive eigenvalues, so "
                              f"the theory needs n >= d: raise ntk.pairs.n (a margin above d, since eigenvalues "
                              f"below round-off do not count) or lower d")
    return list(config["ntk"]["methods"])


def cuda_visible() -> bool:
    """Whether an NVIDIA GPU is visible to this process, judged without importing torch: the driver
    lists a GPU under /proc/driver/nvidia/gpus and CUDA_VISIBLE_DEVICES does not hide them all."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def gpu_per_job(device: str) -> int:
    """``resources: gpu`` of a GPU rule's job: 1 when it will run on a GPU (``train.device`` cuda*, or
    auto with a GPU visible), 0 on the CPU, so that a CPU-only machine runs such jobs side by side under
    --cores. profiles/slurm sets gpu per rule explicitly for cluster nodes."""
    return int(device.startswith("cuda") or (device == "auto" and cuda_visible()))


def run_integrity(manifest_path: str | os.PathLike, report=None) -> int:
    """The integrity generation of a training run, a parameter of the train rule.

    Cheap (one JSON read and a ``stat`` per checkpoint): every checkpoint listed in the run's
    ``manifest.json`` (or its copy ``ckpt/manifest.json``) must exist with the size and mtime
    recorded there. Returns the manifest's ``integrity_generation`` (0 when there is no manifest
    yet) when they do, or when none is present at all (an archived run: figures and tables need
    only its small outputs), and one more when one is missing, truncated or rewritten: the parameter
    changes, so Snakemake reruns the train job, which verifies the checkpoints' sha256, retrains
    from the newest intact one and writes the new generation into the manifest -- so the next
    call returns the value the job ran with and nothing reruns again. ``report``: called with a
    message naming the damaged files (default: printed to stderr).
    """
    import json
    import sys

    path = Path(manifest_path)
    manifest = None
    # the copy ckpt/manifest.json stands in once Snakemake has removed the output before rerunning the job
    for candidate in (path, path.parent / "ckpt" / path.name):
        try:
            manifest = json.loads(candidate.read_text())
            break
        except (OSError, ValueError):
            continue
    if manifest is None:
        return 0
    generation = int(manifest.get("integrity_generation", 0) or 0)
    listed = manifest.get("checkpoints", [])
    present = [c for c in listed if (path.parent / c["path"]).exists()]
    if listed and not present:
        # every checkpoint gone (moved away or deleted to free disk): an archived run, not a damaged
        # one. Figures and tables need only its small outputs; nothing is retrained for them.
        (report or (lambda m: print(m, file=sys.stderr)))(
            f"training run {path.parent}: no checkpoint is present (archived?); jobs that need them fail "
            f"naming the file. To train it again: snakemake --forcerun train -- {path}")
        return generation
    problems = []
    for c in listed:
        f = path.parent / c["path"]
        try:
            st = f.stat()
        except OSError:
            problems.append(f"{f} is missing")
            continue
        if "bytes" in c and st.st_size != c["bytes"]:
            problems.append(f"{f} has {st.st_size} bytes, the manifest lists {c['bytes']}")
        elif "mtime_ns" in c and st.st_mtime_ns != c["mtime_ns"]:
            problems.append(f"{f} was modified after the manifest was written")
    if not problems:
        return generation
    msg = (f"training run {path.parent}: {'; '.join(problems[:3])}{' ...' if len(problems) > 3 else ''}. "
           "Its train job reruns: it verifies the checkpoints and retrains from the newest intact one.")
    (report or (lambda m: print(m, file=sys.stderr)))(msg)
    return generation + 1
