"""Rule train_curves: loss and embedding eigenvalues vs t of one run, from its history.csv."""
from pathlib import Path

import pandas as pd

from sslkit.io import load_json
from sslkit.rule_script import script_run
from sslkit.viz.plots import save_figure, style, training_curves

wc = snakemake.wildcards
manifest = load_json(snakemake.input.manifest)
with script_run(snakemake, parent_model=f"{wc.dataset}/{wc.method}-{wc.init}",
                run_config=manifest["run_config"]) as (tracker, config):
    # pandas, as engine.read_history does: importing the engine would import torch (~2 s) for a csv
    history = pd.read_csv(Path(snakemake.input.manifest).parent / manifest["history"])
    with style():
        fig = training_curves(history, manifest["method"], title=snakemake.params.title)
    save_figure(fig, [snakemake.output.png, snakemake.output.pdf])
    tracker.log_artifacts([snakemake.output.png])
