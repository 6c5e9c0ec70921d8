"""Rule speedups_lr: every run of the learning-rate sweep (lr = factor x the method's lr, per variant) in
this process (sslkit.experiments.speedups.run_lr_sweep); records whether each stayed stable."""
from pathlib import Path

from sslkit.experiments.speedups import run_lr_sweep
from sslkit.io import save_json
from sslkit.rule_script import console, script_run
from sslkit.tracking import Tracker

wc = snakemake.wildcards
with script_run(snakemake) as (tracker, config):
    out = Path(snakemake.output.sweep)

    def run_tracker(variant, factor):
        # one MLflow run per sweep training, nested under this job's run
        wildcards = {"dataset": wc.dataset, "method": wc.method, "init": wc.init, "variant": variant,
                     "factor": f"{factor:g}"}
        return Tracker.for_rule(config, snakemake.rule, wildcards, parent_run_id=tracker.run_id)

    records = run_lr_sweep(config, wc.dataset, wc.method, wc.init, Path(snakemake.input.data).parent, out.parent,
                           make_tracker=run_tracker, log=console)
    save_json(out, records)
    tracker.log_artifact(out)
