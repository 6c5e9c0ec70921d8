"""Speed and memory of the chunked empirical NTK (``sslkit.theory.ntk.empirical_ntk``) on a small ResNet.

FLOP model (all counts are FLOPs, one multiply-add = 2 FLOPs):

    F_fwd      forward FLOPs of one sample, counted by ``torch.utils.flop_counter`` (conv, matmul);
               in the issue's notation F * P, i.e. F ~ FLOPs per parameter per sample.
    jacobian   3 * F_fwd per per-sample Jacobian (forward + backward to activations + backward to
               weights), i.e. 3 N F P when every Jacobian is computed once;
    contract   N^2 P for the symmetric kernel (N (N + 1) / 2 dot products of length P, 2 FLOPs
               per term).
    bound      3 N F P + N^2 P: the minimum work of the eNTK. ``empirical_ntk`` recomputes column
               chunks (memory stays at one row panel + one chunk), so it performs
               3 F_fwd * (samples actually differentiated) + 2 P * (kernel entries computed).

Reported: wall and CPU time, the time per sample of one Jacobian against a batched
forward + backward of the same chunk (what a training step pays for 3 F_fwd),
the performed and minimum FLOPs, achieved FLOP/s (performed FLOPs /
wall time), the machine's float32 matmul rate measured here (the practical peak), and the ratio
of the measured time to the time the FLOP bound needs at that peak ("x the bound"). Also the
FLOPs PyTorch's counter attributes to one vmap(jacrev) chunk (its vmap rule for conv weight
gradients is not the 3 F_fwd of the model), and the measured peak memory against the budget that
set the chunk size.

    PYTHONPATH=. python bench/ntk.py [--width 32] [--n 512] [--budget-mb 128] [--chunk 8] [--symmetric]
    PYTHONPATH=. python bench/ntk.py --model resnet18 --n 64 --budget-mb 1024

Measured on the 2-core development CPU (1 thread, shared; load ~3): the SmallResNet (P = 309k,
N = 512, budget 128 MiB, peak 100 MiB) takes 24 s with row panels (Jacobians computed 5.5x N)
against 75 s with the symmetric two-chunk scheme (19x N): 9.5x the time of the FLOP bound at the
float32 matmul peak (91 GFLOP/s). ResNet-18 (P = 11.2M, N = 64, 1 GiB): 25 s, 37x the bound
(per-sample gradients of 11M parameters are memory-bound: 7x a batched training step).

CUDA runs when available (``--device auto``); otherwise the GPU part is skipped with a message.
The CPU is shared on the development machine: the load average is printed beside every timing.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sslkit.theory.ntk import (
    activation_bytes_per_sample,
    chunk_size_for_budget,
    empirical_ntk,
    estimate_peak_bytes,
    n_parameters,
    plan_chunks,
    plan_ntk,
)


class Block(nn.Module):
    """Basic residual block: conv3x3-BN-ReLU-conv3x3-BN (+ projection shortcut), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        return torch.relu(self.b2(self.c2(y)) + self.short(x))


class SmallResNet(nn.Module):
    """CIFAR-style ResNet: stem, three stages of ``blocks`` blocks (widths w, 2w, 4w), linear head."""

    def __init__(self, width: int = 16, blocks: int = 1, d: int = 10):
        super().__init__()
        layers = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        cin = width
        for k, stride in enumerate((1, 2, 2)):
            cout = width * 2 ** k
            for b in range(blocks):
                layers.append(Block(cin, cout, stride if b == 0 else 1))
                cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, d)

    def forward(self, x):
        return self.head(self.features(x))


def make_model(args) -> nn.Module:
    torch.manual_seed(0)
    if args.model == "resnet18":
        import torchvision

        model = torchvision.models.resnet18(num_classes=args.d)
    else:
        model = SmallResNet(args.width, args.blocks, args.d)
    # non-trivial BatchNorm running statistics, as in a trained network
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(32, 3, args.side, args.side))
    return model.eval()


def forward_flops(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x[:1])
    return int(fc.get_total_flops())


def counted_jacobian_flops(model: nn.Module, x: torch.Tensor) -> float:
    """FLOPs PyTorch's counter attributes to vmap(jacrev) of one chunk, per sample."""
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}
    bufs = dict(model.named_buffers())

    def g(p, xi):
        return functional_call(model, (p, bufs), (xi[None],)).mean()

    with FlopCounterMode(display=False) as fc:
        vmap(jacrev(g), in_dims=(None, 0))(params, x)
    return fc.get_total_flops() / len(x)


def train_step_time(model: nn.Module, x: torch.Tensor, device: torch.device, reps: int = 3) -> float:
    """Seconds per sample of a batched forward + backward (the 3 F_fwd a training step costs)."""
    m = model.to(device)
    xb = x.to(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    m(xb).mean().backward()
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        m.zero_grad(set_to_none=True)
        m(xb).mean().backward()
    sync()
    m.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / (reps * len(xb))


def matmul_rate(device: torch.device, size: int = 2048, reps: int = 5) -> float:
    """Measured float32 matmul FLOP/s (the practical peak of this device and thread count)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    a @ b
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * size**3 * reps / (time.perf_counter() - t0)


def performed_flops(N: int, rows: int, P: int, f_fwd: int, jac_samples: int) -> tuple[float, float]:
    """Jacobian FLOPs (3 F_fwd per differentiated sample) and contraction FLOPs (2 P per kernel
    entry computed: each row panel's full diagonal block and everything to its right)."""
    macs = sum(min(rows, N - s) * (N - s) for s in range(0, N, rows))
    return 3.0 * f_fwd * jac_samples, 2.0 * P * macs


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def run(model: nn.Module, x: torch.Tensor, device: torch.device, budget: int, chunk: int | None,
        symmetric: bool) -> dict:
    P = n_parameters(model)
    N = len(x)
    act = activation_bytes_per_sample(model, x)
    plan = None
    if symmetric:
        c = rows = chunk_size_for_budget(model, x, budget)
    elif chunk is not None:
        c, rows = plan_chunks(model, x, budget, chunk_size=chunk)
    else:  # plan_ntk: whole Jacobian, parameter groups or row panels, from the budget
        plan = plan_ntk(model, x[:1], budget, N)
        c, rows = plan.chunk_size, min(plan.row_panels)
    c, rows = min(c, N), min(rows, N)
    f_fwd = forward_flops(model, x)
    peak_rate = matmul_rate(device)
    step = train_step_time(model, x[:c], device)
    w0, c0 = time.perf_counter(), time.process_time()
    res = empirical_ntk(model.to(device), x, chunk_size=c, row_chunk_size=rows, plan=plan, device=device)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    st = res.stats
    jac_f, con_f = performed_flops(N, rows, P, f_fwd, st["jacobian_samples"])
    con_f = st.get("contraction_flops", con_f)  # counted by the engine (groups, symmetric blocks)
    bound = 3.0 * N * f_fwd + float(N) ** 2 * P
    return {
        "device": str(device), "N": N, "P": P, "chunk_size": c, "row_chunk_size": rows,
        "n_panels": st["n_chunks"],
        "forward_flops_per_sample": f_fwd, "activation_bytes_per_sample": act,
        "jacobian_samples": st["jacobian_samples"], "recompute_factor": st["jacobian_samples"] / N,
        "wall_s": wall, "cpu_s": cpu, "jacobian_s": st["jacobian_time_s"], "contraction_s": st["contraction_time_s"],
        "flops_performed": jac_f + con_f, "flops_jacobian": jac_f, "flops_contraction": con_f,
        "flops_bound": bound,
        "achieved_flops_per_s": (jac_f + con_f) / wall,
        "jacobian_flops_per_s": jac_f / max(st["jacobian_time_s"], 1e-12),
        "contraction_flops_per_s": con_f / max(st["contraction_time_s"], 1e-12),
        "matmul_peak_flops_per_s": peak_rate,
        "train_step_s_per_sample": step, "train_step_flops_per_s": 3.0 * f_fwd / step,
        "jacobian_s_per_sample": st["jacobian_time_s"] / st["jacobian_samples"],
        "time_over_bound": wall / (bound / peak_rate),
        "budget_bytes": budget, "estimated_peak_bytes": estimate_peak_bytes(P, act, c, rows),
        "peak_bytes": st["peak_bytes"], "load": load(),
    }


def report(r: dict) -> None:
    gf = 1e9
    print(f"  device {r['device']}: N = {r['N']}, P = {r['P']:,}, forward {r['forward_flops_per_sample'] / 1e6:.1f} "
          f"MFLOP/sample, chunk {r['chunk_size']}, row panel {r['row_chunk_size']} ({r['n_panels']} panels), "
          f"Jacobians computed "
          f"{r['recompute_factor']:.2f}x N)")
    print(f"  time {r['wall_s']:.2f} s wall / {r['cpu_s']:.2f} s CPU (Jacobians {r['jacobian_s']:.2f} s, "
          f"contraction {r['contraction_s']:.2f} s)   [{r['load']}]")
    print(f"  FLOPs: bound 3NFP + N^2P = {r['flops_bound'] / gf:.2f} GFLOP, performed "
          f"{r['flops_performed'] / gf:.2f} GFLOP (Jacobians {r['flops_jacobian'] / gf:.2f}, contraction "
          f"{r['flops_contraction'] / gf:.2f})")
    print(f"  achieved {r['achieved_flops_per_s'] / gf:.2f} GFLOP/s (Jacobians {r['jacobian_flops_per_s'] / gf:.2f}, "
          f"contraction {r['contraction_flops_per_s'] / gf:.2f}); float32 matmul peak here "
          f"{r['matmul_peak_flops_per_s'] / gf:.1f} GFLOP/s")
    print(f"  per sample: Jacobian {1e3 * r['jacobian_s_per_sample']:.2f} ms vs batched forward+backward "
          f"{1e3 * r['train_step_s_per_sample']:.2f} ms ({r['train_step_flops_per_s'] / gf:.2f} GFLOP/s at 3 F_fwd) "
          f"-> {r['jacobian_s_per_sample'] / r['train_step_s_per_sample']:.1f}x")
    print(f"  => {r['time_over_bound']:.1f}x the time the FLOP bound needs at the matmul peak "
          f"({100 / r['time_over_bound']:.1f}% of bound-limited speed)")
    pk = r["peak_bytes"]
    verdict = "n/a" if pk is None else ("under" if pk <= r["budget_bytes"] else "OVER")
    print(f"  memory: budget {r['budget_bytes'] / 2**20:.0f} MiB, model estimate "
          f"{r['estimated_peak_bytes'] / 2**20:.0f} MiB, measured peak increase "
          f"{'n/a' if pk is None else f'{pk / 2**20:.0f} MiB'} -> {verdict} budget; a full Jacobian "
          f"would need {r['N'] * r['P'] * 4 / 2**20:.0f} MiB")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["small", "resnet18"], default="small")
    ap.add_argument("--width", type=int, default=32, help="SmallResNet base width")
    ap.add_argument("--blocks", type=int, default=1, help="SmallResNet blocks per stage")
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--side", type=int, default=32, help="input image side")
    ap.add_argument("--n", type=int, default=512, help="number of points N (CPU)")
    ap.add_argument("--n-gpu", type=int, default=2000, help="number of points N on a GPU")
    ap.add_argument("--budget-mb", type=float, default=128, help="memory budget that sets the chunk sizes (CPU)")
    ap.add_argument("--budget-gpu-mb", type=float, default=16384)
    ap.add_argument("--chunk", type=int, default=None,
                    help="vmap chunk (column chunk) with plan_chunks' row panel (the plan before issue 18, "
                         "e.g. 8); default: plan_ntk picks the blocks from the budget")
    ap.add_argument("--symmetric", action="store_true",
                    help="row panel = chunk, both sized from the budget (the simple scheme)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = make_model(args)
    P = n_parameters(model)
    x = torch.randn(args.n, 3, args.side, args.side, generator=torch.Generator().manual_seed(1))
    print(f"eNTK bench: {args.model} (width {args.width}, blocks {args.blocks}), P = {P:,}, d = {args.d}, "
          f"inputs 3x{args.side}x{args.side}, torch {torch.__version__}, {args.threads} thread(s)")
    jf = counted_jacobian_flops(model, x[:8])
    ff = forward_flops(model, x)
    print(f"  torch's flop counter: forward {ff / 1e6:.1f} MFLOP/sample, vmap(jacrev) {jf / 1e6:.1f} "
          f"MFLOP/sample = {jf / ff:.1f}x forward (model: 3x)")
    results = {}
    if args.device in ("auto", "cpu"):
        print("CPU:")
        results["cpu"] = run(model, x, torch.device("cpu"), int(args.budget_mb * 2**20), args.chunk,
                             args.symmetric)
        report(results["cpu"])
    if args.device in ("auto", "cuda"):
        if torch.cuda.is_available():
            print(f"GPU ({torch.cuda.get_device_name()}):")
            xg = torch.randn(args.n_gpu, 3, args.side, args.side, generator=torch.Generator().manual_seed(1))
            results["cuda"] = run(model, xg, torch.device("cuda"), int(args.budget_gpu_mb * 2**20),
                                  args.chunk, args.symmetric)
            report(results["cuda"])
            model.cpu()
        else:
            print("GPU: skipped (torch.cuda.is_available() is False on this machine)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    if results:
        dev, r = next(iter(results.items()))
        print(f"ntk: {r['time_over_bound']:.2f} (x FLOP bound, {args.model} N = {r['N']} on {dev}, "
              f"budget {r['budget_bytes'] / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
