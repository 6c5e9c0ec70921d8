"""Rule sharpened_speedup: time to rank k, original vs sharpened loss, in the linear run; exact prediction beside it."""
import numpy as np
import pandas as pd

from sslkit.io import atomic_path, save_json
from sslkit.rule_script import script_run
from sslkit.theory.landscape_experiments import run_sharpened_speedup

with script_run(snakemake) as (tracker, config):
    p = snakemake.params
    pairs = np.load(snakemake.input.pairs)
    try:
        rows, summary = run_sharpened_speedup(pairs["X"], pairs["Xp"], d=p.d, alpha=p.alpha, seed=p.seed, lr=p.lr,
                                              level=p.level)
    except ValueError as exc:
        raise ValueError(f"config sections 'linear' / 'theory_figures' ({snakemake.input.pairs}): {exc}") from exc
    with atomic_path(snakemake.output.table) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.6g")
    save_json(snakemake.output.summary, {**summary, "rows": rows})
    tracker.log_metrics({f"speedup_{key}_k{r['k']}": r[f"speedup_{key}"]
                         for r in rows for key in ("theory", "measured")})
    tracker.log_artifacts([snakemake.output.table, snakemake.output.summary])
