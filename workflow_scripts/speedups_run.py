"""Rule speedups_run: one short sslkit.training.engine run of a speed-up variant, then a probe of its last
checkpoint."""
from pathlib import Path

from sslkit.experiments.speedups import probe_final, resolve_variant_run
from sslkit.io import save_json
from sslkit.rule_script import script_run
from sslkit.training.engine import NonFiniteLossError, data_stats, load_training_images, train

wc = snakemake.wildcards
model = f"{wc.dataset}/speedups/{wc.method}-{wc.init}-{wc.variant}-s{wc.seed}"
with script_run(snakemake, log_params={}, model=model) as (tracker, config):
    data_dir = Path(snakemake.input.data).parent
    splits = list(config["train"]["splits"])
    images = load_training_images(data_dir, splits)
    stats = {**data_stats(images), "dir": str(data_dir), "splits": splits}
    rc = resolve_variant_run(config, wc.method, wc.init, wc.variant, int(wc.seed), stats, wc.dataset)
    rc["runtime"]["progress"] = False
    run_dir = Path(snakemake.output.manifest).parent
    try:
        result = train(rc, images, run_dir, tracker, resume=bool(config["train"]["resume"]))
    except NonFiniteLossError as exc:
        # a variant that diverges at the method's lr is a result of this experiment, not a failure:
        # record it (history.csv up to the last checkpoint stays) and leave the probe empty
        save_json(snakemake.output.probe, {"linear_acc": None, "knn_acc": None, "diverged": True})
        save_json(snakemake.output.manifest, {
            "dataset": wc.dataset, "method": wc.method, "init": wc.init, "lr": rc["lr"], "steps": rc["steps"],
            "complete": False, "diverged": True, "error": str(exc), "history": "history.csv",
            "checkpoints": [], "run_config": rc})
        tracker.set_tags({"experiment": "speedups", "variant": wc.variant, "diverged": "true"})
    else:
        probe = probe_final(result.manifest, run_dir, data_dir, config["analysis"]["probe"])
        save_json(snakemake.output.probe, probe)
        tracker.set_tags({"experiment": "speedups", "variant": wc.variant})
        tracker.log_dataset(snakemake.input.data, splits)
        tracker.log_metrics({"probe/linear_acc": probe["linear_acc"], "probe/knn_acc": probe["knn_acc"]},
                            rc["steps"])
