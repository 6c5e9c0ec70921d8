"""The empirical NTK against its FLOP bound, the float32 matmul peak and a plain torch.func reference.

Models: the workflow's digits model (``config/config.yaml`` ``train.encoder``: ResNet-18 width 1/16,
small stem, 1 channel, 8 px, Barlow Twins projector to d = 8; P = 46,908) on N = 2000 points, and
``bench/ntk.py``'s SmallResNet (width 32, 3 x 32 x 32, d = 10; P = 309k) on N = 512 points.

For each model, in one process and side by side (the CPU is shared: the load average is printed
beside every timing and the matmul peak is re-measured before every model):

    sslkit      ``empirical_ntk(model, x, memory_budget_bytes=budget)`` (``plan_ntk`` picks the blocks)
    before      optional: another ``sslkit.theory.ntk`` file (``--before PATH``, e.g. main's version from
                ``git show main:sslkit/theory/ntk.py``), given the same budget when it has ``plan_ntk``, else
                run with the plan the project used then (``plan_chunks(model, x, budget, chunk)``)
    reference   ``functional_call`` + ``vmap(jacrev)`` for the full N x P Jacobian (vmap chunks of
                ``--ref-chunk`` points), then ``d * J @ J.T`` (float32), run when N x P x 4 x 3 fits
                in ``--ref-limit-mb``

FLOP bound: 3 N F + N^2 P (F: forward FLOPs of one point from ``torch.utils.flop_counter``, i.e.
F * P in the issue's notation; 3 F per per-point Jacobian; N^2 P for the symmetric contraction,
N (N + 1) / 2 dot products of length P at 2 FLOPs per term). "x bound" is the measured time over
bound / (float32 matmul peak measured here, 2048^3). The contraction rate is the performed GEMM
FLOPs (``stats['contraction_flops']``; for "before", each panel's full diagonal block and
everything right of it) over the contraction time. Memory: peak increase (``PeakMemory``: resident
set high-water mark on Linux CPUs) against the budget. Accuracy: max |K - K_ref| / max |K_ref|.

    PYTHONPATH=. python bench/ntk_vs_reference.py [--before /tmp/ntk_main.py] [--models digits small]

The last line is the headline: ``ntk_vs_reference: <x bound of sslkit on the digits model> (x FLOP bound)``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call, jacrev, vmap
from torch.utils.flop_counter import FlopCounterMode

from sslkit.theory.ntk import PeakMemory, empirical_ntk, n_parameters

ROOT = Path(__file__).resolve().parents[1]


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def matmul_peak(size: int = 2048, reps: int = 4) -> float:
    """Measured float32 matmul FLOP/s (best of ``reps``: the practical peak at this moment)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def forward_flops(model, x) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x[:1])
    return int(fc.get_total_flops())


def digits_model():
    """The workflow's digits model (barlow_twins, init small) as ``sslkit.training.networks.build_model``
    builds it from config/config.yaml, on random 1 x 8 x 8 inputs (2000 points = 1000 pairs)."""
    from sslkit.config import load_config
    from sslkit.training.engine import resolve_run_config
    from sslkit.training.networks import build_model

    cfg = load_config(ROOT / "config" / "config.yaml")
    stats = {"n_train": 1438, "height": 8, "width": 8, "channels": 1, "mean": [0.3], "std": [0.3]}
    rc = resolve_run_config(cfg, "barlow_twins", "small", stats, "digits")
    torch.manual_seed(0)
    model = build_model(rc)
    model.train()
    with torch.no_grad():  # non-trivial running statistics, as in a trained network
        for _ in range(2):
            model(torch.randn(64, 1, 8, 8))
    return model.eval(), (1, 8, 8)


def small_model():
    sys.path.insert(0, str(ROOT / "bench"))
    from ntk import SmallResNet

    torch.manual_seed(0)
    model = SmallResNet(32, 1, 10)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(32, 3, 32, 32))
    return model.eval(), (3, 32, 32)


def reference_ntk(model, x, chunk: int) -> np.ndarray:
    """functional_call + vmap(jacrev) for the full Jacobian, then d J J^T (float32)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    bufs = dict(model.named_buffers())
    with torch.no_grad():
        d = model(x[:1]).reshape(1, -1).shape[1]

    def g(p, xi):
        return functional_call(model, (p, bufs), (xi[None],)).reshape(-1).mean()

    with torch.no_grad():
        jd = vmap(jacrev(g), in_dims=(None, 0), chunk_size=chunk)(params, x)
        J = torch.cat([v.reshape(len(x), -1) for v in jd.values()], dim=1)
        del jd
        return (d * (J @ J.T)).double().numpy()


def timed(fn):
    with PeakMemory(torch.device("cpu")) as pm:
        t0 = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t0
    return out, wall, pm.peak_bytes


_REFERENCE: dict = {}  # model name -> (K, wall, peak, load): the reference is run once per model


def bench_model(name, model, shape, N, budget, chunk, before, args) -> dict:
    x = torch.randn(N, *shape, generator=torch.Generator().manual_seed(1))
    P = n_parameters(model)
    F = forward_flops(model, x)
    peak = matmul_peak()
    bound = 3.0 * N * F + float(N) ** 2 * P
    t_bound = bound / peak
    print(f"{name}: N = {N}, P = {P:,}, F = {F / 1e6:.2f} MFLOP/point, bound 3NF + N^2P = {bound / 1e9:.1f} GFLOP "
          f"= {t_bound:.2f} s at the matmul peak {peak / 1e9:.1f} GFLOP/s, budget {budget / 2**20:.0f} MiB  [{load()}]")
    rows = {}
    K_ref, ref_load = None, None
    ref_fits = N * P * 4 * 3 <= args.ref_limit_mb * 2**20
    order = ["sslkit"] + (["before"] if before is not None else []) + (["reference"] if ref_fits else [])
    for label in order:
        if label == "sslkit":
            res, wall, pk = timed(lambda: empirical_ntk(model, x, memory_budget_bytes=budget))
            K, st = res.K, res.stats
            con_f, con_t = st["contraction_flops"], st["contraction_time_s"]
            extra = (f"groups {st['n_groups']}, row panels {st['row_panels']}, chunk {st['chunk_size']}, "
                     f"Jacobians {st['jacobian_samples'] / N:.2f}x N, {st['jacobian']}")
        elif label == "before" and hasattr(before, "plan_ntk"):    # a version that plans from the budget itself
            res, wall, pk = timed(lambda: before.empirical_ntk(model, x, memory_budget_bytes=budget))
            K, st = res.K, res.stats
            con_f, con_t = st["contraction_flops"], st["contraction_time_s"]
            extra = (f"groups {st['n_groups']}, row panels {st['row_panels']}, chunk {st['chunk_size']}, "
                     f"Jacobians {st['jacobian_samples'] / N:.2f}x N, {st.get('jacobian', 'vmap')}")
        elif label == "before":
            c, r = before.plan_chunks(model, x[:1], budget, chunk_size=chunk)
            c, r = min(c, N), min(r, N)
            res, wall, pk = timed(lambda c=c, r=r: before.empirical_ntk(model, x, chunk_size=c, row_chunk_size=r))
            K, st = res.K, res.stats
            con_f = 2.0 * P * sum(min(r, N - s) * (N - s) for s in range(0, N, r))
            con_t = st["contraction_time_s"]
            extra = f"chunk {c}, row panel {r}, Jacobians {st['jacobian_samples'] / N:.2f}x N"
        else:
            if name not in _REFERENCE:
                _REFERENCE[name] = timed(lambda: reference_ntk(model, x, args.ref_chunk)) + (load(),)
            K, wall, pk, ref_load = _REFERENCE[name]
            con_f, con_t, extra = 2.0 * N * N * P, None, f"vmap chunk {args.ref_chunk}, full J J^T"
        rows[label] = {"K": K, "wall_s": wall, "peak_bytes": pk, "contraction_flops": con_f,
                       "contraction_s": con_t, "extra": extra,
                       "load": ref_load if label == "reference" else load()}
        if label == "reference":
            K_ref = K
    peak_after = matmul_peak()
    out = {"model": name, "N": N, "P": P, "F": F, "bound_flops": bound, "matmul_peak": peak,
           "matmul_peak_after": peak_after, "bound_s": t_bound, "budget_bytes": budget, "runs": {}}
    print(f"  (matmul peak re-measured after the runs: {peak_after / 1e9:.1f} GFLOP/s)")
    print(f"  {'':10s} {'time s':>8s} {'x bound':>8s} {'contr GF/s':>10s} {'% peak':>7s} {'x ref':>6s} "
          f"{'peak MiB':>8s} {'err vs ref':>10s}")
    for label, r in rows.items():
        rate = None if r["contraction_s"] is None else r["contraction_flops"] / r["contraction_s"]
        x_ref = None if "reference" not in rows else r["wall_s"] / rows["reference"]["wall_s"]
        err = None if K_ref is None else float(np.abs(r["K"] - K_ref).max() / np.abs(K_ref).max())
        pk = None if r["peak_bytes"] is None else r["peak_bytes"] / 2**20
        print(f"  {label:10s} {r['wall_s']:8.2f} {r['wall_s'] / t_bound:8.2f} "
              f"{'-' if rate is None else f'{rate / 1e9:.1f}':>10s} "
              f"{'-' if rate is None else f'{100 * rate / peak:.0f}':>7s} "
              f"{'-' if x_ref is None else f'{x_ref:.2f}':>6s} {'-' if pk is None else f'{pk:.0f}':>8s} "
              f"{'-' if err is None else f'{err:.1e}':>10s}  {r['extra']}  [{r['load']}]")
        out["runs"][label] = {"wall_s": r["wall_s"], "x_bound": r["wall_s"] / t_bound,
                              "contraction_flops_per_s": rate, "x_reference": x_ref, "peak_bytes": r["peak_bytes"],
                              "rel_err_vs_reference": err, "plan": r["extra"]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", choices=["digits", "small"], default=["digits", "small"])
    ap.add_argument("--before", default=None, help="path of another sslkit.theory.ntk module to time (e.g. main's)")
    ap.add_argument("--n-digits", type=int, default=2000)
    ap.add_argument("--n-small", type=int, default=512)
    ap.add_argument("--budget-digits-mb", type=float, default=2000, help="config ntk.memory_budget_mb")
    ap.add_argument("--budget-small-mb", type=float, nargs="+", default=[128, 1024],
                    help="budgets for the SmallResNet (128: bench/ntk.py's default; 1024: its whole Jacobian fits)")
    ap.add_argument("--ref-chunk", type=int, default=256)
    ap.add_argument("--ref-limit-mb", type=float, default=4096)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    before = None
    if args.before:
        spec = importlib.util.spec_from_file_location("ntk_before", args.before)
        before = importlib.util.module_from_spec(spec)
        sys.modules["ntk_before"] = before  # dataclasses look their module up there
        spec.loader.exec_module(before)
    print(f"eNTK vs FLOP bound and torch.func reference: torch {torch.__version__}, {args.threads} thread(s)")
    results = []
    if "digits" in args.models:
        m, shape = digits_model()
        results.append(bench_model("digits ResNet-18/16", m, shape, args.n_digits,
                                   int(args.budget_digits_mb * 2**20), 32, before, args))
    if "small" in args.models:
        m, shape = small_model()
        for b in args.budget_small_mb:
            results.append(bench_model("SmallResNet w32", m, shape, args.n_small, int(b * 2**20), 8, before, args))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    r = results[0]
    print(f"ntk_vs_reference: {r['runs']['sslkit']['x_bound']:.2f} (x FLOP bound, sslkit on {r['model']}, "
          f"N = {r['N']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
