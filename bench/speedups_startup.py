"""CPU seconds of one job's start-up (what the speed-up experiment pays once per job): a fresh interpreter
importing what a speedups_run job imports (sslkit's engine with torch, torchvision, mlflow) and opening and
closing an MLflow run in a sqlite store, measured as the child's CPU time (user + system; robust to a busy
machine, unlike wall time). It imports torchvision as the jobs did when the 48 -> 7 saving was measured;
the jobs no longer do (networks.py holds its own ResNet blocks), so it now gives an upper bound.
Run from the repository root:

    python bench/speedups_startup.py [--repeats 3]

The headline (last line) is the median over the repeats, and what it comes to for the jobs the
one-job-per-(method, init) layout removes on the default config (48 -> 7 jobs).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import os, sys
from sslkit.training import engine  # torch
import torchvision  # noqa: F401
from sslkit.tracking import Tracker
t = Tracker("startup", {"rule": "bench"}, uri="sqlite:///" + os.path.join(sys.argv[1], "mlflow.db"),
            artifact_root=os.path.join(sys.argv[1], "art"))
with t:
    t.log_metrics({"x": 1.0})
"""


def child_cpu(tmp: str) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD, tmp], check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs-before", type=int, default=48)
    ap.add_argument("--jobs-after", type=int, default=7)
    args = ap.parse_args()
    cpus, walls = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            cpu, wall = child_cpu(tmp)  # the first one also creates the sqlite schema, as a first job does
            cpus.append(cpu)
            walls.append(wall)
            print(f"start-up {i}: cpu {cpu:.2f} s, wall {wall:.2f} s (load {os.getloadavg()[0]:.1f})")
    med = statistics.median(cpus)
    saved = (args.jobs_before - args.jobs_after) * med
    print(f"speedups_job_startup_cpu: {med:.2f} s (per job; {args.jobs_before} -> {args.jobs_after} jobs "
          f"saves ~{saved:.0f} CPU s)")


if __name__ == "__main__":
    main()
