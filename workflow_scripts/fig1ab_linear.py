"""Rule fig1ab_linear: Fig. 1A-B from the small trajectory table of linear_sim."""
import numpy as np

from sslkit.io import load_json
from sslkit.rule_script import script_run
from sslkit.viz.plots import fig1ab_linear, save_figure

with script_run(snakemake, attach=True) as (tracker, config):
    z = np.load(snakemake.input.trajectory)
    s = load_json(snakemake.input.summary)
    title = (f"{snakemake.params.title}: n = {s['n']}, m = {s['m']}, d = {s['d']}, "
             f"alpha = {s['alpha']:g}, lr = {s['lr']:g}")
    fig = fig1ab_linear(z["t"], z["loss"], z["eigs"], z["theory_eigs"], z["tau_theory"], title=title)
    save_figure(fig, [snakemake.output.png, snakemake.output.pdf])
    tracker.log_artifacts([snakemake.output.png, snakemake.output.pdf])
