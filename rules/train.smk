# Stage 3: SSL training of each method at each init scale (sslkit.training.engine), and its training curves.
# One run = results/train/{dataset}/{method}-{init}/: ckpt/step_XXXXXXXX.pt, history.csv and,
# written last, manifest.json (checkpoint list with t = lr x step and each checkpoint's sha256). A failed
# or killed job resumes from its newest checkpoint when rerun. A damaged checkpoint of a finished run
# (missing, or size/mtime unlike the manifest's) raises params.run's integrity generation, so the job
# reruns and retrains from the newest intact checkpoint. A changed run config sets the old run aside
# (previous/<config hash>/); changing it back restores it without training.


rule train:
    input:
        data=rules.prepare_data.output.manifest,
    output:
        manifest="results/train/{dataset}/{method}-{init}/manifest.json",
    log:
        "logs/train/{dataset}/{method}-{init}.log",
    benchmark:
        "benchmarks/train/{dataset}/{method}-{init}.tsv"
    wildcard_constraints:
        method="|".join(SSL_METHODS),
        init="|".join(SSL_INITS),
    conda:
        "../envs/sslkit.yaml"
    threads: config["train"]["threads"]
    resources:
        mem_mb=config["train"]["mem_mb"],
        gpu=GPU_PER_JOB,
    params:
        # the manifest path from the wildcards, not `output`: Snakemake ignores params derived from output
        run=lambda wc: train_params(
            wc.method, wc.init, rules.train.output.manifest.format(**wc)
        ),
    script:
        "../workflow_scripts/train.py"


rule train_curves:
    input:
        manifest=rules.train.output.manifest,
        style=PLOT_SOURCES,
    output:
        png=report(
            "results/train/{dataset}/{method}-{init}/curves.png",
            caption="../report/train_curves.rst",
            category="3. SSL training runs",
            subcategory="{init} init",
            labels={"method": "{method}", "init": "{init}", "dataset": "{dataset}"},
        ),
        pdf="results/train/{dataset}/{method}-{init}/curves.pdf",
    log:
        "logs/train_curves/{dataset}/{method}-{init}.log",
    benchmark:
        "benchmarks/train_curves/{dataset}/{method}-{init}.tsv"
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
        title=lambda wc: f"{wc.method} ({wc.init} init), {wc.dataset}",
    script:
        "../workflow_scripts/train_curves.py"
