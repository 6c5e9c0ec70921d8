"""Start-up cost of the workflow's jobs: what a job pays before its first log line and after its last.

For every script of ``workflow_scripts/`` (one per rule), a fresh interpreter runs the script's
top-level imports -- what the job does before ``script_run`` writes its first log line -- and exits.
Printed per script: the import time measured inside the process, the whole process's wall time
(interpreter start + imports + interpreter exit: what Snakemake waits for beyond the job's work) and
the heavy modules the imports pulled in (torch, torchvision, torch._dynamo, matplotlib, mlflow,
pandas, scipy, sklearn). Also timed: Snakemake's own script preamble (``from snakemake import
script``; every ``script:`` job runs it) and an MLflow job run on an existing sqlite store (the
client's import and set-up, one run created, a param logged, the run ended) against a tracker with
tracking disabled.

Every measurement is the minimum of ``--repeat`` fresh processes; ``--before DIR`` (a checkout of an
older commit, e.g. ``git archive <commit> | tar -x -C DIR``) runs the same measurement on DIR's
sources in alternation with this tree's, so both see the same load on a shared CPU.

    PYTHONPATH=. python bench/job_startup.py [--before /tmp/base] [--repeat 3] [--scripts train fig1cd]

The last line is the headline: the median over the scripts of the process wall time (this tree), and
with ``--before`` its ratio to DIR's.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "torchvision", "torch._dynamo", "matplotlib", "mlflow", "pandas", "scipy", "sklearn")

_PROBE = """
import sys, time, json
t0 = time.perf_counter()
{imports}
dt = time.perf_counter() - t0
print(json.dumps({{"import_s": dt, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""

_TRACKER = """
import sys, time, json
t0 = time.perf_counter()
from sslkit.tracking import Tracker
tr = Tracker("job", uri="sqlite:///{db}", artifact_root="{art}", enabled={enabled})
with tr:
    tr.log_params({{"a": 1}})
print(json.dumps({{"import_s": time.perf_counter() - t0, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def top_level_imports(path: Path) -> str:
    """The import statements at the top level of a script (what runs before its body), as source."""
    tree = ast.parse(path.read_text())
    lines = [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "\n".join(lines) or "pass"


def run_probe(code: str, src: Path, repeat: int) -> dict:
    """Minimum over ``repeat`` fresh processes of the in-process time and the process wall time."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    best: dict | None = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=src)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            raise RuntimeError(f"probe failed under {src}:\n{out.stderr[-2000:]}")
        rec = json.loads(out.stdout.strip().splitlines()[-1])
        rec["wall_s"] = wall
        if best is None:
            best = rec
        else:
            best["import_s"] = min(best["import_s"], rec["import_s"])
            best["wall_s"] = min(best["wall_s"], wall)
    return best


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", type=Path, default=None, help="an older source tree to measure alongside")
    ap.add_argument("--repeat", type=int, default=3, help="fresh processes per measurement (the minimum counts)")
    ap.add_argument("--scripts", nargs="*", default=None, help="script names (default: all of workflow_scripts/)")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    trees = {"now": ROOT} if args.before is None else {"before": args.before.resolve(), "now": ROOT}
    names = args.scripts or sorted(p.stem for p in (ROOT / "workflow_scripts").glob("*.py"))
    print(f"job start-up: {len(names)} scripts, min of {args.repeat} processes each, python {sys.version.split()[0]}"
          f", {load()}")
    results: dict[str, dict[str, dict]] = {k: {} for k in trees}
    extra = {"snakemake preamble": "from snakemake import script"}
    for label, code in extra.items():
        for tree, src in trees.items():
            results[tree][label] = run_probe(_PROBE.format(imports=code, heavy=HEAVY), src, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        for tree, src in trees.items():  # the store's schema is created once per workflow, not timed here
            db, art = Path(tmp) / f"{tree}.db", Path(tmp) / f"{tree}-art"
            run_probe(_TRACKER.format(db=db, art=art, enabled=True, heavy=HEAVY), src, 1)
        for enabled in (True, False):
            label = f"mlflow job run ({'logged' if enabled else 'tracking disabled'})"
            for tree, src in trees.items():
                db, art = Path(tmp) / f"{tree}.db", Path(tmp) / f"{tree}-art"
                code = _TRACKER.format(db=db, art=art, enabled=enabled, heavy=HEAVY)
                results[tree][label] = run_probe(code, src, args.repeat)
    for name in names:
        for tree, src in trees.items():
            path = src / "workflow_scripts" / f"{name}.py"
            if not path.exists():
                continue
            results[tree][name] = run_probe(_PROBE.format(imports=top_level_imports(path), heavy=HEAVY), src,
                                            args.repeat)
    header = f"{'job':38s} {'import s':>9s} {'process s':>9s}"
    if args.before is not None:
        header += f" {'before':>7s} {'/before':>7s}"
    print(header + "  heavy modules imported")
    for label in [*extra, *(k for k in results["now"] if k.startswith("mlflow")), *names]:
        r = results["now"].get(label)
        if r is None:
            continue
        line = f"{label:38s} {r['import_s']:9.2f} {r['wall_s']:9.2f}"
        if args.before is not None:
            b = results["before"].get(label)
            line += f" {b['wall_s']:7.2f} {r['wall_s'] / b['wall_s']:7.2f}" if b else f" {'-':>7s} {'-':>7s}"
        print(line + "  " + " ".join(r["heavy"]))
    print(f"({load()})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    med = statistics.median(results["now"][n]["wall_s"] for n in names if n in results["now"])
    if args.before is None:
        print(f"job_startup_median_s: {med:.2f} (s per job: interpreter start, imports, exit; {len(names)} scripts)")
    else:
        med_b = statistics.median(results["before"][n]["wall_s"] for n in names if n in results["before"])
        print(f"job_startup_median_s: {med:.2f} (s per job, before {med_b:.2f}: x{med / med_b:.2f}; "
              f"{len(names)} scripts, interpreter start + imports + exit)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
