# Beyond the paper: the Appendix G speed-ups, measured (sslkit.training.speedup_variants, sslkit.experiments.speedups).
# Each (method, init, variant, seed) is a short sslkit.training.engine run in its own folder
# results/speedups/{dataset}/{method}-{init}-{variant}-s{seed}/ (results/train/ is untouched);
# a short learning-rate sweep tests G.3's claim of a larger stable lr; speedups_table measures
# time-to-rank-k, final rank and probe accuracy, speedups_figure draws them.


rule speedups_run:
    input:
        data="results/data/{dataset}/manifest.json",
    output:
        manifest="results/speedups/{dataset}/{method}-{init}-{variant}-s{seed}/manifest.json",
        probe="results/speedups/{dataset}/{method}-{init}-{variant}-s{seed}/probe.json",
    params:
        run=lambda wc: speedups_run_params(wc.method, wc.init, wc.variant),
        probe=config["analysis"]["probe"],
    wildcard_constraints:
        method="|".join(SSL_METHODS),
        init="|".join(SSL_INITS),
        variant="[a-z0-9_]+",
        seed=r"\d+",
    log:
        "logs/speedups_run/{dataset}/{method}-{init}-{variant}-s{seed}.log",
    threads: config["speedups"]["threads"]
    resources:
        mem_mb=config["speedups"]["mem_mb"],
        gpu=GPU_PER_JOB,
    conda:
        "../envs/sslkit.yaml"
    script:
        "../workflow_scripts/speedups_run.py"


rule speedups_lr:
    input:
        data="results/data/{dataset}/manifest.json",
    output:
        status="results/speedups/{dataset}/lr/{method}-{init}-{variant}-x{factor}/status.json",
    params:
        run=lambda wc: speedups_run_params(wc.method, wc.init, wc.variant),
        sweep=config["speedups"]["lr_sweep"],
    wildcard_constraints:
        method="|".join(SSL_METHODS),
        init="|".join(SSL_INITS),
        variant="[a-z0-9_]+",
        factor=r"[0-9.]+",
    log:
        "logs/speedups_lr/{dataset}/{method}-{init}-{variant}-x{factor}.log",
    threads: config["speedups"]["threads"]
    resources:
        mem_mb=config["speedups"]["mem_mb"],
        gpu=GPU_PER_JOB,
    conda:
        "../envs/sslkit.yaml"
    script:
        "../workflow_scripts/speedups_lr.py"


rule speedups_table:
    input:
        manifests=lambda wc: speedups_runs(wc.dataset, "manifest.json"),
        probes=lambda wc: speedups_runs(wc.dataset, "probe.json"),
        lr=lambda wc: speedups_lr_runs(wc.dataset),
    output:
        table="results/speedups/{dataset}/speedups.csv",
        factors="results/speedups/{dataset}/speedup_factors.csv",
        curves="results/speedups/{dataset}/rank_curves.csv",
        summary="results/speedups/{dataset}/summary.json",
    params:
        ks=config["speedups"]["ks"],
        steps=config["analysis"]["steps"],
    log:
        "logs/speedups_table/{dataset}.log",
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/sslkit.yaml"
    script:
        "../workflow_scripts/speedups_table.py"


rule speedups_export:
    input:
        table=f"results/speedups/{DATASET}/speedups.csv",
    output:
        table=report(
            "results/tables/speedups.csv",
            caption="../report/speedups_table.rst",
            category="Beyond the paper",
        ),
    log:
        "logs/speedups_export/speedups.log",
    threads: 1
    resources:
        mem_mb=500,
    conda:
        "../envs/sslkit.yaml"
    script:
        "../workflow_scripts/speedups_export.py"


rule speedups_figure:
    input:
        factors="results/speedups/{dataset}/speedup_factors.csv",
        curves="results/speedups/{dataset}/rank_curves.csv",
        summary="results/speedups/{dataset}/summary.json",
        style=PLOT_SOURCES,
    output:
        png=report(
            "results/figures/speedups_{dataset}.png",
            caption="../report/speedups.rst",
            category="Beyond the paper",
        ),
        pdf="results/figures/speedups_{dataset}.pdf",
    params:
        title=lambda wc: f"Appendix G speed-ups, {wc.dataset}",
    log:
        "logs/speedups_figure/{dataset}.log",
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/sslkit.yaml"
    script:
        "../workflow_scripts/speedups_figure.py"
