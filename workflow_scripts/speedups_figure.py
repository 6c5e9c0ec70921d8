"""Rule speedups_figure: rank staircases per variant, speed-up factors and the lr sweep."""
import pandas as pd

from sslkit.io import load_json
from sslkit.rule_script import script_run
from sslkit.viz.plots import save_figure, speedups_figure, style

with script_run(snakemake, attach=True) as (tracker, config):
    curves = pd.read_csv(snakemake.input.curves)
    factors = pd.read_csv(snakemake.input.factors)
    summary = load_json(snakemake.input.summary)
    with style():
        fig = speedups_figure(curves, factors, summary["lr_sweep"], title=snakemake.params.title)
    save_figure(fig, [snakemake.output.png, snakemake.output.pdf])
    tracker.log_artifacts([snakemake.output.png, snakemake.output.pdf])
