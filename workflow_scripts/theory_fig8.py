"""Rule theory_fig8: original SSL loss vs supervised loss from small aligned init on the linear model (Fig. 8)."""
import numpy as np

from sslkit.io import save_json, save_npz
from sslkit.rule_script import script_run
from sslkit.theory.landscape_experiments import run_fig8

with script_run(snakemake) as (tracker, config):
    p = snakemake.params
    pairs = np.load(snakemake.input.pairs)
    try:
        summary, arrays = run_fig8(pairs["X"], pairs["Xp"], d=p.d, alpha=p.alpha, seed=p.seed, lr=p.lr,
                                   lr_supervised=p.lr_supervised)
    except ValueError as exc:
        raise ValueError(f"config sections 'linear' / 'theory_figures' ({snakemake.input.pairs}): {exc}") from exc
    save_npz(snakemake.output.trajectory, **arrays)
    save_json(snakemake.output.summary, summary)
    tracker.log_metrics({k: summary[k] for k in ("ssl_max_abs_error", "ssl_max_abs_error_euler_corrected",
                                                 "supervised_max_abs_error", "wall_time_s")})
    tracker.log_artifacts([snakemake.output.trajectory, snakemake.output.summary])
