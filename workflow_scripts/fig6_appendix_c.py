"""Rule fig6_appendix_c: Fig. 6 from the small Appendix C table."""
import numpy as np

from sslkit.rule_script import script_run
from sslkit.viz.plots import fig6_appendix_c, save_figure

with script_run(snakemake, attach=True) as (tracker, config):
    z = np.load(snakemake.input.trajectory)
    fig = fig6_appendix_c(z["t"], z["A"], z["s_pred"], z["a_pred"], title=snakemake.params.title)
    save_figure(fig, [snakemake.output.png, snakemake.output.pdf])
    tracker.log_artifacts([snakemake.output.png, snakemake.output.pdf])
