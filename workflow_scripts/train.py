"""Rule train: one SSL run (method x init) with sslkit.training.engine; resumes from its newest checkpoint."""
from pathlib import Path

from sslkit.rule_script import script_run
from sslkit.training.engine import data_stats, load_training_images, resolve_run_config, train

wc = snakemake.wildcards
with script_run(snakemake, log_params={}, model=f"{wc.dataset}/{wc.method}-{wc.init}") as (tracker, config):
    data_dir = Path(snakemake.input.data).parent
    splits = list(config["train"]["splits"])
    images = load_training_images(data_dir, splits)
    stats = {**data_stats(images), "dir": str(data_dir), "splits": splits}
    run_config = resolve_run_config(config, wc.method, wc.init, stats, wc.dataset)
    run_config["runtime"]["progress"] = bool(config["train"]["progress"])
    # the rule's integrity generation (sslkit.plan.run_integrity), recorded in the manifest
    run_config["runtime"]["integrity_generation"] = int(snakemake.params.run.get("integrity_generation", 0))
    result = train(run_config, images, Path(snakemake.output.manifest).parent, tracker,
                   resume=bool(config["train"]["resume"]))
    tracker.log_metrics({"train/resumed_from_step": result.start_step})
    tracker.log_dataset(snakemake.input.data, splits)
