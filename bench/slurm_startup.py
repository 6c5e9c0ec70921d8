"""Start-up time of `snakemake --version` with SLURM's client tools installed, side by side.

The SLURM executor plugin (snakemake-executor-plugin-slurm, installed by the `cluster` extra) is imported
by every `snakemake` call; at import it runs `which sinfo` and, when sinfo exists, `scontrol show config`
(to read MinJobAge for its --slurm-status-command help). Three states, timed interleaved in rounds:

    absent    SLURM's clients not on PATH (as before `apt-get install slurm-wlm`; emulated with a PATH
              of links to /usr/bin without the SLURM clients)
    no-conf   clients installed, no slurm.conf (/etc/slurm/slurm.conf absent, SLURM_CONF unset):
              they fail in ~0.1 s. What tests/workflow/test_cluster.py leaves behind.
    dead-ctl  SLURM_CONF names a controller that does not answer (a slurm.conf in /etc/slurm on a
              machine whose slurmctld is stopped): every client call waits ~9 s.

    python bench/slurm_startup.py [--rounds 3]

Needs SLURM's client tools (`apt-get install slurm-client`). The last line is the headline: the
no-conf state's median relative to absent.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLIENTS = {"sinfo", "squeue", "sacct", "scontrol", "sbatch", "scancel", "srun", "salloc", "sacctmgr", "sshare"}


def time_version(env: dict) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "--version"], env=env, check=True, capture_output=True)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    if not shutil.which("sinfo"):
        print("SLURM's client tools are not installed (apt-get install slurm-client)", file=sys.stderr)
        return 2
    base = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        nobin = tmp / "bin"
        nobin.mkdir()
        for d in dict.fromkeys(p for p in base.get("PATH", "").split(os.pathsep) if p):
            if not Path(d).is_dir():
                continue
            for exe in Path(d).iterdir():
                link = nobin / exe.name
                if exe.name not in CLIENTS and not link.exists():
                    link.symlink_to(exe)
        dead = tmp / "slurm.conf"
        dead.write_text("ClusterName=dead\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort=1\n"
                        "NodeName=localhost CPUs=1 State=UNKNOWN\nPartitionName=p Nodes=localhost Default=YES\n")
        states = {"absent": dict(base, PATH=str(nobin)), "no-conf": base,
                  "dead-ctl": dict(base, SLURM_CONF=str(dead))}
        times: dict[str, list[float]] = {s: [] for s in states}
        for r in range(args.rounds):
            for name, env in states.items():
                times[name].append(time_version(env))
            print(f"round {r + 1}: " + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items())
                  + f" (load {os.getloadavg()[0]:.1f})", flush=True)
    med = {n: statistics.median(t) for n, t in times.items()}
    print("medians: " + ", ".join(f"{n} {m:.2f} s" for n, m in med.items())
          + f"; dead-ctl - absent = {med['dead-ctl'] - med['absent']:+.2f} s")
    print(f"snakemake_version_slurm_installed_no_conf: {med['no-conf'] - med['absent']:+.2f} s "
          f"({med['no-conf'] / med['absent']:.2f}x the time without SLURM)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
