"""Snakemake profiles: the SLURM profile plans the paper-scale workflow with GPUs for GPU rules,
and the local default profile stays neutral (it is applied under every other profile too)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from test_workflow import smk_in

REPO = Path(__file__).resolve().parents[2]


def gpu_rules() -> set[str]:
    """Rules whose resources request GPU_PER_JOB GPUs, read from rules/*.smk."""
    found = set()
    for smk in (REPO / "rules").glob("*.smk"):
        for block in re.split(r"^rule ", smk.read_text(), flags=re.M)[1:]:
            name = block.split(":", 1)[0].strip()
            if re.search(r"^\s+gpu=GPU_PER_JOB,", block, flags=re.M):
                found.add(name)
    return found


def planned_jobs(out: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job a dry run prints."""
    jobs = []
    for block in re.split(r"^\s*(?:local)?rule ", out, flags=re.M)[1:]:  # (indented: a job of a group job)
        name = block.split(":", 1)[0].strip()
        m = re.search(r"^\s+resources: (.*)$", block, flags=re.M)
        res = dict(kv.split("=", 1) for kv in m.group(1).split(", ")) if m else {}
        jobs.append((name, res))
    return jobs


#: the small figure and table rules declared with ``group: SMALL_JOBS`` (rules/common.smk)
SMALL_JOB_RULES = {"steps", "analysis_table", "fig1cd", "fig2cf", "fig3", "fig4", "fig5", "fig7", "train_curves",
                   "fig1ab_linear", "fig6_appendix_c", "mlp_figure", "tables", "noncontrastive_summary",
                   "noncontrastive_figure", "sharpened_speedup_table", "fig8_symmetry_breaking", "fig9_landscapes"}


def group_jobs(out: str) -> list[list[str]]:
    """The rules of the jobs of each group job a dry run prints (a group job's jobs are indented)."""
    jobs = []
    for block in re.split(r"^\[[^\]\n]*\] Group job small_jobs .*$", out, flags=re.M)[1:]:
        body = re.split(r"^(?=\[|(?:local)?rule )", block, flags=re.M)[0]  # up to the next job of its own
        jobs.append(re.findall(r"^    rule (\w+):", body, flags=re.M))
    return jobs


def test_train_is_a_gpu_rule():
    assert "train" in gpu_rules()


@pytest.fixture(scope="module")
def slurm_dry_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm")
    (workdir / "config").symlink_to(REPO / "config")
    r = smk_in(REPO, workdir, "--profile", str(REPO / "profiles/slurm"), "-n",
               "--configfile", "config/paper.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout + r.stderr


def test_slurm_profile_plans_every_rule_of_the_paper_config(slurm_dry_run):
    jobs = planned_jobs(slurm_dry_run)
    planned = {name for name, _ in jobs}
    r = smk_in(REPO, REPO, "--list-rules")
    rules = set(r.stdout.split()) - {"all"}
    # every rule of the workflow that the paper config targets is planned; none is local-only
    # beyond-the-paper experiments (speedups, noncontrastive) are off in paper.yaml's rule all
    # (speedups, noncontrastive) and the linear-model theory figures (theory_figures.in_all: false there)
    theory = {"theory_fig8", "theory_fig9", "sharpened_speedup", "sharpened_speedup_table",
              "fig8_symmetry_breaking", "fig9_landscapes"}
    extra = {n for n in rules if n.startswith(("speedups_", "noncontrastive_"))} | theory
    assert rules - planned <= extra
    # 3 methods x (small, standard, and the App. E "ntk" init that Tables 1-2 use at paper scale)
    assert sum(name == "train" for name, _ in jobs) == 9
    assert all(res.get("slurm_account") == "<account>" for name, res in jobs if name != "all")


def test_gpu_rules_request_a_gpu_on_slurm(slurm_dry_run):
    jobs = planned_jobs(slurm_dry_run)
    profile = yaml.safe_load((REPO / "profiles/slurm/profile.yaml").read_text())
    for rule in gpu_rules():
        assert profile["set-resources"].get(rule, {}).get("gpu", 0) >= 1, f"{rule} lacks gpu in set-resources"
    gpu_jobs = [(n, res) for n, res in jobs if n in gpu_rules()]
    assert gpu_jobs
    for name, res in gpu_jobs:
        assert res.get("gpu") == "1" and "cpus_per_gpu" in res, (name, res)
        assert res["slurm_partition"] == "<gpu-partition>"
    cpu_jobs = [res for n, res in jobs if n not in gpu_rules() and n != "all"]
    assert cpu_jobs and all("gpu" not in res and res["slurm_partition"] == "<cpu-partition>" for res in cpu_jobs)


def test_slurm_jobs_keep_their_threads(slurm_dry_run):
    """profiles/default is applied on top of the slurm profile: it must not cap threads or GPUs."""
    default = yaml.safe_load((REPO / "profiles/default/profile.yaml").read_text())
    assert "cores" not in default and "resources" not in default
    blocks = re.split(r"^rule ", slurm_dry_run, flags=re.M)[1:]
    train = [b for b in blocks if b.startswith("train:")]
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    assert all(f"threads: {paper['train']['threads']}" in b for b in train)


def test_cpu_machine_runs_gpu_rules_without_gpu_slots(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA visible: GPU rules request a GPU here")
    (tmp_path / "config").symlink_to(REPO / "config")
    r = smk_in(REPO, tmp_path, "-n")
    assert r.returncode == 0, r.stdout + r.stderr
    gpu_jobs = [res for n, res in planned_jobs(r.stdout + r.stderr) if n in gpu_rules()]
    assert gpu_jobs and all(res["gpu"] == "0" for res in gpu_jobs)


def test_small_jobs_run_as_group_jobs_on_slurm(slurm_dry_run):
    """On a cluster the figure and table jobs are group jobs: connected ones share one submission (the
    analysis figures with the steps they read), so there are fewer submissions than jobs; the GPU and
    other heavy rules stay jobs of their own."""
    groups = group_jobs(slurm_dry_run)
    grouped = [name for g in groups for name in g]
    assert groups and all(groups) and set(grouped) <= SMALL_JOB_RULES
    assert not set(grouped) & gpu_rules()
    jobs = [name for name, _ in planned_jobs(slurm_dry_run)]
    # every planned job of a grouped rule is inside a group job
    assert sorted(n for n in jobs if n in set(grouped)) == sorted(grouped)
    analysis = next(g for g in groups if "analysis_table" in g)
    assert {"steps", "fig1cd", "fig3"} <= set(analysis)
    submissions = len(jobs) - len(grouped) + len(groups)
    assert submissions < len(jobs) - 10
