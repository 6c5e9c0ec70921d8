"""Rule noncontrastive_summary: steps (analysis stage) and predictor invariance per method."""
from sslkit.analysis.noncontrastive import summarise
from sslkit.io import load_json, save_json
from sslkit.rule_script import script_run

with script_run(snakemake) as (tracker, config):
    out = {"init": snakemake.params.init, "methods": {}}
    for method, rpath, spath in zip(snakemake.params.methods, snakemake.input.records, snakemake.input.steps):
        s = summarise(load_json(rpath)["records"], load_json(spath))
        out["methods"][method] = s
        tracker.log_metrics({f"{method}_n_steps": float(s["n_steps"] or 0),
                             f"{method}_alignment": s["final"]["alignment"]})
    save_json(snakemake.output.summary, out)
    tracker.log_artifact(snakemake.output.summary)
