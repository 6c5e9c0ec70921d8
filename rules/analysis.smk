# Stage 4: analysis of the SSL runs (sslkit.analysis.checkpoints / spectrum / steps / probe; paper Sec. 6, App. D).
# Per run ({method}-{init}, any method/init, configured or not):
#   analyze -> results/spectra/{dataset}/{run}.parquet (tidy: step, t, space, index, eigenvalue for
#              embedding_C, embedding_cov and hidden_cov at every analysed checkpoint) + .summary.csv
#   steps   -> results/steps/{dataset}/{run}.json (step_times, n_steps, sequential, hidden_coincidence)
#   probe   -> results/probe/{dataset}/{run}.csv (linear probe + k-NN per checkpoint)
# Figures (Figs. 1C-D, 2C-F, 3, 4, 5, 7) and the summary table read only these small tables and the
# runs' manifest.json / history.csv, never checkpoints.


rule analyze:
    input:
        manifest="results/train/{dataset}/{method}-{init}/manifest.json",
        data="results/data/{dataset}/manifest.json",
    output:
        spectra="results/spectra/{dataset}/{method}-{init}.parquet",
        summary="results/spectra/{dataset}/{method}-{init}.summary.csv",
    params:
        pairs=config["analysis"]["pairs"],
        checkpoint_every=config["analysis"]["checkpoint_every"],
        batch_size=config["analysis"]["batch_size"],
        thresholds=config["analysis"]["thresholds"],
        bn_stats=config["analysis"]["bn_stats"],
        device=config["train"]["device"],
    wildcard_constraints:
        method="|".join(SSL_METHODS),
        init="|".join(SSL_INITS),
    log:
        "logs/analyze/{dataset}/{method}-{init}.log",
    threads: config["analysis"]["threads"]
    resources:
        mem_mb=config["analysis"]["mem_mb"],
        gpu=GPU_PER_JOB,
    conda:
        "../envs/sslkit.yaml"
    script:
        "../workflow_scripts/analyze.py"


rule steps:
    input:
        spectra="results/spectra/{dataset}/{method}-{init}.parquet",
    output:
        steps="results/steps/{dataset}/{method}-{init}.json",
    params:
        steps=config["analysis"]["steps"],
    wildcard_constraints:
        method="|".join(SSL_METHODS),
        init="|".join(SSL_INITS),
    log:
        "logs/steps/{dataset}/{method}-{init}.log",
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/sslkit.yaml"
    script:
        "../workflow_scripts/steps.py"


rule probe:
    input:
        manifest="results/train/{dataset}/{method}-{init}/manifest.json",
        data="results/data/{dataset}/manifest.json",
    output:
        probe="results/probe/{dataset}/{method}-{init}.csv",
    params:
        probe=config["analysis"]["probe"],
        checkpoint_every=config["analysis"]["checkpoint_every"],
        batch_size=config["analysis"]["batch_size"],
        bn_stats=config["analysis"]["bn_stats"],
        device=config["train"]["device"],
    wildcard_constraints:
        method="|".join(SSL_METHODS),
        init="|".join(SSL_INITS),
    log:
        "logs/probe/{dataset}/{method}-{init}.log",
    threads: config["analysis"]["threads"]
    resources:
        mem_mb=config["analysis"]["mem_mb"],
        gpu=GPU_PER_JOB,
    conda:
        "../envs/sslkit.yaml"
    script:
        "../workflow_scripts/probe.py"


rule analysis_table:
    input:
        steps=run_patterns(configured_runs(), "steps"),
        probe=run_patterns(configured_runs(), "probe"),
    output:
        table=report(
            "results/tables/{dataset}/analysis.csv",
            caption="../report/analysis_table.rst",
            category="4. SSL analysis (Figs. 1C-D, 2C-F, 3-5, 7)",
        ),
    params:
        runs=configured_runs(),
    log:
        "logs/analysis_table/{dataset}.log",
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/sslkit.yaml"
    script:
        "../workflow_scripts/analysis_table.py"


rule fig1cd:
    input:
        manifests=figure_inputs("fig1cd", "manifest"),
        spectra=figure_inputs("fig1cd", "spectra"),
        steps=figure_inputs("fig1cd", "steps"),
        style=PLOT_SOURCES,
    output:
        png=report("results/figures/fig1cd_{dataset}.png", caption="../report/fig1cd.rst", category="4. SSL analysis (Figs. 1C-D, 2C-F, 3-5, 7)"),
        pdf="results/figures/fig1cd_{dataset}.pdf",
    params:
        runs=figure_runs("fig1cd"),
        labels=method_labels(figure_runs("fig1cd")),
        t_scale=config["analysis"]["figures"]["t_scale"],
    log:
        "logs/fig1cd/{dataset}.log",
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/sslkit.yaml"
    script:
        "../workflow_scripts/fig1cd.py"


rule fig2cf:
    input:
        manifests=figure_inputs("fig2cf", "manifest"),
        spectra=figure_inputs("fig2cf", "spectra"),
        steps=figure_inputs("fig2cf", "steps"),
        style=PLOT_SOURCES,
    output:
        png=report("results/figures/fig2cf_{dataset}.png", caption="../report/fig2cf.rst", category="4. SSL analysis (Figs. 1C-D, 2C-F, 3-5, 7)"),
        pdf="results/figures/fig2cf_{dataset}.pdf",
    params:
        runs=figure_runs("fig2cf"),
        labels=method_labels(figure_runs("fig2cf")),
        t_scale=config["analysis"]["figures"]["t_scale"],
    log:
        "logs/fig2cf/{dataset}.log",
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/sslkit.yaml"
    script:
        "../workflow_scripts/fig2cf.py"


rule fig3:
    input:
        spectra=figure_inputs("fig3", "spectra"),
        steps=figure_inputs("fig3", "steps"),
        style=PLOT_SOURCES,
    output:
        png=report("results/figures/fig3_{dataset}.png", caption="../report/fig3.rst", category="4. SSL analysis (Figs. 1C-D, 2C-F, 3-5, 7)"),
        pdf="results/figures/fig3_{dataset}.pdf",
    params:
        runs=figure_runs("fig3"),
        labels=method_labels(figure_runs("fig3")),
        t_scale=config["analysis"]["figures"]["t_scale"],
    log:
        "logs/fig3/{dataset}.log",
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/sslkit.yaml"
    script:
        "../workflow_scripts/fig3.py"


rule fig4:
    input:
        spectra=figure_inputs("fig4", "spectra"),
        steps=figure_inputs("fig4", "steps"),
        style=PLOT_SOURCES,
    output:
        png=report("results/figures/fig4_{dataset}.png", caption="../report/fig4.rst", category="4. SSL analysis (Figs. 1C-D, 2C-F, 3-5, 7)"),
        pdf="results/figures/fig4_{dataset}.pdf",
    params:
        runs=figure_runs("fig4"),
        labels=method_labels(figure_runs("fig4")),
        n_times=config["analysis"]["figures"]["fig4_times"],
    log:
        "logs/fig4/{dataset}.log",
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/sslkit.yaml"
    script:
        "../workflow_scripts/fig4.py"


rule fig5:
    input:
        spectra=figure_inputs("fig5", "spectra"),
        steps=figure_inputs("fig5", "steps"),
        style=PLOT_SOURCES,
    output:
        png=report("results/figures/fig5_{dataset}.png", caption="../report/fig5.rst", category="4. SSL analysis (Figs. 1C-D, 2C-F, 3-5, 7)"),
        pdf="results/figures/fig5_{dataset}.pdf",
    params:
        runs=figure_runs("fig5"),
        labels=method_labels(figure_runs("fig5")),
        t_scale=config["analysis"]["figures"]["t_scale"],
    log:
        "logs/fig5/{dataset}.log",
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/sslkit.yaml"
    script:
        "../workflow_scripts/fig5.py"


rule fig7:
    input:
        probe=figure_inputs("fig7", "probe"),
        style=PLOT_SOURCES,
    output:
        png=report("results/figures/fig7_{dataset}.png", caption="../report/fig7.rst", category="4. SSL analysis (Figs. 1C-D, 2C-F, 3-5, 7)"),
        pdf="results/figures/fig7_{dataset}.pdf",
    params:
        runs=figure_runs("fig7"),
        labels=method_labels(figure_runs("fig7")),
    log:
        "logs/fig7/{dataset}.log",
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/sslkit.yaml"
    script:
        "../workflow_scripts/fig7.py"
