# Beyond the figures the workflow had: the paper's App. F-G theory on the linear model (Figs. 8-9, the
# sharpened loss solved exactly, its predicted vs measured speed-up). Library: sslkit.theory.landscapes,
# sslkit.theory.landscape_experiments; text: docs/theory.md §14.


rule theory_fig8:
    input:
        pairs=rules.linear_pairs.output.pairs,
    output:
        trajectory="results/theory/{dataset}/fig8.npz",
        summary="results/theory/{dataset}/fig8.json",
    log:
        "logs/theory_fig8/{dataset}.log",
    benchmark:
        "benchmarks/theory_fig8/{dataset}.tsv"
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        d=config["linear"]["d"],
        alpha=config["linear"]["alpha"],
        seed=config["linear"]["seed"],
        lr=config["theory_figures"]["lr"],
        lr_supervised=config["theory_figures"]["lr_supervised"],
    script:
        "../workflow_scripts/theory_fig8.py"


rule theory_fig9:
    input:
        pairs=rules.linear_pairs.output.pairs,
    output:
        trajectory="results/theory/{dataset}/fig9.npz",
        summary="results/theory/{dataset}/fig9.json",
    log:
        "logs/theory_fig9/{dataset}.log",
    benchmark:
        "benchmarks/theory_fig9/{dataset}.tsv"
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        d=config["linear"]["d"],
        alpha=config["linear"]["alpha"],
        seed=config["linear"]["seed"],
        lr=config["theory_figures"]["lr"],
        eps=config["theory_figures"]["smooth_eps"],
    script:
        "../workflow_scripts/theory_fig9.py"


rule sharpened_speedup:
    input:
        pairs=rules.linear_pairs.output.pairs,
    output:
        table="results/theory/{dataset}/sharpened_speedup.csv",
        summary="results/theory/{dataset}/sharpened_speedup.json",
    log:
        "logs/sharpened_speedup/{dataset}.log",
    benchmark:
        "benchmarks/sharpened_speedup/{dataset}.tsv"
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        d=config["linear"]["d"],
        alpha=config["linear"]["alpha"],
        seed=config["linear"]["seed"],
        lr=config["linear"]["lr"],
        level=config["theory_figures"]["level"],
    script:
        "../workflow_scripts/sharpened_speedup.py"


rule sharpened_speedup_table:
    input:
        linear=rules.sharpened_speedup.output.table,
        factors=rules.speedups_table.output.factors,
        groups=lambda wc: speedups_groups(wc.dataset, "barlow_twins"),
    output:
        csv=report(
            "results/tables/{dataset}/sharpened_speedup.csv",
            caption="../report/sharpened_speedup_table.rst",
            category="8. Theory: App. F-G (Figs. 8-9)",
            labels={"table": "sharpened-loss speed-up", "dataset": "{dataset}"},
        ),
        md="results/tables/{dataset}/sharpened_speedup.md",
    log:
        "logs/sharpened_speedup_table/{dataset}.log",
    benchmark:
        "benchmarks/sharpened_speedup_table/{dataset}.tsv"
    group:
        SMALL_JOBS
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        variant=config["theory_figures"]["resnet_variant"],
        level=config["theory_figures"]["level"],
    script:
        "../workflow_scripts/sharpened_speedup_table.py"


rule fig8_symmetry_breaking:
    input:
        trajectory=rules.theory_fig8.output.trajectory,
        summary=rules.theory_fig8.output.summary,
        style=PLOT_SOURCES,
    output:
        png=report(
            "results/figures/fig8_symmetry_breaking_{dataset}.png",
            caption="../report/fig8_symmetry_breaking.rst",
            category="8. Theory: App. F-G (Figs. 8-9)",
            labels={"figure": "Fig. 8", "dataset": "{dataset}"},
        ),
        pdf="results/figures/fig8_symmetry_breaking_{dataset}.pdf",
    log:
        "logs/fig8_symmetry_breaking/{dataset}.log",
    benchmark:
        "benchmarks/fig8_symmetry_breaking/{dataset}.tsv"
    group:
        SMALL_JOBS
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        title=lambda wc: f"Fig. 8 on {wc.dataset}: SSL breaks a symmetry, supervised learning does not",
    script:
        "../workflow_scripts/fig8_symmetry_breaking.py"


rule fig9_landscapes:
    input:
        trajectory=rules.theory_fig9.output.trajectory,
        summary=rules.theory_fig9.output.summary,
        style=PLOT_SOURCES,
    output:
        png=report(
            "results/figures/fig9_landscapes_{dataset}.png",
            caption="../report/fig9_landscapes.rst",
            category="8. Theory: App. F-G (Figs. 8-9)",
            labels={"figure": "Fig. 9", "dataset": "{dataset}"},
        ),
        pdf="results/figures/fig9_landscapes_{dataset}.pdf",
    log:
        "logs/fig9_landscapes/{dataset}.log",
    benchmark:
        "benchmarks/fig9_landscapes/{dataset}.tsv"
    group:
        SMALL_JOBS
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        title=lambda wc: (
            f"Fig. 9 on {wc.dataset}: modewise losses of App. G, GD on the linear model vs exact solutions"
        ),
    script:
        "../workflow_scripts/fig9_landscapes.py"
