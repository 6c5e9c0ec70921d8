"""One-shot GPU check (at most ~8 min on one H100/H200): what paper scale costs, measured.

1. Training-step throughput and MFU of the engine's own step (``sslkit.training.engine.build_run_state``
   + ``train_step``: augmentation on the device, bf16 autocast, channels_last, the method's loss,
   LARS/SGD), eager: ResNet-18 at 32 px (batch 512, Barlow Twins) and ResNet-50 at 96 px with
   config/paper.yaml's methods and batch sizes (Barlow Twins 64, SimCLR 256, VICReg 256). FLOPs per
   step are ``sslkit.costs.train_step_flops`` (equal to torch.utils.flop_counter's count, see
   tests/test_costs.py); MFU = FLOP/s / the bf16 dense peak. Beside it: the step time
   ``sslkit.costs`` assumes (README "What paper scale costs") and the peak memory
   (``torch.cuda.max_memory_allocated``).
2. The scalarised eNTK (``sslkit.theory.ntk.empirical_ntk``, the memory plan of config/paper.yaml's
   ``ntk.memory_budget_mb``) of the App. E ResNet-50 (d = 50) on 2n = 2000 views at 96 px: time
   against the FLOP bound 3 N F + N^2 P at the TF32 peak, and its peak memory.
3. 500 steps of Barlow Twins at small init (``sslkit.training.engine.train``, the default digits
   config: it ships with scikit-learn, so no dataset is needed) with the step detection of
   ``sslkit.analysis.steps``: when the first embedding step happens, how many steps in all.

    make gpu-check                            # = python bench/gpu_check.py
    python bench/gpu_check.py --peak-tflops 989 --ntk-points 2000
    python bench/gpu_check.py --smoke         # the same code paths on the CPU in seconds (tiny sizes)

Prints one table; the last line is ``gpu_check_resnet50_tflops: <value> (...)``: the achieved
TFLOP/s of the paper's Barlow Twins step (ResNet-50, 96 px, batch 64).
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sslkit import costs  # noqa: E402
from sslkit.config import load_config  # noqa: E402
from sslkit.training import engine  # noqa: E402

#: dense bf16 peaks (TFLOP/s) by device-name fragment; TF32 is half
PEAKS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given is not None:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAKS.items() if k in name), None)


def stats_for(n: int, side: int) -> dict:
    return {"n_train": n, "height": side, "width": side, "channels": 3, "mean": [0.45, 0.45, 0.4],
            "std": [0.25, 0.25, 0.25]}


def run_config(cfg: dict, method: str, init: str, *, arch: str, side: int, small_stem: bool, width: float,
               batch: int, n_train: int, device: str, eval_batch: int) -> dict:
    """The engine's resolved run config of ``cfg``'s method block with the encoder/size/batch replaced."""
    cfg = copy.deepcopy(cfg)
    cfg["train"]["encoder"] = {"arch": arch, "width": width, "small_stem": small_stem}
    cfg["train"].update(image_size=side, steps=1000, device=device, compile=False, progress=False)
    cfg["train"]["eval"]["batch_size"] = eval_batch
    cfg["methods"][method]["batch_size"] = batch
    return engine.resolve_run_config(cfg, method, init, stats_for(n_train, side))


def measure_step(rc: dict, warmup: int, steps: int) -> dict:
    """Seconds per engine training step, its analytic FLOPs and the peak memory of the run."""
    n, side = rc["data"]["n_train"], rc["image_size"]
    images = np.random.default_rng(0).integers(0, 256, (n, side, side, 3), dtype=np.uint8)
    plan = engine.plan_run(rc, n, tempfile.mkdtemp(prefix="gpu_check_"))
    cuda = rc["runtime"]["device"].startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    state = engine.build_run_state(plan, images)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        engine.train_step(state, plan)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        engine.train_step(state, plan)
    sync()
    dt = (time.perf_counter() - t0) / steps
    c = costs.run_cost(rc)
    peak = torch.cuda.max_memory_allocated() / 1e9 if cuda else float("nan")
    del state
    return {"step_s": dt, "flops": c.step_flops, "batch": rc["batch_size"], "peak_gb": peak,
            "precision": engine._precision(torch.device(rc["runtime"]["device"]), "auto")}


def measure_ntk(rc: dict, n_points: int, budget_mb: float, device: torch.device) -> dict:
    """The eNTK of the run config's model on ``n_points`` random views: time, FLOPs, peak memory."""
    from sslkit.theory.ntk import empirical_ntk
    from sslkit.training.networks import build_model

    torch.manual_seed(0)
    model = build_model(rc).to(device).eval()
    side = rc["image_size"]
    x = torch.randn(n_points, 3, side, side, device=device)
    if device.type == "cuda":
        budget_mb = min(budget_mb, 0.8 * torch.cuda.mem_get_info(device)[0] / 2**20)
    res = empirical_ntk(model, x, memory_budget_bytes=int(budget_mb * 2**20))
    s = res.stats
    enc = costs.resnet_stats(rc["encoder"]["arch"], side, rc["encoder"]["width"], rc["encoder"]["small_stem"])
    pc = rc["method_config"]["projector"]
    f = enc.forward_flops + costs.mlp_stats(enc.out_dim, pc["hidden"], pc["dim"], pc["batchnorm"],
                                            pc["last_bias"])[0]
    k = costs.ntk_flops(n_points, f, s["n_params"], s["jacobian_samples"])
    symmetric_err = float(np.abs(res.K - res.K.T).max() / np.abs(res.K).max())
    return {"time_s": s["time_s"], "jacobian_s": s["jacobian_time_s"], "contraction_s": s["contraction_time_s"],
            "bound": k["bound"], "planned": k["planned"], "peak_gb": (s["peak_bytes"] or 0) / 1e9,
            "budget_mb": budget_mb, "passes": s["jacobian_samples"], "P": s["n_params"], "symmetric_err": symmetric_err,
            "groups": s["n_groups"]}


def bt_small_run(steps: int, device: str, smoke: bool = False) -> dict:
    """``steps`` of the default config's Barlow Twins small-init run on digits, and its detected steps
    (``smoke``: batch 64, an evaluation row every 4 steps, two log-spaced checkpoints)."""
    from sslkit.analysis.checkpoints import step_config
    from sslkit.analysis.steps import analyze_run
    from sslkit.data import load_dataset

    cfg = load_config()
    cfg["train"].update(steps=steps, device=device, progress=False, compile=False)
    if smoke:
        cfg["methods"]["barlow_twins"]["batch_size"] = 64
        cfg["train"]["eval"].update(every=4, log_points=10, batch_size=128)
        cfg["train"]["checkpoints"].update(log_points=2, every=None)
    images = load_dataset("digits").splits["train"].images
    rc = engine.resolve_run_config(cfg, "barlow_twins", "small", engine.data_stats(images))
    with tempfile.TemporaryDirectory(prefix="gpu_check_bt_") as d:
        t0 = time.perf_counter()
        engine.train(rc, images, d, resume=False)
        wall = time.perf_counter() - t0
        hist = engine.read_history(Path(d) / "history.csv")
    dim = rc["method_config"]["projector"]["dim"]
    eig = hist[[f"eig_C_{j}" for j in range(dim)]].to_numpy()
    params, n_modes, _ = step_config(cfg["analysis"]["steps"])
    res = analyze_run(hist["t"].to_numpy(), eig, params=params, n_modes=n_modes)
    times = [float(t) for t in res["step_times"]]
    first_t = times[0] if times else float("nan")
    first_step = int(round(first_t / rc["lr"])) if times else -1
    return {"wall_s": wall, "steps": steps, "n_steps": int(res["n_steps"]), "first_t": first_t,
            "first_step": first_step, "final_rank": int(hist["rank"].iloc[-1]), "d": dim,
            "precision": engine._precision(torch.device(device), "auto")}


def fmt(v: float, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, seconds (tests/test_gpu_check.py)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak (default: from the GPU name)")
    ap.add_argument("--steps", type=int, default=30, help="timed training steps per configuration")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--ntk-points", type=int, default=2000, help="2n views of the eNTK")
    ap.add_argument("--bt-steps", type=int, default=500)
    args = ap.parse_args()

    t_start = time.perf_counter()
    paper = load_config(REPO / "config/paper.yaml")
    if args.smoke:
        device = torch.device("cpu")
        torch.set_num_threads(1)
        r18 = dict(arch="resnet18", side=16, small_stem=True, width=0.0625, batch=8)
        r50 = dict(arch="resnet50", side=32, small_stem=False, width=0.0625)
        batches = {"barlow_twins": 4, "simclr": 8, "vicreg": 8}
        steps, warmup, n_ntk, bt_steps, n_train, eval_batch = 1, 1, 12, 40, 32, 8
    else:
        if not torch.cuda.is_available():
            sys.exit("gpu_check: no CUDA device; run with --smoke for the CPU code paths")
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
        r18 = dict(arch="resnet18", side=32, small_stem=True, width=1.0, batch=512)
        r50 = dict(arch="resnet50", side=96, small_stem=False, width=1.0)
        batches = {m: int(paper["methods"][m]["batch_size"]) for m in paper["train"]["methods"]}
        steps, warmup, n_ntk, bt_steps = args.steps, args.warmup, args.ntk_points, args.bt_steps
        n_train, eval_batch = 4096, int(paper["train"]["eval"]["batch_size"])
    peak = peak_tflops(device, args.peak_tflops)
    gpu_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    model_gpu = costs.GPUS["a100"]
    print(f"gpu_check on {gpu_name} (torch {torch.__version__}); bf16 peak {fmt(peak, 'g')} TFLOP/s; "
          f"{'SMOKE: tiny sizes, ' if args.smoke else ''}eager steps")

    rows = []   # (check, config, time, rate, MFU or ratio, peak GB, note)
    headline = float("nan")
    configs = [("barlow_twins", r18)] + [(m, dict(r50, batch=b)) for m, b in batches.items()]
    for method, geo in configs:
        rc = run_config(paper, method, "standard", n_train=max(n_train, 2 * geo["batch"]), device=str(device),
                        eval_batch=eval_batch, **geo)
        m = measure_step(rc, warmup, steps)
        tflops = m["flops"] / m["step_s"] / 1e12
        mfu = tflops / peak if peak else float("nan")
        ops = costs.count_step_ops(rc, batch=4)
        model_ms = 1e3 * model_gpu.step_seconds(m["flops"], ops)
        rows.append((f"train_step {geo['arch']}", f"{method} {geo['side']} px batch {geo['batch']} ({m['precision']})",
                     f"{1e3 * m['step_s']:.1f} ms/step", f"{2 * geo['batch'] / m['step_s']:.0f} views/s, "
                     f"{tflops:.2f} TFLOP/s", fmt(mfu, ".3f"), fmt(m["peak_gb"], ".1f"),
                     f"{m['flops'] / 1e9:.1f} GFLOP/step; cost model (A100, MFU 0.15): {model_ms:.1f} ms"))
        if geo["arch"] == "resnet50" and method == "barlow_twins":
            headline, headline_mfu = tflops, mfu

    ncfg = paper["ntk"]
    rc = run_config(paper, ncfg["methods"][0], ncfg["init"], n_train=max(n_train, 128), device=str(device),
                    eval_batch=eval_batch, batch=64 if not args.smoke else 4, **r50)
    k = measure_ntk(rc, n_ntk, float(ncfg["memory_budget_mb"]), device)
    tf32 = peak / 2 if peak else None
    ratio = k["time_s"] / (k["bound"] / (tf32 * 1e12)) if tf32 else float("nan")
    rows.append(("entk resnet50", f"{ncfg['methods'][0]}-{ncfg['init']}, N = {n_ntk} views, P = {k['P']:,}",
                 f"{k['time_s']:.1f} s (Jacobians {k['jacobian_s']:.1f}, contraction {k['contraction_s']:.1f})",
                 f"{k['planned'] / k['time_s'] / 1e12:.2f} TFLOP/s", f"{fmt(ratio, '.1f')}x bound",
                 fmt(k["peak_gb"], ".1f"),
                 f"bound 3NF + N^2 P = {k['bound'] / 1e12:.1f} TFLOP, planned {k['planned'] / 1e12:.1f} "
                 f"({k['passes']} Jacobian passes, {k['groups']} groups, budget {k['budget_mb']:.0f} MB); "
                 f"|K - K^T| {k['symmetric_err']:.1e}"))

    bt = bt_small_run(bt_steps, str(device), smoke=args.smoke)
    rows.append(("bt_small_init", f"digits default config, {bt['steps']} steps ({bt['precision']})",
                 f"{bt['wall_s']:.1f} s", f"{bt['steps'] / bt['wall_s']:.0f} steps/s", "-", "-",
                 f"first step at t = {fmt(bt['first_t'], '.3g')} (step {bt['first_step']}), {bt['n_steps']} steps "
                 f"detected, final rank {bt['final_rank']} of {bt['d']}"))

    widths = [max(len(str(r[i])) for r in rows + [HEAD]) for i in range(len(HEAD))]
    for r in [HEAD] + rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    print(f"total {time.perf_counter() - t_start:.0f} s; load average {os.getloadavg()[0]:.1f}")
    print(f"gpu_check_resnet50_tflops: {headline:.4g} (TFLOP/s, Barlow Twins ResNet-50 96 px batch 64, "
          f"MFU {fmt(headline_mfu, '.3f')})")


HEAD = ("check", "config", "time", "rate", "MFU", "peak GB", "note")

if __name__ == "__main__":
    main()
