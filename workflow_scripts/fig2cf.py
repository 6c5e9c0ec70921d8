"""Rule fig2cf: Fig. 2C-F, loss and embedding covariance eigenvalues vs t for SimCLR and VICReg from
small init (those of the two that are configured), detected steps as dotted lines."""
from pathlib import Path

import pandas as pd

from sslkit.analysis import spectra as spectrum
from sslkit.io import load_json
from sslkit.rule_script import script_run
from sslkit.viz import plots

with script_run(snakemake, attach=True) as (tracker, config):
    labels = snakemake.params.labels
    histories, tables, spaces, times = {}, {}, {}, {}
    for lab, man, st in zip(labels, snakemake.input.manifests, snakemake.input.steps):
        histories[lab] = pd.read_csv(Path(man).parent / load_json(man)["history"])
        tables[lab] = spectrum.dense_table(histories[lab])  # dense: history.csv
        steps = load_json(st)
        spaces[lab], times[lab] = steps["space"], steps["step_times"]
    fig = plots.fig2cf(histories, tables, space=spaces, step_times=times, t_scale=snakemake.params.t_scale)
    plots.save_figure(fig, [snakemake.output.png, snakemake.output.pdf])
    tracker.log_artifacts([snakemake.output.png, snakemake.output.pdf])
