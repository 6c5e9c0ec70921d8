"""Rule linear_sim: gradient descent on the linear Barlow Twins model vs the exact theory (Fig. 1A-B data)."""
import numpy as np

from sslkit.io import save_json, save_npz
from sslkit.rule_script import script_run
from sslkit.theory.linear import run_linear_experiment

with script_run(snakemake) as (tracker, config):
    p = snakemake.params
    pairs = np.load(snakemake.input.pairs)
    try:
        summary, arrays = run_linear_experiment(pairs["X"], pairs["Xp"], d=p.d, alpha=p.alpha, lr=p.lr,
                                                steps=p.steps, steps_margin=p.steps_margin, seed=p.seed,
                                                record_points=p.record_points)
    except ValueError as exc:
        raise ValueError(f"config section 'linear' ({snakemake.input.pairs}): {exc}") from exc
    save_npz(snakemake.output.trajectory, **arrays)
    save_json(snakemake.output.summary, summary)

    steps = arrays["step"].tolist()
    d = summary["d"]
    series = {"t": arrays["t"], "loss": arrays["loss"], "theory_loss": arrays["theory_loss"]}
    for j in range(d):
        series[f"eig_{j + 1}"] = arrays["eigs"][:, j]
        series[f"theory_eig_{j + 1}"] = arrays["theory_eigs"][:, j]
    tracker.log_series(series, steps=steps)
    tracker.log_params({"steps_used": summary["steps"], "m": summary["m"], "n": summary["n"]})
    scalars = {k: summary[k] for k in ("max_abs_eig_error", "max_abs_eig_error_euler", "final_loss",
                                       "n_separated_steps", "wall_time_s", "steps_per_s", "t_end")}
    for j in range(d):
        for key in ("tau_theory", "tau_measured", "tau_rel_error", "s0_effective", "gamma"):
            scalars[f"{key}_{j + 1}"] = summary[key][j]
    tracker.log_metrics({k: v for k, v in scalars.items() if v is not None})
    tracker.log_artifacts([snakemake.output.trajectory, snakemake.output.summary])
