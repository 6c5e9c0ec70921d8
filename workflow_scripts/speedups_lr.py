"""Rule speedups_lr: a short run at lr = factor x the method's lr; records whether it stayed stable."""
import math
import shutil
from pathlib import Path

from sslkit.experiments.speedups import eigen_history, resolve_variant_run
from sslkit.io import save_json
from sslkit.rule_script import script_run
from sslkit.training.engine import NonFiniteLossError, data_stats, load_training_images, read_history, train

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
    top = loss0 = loss1 = None
    if error is None:
        hist = read_history(run_dir / "history.csv")
        t, eigs = eigen_history(hist, wc.method)
        top = float(eigs[-1].max())
        loss0, loss1 = float(hist["loss_eval"].iloc[0]), float(hist["loss_eval"].iloc[-1])
    # stable: finite and the variant's own loss went down; bounded: the top eigenvalue stayed <= blowup
    # (for g_smooth every lambda >= 1 is a minimum, so a large eigenvalue is not a loss divergence)
    stable = error is None and math.isfinite(loss1) and loss1 < loss0
    bounded = stable and top <= float(sweep["blowup"])
    status = {"method": wc.method, "init": wc.init, "variant": wc.variant, "factor": factor, "lr": rc["lr"],
              "steps": rc["steps"], "stable": bool(stable), "bounded": bool(bounded),
              "final_top_eigenvalue": top, "initial_loss": loss0, "final_loss": loss1, "error": error}
    save_json(snakemake.output.status, status)
    shutil.rmtree(run_dir / "ckpt", ignore_errors=True)  # only the verdict is kept
    tracker.log_metrics({"stable": float(stable), "bounded": float(bounded)})
