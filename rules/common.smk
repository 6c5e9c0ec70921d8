# Shared helpers of the workflow (target lists per stage, config lookups); no jobs are defined
# here (rna-seq-star-deseq2 style). The Snakefile's default target collects all_targets().
import sslkit.data
import sslkit.plots


DATASET = config["dataset"]
DATASETS = list(sslkit.data.DATASETS)
# figure jobs declare these as inputs: editing the plotting module or the style reruns them
PLOT_SOURCES = sslkit.plots.SOURCES


def data_options(dataset):
    """Keyword options of sslkit.data.load_dataset for one dataset."""
    if dataset == "imagefolder":
        return {"path": config["imagefolder"]["path"], "image_size": config["imagefolder"]["image_size"]}
    return {"data_dir": config["data_dir"], "download": config["download"]}


def pairs_crop(dataset):
    crop = config["pairs"]["crop"]
    return crop if crop is not None else sslkit.data.DEFAULT_CROP[dataset]


def mlp_settings(dataset):
    """The config section mlp with the crop resolved for one dataset (for sslkit.mlp.MLPSettings)."""
    section = dict(config["mlp"])
    if section["crop"] is None:
        section["crop"] = sslkit.data.DEFAULT_CROP[dataset]
    return section


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
    # SSL training (rules/train.smk): results/train/{dataset}/{method}-{init}/manifest.json
    # spectra, steps, probes (rules/analysis.smk): results/{spectra,steps,probe}/..., Figs. 1C-D, 2C-F, 3-5, 7
    # eNTK alignment (rules/ntk.smk): results/ntk/{dataset}/{method}.npz, results/tables/table{1,2}.csv
    # beyond the paper (rules/speedups.smk): results/tables/speedups.csv, non-contrastive spectra
    return targets
