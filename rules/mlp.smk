# Stage: kernel theory vs a wide single-hidden-layer MLP trained with Barlow Twins (Fig. 2A-B).


rule mlp_experiment:
    input:
        manifest="results/data/{dataset}/manifest.json",
    output:
        summary="results/mlp/{dataset}/summary.json",
        trajectory="results/mlp/{dataset}/trajectory.npz",
        kernels="results/mlp/{dataset}/kernels.npz",
    params:
        mlp=lambda wc: mlp_settings(wc.dataset),
    log:
        "logs/mlp_experiment/{dataset}.log",
    # small matrices (2n = 100 points): one thread is faster than two on a shared CPU
    threads: 1
    resources:
        mem_mb=6000,
    conda:
        "../envs/sslkit.yaml"
    script:
        "../workflow_scripts/mlp_experiment.py"


rule mlp_figure:
    input:
        summary="results/mlp/{dataset}/summary.json",
        trajectory="results/mlp/{dataset}/trajectory.npz",
        style=PLOT_SOURCES,
    output:
        png=report(
            "results/figures/fig2ab_mlp_{dataset}.png",
            caption="../report/fig2ab_mlp.rst",
            category="2. Kernel theory vs wide MLP (Fig. 2A-B)",
            labels={"figure": "Fig. 2A-B", "dataset": "{dataset}"},
        ),
        pdf="results/figures/fig2ab_mlp_{dataset}.pdf",
    params:
        title=lambda wc: f"wide MLP, {wc.dataset}",
    log:
        "logs/mlp_figure/{dataset}.log",
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/sslkit.yaml"
    script:
        "../workflow_scripts/mlp_figure.py"
