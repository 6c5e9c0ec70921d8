"""Rule fig1cd: Fig. 1C-D, loss and eigenvalues of C vs t for Barlow Twins from small init (the run's
history.csv loss, the eigenvalues the history records at every row, the detected steps as dotted lines)."""
from pathlib import Path

import pandas as pd

from sslkit.analysis import spectra as spectrum
from sslkit.io import load_json
from sslkit.rule_script import script_run
from sslkit.viz import plots

with script_run(snakemake, attach=True) as (tracker, config):
    manifest_path, = snakemake.input.manifests
    history = pd.read_csv(Path(manifest_path).parent / load_json(manifest_path)["history"])
    table = spectrum.dense_table(history)  # dense embedding spectra (history.csv)
    steps = load_json(snakemake.input.steps[0])
    fig = plots.fig1cd(history, table, space=steps["space"], step_times=steps["step_times"],
                       t_scale=snakemake.params.t_scale,
                       title=f"{snakemake.params.labels[0]}, small init, {snakemake.wildcards.dataset}")
    plots.save_figure(fig, [snakemake.output.png, snakemake.output.pdf])
    tracker.log_artifacts([snakemake.output.png, snakemake.output.pdf])
