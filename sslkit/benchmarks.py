"""Summary of Snakemake's ``benchmark:`` files: what each rule of a workflow run cost.

Every compute rule writes ``benchmarks/<rule>/<wildcards>.tsv`` (Snakemake's columns: ``s`` wall
seconds, ``max_rss`` MB, ``cpu_time`` seconds, ``mean_load`` %, ...). :func:`read_benchmarks` reads
them into one row per job, :func:`summarise` into one row per rule (the report's compute table).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["read_benchmarks", "summarise"]


def read_benchmarks(root: str | os.PathLike = "benchmarks", paths: Iterable[str | os.PathLike] | None = None):
    """One row per benchmark file under ``root`` (or the given ``paths``): rule, job, s, cpu_time, max_rss.

    A file with several rows (``repeat()``) contributes its mean. An unreadable file raises ``ValueError``
    naming it (delete it to have the job's next run rewrite it).
    """
    import pandas as pd

    root = Path(root)
    files = sorted(Path(p) for p in paths) if paths is not None else sorted(root.rglob("*.tsv"))
    rows = []
    for f in files:
        try:
            t = pd.read_csv(f, sep="\t", na_values=["-", "NA"])
            if "s" not in t.columns:
                raise ValueError(f"no column 's' (has {list(t.columns)[:5]})")
            rel = f.relative_to(root) if f.is_relative_to(root) else f
            parts = rel.with_suffix("").parts
            row = {"rule": parts[0], "job": "/".join(parts[1:]) or parts[0]}
            for col in ("s", "cpu_time", "max_rss", "mean_load"):
                row[col] = float(pd.to_numeric(t[col], errors="coerce").mean()) if col in t else float("nan")
        except Exception as exc:
            raise ValueError(f"cannot read benchmark file {f} ({exc}); delete it and rerun its job") from exc
        rows.append(row)
    return pd.DataFrame(rows, columns=["rule", "job", "s", "cpu_time", "max_rss", "mean_load"])


def summarise(jobs):
    """One row per rule, most expensive first: jobs, total/median/max wall seconds, total CPU seconds,
    peak resident memory (MB), the slowest job."""
    import pandas as pd

    cols = ["rule", "jobs", "wall_s_total", "wall_s_median", "wall_s_max", "cpu_s_total", "max_rss_mb",
            "slowest_job"]
    if len(jobs) == 0:
        return pd.DataFrame(columns=cols)
    out = []
    for rule, g in jobs.groupby("rule", sort=False):
        slowest = g.loc[g["s"].idxmax(), "job"] if g["s"].notna().any() else ""
        out.append({"rule": rule, "jobs": len(g), "wall_s_total": g["s"].sum(), "wall_s_median": g["s"].median(),
                    "wall_s_max": g["s"].max(), "cpu_s_total": g["cpu_time"].sum(), "max_rss_mb": g["max_rss"].max(),
                    "slowest_job": slowest})
    return pd.DataFrame(out, columns=cols).sort_values("wall_s_total", ascending=False, ignore_index=True)
