"""The paper configuration through a real SLURM cluster (issue 15): a single-node cluster (munged,
slurmctld, slurmd) and an `mlflow server`, started here from files in a temporary directory, run
config/paper.yaml + config/rehearsal.yaml through `--profile profiles/slurm` (plus a generated overlay
profile that fills in the <placeholders> and maps the GPU rules to the node's CPUs). One training job
is cancelled with `scancel` mid-run; the profile's retries resubmit it and it resumes from its checkpoint.

Marked `cluster`: skipped unless pytest is given --run-cluster (`make cluster-test`, which .ci/run runs as
its own step after `make test`; ~25 min on 2 quiet cores). It installs slurm-wlm and munge with apt-get
when they are missing (as root). No slurm.conf is ever written to /etc/slurm: the generated one reaches
only this test's processes through SLURM_CONF.
(With a slurm.conf naming a controller that does not answer, every SLURM client call waits ~9 s, and
the SLURM executor plugin runs `scontrol show config` whenever Snakemake starts, so every later
`snakemake` call on the machine would take ~9 s longer; without one, the clients fail in ~0.1 s.)
Every daemon is stopped by its PID.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIGS = ("config/paper.yaml", "config/rehearsal.yaml")
PARTITION = "cpu"
# the run whose training job is cancelled mid-run (one of paper.yaml's 9 runs)
CANCEL_RUN = "vicreg-ntk"
SYSTEM_SLURM_CONF = Path("/etc/slurm/slurm.conf")
# the rehearsal's wall-clock limit (1593 s measured through this cluster on 2 quiet cores; a shared machine
# needs more: SSLKIT_CLUSTER_TIMEOUT); it also bounds the CI step if a job hangs
TIMEOUT_S = int(os.environ.get("SSLKIT_CLUSTER_TIMEOUT", "2700"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_installed() -> None:
    """slurm-wlm and munge from the distribution when missing (apt-get update once, then install)."""
    needed = ("slurmctld", "slurmd", "sbatch", "squeue", "scancel", "munged", "mungekey")
    if all(shutil.which(b) for b in needed):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail(f"the cluster test needs {', '.join(b for b in needed if not shutil.which(b))}: "
                    "install slurm-wlm and munge (apt-get install slurm-wlm munge), or run it as root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", "slurm-wlm", "munge"]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


def _node() -> dict:
    """Name, CPUs and memory (MB) of this machine as slurmd sees it (`slurmd -C`)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=60).stdout
    fields = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
    return {"name": fields.get("NodeName") or socket.gethostname().split(".")[0],
            "cpus": int(fields.get("CPUs", os.cpu_count() or 1)),
            # a little below the physical memory: slurmd drains a node whose RealMemory exceeds it
            "mem_mb": int(int(fields["RealMemory"]) * 0.95)}


def _stop(proc: subprocess.Popen, name: str, timeout: float = 30) -> None:
    """SIGTERM the daemon by its PID (SIGKILL after ``timeout``)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _stop_group(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM the process group led by ``proc`` (its PID), SIGKILL the group after ``timeout``."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _wait(predicate, timeout: float, what: str, procs=(), interval: float = 0.5):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for proc, log in procs:
            if proc.poll() is not None:
                pytest.fail(f"{what}: {proc.args[0]} exited ({proc.returncode}):\n{Path(log).read_text()[-3000:]}")
        if time.time() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


SLURM_CONF = """\
# single-node test cluster (tests/workflow/test_cluster.py); used only through SLURM_CONF
ClusterName=sslkitci
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# finished jobs stay visible to squeue (the status command without accounting) for a day: the test reads
# every job's final state at the end (0 would keep them forever, but the plugin then switches to sacct)
MinJobAge=86400
KillWait=10
ReturnToService=2
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """munged + slurmctld + slurmd of a one-node cluster; yields the environment its clients need."""
    _ensure_installed()
    conf_existed = SYSTEM_SLURM_CONF.exists()
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "munge"):
        (d / sub).mkdir()
    (d / "munge").chmod(0o700)
    node = _node()
    key, sock = d / "munge" / "munge.key", d / "munge" / "munge.socket"
    subprocess.run(["mungekey", "--create", "--keyfile", str(key)], check=True, capture_output=True)
    conf = d / "slurm.conf"
    conf.write_text(SLURM_CONF.format(node=node["name"], cpus=node["cpus"], mem_mb=node["mem_mb"],
                                      ctld_port=_free_port(), slurmd_port=_free_port(), munge_socket=sock,
                                      dir=d, partition=PARTITION))
    # Inside a job, the SLURM executor's jobstep plugin runs the rule with `srun` in an environment
    # stripped of every SLURM_* variable, SLURM_CONF included (a real cluster has /etc/slurm/slurm.conf
    # or runs configless): jobs find an `srun` on PATH that sets SLURM_CONF and calls the real one.
    real_srun = shutil.which("srun")
    (d / "bin").mkdir()
    (d / "bin" / "srun").write_text(f"#!/bin/sh\nSLURM_CONF={conf} exec {real_srun} \"$@\"\n")
    (d / "bin" / "srun").chmod(0o755)
    env = dict(os.environ, SLURM_CONF=str(conf), PATH=f"{d / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    procs = []

    def start(name, args):
        log = d / f"{name}.out"
        proc = subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        procs.append((name, proc))
        return proc, log

    try:
        munged = start("munged", ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={sock}",
                                  f"--pid-file={d}/munge/munged.pid", f"--log-file={d}/munge/munged.log",
                                  f"--seed-file={d}/munge/munged.seed"])
        _wait(sock.exists, 30, "munged socket", [munged])
        ctld = start("slurmctld", ["slurmctld", "-D", "-i", "-f", str(conf)])
        slurmd = start("slurmd", ["slurmd", "-D", "-f", str(conf)])

        def idle():
            r = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=30)
            return r.returncode == 0 and r.stdout.strip() == "idle"

        _wait(idle, 90, "node idle in sinfo", [ctld, slurmd])
        yield {"env": env, "dir": d, "node": node, "conf": conf}
    finally:
        # jobs first (their slurmstepd outlives slurmd), then the daemons, each by its PID
        subprocess.run(["scancel", "--full", "--partition", PARTITION], env=env, capture_output=True, timeout=60)
        deadline = time.time() + 60
        while _squeue(env, "-t", "PD,R,CG") and time.time() < deadline:
            time.sleep(1)
        for name, proc in reversed(procs):
            _stop(proc, name)
        assert all(proc.poll() is not None for _, proc in procs)
        # nothing of the test cluster is left where other SLURM clients would find it
        assert SYSTEM_SLURM_CONF.exists() == conf_existed


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (the venv's) on 127.0.0.1 with its own backend store; stopped by its PID."""
    d = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    log = d / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{d}/server.db",
         "--default-artifact-root", str(d / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def healthy():
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        _wait(healthy, 180, "mlflow server health", [(proc, log)])
        yield url
    finally:
        # the server's workers run in its process group: SIGTERM the group led by its PID
        _stop_group(proc, 30)


def overlay_profile(shipped: dict, node: dict) -> dict:
    """The second --profile layered on profiles/slurm for the test node: its <placeholders> filled in,
    GPU resources mapped to CPUs of the one partition, requests capped at what the node has, the
    plugin's status command squeue (no accounting here). Snakemake replaces a top-level key of an
    earlier profile by the later one's, so the three resource keys are rewritten in full; every other
    setting (executor, retries, latency-wait, rerun-incomplete, ...) is the shipped profile's."""
    cap_mem = node["mem_mb"] // 2  # two jobs side by side
    # half the node's CPUs per job, so that two jobs run side by side (the rehearsal's training, analysis and
    # probe jobs run one thread each); the eNTK comparisons, the longest jobs, take the whole node (CPUs and
    # memory: their row panels hold ~12 GB). The shipped `jobs: 50` stays: every ready job waits in SLURM's
    # queue, which starts the next as soon as one ends (with `jobs: 4` a freed slot waited for Snakemake's
    # next status check, up to minutes apart once no job had ended for a while).
    half = max(1, node["cpus"] // 2)

    def fit(res: dict, cpus: int = half, mem_mb: int = cap_mem) -> dict:
        out = {}
        for k, v in res.items():
            if k in ("gpu", "gpu_model", "slurm_account"):
                continue
            if k == "cpus_per_gpu":
                k = "cpus_per_task"
            if k == "slurm_partition":
                v = PARTITION
            if k == "mem_mb":
                v = min(int(v), mem_mb)
            if k == "cpus_per_task":
                v = min(int(v), cpus)
            out[k] = v
        return out

    # the small jobs (figures, tables, steps: threads 1) take one CPU each, so two run side by side
    default = {**fit(shipped["default-resources"]), "cpus_per_task": 1}
    return {
        "default-resources": default,
        "set-resources": {rule: fit(res, node["cpus"], node["mem_mb"]) if rule == "ntk_alignment" else fit(res)
                          for rule, res in shipped["set-resources"].items()},
        "set-threads": {rule: min(int(n), node["cpus"] if rule == "ntk_alignment" else half)
                        for rule, n in shipped["set-threads"].items()},
        # A group job (the small_jobs figures and tables) asks for the sum of its parallel members'
        # resources (12 CPUs for six jobs), more than this node has: it pended forever (PartitionConfig).
        # With the node's size as resource limits Snakemake stacks the members in series; with `cores` at
        # the node's CPUs the group's inner Snakemake starts no more job steps (srun) than its allocation
        # holds (with the shipped 256, srun refused: "More processors requested than permitted").
        "resources": [f"cpus_per_task={node['cpus']}", f"mem_mb={node['mem_mb']}"],
        "cores": node["cpus"],
        "slurm-no-account": True,
        "slurm-status-command": "squeue",
        "slurm-init-seconds-before-status-checks": 5,
        "slurm-keep-successful-logs": True,
    }


def test_overlay_profile_only_maps_the_site_specific_values():
    shipped = yaml.safe_load((REPO / "profiles/slurm/profile.yaml").read_text())
    overlay = overlay_profile(shipped, {"cpus": 2, "mem_mb": 20000, "name": "n"})
    assert "<" in json.dumps(shipped)  # the placeholders users fill in are still in the shipped file
    assert "<" not in json.dumps(overlay) and "gpu" not in json.dumps(overlay["set-resources"]).replace("cpus_per", "")
    assert overlay["set-resources"].keys() == shipped["set-resources"].keys()
    assert overlay["set-resources"]["train"] == {"slurm_partition": PARTITION, "cpus_per_task": 1, "mem_mb": 10000,
                                                 "runtime": shipped["set-resources"]["train"]["runtime"]}
    assert overlay["set-resources"]["ntk_alignment"]["cpus_per_task"] == 2
    assert overlay["set-resources"]["ntk_alignment"]["mem_mb"] == 16000
    assert overlay["set-threads"]["train"] == 1 and overlay["set-threads"]["ntk_alignment"] == 2
    assert not {"executor", "retries", "latency-wait", "rerun-incomplete", "jobs"} & overlay.keys()


def _submissions(log_text: str) -> list[tuple[str, str, str]]:
    """(snakemake job id, SLURM job id, SLURM log path) of every sbatch submission in a Snakemake log."""
    return re.findall(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.", log_text)


def _jobs_by_rule(subs: list[tuple[str, str, str]]) -> Counter:
    """Jobs per rule that ran inside the submitted SLURM jobs: one per ``rule_<name>`` submission; for a
    group submission (``group_<name>_...``, the small_jobs group) its members, the ``rule X:`` /
    ``localrule X:`` headers its inner Snakemake printed into the SLURM log."""
    counts: Counter = Counter()
    for _, _, path in subs:
        kind = Path(path).parts[Path(path).parts.index("slurm_logs") + 1]
        if kind.startswith("rule_"):
            counts[kind.removeprefix("rule_")] += 1
        else:
            text = Path(path).read_text(errors="replace")
            counts.update(re.findall(r"^(?:local)?rule (\w+):", text, flags=re.M))
    return counts


def _planned_jobs(out: str) -> Counter:
    """Job counts per rule from the 'Job stats' table of a dry run."""
    table = out.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return Counter({m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)
                    if m.group(1) != "total"})


def _squeue(env: dict, *args: str) -> list[list[str]]:
    """squeue's lines split at '|' (all states unless ``args`` give -t)."""
    states = [] if "-t" in args else ["-t", "all"]
    r = subprocess.run(["squeue", "-h", *states, *args], env=env, capture_output=True, text=True, timeout=60)
    return [line.split("|") for line in r.stdout.splitlines() if line.strip()]


@pytest.mark.cluster
def test_paper_rehearsal_through_slurm(slurm_cluster, mlflow_server, cifar10_dir, tmp_path):
    env = dict(slurm_cluster["env"], MLFLOW_TRACKING_URI=mlflow_server, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("SSLKIT_INVOCATION", None)
    work = tmp_path / "work"
    work.mkdir()
    (work / "config").symlink_to(REPO / "config")
    shipped = yaml.safe_load((REPO / "profiles/slurm/profile.yaml").read_text())
    (tmp_path / "overlay").mkdir()
    (tmp_path / "overlay/profile.yaml").write_text(yaml.safe_dump(overlay_profile(shipped, slurm_cluster["node"])))
    args = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
            "--profile", str(REPO / "profiles/slurm"), "--profile", str(tmp_path / "overlay"),
            "--configfile", *CONFIGS, "--config", f"data_dir={cifar10_dir}"]

    # the plan: every job of paper.yaml's DAG (the rehearsal changes sizes, not the DAG)
    dry = subprocess.run([*args, "-n"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert dry.returncode == 0, dry.stderr[-5000:]
    planned = _planned_jobs(dry.stdout + dry.stderr)
    paper = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n",
                            "--configfile", "config/paper.yaml", "--config", f"data_dir={cifar10_dir}"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert paper.returncode == 0, paper.stderr[-5000:]
    assert planned == _planned_jobs(paper.stdout + paper.stderr)
    assert planned["train"] == 9 and planned["ntk_alignment"] == 3

    # the run, in the background: cancel one training job once it has written a checkpoint past step 0
    out = tmp_path / "snakemake.log"
    t0 = time.time()
    proc = subprocess.Popen(args, cwd=work, env=env, stdout=open(out, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    run_dir = work / "results/train/cifar10" / CANCEL_RUN
    method, init = CANCEL_RUN.split("-")
    try:
        def running_job():
            if not (run_dir / "ckpt/step_00000001.pt").exists():
                return None
            jobs = [j for j, state, comment in _squeue(env, "-o", "%i|%T|%k")
                    if state == "RUNNING" and comment.startswith("rule_train") and f"{method}_{init}" in comment]
            return jobs[0] if jobs else None

        cancelled = _wait(running_job, TIMEOUT_S, f"training job {CANCEL_RUN} past its first checkpoint",
                          [(proc, out)], interval=0.2)
        assert not (run_dir / "manifest.json").exists(), "the run finished before it could be cancelled"
        subprocess.run(["scancel", cancelled], env=env, check=True, timeout=60)
        rc = proc.wait(timeout=max(60.0, TIMEOUT_S - (time.time() - t0)))
    finally:
        # an interrupted run: Snakemake cancels its SLURM jobs on SIGTERM; it must be gone before the
        # fixtures stop the daemons (it would poll a dead controller): SIGKILL its group after 2 min
        _stop_group(proc, 120)
    wall = time.time() - t0
    log_text = out.read_text()
    assert rc == 0, log_text[-8000:]
    print(f"cluster rehearsal: {wall:.0f} s wall")

    # every job of the plan went through sbatch; the cancelled one twice (the profile's retries)
    subs = _submissions(log_text)
    ids = [s[1] for s in subs]
    assert len(set(ids)) == len(ids)
    by_rule = _jobs_by_rule(subs)
    expected = Counter({rule: n for rule, n in planned.items() if rule != "all"})  # `all` is a local rule
    expected["train"] += 1
    assert by_rule == expected, (by_rule, expected)
    states = {j: s for j, s in _squeue(env, "-o", "%i|%T")}
    assert states[cancelled] == "CANCELLED"
    assert all(states[j] == "COMPLETED" for j in ids if j != cancelled), states
    print(f"sbatch submissions: {len(ids)} (SLURM job ids {min(map(int, ids))}-{max(map(int, ids))}), "
          f"cancelled {cancelled}")

    # the outputs are complete: nothing left to do
    again = subprocess.run([*args, "-n"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]

    # the cancelled run resumed from its checkpoint instead of starting afresh
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["complete"] and manifest["resumed_from"] >= 1
    train_log = (work / f"logs/train/cifar10/{CANCEL_RUN}.log").read_text()
    assert re.search(rf"resuming \S*{CANCEL_RUN} from step {manifest['resumed_from']}", train_log)
    print(f"{CANCEL_RUN}: SLURM job {cancelled} cancelled, resubmitted, resumed from step {manifest['resumed_from']}")

    # the MLflow server holds every model run, FINISHED, with its metric history; nothing left RUNNING
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("stepwise-ssl")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert [r.info.run_name for r in runs if r.info.status != "FINISHED"] == []
    models = {r.data.tags["sslkit.model"]: r for r in runs if r.data.tags.get("sslkit.kind") == "model"}
    assert sorted(models) == sorted(f"cifar10/{m}-{i}" for m in ("barlow_twins", "simclr", "vicreg")
                                    for i in ("small", "standard", "ntk"))
    for name, run in models.items():
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss_eval"))
        assert steps == [0, 1, 2, 3], (name, steps)
    assert models[f"cifar10/{CANCEL_RUN}"].data.tags["resumed_from"] == str(manifest["resumed_from"])
    rules_tracked = Counter(r.data.tags.get("rule") for r in runs)
    for rule in ("train", "analyze", "probe", "ntk_alignment", "mlp_experiment", "linear_sim"):
        assert rules_tracked[rule] >= 1, rule
    # the tables and figures attach to the invocation's run (no run of their own): one, FINISHED, with their
    # metrics (two jobs may create it at once through a server; the later copy is deleted, so not listed here)
    invocations = [r for r in runs if r.data.tags.get("sslkit.kind") == "invocation"]
    assert len(invocations) == 1 and invocations[0].data.metrics, [r.info.run_name for r in invocations]
    print(f"MLflow server: {len(runs)} FINISHED runs ({len(models)} model runs), by rule: {dict(rules_tracked)}")
    # passed: drop the ~8 GB of ResNet-50 checkpoints (pytest keeps its last three temporary directories)
    for ckpt in (work / "results/train/cifar10").glob("*/ckpt"):
        shutil.rmtree(ckpt)
