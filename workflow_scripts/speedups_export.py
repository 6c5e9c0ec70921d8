"""Rule speedups_export: the configured dataset's speed-up table as results/tables/speedups.csv."""
import shutil

from sslkit.io import atomic_path
from sslkit.rule_script import script_run

with script_run(snakemake, attach=True) as (tracker, config):
    with atomic_path(snakemake.output.table) as tmp:
        shutil.copyfile(snakemake.input.table, tmp)
    tracker.log_artifact(snakemake.output.table)
