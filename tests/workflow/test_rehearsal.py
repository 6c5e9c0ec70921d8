"""config/rehearsal.yaml rehearses config/paper.yaml: the same DAG (every rule and job of paper.yaml's
`rule all`) and the same structural choices (network, resolution, projectors and d of every run,
optimisers, eNTK init), only smaller (it runs on a CPU: tests/workflow/test_cluster.py runs it through
SLURM)."""
from __future__ import annotations

import re
from collections import Counter

import pytest
from test_workflow import smk_in

from sslkit import config as cfgmod

METHODS = ("barlow_twins", "simclr", "vicreg")
INITS = ("small", "standard", "ntk")


@pytest.fixture(scope="module")
def paper_and_rehearsal(repo):
    paper = cfgmod.load_config(repo / "config/paper.yaml")
    rehearsal = cfgmod.load_config(repo / "config/paper.yaml", repo / "config/rehearsal.yaml")
    return paper, rehearsal


def _run_block(cfg: dict, method: str, init: str) -> dict:
    """The method block with one init's overrides applied (as the train rule resolves it)."""
    block = {k: v for k, v in cfg["methods"][method].items() if k not in INITS}
    return cfgmod.deep_update(block, cfg["methods"][method].get(init, {}))


def test_rehearsal_keeps_the_structural_choices_of_the_paper(paper_and_rehearsal):
    paper, rehearsal = paper_and_rehearsal
    assert rehearsal["train"]["encoder"] == paper["train"]["encoder"] == {
        "arch": "resnet50", "width": 1.0, "small_stem": False}
    assert rehearsal["train"]["image_size"] == paper["train"]["image_size"] == 96
    for key in ("methods", "inits", "precision", "resume", "device", "seed"):
        assert rehearsal["train"][key] == paper["train"][key], key
    assert rehearsal["ntk"]["init"] == paper["ntk"]["init"] == "ntk"
    assert rehearsal["ntk"]["methods"] == paper["ntk"]["methods"]
    for method in METHODS:
        for init in INITS:
            p, r = _run_block(paper, method, init), _run_block(rehearsal, method, init)
            # projector (hence d, 50 for the App. E runs), loss, optimiser, schedule, augmentations, alpha
            for key in ("projector", "loss", "optimizer", "schedule", "augment", "init_scale"):
                assert r[key] == p[key], (method, init, key)
            assert r["batch_size"] <= p["batch_size"]
    assert {_run_block(rehearsal, m, "ntk")["projector"]["dim"] for m in METHODS} == {50}
    # K_Gamma has at most n positive eigenvalues: the d = 50 top-spectral solution needs n > 50 pairs
    assert rehearsal["ntk"]["pairs"]["n"] > 50
    # CIFAR-10 has no unlabeled split; steps replace the epochs
    assert rehearsal["dataset"] == "cifar10" and rehearsal["train"]["splits"] == ["train"]
    assert paper["train"]["steps"] is None and rehearsal["train"]["steps"] >= 3


def _job_counts(out: str) -> Counter:
    table = out.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return Counter({m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)
                    if m.group(1) != "total"})


def test_rehearsal_plans_the_dag_of_the_paper(repo, tmp_path):
    workdir = tmp_path
    (workdir / "config").symlink_to(repo / "config")
    plans = []
    for configs in (["config/paper.yaml"], ["config/paper.yaml", "config/rehearsal.yaml"]):
        r = smk_in(repo, workdir, "-n", "--configfile", *configs, "--config", "data_dir=/nonexistent")
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        plans.append(_job_counts(r.stdout + r.stderr))
    paper, rehearsal = plans
    # same rules, same number of jobs each (the dataset differs: stl10 -> cifar10)
    assert rehearsal == paper
    assert paper["train"] == 9 and paper["ntk_alignment"] == 3 and paper["probe"] == 6
