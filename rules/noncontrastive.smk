# Beyond the paper: BYOL, DirectPred and DirectCopy (Tian et al.) through the stepwise lens.
# Their small-init runs are ordinary results/train/ runs; their spectra and steps come from the
# analysis stage (rules/analysis.smk: results/spectra/, results/steps/). Here: the predictor's
# eigenvalues against those of the embedding correlation F at every checkpoint (Tian's p_j^2 ~ s_j;
# sslkit.analysis.noncontrastive), a summary per dataset and a figure.


rule noncontrastive_predictor:
    input:
        manifest="results/train/{dataset}/{method}-{init}/manifest.json",
        data="results/data/{dataset}/manifest.json",
    output:
        records="results/noncontrastive/{dataset}/{method}-{init}-predictor.json",
    params:
        pairs=config["analysis"]["pairs"],
        floor_rel=config["noncontrastive"]["floor_rel"],
    wildcard_constraints:
        method="byol|directpred|directcopy",
        init="|".join(SSL_INITS),
    log:
        "logs/noncontrastive_predictor/{dataset}/{method}-{init}.log",
    threads: 1
    resources:
        mem_mb=3000,
    conda:
        "../envs/sslkit.yaml"
    script:
        "../workflow_scripts/noncontrastive_predictor.py"


rule noncontrastive_summary:
    input:
        records=lambda wc: noncontrastive_files(wc.dataset, "results/noncontrastive/{dataset}/{run}-predictor.json"),
        steps=lambda wc: noncontrastive_files(wc.dataset, "results/steps/{dataset}/{run}.json"),
    output:
        summary="results/noncontrastive/{dataset}/summary.json",
    params:
        methods=config["noncontrastive"]["methods"],
        init=config["noncontrastive"]["init"],
    log:
        "logs/noncontrastive_summary/{dataset}.log",
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/sslkit.yaml"
    script:
        "../workflow_scripts/noncontrastive_summary.py"


rule noncontrastive_figure:
    input:
        summary="results/noncontrastive/{dataset}/summary.json",
        records=lambda wc: noncontrastive_files(wc.dataset, "results/noncontrastive/{dataset}/{run}-predictor.json"),
        spectra=lambda wc: noncontrastive_files(wc.dataset, "results/spectra/{dataset}/{run}.parquet"),
        style=PLOT_SOURCES,
    output:
        png=report(
            "results/figures/noncontrastive_{dataset}.png",
            caption="../report/noncontrastive.rst",
            category="Beyond the paper",
        ),
        pdf="results/figures/noncontrastive_{dataset}.pdf",
    params:
        title=lambda wc: f"non-contrastive methods, {config['noncontrastive']['init']} init, {wc.dataset}",
    log:
        "logs/noncontrastive_figure/{dataset}.log",
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/sslkit.yaml"
    script:
        "../workflow_scripts/noncontrastive_figure.py"
