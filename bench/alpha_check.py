"""App. D.2's rule of thumb for alpha, without training: the top embedding eigenvalue at init of every
configured run, exactly as its history row of step 0 records it.

For each run (``train.methods`` x ``train.inits`` of the config), build the run as the engine does
(``sslkit.training.engine.build_run_state``: same seeds, same evaluation batch) and evaluate it at step 0
(``sslkit.training.engine.evaluate``); ``sslkit.analysis.checkpoints.alpha_check`` compares the top
eigenvalue of the method's space (BT: C, others: Cov) with the paper's ~1e-3 (BT, VICReg) / ~1e-6
(SimCLR) for small init. Needs the prepared data (``snakemake results/data/<dataset>/manifest.json``).

    python bench/alpha_check.py                      # config/config.yaml on digits
    python bench/alpha_check.py --config config/cifar10.yaml --dataset cifar10
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import pandas as pd
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sslkit.analysis.checkpoints import alpha_check  # noqa: E402
from sslkit.config import load_config  # noqa: E402
from sslkit.training import engine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", nargs="*", default=[], help="overlays on config/config.yaml")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-dir", default=None, help="default: results/data/<dataset>")
    args = ap.parse_args()
    torch.set_num_threads(1)
    config = load_config(*args.config)
    data_dir = args.data_dir or f"results/data/{args.dataset}"
    images = engine.load_training_images(data_dir, config["train"]["splits"])
    stats = engine.data_stats(images)
    n_checked = n_passed = 0
    for method in config["train"]["methods"]:
        for init in config["train"]["inits"]:
            rc = engine.resolve_run_config(config, method, init, stats, dataset=args.dataset)
            rc["runtime"]["device"], rc["runtime"]["compile"] = "cpu", False
            with tempfile.TemporaryDirectory() as tmp:
                plan = engine.plan_run(rc, len(images), tmp)
                row = engine.evaluate(engine.build_run_state(plan, images), plan)
            res = alpha_check(pd.DataFrame([row]), method, init)
            verdict = "no rule" if res["passed"] is None else ("pass" if res["passed"] else "FAIL")
            paper = "-" if res["paper_value"] is None else f"{res['paper_value']:.0e}"
            print(f"{method}-{init} (alpha {rc['init_scale']:g}): top eigenvalue of {res['space']} at init "
                  f"{res['top_eigenvalue_init']:.3g}, paper ~{paper}: {verdict}")
            if res["passed"] is not None:
                n_checked += 1
                n_passed += bool(res["passed"])
    print(f"alpha_check: {n_passed}/{n_checked} (small-init runs within a decade of App. D.2's top eigenvalue)")


if __name__ == "__main__":
    main()
