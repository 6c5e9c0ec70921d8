# Stage: trained embeddings vs the eNTK theory (paper App. E, Tables 1-2; sslkit.theory.alignment).
# One set of n augmented pairs per dataset (shared by all methods), then per method: f_exp and the
# scalarised eNTK K of the final checkpoint of run {method}-{ntk.init}, f_th (Eq. 49), the subspaces
# P_exp, P_th, P_NTK and their alignments; finally Tables 1-2 as CSV, Markdown and LaTeX.


rule ntk_pairs:
    input:
        data=rules.prepare_data.output.manifest,
        run=lambda wc: ntk_run_manifest(wc.dataset, ntk_pairs_method()),
    output:
        pairs="results/ntk/{dataset}/pairs.npz",
    log:
        "logs/ntk_pairs/{dataset}.log",
    benchmark:
        "benchmarks/ntk_pairs/{dataset}.tsv"
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        pairs=lambda wc: config["ntk"]["pairs"] | {"augment_from": ntk_pairs_method()},
    script:
        "../workflow_scripts/ntk_pairs.py"


rule ntk_alignment:
    input:
        run=lambda wc: ntk_run_manifest(wc.dataset, wc.method),
        pairs=rules.ntk_pairs.output.pairs,
    output:
        arrays="results/ntk/{dataset}/{method}.npz",
        summary="results/ntk/{dataset}/{method}.json",
    log:
        "logs/ntk_alignment/{dataset}/{method}.log",
    benchmark:
        "benchmarks/ntk_alignment/{dataset}/{method}.tsv"
    wildcard_constraints:
        method="|".join(SSL_METHODS),
    conda:
        "../envs/sslkit.yaml"
    threads: config["ntk"]["threads"]
    resources:
        mem_mb=config["ntk"]["mem_mb"],
        gpu=GPU_PER_JOB,
    params:
        ntk=ntk_params(),
        init=config["ntk"]["init"],
    script:
        "../workflow_scripts/ntk_alignment.py"


rule tables:
    input:
        arrays=expand(
            rules.ntk_alignment.output.arrays, method=ntk_methods(), allow_missing=True
        ),
        summaries=expand(
            rules.ntk_alignment.output.summary,
            method=ntk_methods(),
            allow_missing=True,
        ),
    output:
        table1=report(
            "results/tables/{dataset}/table1.csv",
            caption="../report/table1.rst",
            category="Tables",
        ),
        table2=report(
            "results/tables/{dataset}/table2.csv",
            caption="../report/table2.rst",
            category="Tables",
        ),
        table1_md="results/tables/{dataset}/table1.md",
        table2_md="results/tables/{dataset}/table2.md",
        table1_tex="results/tables/{dataset}/table1.tex",
        table2_tex="results/tables/{dataset}/table2.tex",
    log:
        "logs/tables/{dataset}.log",
    benchmark:
        "benchmarks/tables/{dataset}.tsv"
    group:
        SMALL_JOBS
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        methods=ntk_methods(),
    script:
        "../workflow_scripts/tables.py"
