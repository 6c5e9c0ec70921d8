# Stage 4: analysis of the SSL runs (sslkit.analysis.checkpoints / spectrum / steps / probe; paper Sec. 6, App. D).
# Per run ({method}-{init}, any method/init, configured or not):
#   analyze -> results/spectra/{dataset}/{run}.parquet (tidy: step, t, space, index, eigenvalue for
#              embedding_C, embedding_cov and hidden_cov at every analysed checkpoint) + .summary.csv
#   steps   -> results/steps/{dataset}/{run}.json (step_times, n_steps, sequential, hidden_coincidence,
#              bimodality, alpha_check) from the dense embedding spectra of the run's history.csv and
#              the checkpoint hidden spectra
#   probe   -> results/probe/{dataset}/{run}.csv (linear probe + k-NN per checkpoint)
# Figures (Figs. 1C-D, 2C-F, 3, 4, 5, 7) and the summary table read only these small tables and the
# runs' manifest.json / history.csv, never checkpoints. Embedding eigenvalues vs t (Figs. 1C-D, 2C-F,
# 3-5, steps) come from history.csv (dense: train.eval.log_points), hidden ones from the checkpoints.


rule analyze:
    input:
        manifest=rules.train.output.manifest,
        data=rules.prepare_data.output.manifest,
    output:
        spectra="results/spectra/{dataset}/{method}-{init}.parquet",
        summary="results/spectra/{dataset}/{method}-{init}.summary.csv",
    log:
        "logs/analyze/{dataset}/{method}-{init}.log",
    benchmark:
        "benchmarks/analyze/{dataset}/{method}-{init}.tsv"
    wildcard_constraints:
        method="|".join(SSL_METHODS),
        init="|".join(SSL_INITS),
    conda:
        "../envs/sslkit.yaml"
    threads: config["analysis"]["threads"]
    resources:
        mem_mb=config["analysis"]["mem_mb"],
        gpu=GPU_PER_JOB,
    params:
        pairs=config["analysis"]["pairs"],
        checkpoint_every=config["analysis"]["checkpoint_every"],
        batch_size=config["analysis"]["batch_size"],
        thresholds=config["analysis"]["thresholds"],
        bn_stats=config["analysis"]["bn_stats"],
        device=config["train"]["device"],
    script:
        "../workflow_scripts/analyze.py"


rule steps:
    input:
        manifest=rules.train.output.manifest,
        spectra=rules.analyze.output.spectra,
    output:
        steps="results/steps/{dataset}/{method}-{init}.json",
    log:
        "logs/steps/{dataset}/{method}-{init}.log",
    benchmark:
        "benchmarks/steps/{dataset}/{method}-{init}.tsv"
    wildcard_constraints:
        method="|".join(SSL_METHODS),
        init="|".join(SSL_INITS),
    group:
        SMALL_JOBS
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        steps=config["analysis"]["steps"],
    script:
        "../workflow_scripts/steps.py"


rule probe:
    input:
        manifest=rules.train.output.manifest,
        data=rules.prepare_data.output.manifest,
    output:
        probe="results/probe/{dataset}/{method}-{init}.csv",
    log:
        "logs/probe/{dataset}/{method}-{init}.log",
    benchmark:
        "benchmarks/probe/{dataset}/{method}-{init}.tsv"
    wildcard_constraints:
        method="|".join(SSL_METHODS),
        init="|".join(SSL_INITS),
    conda:
        "../envs/sslkit.yaml"
    threads: config["analysis"]["threads"]
    resources:
        mem_mb=config["analysis"]["mem_mb"],
        gpu=GPU_PER_JOB,
    params:
        probe=config["analysis"]["probe"],
        checkpoint_every=config["analysis"]["checkpoint_every"],
        batch_size=config["analysis"]["batch_size"],
        bn_stats=config["analysis"]["bn_stats"],
        device=config["train"]["device"],
    script:
        "../workflow_scripts/probe.py"


rule analysis_table:
    input:
        steps=run_files(rules.steps.output.steps, configured_runs()),
        probe=run_files(rules.probe.output.probe, configured_runs()),
    output:
        table=report(
            "results/tables/{dataset}/analysis.csv",
            caption="../report/analysis_table.rst",
            category=ANALYSIS_CATEGORY,
        ),
    log:
        "logs/analysis_table/{dataset}.log",
    benchmark:
        "benchmarks/analysis_table/{dataset}.tsv"
    group:
        SMALL_JOBS
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        runs=configured_runs(),
    script:
        "../workflow_scripts/analysis_table.py"


# Per-run inputs of the analysis figures, by input name (the names the figure scripts read).
FIGURE_INPUTS = {
    "manifests": rules.train.output.manifest,
    "spectra": rules.analyze.output.spectra,
    "steps": rules.steps.output.steps,
    "probe": rules.probe.output.probe,
}


# One rule per row of ANALYSIS_FIGURES (rules/common.smk): Figs. 1C-D, 2C-F, 3, 4, 5, 7.
for fig, (_methods, _inits, run_inputs, figure_keys) in ANALYSIS_FIGURES.items():

    rule:
        name:
            fig
        input:
            **{
                key: run_files(FIGURE_INPUTS[key], figure_runs(fig))
                for key in run_inputs
            },
            style=PLOT_SOURCES,
        output:
            png=report(
                f"results/figures/{fig}_{{dataset}}.png",
                caption=f"../report/{fig}.rst",
                category=ANALYSIS_CATEGORY,
            ),
            pdf=f"results/figures/{fig}_{{dataset}}.pdf",
        log:
            f"logs/{fig}/{{dataset}}.log",
        benchmark:
            f"benchmarks/{fig}/{{dataset}}.tsv"
        group:
            SMALL_JOBS
        conda:
            "../envs/sslkit.yaml"
        threads: 1
        resources:
            mem_mb=1000,
        params:
            **{key: config["analysis"]["figures"][key] for key in figure_keys},
            figure=fig,
            runs=figure_runs(fig),
            labels=method_labels(figure_runs(fig)),
        # the script path is formatted when the job runs, so it names the figure through params
        # (a loop variable there would be read after the loop, i.e. always the last figure)
        script:
            "../workflow_scripts/{params.figure}.py"
