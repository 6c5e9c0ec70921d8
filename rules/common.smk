# Shared helpers of the workflow (target lists per stage, config lookups); no jobs are defined
# here (rna-seq-star-deseq2 style). The Snakefile's default target collects all_targets().
import sslkit.theory.alignment
import sslkit.data
import sslkit.training.networks
import sslkit.viz.plots
import sslkit.training.speedup_variants


DATASET = config["dataset"]
DATASETS = list(sslkit.data.DATASETS)
# figure jobs declare these as inputs: editing the plotting module or the style reruns them
PLOT_SOURCES = sslkit.viz.plots.SOURCES
SSL_METHODS = list(sslkit.training.networks.METHODS)
# init names of the training runs; ntk runs (App. E) are trained only when config ntk.init names them
SSL_INITS = ["small", "standard", "ntk"]
METHOD_LABELS = {"barlow_twins": "Barlow Twins", "simclr": "SimCLR", "vicreg": "VICReg", "byol": "BYOL",
                 "directpred": "DirectPred", "directcopy": "DirectCopy"}


def gpu_per_job():
    """GPU rules request resources gpu=GPU_PER_JOB: 1 when their jobs will run on a GPU (train.device
    cuda*, or auto with CUDA visible here), 0 when they run on the CPU, so that a CPU-only machine runs
    them in parallel under --cores. profiles/slurm sets gpu per rule explicitly for cluster nodes."""
    import torch

    device = config["train"]["device"]
    return int(device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()))


GPU_PER_JOB = gpu_per_job()


def data_options(dataset):
    """Keyword options of sslkit.data.load_dataset for one dataset."""
    if dataset == "imagefolder":
        return {"path": config["imagefolder"]["path"], "image_size": config["imagefolder"]["image_size"]}
    return {"data_dir": config["data_dir"], "download": config["download"]}


def pairs_crop(dataset):
    crop = config["pairs"]["crop"]
    return crop if crop is not None else sslkit.data.DEFAULT_CROP[dataset]


def mlp_settings(dataset):
    """The config section mlp with the crop resolved for one dataset (for sslkit.experiments.mlp.MLPSettings)."""
    section = dict(config["mlp"])
    if section["crop"] is None:
        section["crop"] = sslkit.data.DEFAULT_CROP[dataset]
    return section


def train_params(method, init):
    """What one training run depends on (Snakemake reruns a job when this changes): the method's
    block with only this init's overrides, and the train section without run lists/resources."""
    if method not in config.get("methods", {}):
        raise ValueError(
            f"train.methods lists '{method}' but the config has no methods.{method} section"
        )
    block = dict(config["methods"][method])
    if not sslkit.training.speedup_variants.is_active(block.get("speedups")):
        block.pop("speedups", None)  # all off: the runs do not depend on it
    other = [i for i in SSL_INITS if i != init]
    skip = ("methods", "inits", "threads", "mem_mb", "progress", "resume")
    train = {k: v for k, v in config["train"].items() if k not in skip}
    return {"method": {k: v for k, v in block.items() if k not in other}, "train": train}


def train_targets(dataset):
    """Manifests of every configured SSL run, and their training-curve figures."""
    out = []
    for method in config["train"]["methods"]:
        for init in config["train"]["inits"]:
            run = f"results/train/{dataset}/{method}-{init}"
            out += [f"{run}/manifest.json", f"{run}/curves.png"]
    return out


# Runs each analysis figure shows: (methods, inits); None = every configured one. A figure whose
# selection is empty under the config (e.g. no SimCLR/VICReg run for Fig. 2C-F) is not requested.
FIGURE_RUNS = {
    "fig1cd": (["barlow_twins"], ["small"]),
    "fig2cf": (["simclr", "vicreg"], ["small"]),
    "fig3": (None, ["standard"]),
    "fig4": (None, ["standard"]),
    "fig5": (None, ["small"]),
    "fig7": (None, None),
}


def figure_runs(name):
    """'method-init' labels of the configured runs that figure ``name`` shows, in config order."""
    methods, inits = FIGURE_RUNS[name]
    return [f"{m}-{i}" for m in config["train"]["methods"] if methods is None or m in methods
            for i in config["train"]["inits"] if inits is None or i in inits]


def configured_runs():
    """'method-init' labels of every configured SSL run (train.methods x train.inits)."""
    return [f"{m}-{i}" for m in config["train"]["methods"] for i in config["train"]["inits"]]


def run_patterns(runs, kind):
    """Per run label its manifest (for history.csv), spectra table, steps json or probe table, as
    patterns with {dataset} left as a wildcard."""
    pattern = {
        "manifest": "results/train/{{dataset}}/{run}/manifest.json",
        "spectra": "results/spectra/{{dataset}}/{run}.parquet",
        "steps": "results/steps/{{dataset}}/{run}.json",
        "probe": "results/probe/{{dataset}}/{run}.csv",
    }[kind]
    return [pattern.format(run=run) for run in runs]


def figure_inputs(name, kind):
    """Input patterns of figure ``name`` (see run_patterns)."""
    return run_patterns(figure_runs(name), kind)


def method_labels(runs):
    """Display names of the methods of run labels ('barlow_twins-small' -> 'Barlow Twins')."""
    return [METHOD_LABELS.get(run.split("-")[0], run) for run in runs]


def analysis_targets(dataset):
    """Spectra, steps and probe tables of every configured run, the summary table, and the
    analysis figures whose runs are configured."""
    out = []
    for run in configured_runs():
        out += [
            f"results/spectra/{dataset}/{run}.parquet",
            f"results/spectra/{dataset}/{run}.summary.csv",
            f"results/steps/{dataset}/{run}.json",
            f"results/probe/{dataset}/{run}.csv",
        ]
    out.append(f"results/tables/{dataset}/analysis.csv")
    for name in FIGURE_RUNS:
        if figure_runs(name):
            out += [f"results/figures/{name}_{dataset}.png", f"results/figures/{name}_{dataset}.pdf"]
    return out


def ntk_methods():
    """Methods of Tables 1-2, each checked to have the training run ntk.init names."""
    return sslkit.theory.alignment.ntk_methods(config)


def ntk_run_manifest(dataset, method):
    """Manifest of the training run whose final checkpoint the eNTK comparison uses for a method."""
    return f"results/train/{dataset}/{method}-{config['ntk']['init']}/manifest.json"


def ntk_pairs_method():
    """The method whose run's augmentations draw the shared evaluation pairs."""
    return config["ntk"]["pairs"]["augment_from"] or ntk_methods()[0]


def ntk_params():
    """What one ntk_alignment job depends on besides its inputs (engine plan, baseline draws)."""
    keys = ("chunk_size", "memory_budget_mb", "batch_size", "random_trials", "seed")
    return {k: config["ntk"][k] for k in keys} | {"device": config["train"]["device"]}


def ntk_targets(dataset):
    """Per-method eNTK alignment files and Tables 1-2 (CSV, Markdown, LaTeX) of one dataset."""
    out = [f"results/ntk/{dataset}/{m}.{ext}" for m in ntk_methods() for ext in ("npz", "json")]
    out += [f"results/tables/{dataset}/table{i}.{ext}" for i in (1, 2) for ext in ("csv", "md", "tex")]
    return out
def speedups_run_params(method, init, variant):
    """What one speed-up run depends on: its method block (this init only), the variant's
    overrides, the experiment's steps/eval settings and the train section (as train_params)."""
    sc = config["speedups"]
    if variant not in sc["variants"]:
        raise ValueError(f"speedups: variant '{variant}' is not in speedups.variants ({sorted(sc['variants'])})")
    base = train_params(method, init)
    keep = ("steps", "eval_every", "checkpoint_log_points")
    return {**base, "variant": sc["variants"][variant], "speedups": {k: sc[k] for k in keep}}


def speedups_runs(dataset, filename):
    """The file `filename` of every speed-up run: method x its variants x inits x seeds."""
    sc = config["speedups"]
    out = []
    for method, variants in sc["methods"].items():
        for variant in variants:
            if variant not in sc["variants"]:
                raise ValueError(f"speedups.methods.{method} lists '{variant}', not in speedups.variants")
            for init in sc["inits"]:
                for seed in sc["seeds"]:
                    out.append(f"results/speedups/{dataset}/{method}-{init}-{variant}-s{seed}/{filename}")
    return out


def speedups_lr_runs(dataset):
    """status.json of every run of the learning-rate sweep (speedups.lr_sweep)."""
    sw = config["speedups"]["lr_sweep"]
    return [f"results/speedups/{dataset}/lr/{sw['method']}-{sw['init']}-{v}-x{f:g}/status.json"
            for v in sw["variants"] for f in sw["factors"]]


def noncontrastive_files(dataset, pattern):
    """`pattern` ({dataset}, {run}) for each non-contrastive run (noncontrastive.methods at its init)."""
    nc = config["noncontrastive"]
    return [pattern.format(dataset=dataset, run=f"{m}-{nc['init']}") for m in nc["methods"]]


def all_targets():
    """Every final output of the configured workflow, stage by stage."""
    targets = [
        # data (rules/data.smk)
        f"results/data/{DATASET}/manifest.json",
        f"results/linear/{DATASET}/pairs.npz",
    ]
    # linear model vs exact theory (rules/linear.smk): Fig. 1A-B, Appendix C / Fig. 6
    targets += [
        f"results/linear/{DATASET}/summary.json",
        f"results/figures/fig1ab_linear_{DATASET}.png",
        f"results/figures/fig1ab_linear_{DATASET}.pdf",
        "results/linear/appendix_c/summary.json",
        "results/figures/fig6_appendix_c.png",
        "results/figures/fig6_appendix_c.pdf",
    ]
    # kernel theory + wide MLP (rules/mlp.smk): Fig. 2A-B
    targets += [
        f"results/mlp/{DATASET}/summary.json",
        f"results/figures/fig2ab_mlp_{DATASET}.png",
        f"results/figures/fig2ab_mlp_{DATASET}.pdf",
    ]
    # SSL training (rules/train.smk): checkpoints, history.csv, manifest.json, curves.png per run
    targets += train_targets(DATASET)
    # spectra, steps, probes (rules/analysis.smk): results/{spectra,steps,probe}/..., Figs. 1C-D, 2C-F, 3-5, 7
    targets += analysis_targets(DATASET)
    # eNTK alignment (rules/ntk.smk): results/ntk/{dataset}/{method}.{npz,json}, Tables 1-2
    targets += ntk_targets(DATASET)
    # beyond the paper (rules/speedups.smk): Appendix G speed-ups, table + figure
    if config["speedups"]["in_all"]:
        targets += [
            "results/tables/speedups.csv",
            f"results/figures/speedups_{DATASET}.png",
            f"results/figures/speedups_{DATASET}.pdf",
        ]
    # beyond the paper (rules/noncontrastive.smk): BYOL/DirectPred/DirectCopy steps and predictors
    if config["noncontrastive"]["in_all"]:
        targets += [
            f"results/noncontrastive/{DATASET}/summary.json",
            f"results/figures/noncontrastive_{DATASET}.png",
            f"results/figures/noncontrastive_{DATASET}.pdf",
        ]
    # beyond the figures (rules/theory_figures.smk): App. F-G, Figs. 8-9, sharpened-loss speed-up
    if config["theory_figures"]["in_all"]:
        targets += [f"results/figures/{f}_{DATASET}.{ext}" for f in ("fig8_symmetry_breaking", "fig9_landscapes")
                    for ext in ("png", "pdf")]
        targets.append(f"results/theory/{DATASET}/sharpened_speedup.csv")
        if config["speedups"]["in_all"]:
            targets.append(f"results/tables/{DATASET}/sharpened_speedup.csv")
    return targets
