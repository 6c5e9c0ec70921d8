"""bench/ scripts end with their headline ``<name>: <value> (<unit or ratio>)``: those with a cheap mode are run."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
HEADLINE = re.compile(r"^[a-z][a-z0-9_]*: [-+0-9.eEinfa]+ \(.+\)$")


def run_bench(*args: str) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout.strip().splitlines()


def test_headline_pattern():
    assert HEADLINE.match("compiled_vs_eager: 0.93 (x steps/s, digits barlow_twins)")
    assert not HEADLINE.match("screenshot: /tmp/a.png")
    assert not HEADLINE.match("linear_sim: 1.2 s")


def test_linear_sim_prints_truncated_beside_full_and_ends_with_its_headline(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 20))
    np.savez(tmp_path / "pairs.npz", X=X, Xp=X + 0.3 * rng.standard_normal(X.shape))
    common = ["bench/linear_sim.py", "--pairs", str(tmp_path / "pairs.npz"), "--d", "3", "--alpha", "1e-3",
              "--lr", "1e-3", "--fast-steps", "200", "--ref-steps", "20"]
    quick = run_bench(*common, "--quick")
    assert HEADLINE.match(quick[-1]) and quick[-1].startswith("linear_sim: ")
    lines = run_bench(*common)
    assert HEADLINE.match(lines[-1]) and lines[-1].startswith("linear_sim: "), lines[-1]
    side = next(x for x in lines if x.startswith("truncated vs full"))
    dtau = float(re.search(r"max \|step time difference\| = (\S+)", side).group(1))
    assert 0 <= dtau <= 1e-9


def test_run_overhead_sums_benchmarks_against_the_logs_last_session(tmp_path):
    """Two jobs: a resumed training job (two sessions in its log, the benchmark of the last) and a figure job."""
    (tmp_path / "benchmarks/train/d").mkdir(parents=True)
    (tmp_path / "benchmarks/fig1").mkdir(parents=True)
    (tmp_path / "logs/train/d").mkdir(parents=True)
    (tmp_path / "logs/fig1").mkdir(parents=True)
    head = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (tmp_path / "benchmarks/train/d/bt-small.tsv").write_text(head + "50.5\t0:00:50\t1\t1\t1\t1\t0\t0\t90\t45\n")
    (tmp_path / "benchmarks/fig1/fig1.tsv").write_text(head + "6.0\t0:00:06\t1\t1\t1\t1\t0\t0\t90\t5\n")
    (tmp_path / "logs/train/d/bt-small.log").write_text(
        "2026-01-01 10:00:00,000 INFO sslkit.rule.train: rule train wildcards={}\n"
        "2026-01-01 10:00:09,000 INFO sslkit.rule.train: rule train done in 900.0 s\n"
        "2026-01-01 11:00:00,000 INFO sslkit.rule.train: rule train wildcards={}\n"
        "2026-01-01 11:00:02,500 INFO sslkit.tracking: MLflow run abc (x) in experiment 'e' at sqlite:///m.db\n"
        "2026-01-01 11:00:44,000 INFO sslkit.rule.train: rule train done in 44.0 s\n")
    (tmp_path / "logs/fig1/fig1.log").write_text(
        "2026-01-01 11:01:00,000 INFO sslkit.rule.fig1: rule fig1\n"
        "2026-01-01 11:01:03,000 INFO sslkit.rule.fig1: rule fig1 done in 3.0 s\n")
    lines = run_bench("bench/run_overhead.py", "--root", str(tmp_path), "--json", str(tmp_path / "o.json"))
    assert HEADLINE.match(lines[-1]), lines[-1]
    out = json.loads((tmp_path / "o.json").read_text())
    assert out["jobs"] == 2 and out["left_out"] == []
    assert out["job_seconds"] == 56.5
    assert abs(out["outside_s"] - ((50.5 - 44.0) + (6.0 - 3.0))) < 1e-9
    assert abs(out["mlflow_setup_s"] - 2.5) < 1e-9
    assert lines[-1].startswith(f"run_overhead: {100 * 9.5 / 56.5:.1f} (")
