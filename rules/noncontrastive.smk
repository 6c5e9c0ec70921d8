# Beyond the paper: BYOL, DirectPred and DirectCopy (Tian et al.) through the stepwise lens.
# Their small-init runs are ordinary results/train/ runs; their spectra and steps come from the
# analysis stage (rules/analysis.smk: results/spectra/, results/steps/). Here: the predictor's
# eigenvalues against those of the embedding correlation F at every checkpoint (Tian's p_j^2 ~ s_j;
# sslkit.analysis.noncontrastive), a summary per dataset and a figure.


rule noncontrastive_predictor:
    input:
        manifest=rules.train.output.manifest,
        data=rules.prepare_data.output.manifest,
    output:
        records="results/noncontrastive/{dataset}/{method}-{init}-predictor.json",
    log:
        "logs/noncontrastive_predictor/{dataset}/{method}-{init}.log",
    benchmark:
        "benchmarks/noncontrastive_predictor/{dataset}/{method}-{init}.tsv"
    wildcard_constraints:
        method="|".join(EMA_METHODS),
        init="|".join(SSL_INITS),
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=3000,
    params:
        pairs=config["analysis"]["pairs"],
        floor_rel=config["noncontrastive"]["floor_rel"],
    script:
        "../workflow_scripts/noncontrastive_predictor.py"


rule noncontrastive_summary:
    input:
        records=run_files(
            rules.noncontrastive_predictor.output.records, noncontrastive_runs()
        ),
        steps=run_files(rules.steps.output.steps, noncontrastive_runs()),
    output:
        summary="results/noncontrastive/{dataset}/summary.json",
    log:
        "logs/noncontrastive_summary/{dataset}.log",
    benchmark:
        "benchmarks/noncontrastive_summary/{dataset}.tsv"
    group:
        SMALL_JOBS
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        methods=config["noncontrastive"]["methods"],
        init=config["noncontrastive"]["init"],
    script:
        "../workflow_scripts/noncontrastive_summary.py"


rule noncontrastive_figure:
    input:
        summary=rules.noncontrastive_summary.output.summary,
        records=run_files(
            rules.noncontrastive_predictor.output.records, noncontrastive_runs()
        ),
        spectra=run_files(rules.analyze.output.spectra, noncontrastive_runs()),
        style=PLOT_SOURCES,
    output:
        png=report(
            "results/figures/noncontrastive_{dataset}.png",
            caption="../report/noncontrastive.rst",
            category="Beyond the paper",
        ),
        pdf="results/figures/noncontrastive_{dataset}.pdf",
    log:
        "logs/noncontrastive_figure/{dataset}.log",
    benchmark:
        "benchmarks/noncontrastive_figure/{dataset}.tsv"
    group:
        SMALL_JOBS
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        title=lambda wc: f"non-contrastive methods, {config['noncontrastive']['init']} init, {wc.dataset}",
    script:
        "../workflow_scripts/noncontrastive_figure.py"
