"""Cost of dense history spectra: one evaluation row vs one training step, per run of the default config.

An evaluation row (``sslkit.training.engine.evaluate``) is one train-mode forward of the fixed
evaluation batch (``train.eval.batch_size`` images, two views) plus two d x d eigendecompositions; a
training step is augmentation + forward + backward + update of one batch. Both are timed side by side
in one process on the default digits model (random uint8 images of the digits shape: the cost does not
depend on content), for every configured method at small init. The extra cost of raising
``train.eval.log_points`` from OLD to NEW = (added history rows) x (eval time) / (run steps x step time),
with the row counts from ``sslkit.training.engine.eval_steps`` and the run's checkpoint steps.

    python bench/eval_cost.py                        # config/config.yaml, log_points 40 -> 320
    python bench/eval_cost.py --old 40 --new 320 --repeats 20
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sslkit.config import load_config  # noqa: E402
from sslkit.training import engine  # noqa: E402


def measure(config: dict, method: str, repeats: int, old: int, new: int) -> dict:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (1438, 8, 8, 1), dtype=np.uint8)
    rc = engine.resolve_run_config(config, method, "small", engine.data_stats(images), dataset="digits")
    rc["runtime"]["device"], rc["runtime"]["compile"] = "cpu", False
    with tempfile.TemporaryDirectory() as tmp:
        plan = engine.plan_run(rc, len(images), tmp)
        state = engine.build_run_state(plan, images)
        engine.train_step(state, plan)  # warm-up
        engine.evaluate(state, plan)
        t_step, t_eval = [], []
        for _ in range(repeats):  # interleaved, so both see the same machine load
            t0 = time.perf_counter()
            engine.train_step(state, plan)
            t_step.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            engine.evaluate(state, plan)
            t_eval.append(time.perf_counter() - t0)
    total, ecfg, ccfg = plan.total, rc["eval"], rc["checkpoints"]
    ckpt = engine.checkpoint_steps(total, int(ccfg["log_points"]), ccfg.get("every"))
    rows = {k: len(engine.eval_steps(total, ecfg.get("every"), k, ckpt)) for k in (old, new)}
    step_s, eval_s = float(np.median(t_step)), float(np.median(t_eval))
    return {"method": method, "steps": total, "step_s": step_s, "eval_s": eval_s, "rows_old": rows[old],
            "rows_new": rows[new],
            "extra_fraction": (rows[new] - rows[old]) * eval_s / (total * step_s + rows[old] * eval_s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=int, default=40)
    ap.add_argument("--new", type=int, default=320)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--methods", nargs="*", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    config = load_config()
    methods = args.methods or list(config["methods"])
    worst = 0.0
    for m in methods:
        r = measure(config, m, args.repeats, args.old, args.new)
        worst = max(worst, r["extra_fraction"])
        print(f"{m}: {r['steps']} steps, step {1e3 * r['step_s']:.1f} ms, eval row {1e3 * r['eval_s']:.1f} ms "
              f"(eval/step {r['eval_s'] / r['step_s']:.2f}), rows {r['rows_old']} -> {r['rows_new']}, "
              f"extra run time {100 * r['extra_fraction']:.1f} %")
    print(f"eval_cost: {100 * worst:.1f} (% extra run time, log_points {args.old} -> {args.new}, worst method)")


if __name__ == "__main__":
    main()
