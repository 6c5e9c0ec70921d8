"""bench/gpu_check.py --smoke: the GPU check's code paths (engine steps of the paper's methods, the
eNTK plan and kernel, a small-init Barlow Twins run with step detection) on the CPU at tiny sizes."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_smoke_prints_its_table_and_headline():
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(REPO / "bench/gpu_check.py"), "--smoke"], capture_output=True,
                       text=True, timeout=1800, cwd=REPO, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    table = "\n".join(lines)
    assert re.search(r"^check\s+config\s+time\s+rate\s+MFU\s+peak GB\s+note", table, re.M)
    assert re.search(r"^train_step resnet18\s+barlow_twins 16 px batch 8 \(fp32\)\s+[\d.]+ ms/step", table, re.M)
    for method in ("barlow_twins", "simclr", "vicreg"):  # config/paper.yaml's methods
        assert re.search(rf"^train_step resnet50\s+{method} 32 px batch \d+ \(fp32\)\s+[\d.]+ ms/step", table, re.M)
    m = re.search(r"^entk resnet50\s+barlow_twins-ntk, N = 12 views.*\|K - K\^T\| ([\d.e+-]+)$", table, re.M)
    assert m and float(m.group(1)) == 0.0
    m = re.search(r"^bt_small_init\s+digits default config, 40 steps \(fp32\).*, (\d+) steps detected, "
                  r"final rank (\d+) of 8$", table, re.M)
    assert m and int(m.group(2)) >= 1
    assert re.fullmatch(r"gpu_check_resnet50_tflops: [\d.e+-]+ \(TFLOP/s, Barlow Twins ResNet-50 96 px batch 64, "
                        r"MFU -\)", lines[-1])
