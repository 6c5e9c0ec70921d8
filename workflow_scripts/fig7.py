"""Rule fig7: Fig. 7, linear-probe (solid) and k-NN (dashed) test accuracy vs epoch, small vs standard
init, one panel per method."""
import pandas as pd

from sslkit.rule_script import script_run
from sslkit.viz import plots

with script_run(snakemake, attach=True) as (tracker, config):
    probes = {}
    for lab, run, path in zip(snakemake.params.labels, snakemake.params.runs, snakemake.input.probe):
        probes.setdefault(lab, {})[run.split("-")[1]] = pd.read_csv(path)
    fig = plots.fig7(probes)
    plots.save_figure(fig, [snakemake.output.png, snakemake.output.pdf])
    tracker.log_artifacts([snakemake.output.png, snakemake.output.pdf])
