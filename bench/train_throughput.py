"""Training throughput: images/s and model FLOP/s of one full SSL training step.

A step = on-device augmentation of both views (sslkit.training.augment) + forward of both views + Barlow
Twins loss + backward + LARS update, exactly as sslkit.training.engine runs it (bf16 autocast and
channels_last on CUDA). FLOPs per step are counted once with torch.utils.flop_counter (matmuls
and convolutions, forward + backward; augmentation and element-wise work are not counted), so
FLOP/s = counted FLOPs / measured step time ("model FLOP/s").

    python bench/train_throughput.py                 # CPU, and the GPU when one is available
    python bench/train_throughput.py --peak-tflops 989 --gpu-batch 512   # H100 SXM bf16 dense peak

The last line is the headline: images/s of ResNet-18 at 32 px (on the GPU when there is one).

Configurations: ResNet-18 (small stem) at 32 px (CIFAR-10 shape) and ResNet-50 (ImageNet stem) at
96 px (STL-10 shape), Barlow Twins projector 2048 -> 512. Images are random uint8 (throughput
does not depend on content).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sslkit.training.augment import build_augment  # noqa: E402
from sslkit.training.methods import make_method  # noqa: E402
from sslkit.training.networks import build_model  # noqa: E402
from sslkit.training.optim import build_optimizer  # noqa: E402

AUG = {"crop_scale": [0.08, 1.0], "crop_ratio": [0.75, 4 / 3], "flip_prob": 0.5, "jitter_prob": 0.8,
       "jitter": [0.4, 0.4, 0.2, 0.1], "grayscale_prob": 0.2, "blur_prob": [1.0, 0.1],
       "blur_sigma": [0.1, 2.0], "blur_kernel_frac": 0.1, "solarize_prob": [0.0, 0.2]}

CONFIGS = [("resnet18", 32, True), ("resnet50", 96, False)]


def run_config(arch: str, size: int, small_stem: bool, batch: int) -> dict:
    return {"method": "barlow_twins", "init_scale": 1.0, "steps": 1000, "image_size": size,
            "batch_size": batch,
            "encoder": {"arch": arch, "width": 1.0, "small_stem": small_stem},
            "data": {"channels": 3, "mean": [0.45, 0.45, 0.4], "std": [0.25, 0.25, 0.25]},
            "augment": AUG,
            "loss": {"lambda": 0.0051, "batchnorm": True, "scale": 1.0, "symmetric": False},
            "method_config": {"projector": {"hidden": [2048], "dim": 512, "batchnorm": True,
                                            "last_bias": False}},
            "optimizer": {"name": "lars", "lr": 0.05, "lr_biases": 0.0012, "momentum": 0.9,
                          "weight_decay": 1.5e-6, "eta": 0.001}}


def measure(arch: str, size: int, small_stem: bool, batch: int, steps: int, device: torch.device,
            compile_model: bool = False) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    rc = run_config(arch, size, small_stem, batch)
    torch.manual_seed(0)
    cuda = device.type == "cuda"
    model = build_model(rc).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    method = make_method(model, rc)
    if compile_model:
        method.embed = torch.compile(model.embed)
    opt = build_optimizer(model.online_parameters(), rc["optimizer"])
    aug = build_augment(rc, device)
    gen = torch.Generator(device=device).manual_seed(0)
    data = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=device)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext

    def step() -> None:
        v1, v2 = aug(data, gen, 0), aug(data, gen, 1)
        if cuda:
            v1 = v1.contiguous(memory_format=torch.channels_last)
            v2 = v2.contiguous(memory_format=torch.channels_last)
        with autocast():
            loss, _, _ = method.loss(v1, v2, 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(2 if not compile_model else 5):   # warm-up (and compilation)
        step()
    if cuda:
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    dc = (time.process_time() - c0) / steps
    return {"arch": arch, "size": size, "batch": batch, "device": str(device), "step_s": dt,
            "cpu_s_per_step": dc, "images_per_s": batch / dt, "flops_per_step": flops,
            "tflops_per_s": flops / dt / 1e12}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-batch", type=int, default=16)
    ap.add_argument("--cpu-steps", type=int, default=3)
    ap.add_argument("--gpu-batch", type=int, default=256)
    ap.add_argument("--gpu-steps", type=int, default=20)
    ap.add_argument("--peak-tflops", type=float, default=989.0,
                    help="bf16 dense peak of the GPU for the %% of peak column (H100 SXM: 989)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the encoder+projector on the GPU")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU threads {args.threads}, load average {os.getloadavg()}")
    header = (f"{'device':6} {'model':9} {'px':>3} {'batch':>5} {'s/step':>8} {'images/s':>9} "
              f"{'GFLOP/step':>11} {'TFLOP/s':>8}")
    print(header)
    headline = None
    for arch, size, stem in CONFIGS:
        r = measure(arch, size, stem, args.cpu_batch, args.cpu_steps, torch.device("cpu"))
        headline = headline or f"train_throughput: {r['images_per_s']:.1f} (images/s, cpu {arch} {size} px)"
        print(f"{'cpu':6} {arch:9} {size:>3} {r['batch']:>5} {r['step_s']:>8.3f} {r['images_per_s']:>9.1f} "
              f"{r['flops_per_step'] / 1e9:>11.1f} {r['tflops_per_s']:>8.4f}"
              f"   (process CPU s/step {r['cpu_s_per_step']:.3f})")
    if not torch.cuda.is_available():
        print("gpu    skipped: no CUDA device on this machine")
        print(headline)
        return
    dev = torch.device("cuda")
    print(f"gpu: {torch.cuda.get_device_name(0)}; % of peak relative to {args.peak_tflops} TFLOP/s bf16")
    for arch, size, stem in CONFIGS:
        r = measure(arch, size, stem, args.gpu_batch, args.gpu_steps, dev, args.compile)
        print(f"{'cuda':6} {arch:9} {size:>3} {r['batch']:>5} {r['step_s']:>8.4f} {r['images_per_s']:>9.0f} "
              f"{r['flops_per_step'] / 1e9:>11.1f} {r['tflops_per_s']:>8.1f}   "
              f"({100 * r['tflops_per_s'] / args.peak_tflops:.1f}% of peak)")
        if arch == CONFIGS[0][0]:
            headline = f"train_throughput: {r['images_per_s']:.0f} (images/s, cuda {arch} {size} px)"
    print(headline)


if __name__ == "__main__":
    main()
