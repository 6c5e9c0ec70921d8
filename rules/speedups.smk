# Beyond the paper: the Appendix G speed-ups, measured (sslkit.training.speedup_variants, sslkit.experiments.speedups).
# Each (method, init, variant, seed) is a short sslkit.training.engine run in its own folder
# results/speedups/{dataset}/{method}-{init}-{variant}-s{seed}/ (results/train/ is untouched);
# a short learning-rate sweep tests G.3's claim of a larger stable lr; speedups_table measures
# time-to-rank-k, final rank and probe accuracy, speedups_figure draws them.


rule speedups_run:
    input:
        data=rules.prepare_data.output.manifest,
    output:
        manifest="results/speedups/{dataset}/{method}-{init}-{variant}-s{seed}/manifest.json",
        probe="results/speedups/{dataset}/{method}-{init}-{variant}-s{seed}/probe.json",
    log:
        "logs/speedups_run/{dataset}/{method}-{init}-{variant}-s{seed}.log",
    benchmark:
        "benchmarks/speedups_run/{dataset}/{method}-{init}-{variant}-s{seed}.tsv"
    wildcard_constraints:
        method="|".join(SSL_METHODS),
        init="|".join(SSL_INITS),
        variant="[a-z0-9_]+",
        seed=r"\d+",
    conda:
        "../envs/sslkit.yaml"
    threads: config["speedups"]["threads"]
    resources:
        mem_mb=config["speedups"]["mem_mb"],
        gpu=GPU_PER_JOB,
    params:
        run=lambda wc: speedups_run_params(wc.method, wc.init, wc.variant),
        probe=config["analysis"]["probe"],
    script:
        "../workflow_scripts/speedups_run.py"


rule speedups_lr:
    input:
        data=rules.prepare_data.output.manifest,
    output:
        status="results/speedups/{dataset}/lr/{method}-{init}-{variant}-x{factor}/status.json",
    log:
        "logs/speedups_lr/{dataset}/{method}-{init}-{variant}-x{factor}.log",
    benchmark:
        "benchmarks/speedups_lr/{dataset}/{method}-{init}-{variant}-x{factor}.tsv"
    wildcard_constraints:
        method="|".join(SSL_METHODS),
        init="|".join(SSL_INITS),
        variant="[a-z0-9_]+",
        factor=r"[0-9.]+",
    conda:
        "../envs/sslkit.yaml"
    threads: config["speedups"]["threads"]
    resources:
        mem_mb=config["speedups"]["mem_mb"],
        gpu=GPU_PER_JOB,
    params:
        run=lambda wc: speedups_run_params(wc.method, wc.init, wc.variant),
        sweep=config["speedups"]["lr_sweep"],
    script:
        "../workflow_scripts/speedups_lr.py"


rule speedups_table:
    input:
        manifests=lambda wc: speedups_runs(
            rules.speedups_run.output.manifest, wc.dataset
        ),
        probes=lambda wc: speedups_runs(rules.speedups_run.output.probe, wc.dataset),
        lr=lambda wc: speedups_lr_runs(wc.dataset),
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
