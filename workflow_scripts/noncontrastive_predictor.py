"""Rule noncontrastive_predictor: predictor vs correlation eigenvalues at every checkpoint of a run."""
from pathlib import Path

from sslkit.analysis.noncontrastive import predictor_records
from sslkit.data import load_split
from sslkit.io import load_json, save_json
from sslkit.rule_script import script_run

wc = snakemake.wildcards
man = load_json(snakemake.input.manifest)
with script_run(snakemake, parent_model=f"{wc.dataset}/{wc.method}-{wc.init}",
                run_config=man["run_config"]) as (tracker, config):
    run_dir = Path(snakemake.input.manifest).parent
    cks = [{**c, "path": str(run_dir / c["path"])} for c in man["checkpoints"]]
    pairs = snakemake.params.pairs
    images = load_split(Path(snakemake.input.data).parent, pairs["split"]).images
    records = predictor_records(cks, images, n_pairs=int(pairs["n"]), seed=int(pairs["seed"]),
                                floor_rel=float(snakemake.params.floor_rel))
    save_json(snakemake.output.records, {"method": man["method"], "init": man["init"], "records": records})
    last = records[-1]
    tracker.log_summary({k: last[k] for k in ("alignment", "linear_r2", "invariance_slope", "invariance_spread_decades")
                         if last[k] is not None}, "predictor", last["step"])
