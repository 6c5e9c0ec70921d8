"""Rule train_curves: loss and embedding eigenvalues vs t of one run, from its history.csv."""
from pathlib import Path

from sslkit.io import load_json
from sslkit.rule_script import script_run
from sslkit.training.engine import read_history
from sslkit.viz.plots import save_figure, style, training_curves

wc = snakemake.wildcards
manifest = load_json(snakemake.input.manifest)
with script_run(snakemake, parent_model=f"{wc.dataset}/{wc.method}-{wc.init}",
                run_config=manifest["run_config"]) as (tracker, config):
    history = read_history(Path(snakemake.input.manifest).parent / manifest["history"])
    with style():
        fig = training_curves(history, manifest["method"], title=snakemake.params.title)
    save_figure(fig, [snakemake.output.png, snakemake.output.pdf])
    tracker.log_artifacts([snakemake.output.png])
