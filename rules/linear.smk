# Stage 2: the linear model of Barlow Twins against its exact theory (paper Sec. 4.4, Appendix C).


rule linear_sim:
    input:
        pairs=rules.linear_pairs.output.pairs,
    output:
        trajectory="results/linear/{dataset}/trajectory.npz",
        summary="results/linear/{dataset}/summary.json",
    log:
        "logs/linear_sim/{dataset}.log",
    benchmark:
        "benchmarks/linear_sim/{dataset}.tsv"
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        d=config["linear"]["d"],
        alpha=config["linear"]["alpha"],
        lr=config["linear"]["lr"],
        steps=config["linear"]["steps"],
        steps_margin=config["linear"]["steps_margin"],
        seed=config["linear"]["seed"],
        record_points=config["linear"]["record_points"],
    script:
        "../workflow_scripts/linear_sim.py"


rule appendix_c:
    output:
        trajectory="results/linear/appendix_c/trajectory.npz",
        summary="results/linear/appendix_c/summary.json",
    log:
        "logs/appendix_c/appendix_c.log",
    benchmark:
        "benchmarks/appendix_c/appendix_c.tsv"
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        d=config["appendix_c"]["d"],
        m=config["appendix_c"]["m"],
        scale=config["appendix_c"]["scale"],
        seed=config["appendix_c"]["seed"],
        points=config["appendix_c"]["points"],
    script:
        "../workflow_scripts/appendix_c.py"


rule fig1ab_linear:
    input:
        trajectory=rules.linear_sim.output.trajectory,
        summary=rules.linear_sim.output.summary,
        style=PLOT_SOURCES,
    output:
        png=report(
            "results/figures/fig1ab_linear_{dataset}.png",
            caption="../report/fig1ab_linear.rst",
            category="1. Linear model (Fig. 1A-B, 6)",
            labels={"figure": "Fig. 1A-B", "dataset": "{dataset}"},
        ),
        pdf="results/figures/fig1ab_linear_{dataset}.pdf",
    log:
        "logs/fig1ab_linear/{dataset}.log",
    benchmark:
        "benchmarks/fig1ab_linear/{dataset}.tsv"
    group:
        SMALL_JOBS
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        title=lambda wc: f"Linear Barlow Twins on {wc.dataset}",
    script:
        "../workflow_scripts/fig1ab_linear.py"


rule fig6_appendix_c:
    input:
        trajectory=rules.appendix_c.output.trajectory,
        style=PLOT_SOURCES,
    output:
        png=report(
            "results/figures/fig6_appendix_c.png",
            caption="../report/fig6_appendix_c.rst",
            category="1. Linear model (Fig. 1A-B, 6)",
            labels={"figure": "Fig. 6", "dataset": "synthetic"},
        ),
        pdf="results/figures/fig6_appendix_c.pdf",
    log:
        "logs/fig6_appendix_c/fig6_appendix_c.log",
    benchmark:
        "benchmarks/fig6_appendix_c/fig6_appendix_c.tsv"
    group:
        SMALL_JOBS
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        title=(
            f"Appendix C: d = {config['appendix_c']['d']}, m = {config['appendix_c']['m']}, "
            f"$\\gamma_j = 2^{{-j}}$, A(0) scale {config['appendix_c']['scale']:g}"
        ),
    script:
        "../workflow_scripts/fig6_appendix_c.py"
