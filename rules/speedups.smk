# Beyond the paper: the Appendix G speed-ups, measured (sslkit.training.speedup_variants, sslkit.experiments.speedups).
# One speedups_run job per (method, init) trains all its (variant, seed) runs in one process
# (sslkit.experiments.speedups.run_group), each in its own folder
# results/speedups/{dataset}/{method}-{init}-{variant}-s{seed}/ (results/train/ is untouched): the baseline
# first, then the other variants for a step budget that follows from the baseline's measured time to rank
# max(ks) (speedups.budget_margin); one speedups_lr job runs the short learning-rate sweep that tests G.3's
# claim of a larger stable lr; speedups_table measures time-to-rank-k, final rank and probe accuracy,
# speedups_figure draws them.


rule speedups_run:
    input:
        data=rules.prepare_data.output.manifest,
    output:
        runs="results/speedups/{dataset}/groups/{method}-{init}.json",
    log:
        "logs/speedups_run/{dataset}/{method}-{init}.log",
    benchmark:
        "benchmarks/speedups_run/{dataset}/{method}-{init}.tsv"
    wildcard_constraints:
        method="|".join(SSL_METHODS),
        init="|".join(SSL_INITS),
    conda:
        "../envs/sslkit.yaml"
    threads: config["speedups"]["threads"]
    resources:
        mem_mb=config["speedups"]["mem_mb"],
        gpu=GPU_PER_JOB,
    params:
        run=lambda wc: speedups_group_params(wc.method, wc.init),
        probe=config["analysis"]["probe"],
    script:
        "../workflow_scripts/speedups_run.py"


rule speedups_lr:
    input:
        data=rules.prepare_data.output.manifest,
    output:
        sweep="results/speedups/{dataset}/lr/{method}-{init}.json",
    log:
        "logs/speedups_lr/{dataset}/{method}-{init}.log",
    benchmark:
        "benchmarks/speedups_lr/{dataset}/{method}-{init}.tsv"
    wildcard_constraints:
        method="|".join(SSL_METHODS),
        init="|".join(SSL_INITS),
    conda:
        "../envs/sslkit.yaml"
    threads: config["speedups"]["threads"]
    resources:
        mem_mb=config["speedups"]["mem_mb"],
        gpu=GPU_PER_JOB,
    params:
        run=lambda wc: speedups_lr_params(wc.method, wc.init),
        sweep=config["speedups"]["lr_sweep"],
    script:
        "../workflow_scripts/speedups_lr.py"


rule speedups_table:
    input:
        groups=lambda wc: speedups_groups(wc.dataset),
        lr=lambda wc: speedups_lr_sweeps(wc.dataset),
    output:
        table="results/speedups/{dataset}/speedups.csv",
        factors="results/speedups/{dataset}/speedup_factors.csv",
        curves="results/speedups/{dataset}/rank_curves.csv",
        summary="results/speedups/{dataset}/summary.json",
    log:
        "logs/speedups_table/{dataset}.log",
    benchmark:
        "benchmarks/speedups_table/{dataset}.tsv"
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        ks=config["speedups"]["ks"],
        steps=config["analysis"]["steps"],
    script:
        "../workflow_scripts/speedups_table.py"


rule speedups_export:
    input:
        table=expand(rules.speedups_table.output.table, dataset=DATASET)[0],
    output:
        table=report(
            "results/tables/speedups.csv",
            caption="../report/speedups_table.rst",
            category="Beyond the paper",
        ),
    log:
        "logs/speedups_export/speedups.log",
    benchmark:
        "benchmarks/speedups_export/speedups.tsv"
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=500,
    script:
        "../workflow_scripts/speedups_export.py"


rule speedups_figure:
    input:
        factors=rules.speedups_table.output.factors,
        curves=rules.speedups_table.output.curves,
        summary=rules.speedups_table.output.summary,
        style=PLOT_SOURCES,
    output:
        png=report(
            "results/figures/speedups_{dataset}.png",
            caption="../report/speedups.rst",
            category="Beyond the paper",
        ),
        pdf="results/figures/speedups_{dataset}.pdf",
    log:
        "logs/speedups_figure/{dataset}.log",
    benchmark:
        "benchmarks/speedups_figure/{dataset}.tsv"
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        title=lambda wc: f"Appendix G speed-ups, {wc.dataset}",
    script:
        "../workflow_scripts/speedups_figure.py"
