"""What config/paper.yaml's workflow costs: GPU-hours, peak memory, checkpoint disk, MLflow volume per rule.

The estimates are ``sslkit.costs.paper_costs``: FLOPs counted analytically from the run configs as
the engine resolves them (ResNet-50 at 96 px, projectors, losses; checked against
torch.utils.flop_counter here), turned into time at an assumed GPU and MFU (``--gpu``, ``--mfu``)
with a host-bound floor per eager step (ATen operators counted on a real step x ``--op-us``).
This script also measures, on this machine's CPU, a short ResNet-50 96 px Barlow Twins step
(bench/train_throughput.py's ``measure``): its FLOP count against the analytic one, and the
achieved CPU FLOP/s.

    PYTHONPATH=. python bench/paper_cost.py                 # everything, ~1 min on 2 cores
    PYTHONPATH=. python bench/paper_cost.py --markdown      # only the README table
    PYTHONPATH=. python bench/paper_cost.py --gpu h100 --mfu 0.25

The job counts per rule come from ``snakemake -n`` on the paper config (CPU rules are bounded by
``sslkit.costs.CPU_RULE_HOURS``). The last line is the headline ``paper_gpu_hours: <value> (GPU-h)``.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from sslkit import costs  # noqa: E402
from sslkit.config import load_config  # noqa: E402


def job_stats(configfile: str) -> dict[str, int]:
    """Jobs per rule of ``snakemake -n --configfile <configfile>`` (empty if Snakemake cannot plan)."""
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [str(exe) if exe.exists() else "snakemake", "-n", "--configfile", configfile,
           "--config", "data_dir=/nonexistent", "-d", "/tmp/paper_cost_dry", "-s", str(REPO / "Snakefile")]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"snakemake -n failed ({exc}); CPU rules left out", file=sys.stderr)
        return {}
    m = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal", r.stdout, re.S)
    if not m:
        print(f"snakemake -n printed no job stats (rc {r.returncode}); CPU rules left out", file=sys.stderr)
        return {}
    return {name: int(n) for name, n in re.findall(r"^(\S+)\s+(\d+)$", m.group(1), re.M)}


def cpu_measurement(batch: int, steps: int) -> dict:
    """One short ResNet-50 96 px Barlow Twins step on the CPU (bench/train_throughput.py) and the
    analytic FLOPs of the same step."""
    import torch
    from train_throughput import measure, run_config

    r = measure("resnet50", 96, False, batch, steps, torch.device("cpu"))
    rc = run_config("resnet50", 96, False, batch)
    enc = costs.resnet_stats("resnet50", 96, 1.0, False)
    pc = rc["method_config"]["projector"]
    pf = costs.mlp_stats(enc.out_dim, pc["hidden"], pc["dim"], pc["batchnorm"], pc["last_bias"])[0]
    r["analytic_flops"] = costs.train_step_flops(enc, pf, "barlow_twins", batch, pc["dim"])
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", default="config/paper.yaml", help="overlay on config/config.yaml")
    ap.add_argument("--gpu", default="a100", choices=sorted(costs.GPUS))
    ap.add_argument("--mfu", type=float, default=None, help="model FLOP utilisation (default: the GPU's, 0.15)")
    ap.add_argument("--op-us", type=float, default=None, help="host microseconds per ATen operator (default 5)")
    ap.add_argument("--cpu-batch", type=int, default=2)
    ap.add_argument("--cpu-steps", type=int, default=1)
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU step measurement")
    ap.add_argument("--markdown", action="store_true", help="print only the README table")
    args = ap.parse_args()

    gpu = costs.GPUS[args.gpu]
    if args.mfu is not None:
        gpu = dataclasses.replace(gpu, mfu=args.mfu)
    if args.op_us is not None:
        gpu = dataclasses.replace(gpu, op_us=args.op_us)
    config = load_config(REPO / args.configfile)
    stats = job_stats(args.configfile)
    rows, inputs = costs.paper_costs(config, gpu, cpu_rule_jobs=costs.cpu_rules(stats))
    if args.markdown:
        print(costs.format_table(rows))
        return
    t = costs.totals(rows)
    print(f"config: {args.configfile} (dataset {config['dataset']}, {inputs['n_train']} training images "
          f"{inputs['image_shape']}); jobs per rule from snakemake -n: {sum(stats.values())} jobs")
    print(f"GPU: {gpu.name}, dense bf16 {gpu.bf16_tflops:g} / TF32 {gpu.tf32_tflops:g} TFLOP/s, MFU {gpu.mfu:g}, "
          f"host {gpu.op_us:g} us per ATen op (ops per training step: {inputs['step_ops']})")
    print(f"model: {inputs['model']['activation_bytes'] / 1e6:.1f} MB of float32 layer outputs per image, largest "
          f"layer {inputs['model']['max_layer_bytes'] / 1e6:.2f} MB; eNTK plan: {inputs['ntk']['ntk_passes']} "
          f"Jacobian passes for N = {2 * config['ntk']['pairs']['n']} in {inputs['ntk']['ntk_groups']} parameter "
          f"groups, estimated peak {inputs['ntk']['ntk_estimated_peak_bytes'] / 1e9:.1f} GB")
    print()
    print(f"{'run':24} {'steps':>7} {'GFLOP/step':>10} {'ms/step':>8} {'eval rows':>9} {'ckpts':>5} "
          f"{'GB ckpt':>7} {'GPU-h':>6}")
    for c in rows[0].detail.values():
        ops = inputs["step_ops"].get(c.name.split("-", 1)[0], 0)
        step_s = gpu.step_seconds(c.step_flops, ops)
        hours = (c.steps * step_s + gpu.seconds(c.total_eval_flops, "tf32")) / 3600
        print(f"{c.name:24} {c.steps:>7} {c.step_flops / 1e9:>10.1f} {1e3 * step_s:>8.1f} {c.eval_rows:>9} "
              f"{c.checkpoints:>5} {c.checkpoints * c.checkpoint_bytes / 1e9:>7.1f} {hours:>6.2f}")
    print()
    print(costs.format_table(rows))
    print()
    print(f"SLURM resources (x{costs.SAFETY:g} + {costs.STARTUP_MIN:g} min, rounded; profiles/slurm/profile.yaml):")
    for r in rows:
        if r.device == "gpu":
            print(f"  {r.rule}: {costs.profile_resources(r)}")
    if not args.no_cpu:
        import torch

        t0 = time.perf_counter()
        m = cpu_measurement(args.cpu_batch, args.cpu_steps)
        print(f"\nCPU (torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}): "
              f"ResNet-50 96 px BT step, batch {m['batch']}: {m['step_s']:.2f} s/step, "
              f"{m['flops_per_step'] / 1e9:.1f} GFLOP counted by torch.utils.flop_counter vs "
              f"{m['analytic_flops'] / 1e9:.1f} analytic (ratio {m['flops_per_step'] / m['analytic_flops']:.4f}), "
              f"{m['tflops_per_s'] * 1e3:.1f} GFLOP/s achieved (wall), "
              f"{m['flops_per_step'] / m['cpu_s_per_step'] / 1e9:.1f} GFLOP per process CPU-second "
              f"({time.perf_counter() - t0:.0f} s)")
        print(f"  at that rate the {t['pflop']:.0f} PFLOP of the workflow would take "
              f"{t['pflop'] * 1e15 / (m['tflops_per_s'] * 1e12) / 3600 / 24 / 365:.0f} CPU-years; "
              f"the probes' CPU part assumes {costs.CPU_GFLOPS:g} GFLOP/s")
    print(f"totals: {t['gpu_hours']:.1f} GPU-h, {t['cpu_hours']:.1f} CPU-h, {t['disk_gb']:.1f} GB disk, "
          f"{t['mlflow_mb']:.0f} MB MLflow")
    print(f"paper_gpu_hours: {t['gpu_hours']:.1f} (GPU-h)")


if __name__ == "__main__":
    main()
