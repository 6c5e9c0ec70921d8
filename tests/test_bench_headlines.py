"""bench/ scripts end with their headline ``<name>: <value> (<unit or ratio>)``: those with a cheap mode are run."""
from __future__ import annotations

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
