"""The stepwise monitor's forecast against what then happened, and its cost (sslkit.analysis.monitor).

1. Linear model (Sec. 4, where the theory is exact): gradient descent with well-separated gamma_j;
   forecasts of each mode made once its growth is visible (risen >= 1, 2, 3 decades above its lowest
   value) against the step time measured in the run (lambda_j = 1/2).
2. ResNet runs (``history.csv`` files of the workflow, e.g. results/train/*/*-small/history.csv): the
   monitor replayed record by record on the dense history (it sees what it would have seen live); its
   forecasts made at least one step width before each step (the width of the step's rise interval,
   [r_lo, r_hi] of the plateau) against the steps the workflow's detector finds on the whole run.
3. Overhead: a plain PyTorch SimCLR loop on digits (the README example) with and without the monitor at
   the default cadence (320 log-spaced records + every 25 steps), interleaved in one process; and the
   monitor's own share (its ``update`` calls without the evaluation forward).

Usage: python bench/monitor_forecast.py [--histories results/train/*/*-small/history.csv]
       [--figure forecast.png] [--steps 1200]
Prints one table per part; the last line is the headline ``monitor_forecast_linear_worst: <x> (relative error)``.
"""

from __future__ import annotations

import argparse
import glob
import math
import time

import numpy as np

from sslkit.analysis.monitor import StepwiseMonitor, forecast_errors, replay
from sslkit.analysis.steps import detect_steps
from sslkit.theory import linear as L


def linear_run(seed: int = 0):
    rng = np.random.default_rng(seed)
    m, d, alpha, lr = 40, 6, 1e-4, 5e-3
    gamma = np.concatenate([[1.0, 0.7, 0.5, 0.35, 0.25, 0.18], np.sort(rng.uniform(0.01, 0.1, m - d))[::-1]])
    V = np.linalg.qr(rng.standard_normal((m, m)))[0]
    W0 = L.init_weights(d, m, alpha, seed + 1)
    steps = int(1.3 * L.step_times(gamma[:d], alpha * math.sqrt(m)).max() / lr)
    traj = L.gd_eigenbasis(gamma, V, W0, lr, steps, record=L.record_grid(steps, 400))
    tau = {j: L.first_crossing(traj.t, traj.eigs[:, j], 0.5) for j in range(d)}
    return gamma, traj, tau


def part_linear(seeds=(0, 1, 2)) -> tuple[float, list]:
    print("linear model: forecast vs measured step time (d = 6, gamma_1..6 = 1 .. 0.18)")
    print(f"{'visible after':>14} {'forecasts':>10} {'median err':>11} {'worst err':>10} {'rate / 8 gamma':>15}")
    worst_at_default, points = None, []
    for rise in (1.0, 2.0, 3.0):
        errs, ratios = [], []
        for seed in seeds:
            gamma, traj, tau = linear_run(seed)
            _, made = replay(traj.t, traj.eigs, space="C", grown_level=1.0, min_rise_decades=rise)
            e = forecast_errors(made, tau)
            errs += [x for v in e["per_mode"].values() for x in v]
            ratios += [f["rate"] / (8 * gamma[f["mode"]]) for f in made]
            if rise == 3.0 and seed == seeds[0]:
                points = [(f["made_at"], f["t"], tau[f["mode"]], f["mode"]) for f in made]
        print(f"{rise:>11.0f} dec {len(errs):>10} {np.median(errs):>11.2%} {np.max(errs):>10.2%} "
              f"{np.median(ratios):>15.3f}")
        if rise == 3.0:
            worst_at_default = float(np.max(errs))
    return worst_at_default, points


def part_resnet(paths: list[str]) -> list:
    if not paths:
        print("ResNet runs: no history.csv given (--histories)")
        return []
    import pandas as pd

    print("ResNet runs: forecasts made >= one step width before the step, vs the detected steps")
    print(f"{'run':<46} {'space':>5} {'steps':>5} {'forecasts':>9} {'median err':>11} {'worst err':>10}")
    points = []
    for path in paths:
        h = pd.read_csv(path)
        space = "C" if "barlow_twins" in path else "cov"
        cols = sorted((c for c in h.columns if c.startswith(f"eig_{space}_")), key=lambda c: int(c.rsplit("_", 1)[1]))
        t, eigs = h["t"].to_numpy(float), h[cols].to_numpy(float)
        full = detect_steps(t, eigs, detector="bands")
        tau = {}
        lead = {}
        for ev in full["events"]:
            tau.setdefault(ev["mode"], ev["time"])
            lead.setdefault(ev["mode"], ev["interval"][1] - ev["interval"][0])
        _, made = replay(t, eigs, space=space)
        soonest: dict[float, dict] = {}
        for f in made:  # forecast() lists the soonest first: the "next step" of the status line
            soonest.setdefault(f["made_at"], f)
        for label, fc in (("all ungrown modes", made), ("next step only", list(soonest.values()))):
            e = forecast_errors(fc, tau, lead)
            med = "-" if e["median"] is None else f"{e['median']:.1%}"
            worst = "-" if e["worst"] is None else f"{e['worst']:.1%}"
            name = f"{path[-28:]} ({label})"
            print(f"{name:<46} {space:>5} {full['n_steps']:>5} {e['n']:>9} {med:>11} {worst:>10}")
        points += [(f["made_at"], f["t"], tau[f["mode"]], f["mode"]) for f in made
                   if f["mode"] in tau and f["made_at"] <= tau[f["mode"]] - lead[f["mode"]]]
    return points


def part_overhead(steps: int) -> float:
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    torch.set_num_threads(1)
    x = torch.tensor(load_digits().data, dtype=torch.float32) / 16

    def aug(b):
        return b * (torch.rand_like(b) > 0.3) + 0.1 * torch.randn_like(b)

    def run(with_monitor: bool) -> tuple[float, float]:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 8))
        for p in net.parameters():
            p.data *= 0.1
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        xe1, xe2 = aug(x[:512]), aug(x[:512])
        mon = StepwiseMonitor(space="cov", lr=0.5, log_to_mlflow=False)
        own = 0.0
        t0 = time.perf_counter()
        for step in range(steps + 1):
            if with_monitor and mon.due(step, steps):
                with torch.no_grad():
                    z1, z2 = net(xe1), net(xe2)
                a = time.perf_counter()
                mon.update(step, z1, z2)
                own += time.perf_counter() - a
            b = x[torch.randint(0, len(x), (256,))]
            z = F.normalize(torch.cat([net(aug(b)), net(aug(b))]), dim=1)
            loss = F.cross_entropy(z @ z.T / 0.2 - 1e9 * torch.eye(512), torch.arange(512).roll(256))
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - t0, own

    times = {True: [], False: []}
    own = []
    for _ in range(2):
        for flag in (False, True):
            total, o = run(flag)
            times[flag].append(total)
            if flag:
                own.append(o)
    base, mon = min(times[False]), min(times[True])
    print(f"overhead ({steps} steps of the README's SimCLR loop, default cadence, best of 2, interleaved):")
    print(f"  without monitor {base:.2f} s, with {mon:.2f} s: +{mon / base - 1:.1%} in all (evaluation forwards "
          f"included); the monitor's own update calls {min(own):.2f} s = {min(own) / base:.1%} of training")
    return min(own) / base


def figure(path: str, lin: list, res: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sslkit.viz import STYLE

    with plt.style.context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(9, 4))
        for ax, pts, title in ((axes[0], lin, "linear model (visible after 3 decades)"),
                               (axes[1], res, "ResNet runs (>= one step width ahead)")):
            if pts:
                made, fc, actual, mode = map(np.asarray, zip(*pts, strict=True))
                sc = ax.scatter(actual, fc, c=(actual - made) / actual, s=8, cmap="viridis")
                lo, hi = min(actual.min(), fc.min()), max(actual.max(), fc.max())
                ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
                fig.colorbar(sc, ax=ax, label="lead (fraction of step time)")
            ax.set(xlabel="actual step time t", ylabel="forecast step time t", title=title)
        fig.tight_layout()
        fig.savefig(path, dpi=150)
    print(f"figure: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--histories", nargs="*", default=[])
    ap.add_argument("--figure", default=None)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--no-overhead", action="store_true")
    a = ap.parse_args()
    paths = sorted({p for pat in a.histories for p in glob.glob(pat)})
    worst, lin = part_linear()
    res = part_resnet(paths)
    if not a.no_overhead:
        part_overhead(a.steps)
    if a.figure:
        figure(a.figure, lin, res)
    print(f"monitor_forecast_linear_worst: {worst:.4f} (relative error, forecasts after 3 decades of growth)")


if __name__ == "__main__":
    main()
