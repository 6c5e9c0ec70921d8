"""Speed of the linear-model simulators on the paper setting (CIFAR-10, n = 500, m = 1200, d = 10).

Prints steps/s of the eigenbasis simulator (``sslkit.theory.linear.gd_eigenbasis``, O(d^2 m) per step)
and of the original-basis reference (``gd_reference``, O(d m^2) per step), their ratio, and the
wall and CPU time of the whole CIFAR-10 simulation (every Euler step to saturation, as the
``linear_sim`` rule runs it: the modes that can grow, ``gd_eigenbasis(tol=1e-11)``) beside the
simulation of every non-null mode (``tol=None``): wall times, their ratio and the largest difference
of the d step times (first crossings of 1/2). The machine's load average is printed beside each timing: other
processes on a shared CPU slow every number down.

    PYTHONPATH=. python bench/linear_sim.py [--pairs results/linear/cifar10/pairs.npz] [--quick]
                                            [--lr-scan 2 5]

The pairs come from the workflow (``snakemake --cores 2 --configfile config/cifar10.yaml
--config data_dir=/path/to/datasets -- results/linear/cifar10/pairs.npz``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from sslkit.theory import linear as L


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", default="results/linear/cifar10/pairs.npz")
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=1e-7)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fast-steps", type=int, default=5000, help="steps timed for the eigenbasis simulator")
    ap.add_argument("--ref-steps", type=int, default=200, help="steps timed for the reference")
    ap.add_argument("--quick", action="store_true", help="skip the whole simulation")
    ap.add_argument("--lr-scan", type=float, nargs="*", default=None, metavar="FACTOR",
                    help="also rerun the whole simulation at lr / FACTOR (e.g. 2 5): the deviation from "
                         "the gradient-flow theory should shrink ~ lr if it is the Euler discretisation")
    args = ap.parse_args(argv)
    if not Path(args.pairs).is_file():
        print(f"{args.pairs} not found: run `snakemake --cores 2 --configfile config/cifar10.yaml "
              f"--config data_dir=/path/to/datasets -- {args.pairs}` first", file=sys.stderr)
        return 2
    p = np.load(args.pairs)
    X, Xp = p["X"], p["Xp"]
    n, m = X.shape
    G = L.gamma_matrix(X, Xp)
    gamma, V = L.eigh_desc(G)
    W0 = L.init_weights(args.d, m, args.alpha, args.seed)
    print(f"pairs {args.pairs}: n = {n}, m = {m}, d = {args.d}, alpha = {args.alpha:g}, lr = {args.lr:g}; "
          f"{int((np.abs(gamma) > np.finfo(float).eps * m * abs(gamma).max()).sum())} non-null eigenmodes")

    rec = np.array([0])
    _, w_ref, c_ref = timed(lambda: L.gd_reference(G, W0, args.lr, args.ref_steps, rec))
    print(f"reference (original basis): {args.ref_steps / w_ref:10.0f} steps/s  "
          f"({1e6 * w_ref / args.ref_steps:8.1f} us/step wall, {1e6 * c_ref / args.ref_steps:8.1f} us/step CPU)"
          f"  [{load()}]")
    _, w_fast, c_fast = timed(lambda: L.gd_eigenbasis(gamma, V, W0, args.lr, args.fast_steps, rec))
    print(f"eigenbasis               : {args.fast_steps / w_fast:10.0f} steps/s  "
          f"({1e6 * w_fast / args.fast_steps:8.1f} us/step wall, {1e6 * c_fast / args.fast_steps:8.1f} us/step CPU)"
          f"  [{load()}]")
    print(f"speed-up eigenbasis / reference: {(args.fast_steps / w_fast) / (args.ref_steps / w_ref):.1f}x (wall), "
          f"{(args.fast_steps / c_fast) / (args.ref_steps / c_ref):.1f}x (CPU)")
    if args.quick:
        print(f"linear_sim: {(args.fast_steps / w_fast) / (args.ref_steps / w_ref):.1f} (x steps/s, eigenbasis vs "
              f"reference, wall)")
        return 0

    s0 = L.effective_s0(W0, V)

    def whole(lr: float, tol: float | None = 1e-11):
        """Every Euler step to saturation at ``lr`` (as the linear_sim rule runs it): steps, trajectory.
        ``tol``: gd_eigenbasis's truncation (the rule's default); None simulates every non-null mode."""
        n_steps = L.auto_steps(gamma[:args.d], s0, lr)
        return n_steps, L.gd_eigenbasis(gamma, V, W0, lr, n_steps, L.record_grid(n_steps, 2000), tol=tol)

    def step_times(traj) -> np.ndarray:
        return np.array([L.first_crossing(traj.t, traj.eigs[:, j]) for j in range(args.d)])

    (steps, traj), w_all, c_all = timed(lambda: whole(args.lr))
    res = L.compare_with_theory(traj, gamma[:args.d], s0)
    print(f"whole simulation: {steps} Euler steps to t = {args.lr * steps:.2f} in {w_all:.2f} s wall, "
          f"{c_all:.2f} s CPU ({1e6 * w_all / steps:.1f} us/step; target <= 2 s)  [{load()}]")
    print(f"  check: max tau_rel_error = {max(res['tau_rel_error']):.4f}, max_abs_eig_error = "
          f"{res['max_abs_eig_error']:.4f}, final loss = {res['final_loss']:.2e}")
    (_, full), w_full, c_full = timed(lambda: whole(args.lr, tol=None))
    dtau = float(np.max(np.abs(step_times(traj) - step_times(full))))
    print(f"truncated vs full (every non-null mode): {w_all:.2f} s vs {w_full:.2f} s wall (x{w_full / w_all:.1f}), "
          f"{c_all:.2f} s vs {c_full:.2f} s CPU; max |step time difference| = {dtau:.1e} (target <= 1e-9)  [{load()}]")
    for factor in args.lr_scan or []:
        lr = args.lr / factor
        n_steps, tr = whole(lr)
        r = L.compare_with_theory(tr, gamma[:args.d], s0)
        print(f"lr / {factor:g} = {lr:.3g} ({n_steps} steps): max tau_rel_error = {max(r['tau_rel_error']):.4f}, "
              f"max_abs_eig_error = {r['max_abs_eig_error']:.4f} (per mode: "
              + " ".join(f"{e:.4f}" for e in r["max_abs_eig_error_per_mode"]) + ")")
    print(f"linear_sim: {w_all:.2f} (s wall, truncated simulation of {steps} Euler steps; full {w_full:.2f} s: "
          f"x{w_full / w_all:.1f}; max step-time difference {dtau:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
