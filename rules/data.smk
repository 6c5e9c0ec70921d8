# Stage 1: data. Canonical uint8 arrays per split, and the positive pairs of the linear model.


rule prepare_data:
    output:
        manifest="results/data/{dataset}/manifest.json",
        train_x="results/data/{dataset}/train_x.npy",
        train_y="results/data/{dataset}/train_y.npy",
        test_x="results/data/{dataset}/test_x.npy",
        test_y="results/data/{dataset}/test_y.npy",
    log:
        "logs/prepare_data/{dataset}.log",
    benchmark:
        "benchmarks/prepare_data/{dataset}.tsv"
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=8000,
    params:
        options=lambda wc: data_options(wc.dataset),
    script:
        "../workflow_scripts/prepare_data.py"


rule linear_pairs:
    input:
        manifest=rules.prepare_data.output.manifest,
    output:
        pairs="results/linear/{dataset}/pairs.npz",
    log:
        "logs/linear_pairs/{dataset}.log",
    benchmark:
        "benchmarks/linear_pairs/{dataset}.tsv"
    conda:
        "../envs/sslkit.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        n=config["pairs"]["n"],
        crop=lambda wc: pairs_crop(wc.dataset),
        split=config["pairs"]["split"],
        seed=config["pairs"]["seed"],
    script:
        "../workflow_scripts/linear_pairs.py"
