"""How the App. E alignments move with the number of pairs n and with training length.

Reads the outputs of rules/ntk.smk (results/ntk/{dataset}/{method}.npz + pairs.npz) and the
training runs they came from, and prints, per method:

  * n-dependence: a(P_exp, P_th), a(P_exp, P_NTK) and d/2n on the first n' of the n stored pairs
    (the eNTK of a subset of points is the sub-block of K, so this costs no new eNTK);
  * training length: the same alignments with the eNTK and embeddings of earlier checkpoints of
    the run (step 0 = the kernel at initialisation, cf. the paper's footnote 22), on the first
    ``--n-ckpt`` pairs.

Usage (CPU, one thread; ~15 s per eNTK of 2000 points of the digits miniature):
    PYTHONPATH=. python bench/ntk_alignment_scaling.py --dataset digits --n-ckpt 500 \
        --out results/ntk/digits/scaling.json
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from sslkit.io import load_json, save_json
from sslkit.theory.alignment import network_alignment, stacked_points, theory_alignment
from sslkit.training.engine import load_checkpoint


def subset(K: np.ndarray, F: np.ndarray, n: int, n_sub: int) -> tuple[np.ndarray, np.ndarray]:
    """K and F restricted to the first n_sub pairs: points [0, n_sub) and [n, n + n_sub)."""
    idx = np.r_[0:n_sub, n:n + n_sub]
    return K[np.ix_(idx, idx)], F[:, idx]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--methods", nargs="+", default=["barlow_twins", "simclr", "vicreg"])
    ap.add_argument("--n-sub", type=int, nargs="+", default=[50, 100, 250, 500, 1000])
    ap.add_argument("--n-ckpt", type=int, default=500, help="pairs used for the per-checkpoint eNTKs")
    ap.add_argument("--checkpoints", type=int, default=5, help="checkpoints per run (log-spaced, incl. 0 and last)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path("results/ntk") / args.dataset
    pairs = np.load(root / "pairs.npz")
    out: dict = {"dataset": args.dataset, "methods": {}}
    for m in args.methods:
        z = np.load(root / f"{m}.npz")
        s = load_json(root / f"{m}.json")
        K, F = z["K"], z["f_exp"]
        n = K.shape[0] // 2
        rows_n = []
        for n_sub in [k for k in args.n_sub if k <= n]:
            Ks, Fs = subset(K, F, n, n_sub)
            _, r = theory_alignment(Ks, Fs, random_trials=2)
            rows_n.append({"n": n_sub, "a_exp_th": r["a_exp_th"], "a_exp_ntk": r["a_exp_ntk"],
                           "a_th_ntk": r["a_th_ntk"], "random": r["random_analytic"]})
        run = Path(s["run"])
        man = load_json(run / "manifest.json")
        cks = man["checkpoints"]
        pick = sorted({0, len(cks) - 1, *np.unique(np.geomspace(1, len(cks) - 1, args.checkpoints - 1)
                                                   .round().astype(int)).tolist()})
        nc = min(args.n_ckpt, n)
        pts = stacked_points(pairs["x1"][:nc], pairs["x2"][:nc])
        rows_t = []
        for i in pick:
            ck = cks[i]
            model, _ = load_checkpoint(run / ck["path"])
            t0 = time.process_time()
            try:
                _, r = network_alignment(model, pts, chunk_size=32, row_chunk_size=len(pts), random_trials=2)
            except ValueError as err:  # e.g. rank-deficient embeddings at init
                rows_t.append({"step": ck["step"], "t": ck["t"], "error": str(err)[:120]})
                continue
            rows_t.append({"step": ck["step"], "t": ck["t"], "a_exp_th": r["a_exp_th"], "a_exp_ntk": r["a_exp_ntk"],
                           "a_th_ntk": r["a_th_ntk"], "random": r["random_analytic"],
                           "f_exp_sv_ratio": float(r["f_exp_singular_values"][-1] / r["f_exp_singular_values"][0]),
                           "ntk_cpu_s": time.process_time() - t0})
        out["methods"][m] = {"by_n": rows_n, "by_checkpoint": rows_t, "n_ckpt": nc}
        print(f"\n== {m} ({run}) ==")
        print("n-dependence (sub-blocks of the final eNTK):")
        for r in rows_n:
            print(f"  n={r['n']:5d}  a(exp,th)={r['a_exp_th']:.3f}  a(exp,NTK)={r['a_exp_ntk']:.3f}  "
                  f"a(th,NTK)={r['a_th_ntk']:.3f}  random={r['random']:.4f}")
        print(f"training length (n = {nc}):")
        for r in rows_t:
            if "error" in r:
                print(f"  step={r['step']:6d}  {r['error']}")
                continue
            print(f"  step={r['step']:6d} t={r['t']:8.2f}  a(exp,th)={r['a_exp_th']:.3f}"
                  f"  a(exp,NTK)={r['a_exp_ntk']:.3f}"
                  f"  a(th,NTK)={r['a_th_ntk']:.3f}  sv_d/sv_1={r['f_exp_sv_ratio']:.2e}  ({r['ntk_cpu_s']:.0f} s CPU)")
    if args.out:
        save_json(args.out, out)
    first = args.methods[0]
    last = out["methods"][first]["by_n"][-1]
    print(f"ntk_alignment_scaling: {last['a_exp_th']:.3f} (a(exp,th) of {first} at n = {last['n']}; "
          f"random {last['random']:.4f})")


if __name__ == "__main__":
    main()
