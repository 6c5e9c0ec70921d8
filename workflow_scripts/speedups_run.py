"""Rule speedups_run: one short sslkit.train run of a speed-up variant, then a probe of its last checkpoint."""
from pathlib import Path

from sslkit.io import save_json
from sslkit.speedup_experiment import probe_final, resolve_variant_run
from sslkit.train import data_stats, load_training_images, train
from sslkit.workflow import script_run

wc = snakemake.wildcards
with script_run(snakemake, log_params={}) as (tracker, config):
    data_dir = Path(snakemake.input.data).parent
    splits = list(config["train"]["splits"])
    images = load_training_images(data_dir, splits)
    stats = {**data_stats(images), "dir": str(data_dir), "splits": splits}
    rc = resolve_variant_run(config, wc.method, wc.init, wc.variant, int(wc.seed), stats, wc.dataset)
    rc["runtime"]["progress"] = False
    run_dir = Path(snakemake.output.manifest).parent
    tracker.set_tags({"experiment": "speedups", "variant": wc.variant})
    result = train(rc, images, run_dir, tracker, resume=bool(config["train"]["resume"]))
    probe = probe_final(result.manifest, run_dir, data_dir, config["analysis"]["probe"])
    save_json(snakemake.output.probe, probe)
    tracker.log_metrics({"probe_linear_acc": probe["linear_acc"], "probe_knn_acc": probe["knn_acc"]}, rc["steps"])
