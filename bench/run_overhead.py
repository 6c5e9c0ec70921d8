"""Where a finished workflow run's job-seconds went: compute against start-up and exit, per rule.

Reads what every job of a run leaves behind (run it in the workflow's directory after `make run`):

    benchmarks/<rule>/...tsv   Snakemake's benchmark of the job: ``s``, the job's whole wall time
                               (interpreter start, imports, Snakemake's script preamble, the work,
                               interpreter exit)
    logs/<rule>/...log         the job's log: ``rule <name> ... done in X s`` (``script_run``: from its
                               first log line to the end of the work, MLflow set-up included) and the
                               ``MLflow run ...`` line (the tracker's set-up, from the first log line)

and prints, per rule: jobs, job-seconds, seconds inside ``script_run`` and the rest ("outside": from
the job's start to its first log line, plus interpreter exit), and the MLflow set-up. Only the last
session in each log counts (a resumed training job appends to its log; its benchmark is the last
session's). Jobs without a benchmark or a "done in" line are listed and left out of the sums.

    python bench/run_overhead.py [--root DIR] [--json FILE]

The last line is the headline: ``run_overhead: <percent> (% of <job-seconds> job-seconds outside script_run: <s> s)``.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
from collections import defaultdict
from datetime import datetime
from pathlib import Path

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_START = re.compile(r" INFO sslkit\.rule\.\w+: rule \w+( |$)")
_DONE = re.compile(r" INFO sslkit\.rule\.\w+: rule \w+ done in ([0-9.]+) s")
_MLFLOW = re.compile(r" INFO sslkit\.tracking: MLflow run ")


def _time(line: str) -> datetime | None:
    m = _STAMP.match(line)
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f") if m else None


def parse_log(text: str) -> dict | None:
    """The last session of a job log: {'inside_s', 'mlflow_setup_s' (None if no MLflow run line)}."""
    lines = text.splitlines()
    starts = [i for i, ln in enumerate(lines) if _START.search(ln) and not _DONE.search(ln)]
    if not starts:
        return None
    session = lines[starts[-1]:]
    done = [float(m.group(1)) for ln in session if (m := _DONE.search(ln))]
    if not done:
        return None
    t0 = _time(session[0])
    ml = next((_time(ln) for ln in session if _MLFLOW.search(ln)), None)
    return {"inside_s": done[-1], "mlflow_setup_s": (ml - t0).total_seconds() if ml and t0 else None}


def collect(root: Path) -> tuple[list[dict], list[str]]:
    jobs, missing = [], []
    for bench in sorted((root / "benchmarks").rglob("*.tsv")):
        rel = bench.relative_to(root / "benchmarks").with_suffix(".log")
        log = root / "logs" / rel
        with open(bench) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        parsed = parse_log(log.read_text(errors="replace")) if log.exists() else None
        if not rows or parsed is None:
            missing.append(str(rel.with_suffix("")))
            continue
        wall = float(rows[-1]["s"])
        jobs.append({"job": str(rel.with_suffix("")), "rule": rel.parts[0], "wall_s": wall,
                     "inside_s": min(parsed["inside_s"], wall), "outside_s": max(wall - parsed["inside_s"], 0.0),
                     "mlflow_setup_s": parsed["mlflow_setup_s"]})
    return jobs, missing


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=Path("."), help="the workflow directory of the finished run")
    ap.add_argument("--json", default=None, help="also write the per-job numbers to this JSON file")
    args = ap.parse_args(argv)
    jobs, missing = collect(args.root)
    if not jobs:
        raise SystemExit(f"no job with both benchmarks/<rule>/*.tsv and a finished log under {args.root.resolve()}: "
                         "run the workflow there first")
    by_rule: dict[str, list[dict]] = defaultdict(list)
    for j in jobs:
        by_rule[j["rule"]].append(j)
    print(f"{'rule':<26}{'jobs':>5}{'job-s':>9}{'inside':>9}{'outside':>9}{'median out':>11}{'MLflow set-up':>14}")
    for rule, js in sorted(by_rule.items(), key=lambda kv: -sum(j["wall_s"] for j in kv[1])):
        ml = [j["mlflow_setup_s"] for j in js if j["mlflow_setup_s"] is not None]
        print(f"{rule:<26}{len(js):>5}{sum(j['wall_s'] for j in js):>9.1f}{sum(j['inside_s'] for j in js):>9.1f}"
              f"{sum(j['outside_s'] for j in js):>9.1f}{statistics.median(j['outside_s'] for j in js):>11.1f}"
              f"{(f'{sum(ml):.1f} ({len(ml)})' if ml else '-'):>14}")
    total = sum(j["wall_s"] for j in jobs)
    outside = sum(j["outside_s"] for j in jobs)
    ml_all = [j["mlflow_setup_s"] for j in jobs if j["mlflow_setup_s"] is not None]
    print(f"{'all':<26}{len(jobs):>5}{total:>9.1f}{total - outside:>9.1f}{outside:>9.1f}"
          f"{statistics.median(j['outside_s'] for j in jobs):>11.1f}{f'{sum(ml_all):.1f} ({len(ml_all)})':>14}")
    if missing:
        print(f"left out (no benchmark or no finished log): {', '.join(missing)}")
    summary = {"jobs": len(jobs), "job_seconds": total, "outside_s": outside,
               "mlflow_setup_s": sum(ml_all), "per_job": jobs, "left_out": missing}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    share = 100 * outside / total
    print(f"run_overhead: {share:.1f} (% of {total:.1f} job-seconds outside script_run: {outside:.1f} s)")
    return summary


if __name__ == "__main__":
    main()
