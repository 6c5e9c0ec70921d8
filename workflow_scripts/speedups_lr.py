"""Rule speedups_lr: a short run at lr = factor x the method's lr; records whether it stayed stable."""
import shutil
from pathlib import Path

from sslkit.io import save_json
from sslkit.speedup_experiment import eigen_history, resolve_variant_run
from sslkit.train import NonFiniteLossError, data_stats, load_training_images, read_history, train
from sslkit.workflow import script_run

wc = snakemake.wildcards
with script_run(snakemake, log_params={}) as (tracker, config):
    sweep = config["speedups"]["lr_sweep"]
    data_dir = Path(snakemake.input.data).parent
    splits = list(config["train"]["splits"])
    images = load_training_images(data_dir, splits)
    stats = {**data_stats(images), "dir": str(data_dir), "splits": splits}
    factor = float(wc.factor)
    rc = resolve_variant_run(config, wc.method, wc.init, wc.variant, int(config["speedups"]["seeds"][0]), stats,
                             wc.dataset, steps=int(sweep["steps"]), lr_factor=factor)
    rc["runtime"]["progress"] = False
    run_dir = Path(snakemake.output.status).parent / "run"
    tracker.set_tags({"experiment": "speedups_lr", "variant": wc.variant})
    error = None
    try:
        train(rc, images, run_dir, tracker, resume=False)
    except NonFiniteLossError as exc:  # divergence is the measurement here, not a failure
        error = str(exc).split(". ")[0]
    top = None
    if error is None:
        t, eigs = eigen_history(read_history(run_dir / "history.csv"), wc.method)
        top = float(eigs[-1].max())
    stable = error is None and top is not None and top <= float(sweep["blowup"])
    status = {"method": wc.method, "init": wc.init, "variant": wc.variant, "factor": factor, "lr": rc["lr"],
              "steps": rc["steps"], "stable": bool(stable), "final_top_eigenvalue": top, "error": error}
    save_json(snakemake.output.status, status)
    shutil.rmtree(run_dir / "ckpt", ignore_errors=True)  # only the verdict is kept
    tracker.log_metrics({"stable": float(stable)})
