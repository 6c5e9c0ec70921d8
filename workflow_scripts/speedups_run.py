"""Rule speedups_run: every (variant, seed) run of one (method, init) of the speed-up experiment in this
process (sslkit.experiments.speedups.run_group): the baseline first, then the other variants at the step
budget its measured time-to-rank-k gives; each run is probed and has its own MLflow model run."""
from pathlib import Path

from sslkit.experiments.speedups import run_group, run_name
from sslkit.io import save_json
from sslkit.rule_script import console, script_run
from sslkit.tracking import Tracker

wc = snakemake.wildcards
with script_run(snakemake) as (tracker, config):
    out = Path(snakemake.output.runs)

    def model_tracker(variant, seed):
        # one MLflow run per trained model, tagged as the per-run jobs of earlier versions were
        wildcards = {"dataset": wc.dataset, "method": wc.method, "init": wc.init, "variant": variant,
                     "seed": str(seed)}
        key = f"{wc.dataset}/speedups/{run_name(wc.method, wc.init, variant, seed)}"
        return Tracker.for_rule(config, snakemake.rule, wildcards, kind="model", model=key)

    record = run_group(config, wc.dataset, wc.method, wc.init, Path(snakemake.input.data).parent, out.parent.parent,
                       make_tracker=model_tracker, log=console)
    save_json(out, record)
    tracker.log_metrics({"budget_steps": record["budget"]["steps"],
                         "runs_trained": sum(not r["skipped"] for r in record["runs"])})
    tracker.log_artifact(out)
