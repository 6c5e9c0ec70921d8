"""Rule noncontrastive_figure: embedding spectra with detected steps, and p_j^2 vs s_j, per method."""
from sslkit.analysis.spectra import read_table
from sslkit.io import load_json
from sslkit.rule_script import script_run
from sslkit.viz.plots import noncontrastive_figure, save_figure, style

with script_run(snakemake, attach=True) as (tracker, config):
    summary = load_json(snakemake.input.summary)
    records = {m: load_json(p)["records"] for m, p in zip(summary["methods"], snakemake.input.records)}
    spectra = {m: read_table(p) for m, p in zip(summary["methods"], snakemake.input.spectra)}
    with style():
        fig = noncontrastive_figure(spectra, records, summary, title=snakemake.params.title)
    save_figure(fig, [snakemake.output.png, snakemake.output.pdf])
    tracker.log_artifacts([snakemake.output.png, snakemake.output.pdf])
