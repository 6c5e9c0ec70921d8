"""Rule sharpened_speedup_table: predicted and measured speed-up of the sharpened loss, linear model and ResNet."""
from pathlib import Path

import numpy as np
import pandas as pd

from sslkit.experiments.speedups import group_manifests
from sslkit.io import atomic_path, load_json
from sslkit.rule_script import script_run
from sslkit.theory.landscape_experiments import resnet_comparison

with script_run(snakemake, attach=True) as (tracker, config):
    linear = pd.read_csv(snakemake.input.linear)
    factors = pd.read_csv(snakemake.input.factors)
    # initial eigenvalues of C of the ResNet baseline runs (median over seeds, per init)
    lam0 = {}
    for path in group_manifests(snakemake.input.groups, "baseline"):
        man = load_json(path)
        hist = pd.read_csv(Path(path).parent / man["history"])
        eig = hist.loc[hist["step"].idxmin(), [c for c in hist.columns if c.startswith("eig_C_")]].to_numpy(float)
        lam0.setdefault(man["run_config"]["init"], []).append(np.sort(eig)[::-1])
    lam0 = {init: np.median(np.stack(v), axis=0) for init, v in lam0.items()}
    try:
        table = resnet_comparison(linear.to_dict("records"), factors, variant=snakemake.params.variant,
                                  resnet_lambda0=lam0, level=snakemake.params.level)
    except ValueError as exc:
        raise ValueError(f"{snakemake.input.factors}: {exc}") from exc
    with atomic_path(snakemake.output.csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4g")
    with atomic_path(snakemake.output.md) as tmp:
        with open(tmp, "w") as fh:
            fh.write(table.to_markdown(index=False, floatfmt=".3g") + "\n")
    tracker.log_artifacts([snakemake.output.csv, snakemake.output.md])
