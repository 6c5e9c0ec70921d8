# Stage: kernel theory vs a wide single-hidden-layer MLP trained with Barlow Twins (Fig. 2A-B).


rule mlp_experiment:
    input:
        manifest=rules.prepare_data.output.manifest,
    output:
        summary="results/mlp/{dataset}/summary.json",
        trajectory="results/mlp/{dataset}/trajectory.npz",
        kernels="results/mlp/{dataset}/kernels.npz",
    log:
        "logs/mlp_experiment/{dataset}.log",
    benchmark:
        "benchmarks/mlp_experiment/{dataset}.tsv"
    conda:
        "../envs/sslkit.yaml"
    # small matrices (2n = 100 points): one thread is faster than two on a shared CPU
    threads: 1
    resources:
        mem_mb=6000,
    params:
        mlp=lambda wc: mlp_settings(wc.dataset),
    script:
        "../workflow_scripts/mlp_experiment.py"


rule mlp_figure:
    input:
        summary=rules.mlp_experiment.output.summary,
        trajectory=rules.mlp_experiment.output.trajectory,
        style=PLOT_SOURCES,
    output:
        png=report(
            "results/figures/fig2ab_mlp_{dataset}.png",
            caption="../report/fig2ab_mlp.rst",
            category="2. Kernel theory vs wide MLP (Fig. 2A-B)",
            labels={"figure": "Fig. 2A-B", "dataset": "{dataset}"},
        ),
        pdf="results/figures/fig2ab_mlp_{dataset}.pdf",
    log:
        "logs/mlp_figure/{dataset}.log",
    benchmark:
        "benchmarks/mlp_figure/{dataset}.tsv"
    group:
        SMALL_JOBS
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        title=lambda wc: f"wide MLP, {wc.dataset}",
    script:
        "../workflow_scripts/mlp_figure.py"
