"""Rule analyze: eigenvalues of C, of the embedding covariance and of the hidden covariance, RankMe
and threshold counts at every analysed checkpoint of one run, on one fixed set of augmented pairs."""
import time
from pathlib import Path

from sslkit.analysis import checkpoints as analysis
from sslkit.analysis import spectra as spectrum
from sslkit.data import load_split
from sslkit.io import load_json
from sslkit.rule_script import Progress, script_run
from sslkit.training.engine import select_device

wc = snakemake.wildcards
model = f"{wc.dataset}/{wc.method}-{wc.init}"
manifest = load_json(snakemake.input.manifest)
with script_run(snakemake, parent_model=model, run_config=manifest["run_config"]) as (tracker, config):
    p = snakemake.params
    run_dir = Path(snakemake.input.manifest).parent
    checkpoints = [dict(c, path=str(run_dir / c["path"]))
                   for c in analysis.select_checkpoints(manifest["checkpoints"], p.checkpoint_every)]
    images = load_split(Path(snakemake.input.data).parent, p.pairs["split"]).images
    device = str(select_device(p.device))
    t0 = time.perf_counter()
    records = analysis.spectra_over_checkpoints(
        Progress(f"analyze {model}", len(checkpoints), "checkpoint").wrap(checkpoints),
        images, n_pairs=p.pairs["n"], seed=p.pairs["seed"], device=device,
        batch_size=p.batch_size, absolute=p.thresholds["absolute"], relative=p.thresholds["relative"],
        bn_stats=p.bn_stats)
    seconds = time.perf_counter() - t0
    spectrum.write_table(spectrum.spectra_table(records), snakemake.output.spectra)
    spectrum.write_table(spectrum.summary_table(records), snakemake.output.summary)
    steps = [r["step"] for r in records]
    tracker.log_series({
        "rankme_embedding": [r["rankme"]["embedding"] for r in records],
        "rankme_hidden": [r["rankme"].get("hidden", float("nan")) for r in records],
        "top_eig_C": [r["eigenvalues"]["embedding_C"][0] for r in records],
        "top_eig_cov": [r["eigenvalues"]["embedding_cov"][0] for r in records],
    }, steps)
    tracker.log_metrics({"analysis_seconds": seconds, "seconds_per_checkpoint": seconds / max(len(records), 1)})
    tracker.log_summary({"n_checkpoints": len(records), "rankme_embedding_final": records[-1]["rankme"]["embedding"],
                         "top_eig_C_final": records[-1]["eigenvalues"]["embedding_C"][0]}, "analysis")
    tracker.set_tags({"device": device})
    tracker.log_artifacts([snakemake.output.spectra, snakemake.output.summary])
