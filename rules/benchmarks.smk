# Compute cost: every compute rule has a `benchmark:` file (benchmarks/<rule>/<wildcards>.tsv: wall
# and CPU seconds, peak memory); benchmarks_table summarises those of all jobs run so far, per rule,
# once every other target of `all` exists.


rule benchmarks_table:
    input:
        all_targets(),
    output:
        table=report(
            "results/tables/benchmarks.csv",
            caption="../report/benchmarks.rst",
            category="9. Compute cost",
        ),
        jobs="results/tables/benchmarks_jobs.csv",
    log:
        "logs/benchmarks_table.log",
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        root="benchmarks",
    script:
        "../workflow_scripts/benchmarks_table.py"
