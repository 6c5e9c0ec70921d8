"""Rule appendix_c: Eq. 45 integrated from a random upper-triangular A(0) vs Eq. 47-48 (Fig. 6 data)."""
from sslkit.io import save_json, save_npz
from sslkit.rule_script import script_run
from sslkit.theory.linear import run_appendix_c

with script_run(snakemake) as (tracker, config):
    p = snakemake.params
    summary, arrays = run_appendix_c(d=p.d, m=p.m, scale=p.scale, seed=p.seed, points=p.points)
    save_npz(snakemake.output.trajectory, **arrays)
    save_json(snakemake.output.summary, summary)
    d = summary["d"]
    series = {f"s_{j + 1}": arrays["A"][:, j, j] for j in range(d)}
    series.update({f"s_pred_{j + 1}": arrays["s_pred"][:, j] for j in range(d)})
    series["t"] = arrays["t"]
    tracker.log_series(series)
    metrics = {f"s_max_rel_error_{j + 1}": v for j, v in enumerate(summary["s_max_rel_error"])}
    metrics["below_diag_max_abs"] = summary["below_diag_max_abs"]
    for j in range(d):
        for k in range(j + 1, summary["m"]):
            metrics[f"a_ratio_min_{j + 1}{k + 1}"] = summary["a_ratio_min"][j][k]
            metrics[f"a_ratio_max_{j + 1}{k + 1}"] = summary["a_ratio_max"][j][k]
    tracker.log_metrics(metrics)
    tracker.log_artifacts([snakemake.output.trajectory, snakemake.output.summary])
