"""Rule theory_fig9: the four modewise losses of Fig. 9, gradient descent on the linear model vs exact solutions."""
import numpy as np

from sslkit.io import save_json, save_npz
from sslkit.rule_script import script_run
from sslkit.theory.landscape_experiments import run_fig9

with script_run(snakemake) as (tracker, config):
    p = snakemake.params
    pairs = np.load(snakemake.input.pairs)
    try:
        summary, arrays = run_fig9(pairs["X"], pairs["Xp"], d=p.d, alpha=p.alpha, seed=p.seed, lr=p.lr, eps=p.eps)
    except ValueError as exc:
        raise ValueError(f"config sections 'linear' / 'theory_figures' ({snakemake.input.pairs}): {exc}") from exc
    save_npz(snakemake.output.trajectory, **arrays)
    save_json(snakemake.output.summary, summary)
    tracker.log_metrics({f"{name}_max_abs_error": info["max_abs_error"] for name, info in summary["losses"].items()})
    tracker.log_artifacts([snakemake.output.trajectory, snakemake.output.summary])
