"""Rule fig9_landscapes: Fig. 9 from the trajectories of rule theory_fig9."""
import numpy as np

from sslkit.io import load_json
from sslkit.rule_script import script_run
from sslkit.viz.plots import fig9_landscapes, save_figure

with script_run(snakemake, attach=True) as (tracker, config):
    z = dict(np.load(snakemake.input.trajectory))
    s = load_json(snakemake.input.summary)
    fig = fig9_landscapes(z, s, title=snakemake.params.title)
    save_figure(fig, [snakemake.output.png, snakemake.output.pdf])
    tracker.log_artifacts([snakemake.output.png, snakemake.output.pdf])
