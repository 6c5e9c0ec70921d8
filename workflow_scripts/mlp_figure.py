"""Rule mlp_figure: Fig. 2A-B (loss and eigenvalues of the wide MLP vs kernel theory)."""
import numpy as np

from sslkit.io import load_json
from sslkit.rule_script import script_run
from sslkit.viz.plots import fig2ab_mlp, save_figure, style

with script_run(snakemake, attach=True) as (tracker, config):
    traj = dict(np.load(snakemake.input.trajectory))
    summary = load_json(snakemake.input.summary)
    with style():
        fig = fig2ab_mlp(traj, summary, title=snakemake.params.title)
    save_figure(fig, [snakemake.output.png, snakemake.output.pdf])
    tracker.log_artifacts([snakemake.output.png, snakemake.output.pdf])
