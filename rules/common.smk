# Shared helpers of the workflow: constants, config lookups, and the file lists of each stage. No
# jobs are defined here. Parsing imports neither torch nor matplotlib (sslkit.plan, sslkit.viz and
# the method registry are light), so that every `snakemake` call starts fast.
#
# File names are written once, in the rules' `output:`; everything else refers to them through
# `rules.<rule>.output.<name>` (run_files() fills in the runs, expand() the dataset).
import sslkit.data
import sslkit.plan
import sslkit.registry
import sslkit.viz

DATASET = config["dataset"]
DATASETS = list(sslkit.data.DATASETS)
# figure jobs declare these as inputs: editing the plotting module or the style reruns them
PLOT_SOURCES = sslkit.viz.SOURCES
# the registered SSL methods (sslkit/training/methods/, read without importing torch) and their labels
SSL_METHODS = list(sslkit.registry.METHODS)
# init names of the training runs; ntk runs (App. E) are trained only when config ntk.init names them
SSL_INITS = list(sslkit.registry.INITS)
METHOD_LABELS = dict(sslkit.registry.METHOD_LABELS)
# methods with an EMA target network and a predictor (BYOL family: rules/noncontrastive.smk)
EMA_METHODS = [name for name, spec in sslkit.registry.specs().items() if spec.ema]
# GPU rules request resources gpu=GPU_PER_JOB: 1 where their jobs run on a GPU, 0 on the CPU
GPU_PER_JOB = sslkit.plan.gpu_per_job(config["train"]["device"])
# Snakemake group of the small figure and table jobs (seconds each, most of it start-up). Under a
# cluster executor (profiles/slurm) the connected jobs of the group are one submission: one sbatch job
# and one queue wait, e.g. the analysis figures with the steps jobs they read (default config: 35 such
# jobs in 18 submissions); `--group-components small_jobs=N` packs N unconnected groups into one
# submission (N = 100: all in one, which then waits for the inputs of all of them). Local execution
# ignores groups (Snakemake's Rule.group is None there): every job runs as before.
SMALL_JOBS = "small_jobs"
# report categories
ANALYSIS_CATEGORY = "4. SSL analysis (Figs. 1C-D, 2C-F, 3-5, 7)"


def data_options(dataset):
    """Keyword options of sslkit.data.load_dataset for one dataset."""
    if dataset == "imagefolder":
        return {
            "path": config["imagefolder"]["path"],
            "image_size": config["imagefolder"]["image_size"],
        }
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


def train_params(method, init, manifest=None):
    """What one training run depends on (Snakemake reruns a job when this changes): the method's
    block with only this init's overrides, and the train section without run lists/resources.
    With the run's ``manifest`` path: also its integrity generation once it is above 0
    (sslkit.plan.run_integrity: it rises when a checkpoint of the finished run is damaged).
    """
    if method not in config.get("methods", {}):
        raise ValueError(
            f"train.methods lists '{method}' but the config has no methods.{method} section"
        )
    block = dict(config["methods"][method])
    if not sslkit.plan.speedups_active(block.get("speedups")):
        block.pop("speedups", None)  # all off: the runs do not depend on it
    other = [i for i in SSL_INITS if i != init]
    skip = ("methods", "inits", "threads", "mem_mb", "progress", "resume")
    train = {k: v for k, v in config["train"].items() if k not in skip}
    params = {
        "method": {k: v for k, v in block.items() if k not in other},
        "train": train,
    }
    generation = sslkit.plan.run_integrity(manifest) if manifest else 0
    # absent while 0, so that runs recorded before it existed do not rerun
    if generation:
        params["integrity_generation"] = generation
    return params


# ---- runs: 'method-init' labels -------------------------------------------------------------


def configured_runs():
    """'method-init' labels of every configured SSL run (train.methods x train.inits)."""
    return [
        f"{m}-{i}" for m in config["train"]["methods"] for i in config["train"]["inits"]
    ]


def run_files(pattern, runs, dataset="{dataset}"):
    """``pattern`` (a rule output with {method} and {init}) for each 'method-init' label in
    ``runs``; {dataset} stays a wildcard unless ``dataset`` is given."""
    methods, inits = zip(*(run.split("-", 1) for run in runs)) if runs else ((), ())
    return expand(
        pattern, zip, dataset=[dataset] * len(runs), method=methods, init=inits
    )


def method_labels(runs):
    """Display names of the methods of run labels ('barlow_twins-small' -> 'Barlow Twins')."""
    return [METHOD_LABELS.get(run.split("-")[0], run) for run in runs]


# The analysis figures, one row each: the runs it shows (methods, inits; None = every configured
# one), its per-run inputs, and the keys of analysis.figures it takes as params. rules/analysis.smk
# makes one rule per row (script workflow_scripts/<name>.py, caption report/<name>.rst). A figure
# whose selection is empty under the config (e.g. no SimCLR/VICReg run for Fig. 2C-F) is not
# requested by `all`.
ANALYSIS_FIGURES = {
    "fig1cd": (
        ["barlow_twins"],
        ["small"],
        ["manifests", "steps"],
        ["t_scale"],
    ),
    "fig2cf": (
        ["simclr", "vicreg"],
        ["small"],
        ["manifests", "steps"],
        ["t_scale"],
    ),
    "fig3": (None, ["standard"], ["manifests", "spectra", "steps"], ["t_scale"]),
    "fig4": (None, ["standard"], ["manifests", "spectra", "steps"], ["fig4_times"]),
    "fig5": (None, ["small"], ["manifests", "spectra", "steps"], ["t_scale"]),
    "fig7": (None, None, ["probe"], []),
}


def figure_runs(name):
    """'method-init' labels of the configured runs that figure ``name`` shows, in config order."""
    methods, inits = ANALYSIS_FIGURES[name][:2]
    return [
        run
        for run in configured_runs()
        if (methods is None or run.split("-", 1)[0] in methods)
        and (inits is None or run.split("-", 1)[1] in inits)
    ]


# ---- eNTK (Tables 1-2) -----------------------------------------------------------------------


def ntk_methods():
    """Methods of Tables 1-2, each checked to have the training run ntk.init names."""
    return sslkit.plan.ntk_methods(config)


def ntk_run_manifest(dataset, method):
    """Manifest of the training run whose final checkpoint the eNTK comparison uses for a method."""
    return run_files(
        rules.train.output.manifest, [f"{method}-{config['ntk']['init']}"], dataset
    )[0]


def ntk_pairs_method():
    """The method whose run's augmentations draw the shared evaluation pairs."""
    return config["ntk"]["pairs"]["augment_from"] or ntk_methods()[0]


def ntk_params():
    """What one ntk_alignment job depends on besides its inputs (engine plan, baseline draws)."""
    keys = (
        "chunk_size",
        "memory_budget_mb",
        "jacobian",
        "batch_size",
        "random_trials",
        "seed",
        "initial_ntk",
    )
    return {k: config["ntk"][k] for k in keys} | {"device": config["train"]["device"]}


# ---- App. G speed-ups and the non-contrastive methods ------------------------------------------


def speedups_group_params(method, init):
    """What one speedups_run job (all runs of a method at an init) depends on: its method block (this
    init only, as train_params), its variants' overrides and the experiment's seeds, steps, budget and
    eval settings.
    """
    sc = config["speedups"]
    variants = sc["methods"].get(method) or []
    for variant in variants:
        if variant not in sc["variants"]:
            raise ValueError(
                f"speedups.methods.{method} lists '{variant}', not in speedups.variants "
                f"({sorted(sc['variants'])})"
            )
    keep = ("seeds", "eval_every", "checkpoint_log_points", "ks", "budget_margin")
    return {
        **train_params(method, init),
        "variants": {v: sc["variants"][v] for v in variants},
        "steps": sc["steps"][method],
        "speedups": {k: sc.get(k) for k in keep},
        "bands": {
            k: config["analysis"]["steps"][k] for k in ("floor_rel", "band_margin")
        },
    }


def speedups_lr_params(method, init):
    """What the speedups_lr job depends on: the method block (this init) and the variants swept."""
    sc = config["speedups"]
    unknown = [v for v in sc["lr_sweep"]["variants"] if v not in sc["variants"]]
    if unknown:
        raise ValueError(
            f"speedups.lr_sweep.variants lists {unknown}, not in speedups.variants "
            f"({sorted(sc['variants'])})"
        )
    return {
        **train_params(method, init),
        "variants": {v: sc["variants"][v] for v in sc["lr_sweep"]["variants"]},
        "seed": sc["seeds"][0],
        "eval_every": sc["eval_every"],
        "checkpoint_log_points": sc["checkpoint_log_points"],
    }


def speedups_groups(dataset, only_method=None):
    """The group record (speedups_run output) of every (method, init) of the speed-up experiment with
    variants (or only ``only_method``'s)."""
    sc = config["speedups"]
    methods = [m for m, v in sc["methods"].items() if v and only_method in (None, m)]
    for method in methods:
        # unknown variant names: a clear error
        speedups_group_params(method, sc["inits"][0])
    return [
        path
        for method in methods
        for path in expand(
            rules.speedups_run.output.runs,
            dataset=dataset,
            method=method,
            init=sc["inits"],
        )
    ]


def speedups_lr_sweeps(dataset):
    """The learning-rate sweep's record (speedups_lr output; speedups.lr_sweep), or none."""
    sw = config["speedups"]["lr_sweep"]
    if not sw["variants"] or not sw["factors"]:
        return []
    return expand(
        rules.speedups_lr.output.sweep,
        dataset=dataset,
        method=sw["method"],
        init=sw["init"],
    )


def noncontrastive_runs():
    """'method-init' labels of the non-contrastive runs (noncontrastive.methods at its init)."""
    nc = config["noncontrastive"]
    return [f"{m}-{nc['init']}" for m in nc["methods"]]


# ---- targets -----------------------------------------------------------------------------------


def outputs(*names, **wildcards):
    """Every output file of the named rules, with ``wildcards`` filled in."""
    return expand(
        [f for name in names for f in getattr(rules, name).output], **wildcards
    )


def all_targets():
    """Every final output of the configured workflow, stage by stage."""
    runs = configured_runs()
    # data (rules/data.smk); linear model vs exact theory (rules/linear.smk): Fig. 1A-B, App. C / Fig. 6;
    # kernel theory + wide MLP (rules/mlp.smk): Fig. 2A-B
    targets = outputs(
        "prepare_data", "linear_pairs", "linear_sim", "fig1ab_linear", dataset=DATASET
    )
    targets += outputs("appendix_c", "fig6_appendix_c")
    targets += outputs("mlp_experiment", "mlp_figure", dataset=DATASET)
    # SSL training (rules/train.smk): checkpoints, history.csv, manifest.json, curves per run
    for producer in (rules.train, rules.train_curves):
        targets += [
            f for pattern in producer.output for f in run_files(pattern, runs, DATASET)
        ]
    # spectra, steps, probes (rules/analysis.smk), the summary table and Figs. 1C-D, 2C-F, 3-5, 7
    for producer in (rules.analyze, rules.steps, rules.probe):
        targets += [
            f for pattern in producer.output for f in run_files(pattern, runs, DATASET)
        ]
    targets += outputs("analysis_table", dataset=DATASET)
    targets += outputs(
        *[name for name in ANALYSIS_FIGURES if figure_runs(name)], dataset=DATASET
    )
    # eNTK alignment (rules/ntk.smk): per-method arrays and summaries, Tables 1-2
    targets += outputs("ntk_alignment", dataset=DATASET, method=ntk_methods())
    targets += outputs("tables", dataset=DATASET)
    # beyond the paper (rules/speedups.smk): Appendix G speed-ups, table + figure
    if config["speedups"]["in_all"]:
        targets += outputs("speedups_export") + outputs(
            "speedups_figure", dataset=DATASET
        )
    # beyond the paper (rules/noncontrastive.smk): BYOL/DirectPred/DirectCopy steps and predictors
    if config["noncontrastive"]["in_all"]:
        targets += outputs(
            "noncontrastive_summary", "noncontrastive_figure", dataset=DATASET
        )
    # beyond the figures (rules/theory_figures.smk): App. F-G, Figs. 8-9, sharpened-loss speed-up
    if config["theory_figures"]["in_all"]:
        targets += outputs(
            "fig8_symmetry_breaking",
            "fig9_landscapes",
            "sharpened_speedup",
            dataset=DATASET,
        )
        if config["speedups"]["in_all"]:
            targets += outputs("sharpened_speedup_table", dataset=DATASET)
    return targets
