"""Rule prepare_data: canonical uint8 arrays + manifest for one dataset (sslkit.data)."""
from pathlib import Path

from sslkit.data import prepare_dataset
from sslkit.rule_script import script_run

with script_run(snakemake) as (tracker, config):
    out_dir = Path(snakemake.output.manifest).parent
    manifest = prepare_dataset(snakemake.wildcards.dataset, out_dir, **snakemake.params.options)
    for split, info in manifest["splits"].items():
        tracker.log_metrics({f"{split}_count": info["count"]})
    tracker.set_tags({f"{s}_sha256": i["sha256"] for s, i in manifest["splits"].items()})
    tracker.log_artifact(snakemake.output.manifest)
