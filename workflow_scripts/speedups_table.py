"""Rule speedups_table: time-to-rank-k, final rank, probe accuracy per run; speed-up factors; lr sweep."""
import math
from pathlib import Path

import pandas as pd

from sslkit.experiments import speedups as X
from sslkit.io import atomic_path, load_json, save_json
from sslkit.rule_script import script_run
from sslkit.training.engine import read_history

with script_run(snakemake, log_params={"ks": snakemake.params.ks}, attach=True) as (tracker, config):
    ks = [int(k) for k in snakemake.params.ks]
    sp = snakemake.params.steps
    runs, budgets = [], {}
    for gpath in snakemake.input.groups:
        group = load_json(gpath)
        budgets[f"{group['method']}-{group['init']}"] = group["budget"]
        for r in group["runs"]:
            run_dir = Path(gpath).parent.parent / r["dir"]
            man = load_json(run_dir / "manifest.json")
            rc = man["run_config"]
            hpath = run_dir / man["history"]
            # equal budgets: every run of the group is measured on its steps <= B (the baseline runs longer)
            hist = X.truncate_history(read_history(hpath), group["budget"]["steps"]) if hpath.exists() else None
            probe = load_json(run_dir / "probe.json")["linear_acc"]
            runs.append({"method": rc["method"], "init": rc["init"], "variant": r["variant"], "seed": rc["seed"],
                         "history": hist, "diverged": bool(man.get("diverged", False)),
                         "probe": math.nan if probe is None else probe})
    rows, curves, bands_out = [], [], {}
    for (method, init) in dict.fromkeys((r["method"], r["init"]) for r in runs):
        group = [r for r in runs if r["method"] == method and r["init"] == init]
        bands = X.grown_threshold([X.eigen_history(r["history"], method)[1] for r in group
                                   if r["history"] is not None and not r["diverged"]],
                                  floor_rel=sp["floor_rel"], band_margin=sp["band_margin"])
        bands_out[f"{method}-{init}"] = bands
        thr = bands["upper"]
        for r in group:
            if r["diverged"]:
                rows += [{"method": method, "init": init, "variant": r["variant"], "seed": r["seed"], "k": k,
                          "time_to_rank_k": math.nan, "final_rank": math.nan, "probe_accuracy": math.nan,
                          "diverged": True} for k in ks]
                continue
            m = X.run_measures(r["history"], method, thr, ks)
            for k in ks:
                rows.append({"method": method, "init": init, "variant": r["variant"], "seed": r["seed"], "k": k,
                             "time_to_rank_k": m["times"][k], "final_rank": m["final_rank"],
                             "probe_accuracy": r["probe"], "diverged": False})
            t, rank = X.rank_curve(r["history"], method, thr)
            curves += [{"method": method, "init": init, "variant": r["variant"], "seed": r["seed"], "t": ti,
                        "rank": int(ri)} for ti, ri in zip(t, rank)]
    table = pd.DataFrame(rows, columns=X.TABLE_COLUMNS)
    factors = X.speedup_table(table)
    # time-to-rank-k is only meaningful where the pooled spectrum has two bands (gap >= min_gap_decades)
    factors["bands_separated"] = [bool(bands_out[f"{m}-{i}"]["gap_decades"] >= sp["min_gap_decades"])
                                  for m, i in zip(factors["method"], factors["init"])]
    lr = [rec for p in snakemake.input.lr for rec in load_json(p)]
    paragraphs = X.__doc__.split("\n\n")
    summary = {"bands": bands_out, "ks": ks, "budgets": budgets, "lr_sweep": lr,
               "largest_stable_factor": X.largest_stable(lr),
               "largest_bounded_factor": X.largest_stable(lr, "bounded"),
               "definition": next(p for p in paragraphs if p.startswith("Measures")),
               "budget_rule": next(p for p in paragraphs if p.startswith("Step budget"))}
    for out, df in ((snakemake.output.table, table), (snakemake.output.factors, factors),
                    (snakemake.output.curves, pd.DataFrame(curves))):
        with atomic_path(out) as tmp:
            df.to_csv(tmp, index=False, float_format="%.6g")
    save_json(snakemake.output.summary, summary)
    for _, f in factors.iterrows():
        if f["variant"] != "baseline" and not math.isnan(f["speedup_median"]):
            tracker.log_metrics({f"speedup_{f['method']}_{f['init']}_{f['variant']}_k{f['k']}": f["speedup_median"]})
    tracker.log_artifacts([snakemake.output.table, snakemake.output.factors, snakemake.output.summary])
