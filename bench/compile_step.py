"""Compiled vs eager training step, channels-last and bf16 autocast, on the default runs' model.

The step is the engine's own (``sslkit.training.engine.train_step``: augmentation of both views,
forward, method loss, backward, optimiser update), on states built by ``build_run_state`` from the
resolved run config of the default config (digits: ResNet-18 of width 1/16 at 8 px, Barlow Twins,
batch 128) and of the cifar10 overlay (16 px RGB views; random uint8 32 x 32 images stand in for
CIFAR-10: a step's cost does not depend on the pixels). Variants, all timed in one process, in
alternating rounds, so that they see the same load on a shared CPU:

- ``eager``: the default (``train.compile: false``, fp32, contiguous NCHW on the CPU);
- ``compiled``: ``train.compile: true`` (``engine.compiled_loss``: torch.compile of forward + loss,
  with the backward AOTAutograd compiles); its first step's wall time is the compile time (with an
  empty inductor cache unless ``--warm-cache``: the first job of a workflow pays that, the next ones
  of the same method and shapes hit the cache);
- ``channels_last``: the model and the views in channels-last memory format (what the engine does
  on CUDA); first probed in a fresh process, since on the CPU it can crash (``_CHANNELS_LAST_PROBE``);
- ``bf16``: bf16 autocast of the forward (``train.precision: bf16``).

Reported per setting: steps/s of each variant and its ratio to eager (median over the rounds), the
compile time, the steps after which compiling has paid for itself (compile time / time saved per
step) and the net time it saves over one run of the setting's length (steps of the method). Also
what this CPU offers (torch's CPU capability, AVX512-BF16 / AMX flags, oneDNN bf16 support).

    PYTHONPATH=. python bench/compile_step.py [--settings digits cifar10] [--rounds 5] [--steps 20]
                                              [--warm-cache] [--variants eager compiled channels_last bf16]

The last line is the headline: steps/s compiled / eager on the default (digits) setting.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VARIANTS = ("eager", "compiled", "channels_last", "bf16")

#: the weight gradient of a channels-last 1x1 stride-2 convolution with 4 input channels -- the
#: downsampling shortcut of the default encoder's second stage -- in a fresh process: with torch 2.14.1
#: on one CPU thread it corrupts the heap (the process aborts); inductor's layout optimisation makes
#: the compiled backward call it (engine.CPU_COMPILE_OPTIONS turns that off)
_CHANNELS_LAST_PROBE = """
import torch, torch.nn.functional as F
torch.set_num_threads({threads})
w = torch.randn(8, 4, 1, 1).contiguous(memory_format=torch.channels_last).requires_grad_()
x = torch.randn(128, 4, 8, 8).contiguous(memory_format=torch.channels_last)
for _ in range(5):
    F.conv2d(x, w, stride=2).square().sum().backward()
"""


def channels_last_crashes(threads: int) -> str | None:
    """How the channels-last probe failed in a fresh process (None: it ran)."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", _CHANNELS_LAST_PROBE.format(threads=threads)], capture_output=True,
                         text=True, timeout=600)
    if out.returncode == 0:
        return None
    tail = (out.stderr.strip().splitlines() or ["no message"])[-1]
    return f"exit status {out.returncode} ({tail[:120]})"


def cpu_features() -> dict:
    import torch

    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    try:
        onednn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn_bf16 = None
    return {"capability": torch.backends.cpu.get_cpu_capability(), "avx512f": "avx512f" in flags,
            "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags, "amx_tile": "amx_tile" in flags,
            "onednn_bf16": onednn_bf16, "mkldnn": torch.backends.mkldnn.is_available()}


def setting_images(name: str):
    import numpy as np

    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return np.rint(d.images * 255 / 16).astype(np.uint8)[:, :, :, None]
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(5000, 32, 32, 3), dtype=np.uint8)


def run_config(name: str, method: str, images) -> dict:
    from sslkit.config import load_config
    from sslkit.training import engine as T

    overlays = [] if name == "digits" else [str(Path(__file__).resolve().parent.parent / "config/cifar10.yaml")]
    cfg = load_config(*overlays)
    cfg["train"]["progress"] = False
    return T.resolve_run_config(cfg, method, "small", T.data_stats(images), name)


def build(rc: dict, images, variant: str, run_dir: Path):
    import torch

    from sslkit.training import engine as T

    rc = copy.deepcopy(rc)
    rc["runtime"].update({"device": "cpu", "compile": variant == "compiled",
                          "precision": "bf16" if variant == "bf16" else "fp32"})
    plan = T.plan_run(rc, int(images.shape[0]), run_dir)
    state = T.build_run_state(plan, images)
    state.model.train()
    if variant == "channels_last":
        state.model.to(memory_format=torch.channels_last)
        aug = state.augment
        state.augment = lambda x, gen, view: aug(x, gen, view).contiguous(memory_format=torch.channels_last)
    return state, plan


def measure(name: str, method: str, variants: list[str], rounds: int, steps: int, tmp: Path) -> dict:
    from sslkit.training import engine as T

    images = setting_images(name)
    rc = run_config(name, method, images)
    states = {v: build(rc, images, v, tmp / f"{name}-{v}") for v in variants}
    first = {}
    for v, (state, plan) in states.items():  # the first step of each (the compile for 'compiled')
        t0 = time.perf_counter()
        T.train_step(state, plan)
        first[v] = time.perf_counter() - t0
    for state, plan in states.values():  # one more warm-up step each
        T.train_step(state, plan)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v, (state, plan) in states.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                T.train_step(state, plan)
            times[v].append((time.perf_counter() - t0) / steps)
    step_s = {v: statistics.median(ts) for v, ts in times.items()}
    ratio = {v: statistics.median(times["eager"][i] / times[v][i] for i in range(rounds)) for v in variants}
    out = {"setting": name, "method": method, "batch": rc["batch_size"], "image_size": rc["image_size"],
           "run_steps": rc["steps"], "step_s": step_s, "ratio": ratio, "first_step_s": first}
    if "compiled" in variants:
        compile_s = first["compiled"] - step_s["compiled"]
        saved = step_s["eager"] - step_s["compiled"]
        out["compile_s"] = compile_s
        out["amortised_after_steps"] = compile_s / saved if saved > 0 else float("inf")
        out["net_saving_per_run_s"] = rc["steps"] * saved - compile_s
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", nargs="+", choices=["digits", "cifar10"], default=["digits", "cifar10"])
    ap.add_argument("--method", default="barlow_twins")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--rounds", type=int, default=5, help="alternating timing rounds (the median counts)")
    ap.add_argument("--steps", type=int, default=20, help="steps per variant and round")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the training jobs use 1)")
    ap.add_argument("--warm-cache", action="store_true",
                    help="use inductor's on-disk cache as it is (default: an empty one, i.e. a cold compile)")
    args = ap.parse_args(argv)
    if "eager" not in args.variants:
        args.variants.insert(0, "eager")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.warm_cache:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor")
        import torch

        torch.set_num_threads(args.threads)
        feats = cpu_features()
        print(f"torch {torch.__version__}, {args.threads} thread(s), CPU capability {feats['capability']}; "
              f"AVX512F {feats['avx512f']}, AVX512-BF16 {feats['avx512_bf16']}, AMX-BF16 {feats['amx_bf16']}, "
              f"oneDNN bf16 {feats['onednn_bf16']}; inductor cache {'warm' if args.warm_cache else 'empty'}; "
              f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        if "channels_last" in args.variants:
            crash = channels_last_crashes(args.threads)
            if crash:
                args.variants.remove("channels_last")
                print(f"channels_last: not timed: the weight gradient of a channels-last 1x1 stride-2 convolution "
                      f"(4 -> 8 channels, the encoder's downsampling shortcut) crashes this torch build on "
                      f"{args.threads} CPU thread(s): {crash}")
        results = []
        for setting in args.settings:  # each printed when measured
            results.append(measure(setting, args.method, args.variants, args.rounds, args.steps, Path(tmp)))
            report(results[-1], args.variants)
    print(f"(load average {' '.join(f'{x:.1f}' for x in os.getloadavg())})")
    head = results[0]
    if "compiled" in head["ratio"]:
        after = head["amortised_after_steps"]
        print(f"compiled_vs_eager: {head['ratio']['compiled']:.2f} (x steps/s, {head['setting']} {head['method']}; "
              f"compile {head['compile_s']:.0f} s, pays after "
              f"{'never' if after == float('inf') else f'{after:.0f} steps'})")
    else:
        v = [x for x in args.variants if x != "eager"][0] if len(args.variants) > 1 else "eager"
        print(f"{v}_vs_eager: {head['ratio'][v]:.2f} (x steps/s, {head['setting']} {head['method']})")
    return 0


def report(r: dict, variants: list[str]) -> None:
    print(f"{r['setting']} ({r['method']}, batch {r['batch']}, {r['image_size']} px, run of {r['run_steps']} steps):")
    for v in variants:
        print(f"  {v:14s} {1 / r['step_s'][v]:7.2f} steps/s ({1e3 * r['step_s'][v]:6.1f} ms/step)  "
              f"x{r['ratio'][v]:.2f} vs eager   first step {r['first_step_s'][v]:.2f} s", flush=True)
    if "compile_s" in r:
        after = r["amortised_after_steps"]
        print(f"  compile {r['compile_s']:.1f} s: pays for itself after "
              f"{'never' if after == float('inf') else f'{after:.0f} steps'}; over one run of {r['run_steps']} "
              f"steps it saves {r['net_saving_per_run_s']:.1f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
