"""Rule fig5: Fig. 5, embedding eigenvalues (top) and hidden-representation covariance eigenvalues
(bottom) vs t from small init, with the embedding steps as dotted lines on both rows."""
from sslkit.analysis import spectra as spectrum
from sslkit.io import load_json
from sslkit.rule_script import script_run
from sslkit.viz import plots

with script_run(snakemake, attach=True) as (tracker, config):
    tables, times, spaces = {}, {}, {}
    for lab, man, spec, st in zip(snakemake.params.labels, snakemake.input.manifests, snakemake.input.spectra,
                                  snakemake.input.steps):
        steps = load_json(st)
        # embedding eigenvalues from the dense history, hidden ones from the checkpoints
        table = spectrum.dense_table(spectrum.read_run_history(man), spectrum.read_table(spec))
        tables[lab], times[lab], spaces[lab] = table, steps["step_times"], steps["space"]
    fig = plots.fig5(tables, space=spaces, step_times=times, t_scale=snakemake.params.t_scale)
    plots.save_figure(fig, [snakemake.output.png, snakemake.output.pdf])
    tracker.log_artifacts([snakemake.output.png, snakemake.output.pdf])
