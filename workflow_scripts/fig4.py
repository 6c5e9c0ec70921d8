"""Rule fig4: Fig. 4, histograms of the embedding eigenvalues (log bins) at checkpoints spread over each
standard-init run, with Fig. 3's threshold: a bimodal histogram = grown and ungrown bands."""
from sslkit.analysis import spectra as spectrum
from sslkit.io import load_json
from sslkit.rule_script import script_run
from sslkit.viz import plots

with script_run(snakemake, attach=True) as (tracker, config):
    tables, bands, spaces, bims = {}, {}, {}, {}
    for lab, man, spec, st in zip(snakemake.params.labels, snakemake.input.manifests, snakemake.input.spectra,
                                  snakemake.input.steps):
        steps = load_json(st)
        # embedding eigenvalues from the dense history, hidden ones from the checkpoints
        table = spectrum.dense_table(spectrum.read_run_history(man), spectrum.read_table(spec))
        tables[lab], bands[lab], spaces[lab] = table, steps["embedding"]["bands"], steps["space"]
        bims[lab] = steps.get("bimodality")
    fig = plots.fig4(tables, bands, space=spaces, n_times=snakemake.params.fig4_times, bimodality=bims)
    plots.save_figure(fig, [snakemake.output.png, snakemake.output.pdf])
    tracker.log_artifacts([snakemake.output.png, snakemake.output.pdf])
