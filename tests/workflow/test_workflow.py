"""The Snakemake workflow: dry run, lint, and the data stage end to end."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def run_smk(repo: Path, *args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd or repo, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture
def workdir(repo, tmp_path) -> Path:
    """A scratch working directory for the repository's Snakefile (configs linked in)."""
    (tmp_path / "config").symlink_to(repo / "config")
    return tmp_path


def smk_in(repo: Path, workdir: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return run_smk(repo, "-s", str(repo / "Snakefile"), *args, cwd=workdir, **kw)


def test_dry_run_default_config(repo, workdir):
    r = smk_in(repo, workdir, "-n", "--quiet", "rules")
    assert r.returncode == 0, r.stdout + r.stderr
    for rule in ("prepare_data", "linear_pairs", "all"):
        assert rule in r.stdout + r.stderr


def test_parsing_imports_neither_torch_nor_matplotlib(repo, workdir):
    """Planning the whole default DAG (-n) with torch and matplotlib made unimportable: parsing the
    Snakefile and evaluating every input function must not need them (issue: ~5 s per call)."""
    blocker = ("import sys\n"
               "for name in ('torch', 'torchvision', 'matplotlib'):\n"
               "    sys.modules[name] = None  # any import of it raises ImportError\n"
               "from snakemake.cli import main\n"
               "sys.argv = ['snakemake'] + sys.argv[1:]\n"
               "main()\n")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    r = subprocess.run([sys.executable, "-c", blocker, "-s", str(repo / "Snakefile"), "-n", "--quiet", "rules"],
                       cwd=workdir, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "train" in r.stdout + r.stderr


def test_lint_clean(repo):
    r = run_smk(repo, "--lint")
    assert r.returncode == 0, r.stdout + r.stderr


def test_bad_config_fails_naming_key(repo, workdir):
    r = smk_in(repo, workdir, "-n", "--config", "dataset=mnist")
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "config key 'dataset'" in out and "mnist" in out


def test_data_stage_runs_in_fresh_workdir(repo, workdir):
    """prepare_data + linear_pairs on digits in a scratch directory, tracked in MLflow."""
    tmp_path = workdir
    (workdir / "small.yaml").write_text("pairs:\n  n: 100\n  seed: 1\n")
    r = smk_in(repo, workdir, "--cores", "2", "--configfile", "small.yaml", "--",
               "results/linear/digits/pairs.npz")
    assert r.returncode == 0, r.stdout + r.stderr
    import numpy as np

    p = np.load(tmp_path / "results/linear/digits/pairs.npz")
    assert p["X"].shape == (100, 36)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/results/mlflow.db")
    exp = client.get_experiment_by_name("stepwise-ssl")
    runs = client.search_runs([exp.experiment_id], "tags.`sslkit.kind` = 'job'")
    assert sorted(r.data.tags["rule"] for r in runs) == ["linear_pairs", "prepare_data"]
    assert len({r.data.tags["mlflow.parentRunId"] for r in runs}) == 1  # one invocation
    assert all(r.data.tags["wildcards.dataset"] == "digits" and r.data.tags["config_hash"] for r in runs)


def test_missing_real_dataset_fails_with_remedy(repo, workdir):
    tmp_path = workdir
    r = smk_in(repo, workdir, "--cores", "1",
                "--config", f"data_dir={tmp_path}/none", "dataset=cifar10", "--", "results/data/cifar10/manifest.json")
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "not found" in out and "cifar10-jpeg.tar.gz" in out and "data_dir" in out
    assert not (tmp_path / "results/data/cifar10/manifest.json").exists()


def test_nested_config_override_on_the_command_line(repo, workdir):
    """`--config 'pairs={n: 100}'` through a real snakemake call: typed by the schema, used by the job."""
    r = smk_in(repo, workdir, "--cores", "1", "--config", "pairs={n: 100, seed: 3}", "--",
               "results/linear/digits/pairs.npz")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    import numpy as np

    with np.load(workdir / "results/linear/digits/pairs.npz") as z:
        assert z["X"].shape[0] == 100
    bad = smk_in(repo, workdir, "-n", "--config", "pairs={n: lots}")
    assert bad.returncode != 0 and "'pairs.n'" in bad.stdout + bad.stderr
    assert "--configfile" in bad.stdout + bad.stderr


#: figure and table jobs: their scripts read tables and draw, so they must not pay torch's import (~2-7 s a job)
LIGHT_SCRIPTS = ("train_curves", "fig1cd", "fig2cf", "fig3", "fig4", "fig5", "fig7", "fig1ab_linear",
                 "fig6_appendix_c", "mlp_figure", "fig8_symmetry_breaking", "fig9_landscapes", "noncontrastive_figure",
                 "noncontrastive_summary", "analysis_table", "tables", "steps", "sharpened_speedup_table")


def test_figure_and_table_jobs_do_not_import_torch(repo):
    """What the figure/table scripts import at their top (before script_run's first log line) leaves torch,
    torchvision and mlflow unimported (mlflow is imported when the tracker first talks to the store)."""
    import ast

    lines = []
    for name in LIGHT_SCRIPTS:
        tree = ast.parse((repo / "workflow_scripts" / f"{name}.py").read_text())
        lines += [ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    code = "\n".join([*lines, "import sys", "print(sorted(m for m in ('torch', 'torchvision', 'mlflow') "
                                            "if m in sys.modules))"])
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(repo)))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"
