"""Rule benchmarks_table: what the compute rules of the workflow cost (their benchmark: files), per rule."""
from sslkit.benchmarks import read_benchmarks, summarise
from sslkit.io import atomic_path
from sslkit.rule_script import script_run

with script_run(snakemake, attach=True) as (tracker, config):
    jobs = read_benchmarks(snakemake.params.root)
    table = summarise(jobs)
    with atomic_path(snakemake.output.table) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4g")
    with atomic_path(snakemake.output.jobs) as tmp:
        jobs.to_csv(tmp, index=False, float_format="%.4g")
    tracker.log_artifacts([snakemake.output.table, snakemake.output.jobs])
