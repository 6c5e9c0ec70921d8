"""What a configured workflow costs: FLOPs, GPU hours, memory, checkpoint disk and MLflow volume.

Pure arithmetic (no torch at import): the README's "What paper scale costs" table is
``bench/paper_cost.py``'s print-out of :func:`workflow_costs` for ``config/paper.yaml``, and
``profiles/slurm/profile.yaml``'s ``runtime``/``mem_mb`` are :func:`profile_resources` of it.

FLOPs (one multiply-add = 2 FLOPs; convolutions and matrix products only, as
``torch.utils.flop_counter`` counts them; batch norm, activations, pooling, augmentation and the
optimiser are left out):

* :func:`resnet_stats`: forward FLOPs ``F`` and parameter count of ``sslkit.training.networks``'
  ResNet encoders (torchvision v1.5 blocks, width multiplier, ImageNet or small stem), layer by layer;
* :func:`mlp_stats`: the projector (``sslkit.training.networks.mlp``);
* :func:`loss_flops`: the matrix products of each loss (Barlow Twins' C, SimCLR's similarities,
  VICReg's covariances), forward;
* :func:`train_step_flops`: ``views x batch x (3 F - F_conv1)`` + 3 x the loss: the backward pass
  computes the gradient w.r.t. the input and the weights of every layer (2 F), except the first
  convolution's input gradient (the images need none);
* :func:`eval_flops`: one no-grad forward of both views of the evaluation batch (+ the loss);
* :func:`ntk_flops`: the scalarised eNTK (``sslkit.theory.ntk``, ``docs/theory.md`` §7):
  ``3 F`` per per-point Jacobian pass times the passes the memory plan makes (``N`` when the
  whole Jacobian fits, more with row panels or parameter groups), plus ``N^2 P (1 + 128 / N)``
  for the blocked symmetric contraction (upper triangle, leaves of 128 rows).

Time = FLOPs / (MFU x peak) of the assumed :class:`GPU` (bf16 autocast for training steps; the
evaluation rows, spectra, probes and the eNTK run in float32, i.e. TF32 convolutions); CPU work
(the probes' logistic regression and k-NN) at a measured CPU FLOP/s.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GPU", "GPUS", "ResNetStats", "resnet_stats", "mlp_stats", "loss_flops", "train_step_flops",
           "eval_flops", "ntk_flops", "checkpoint_bytes", "probe_cpu_flops", "RunCost", "run_cost",
           "RuleCost", "workflow_costs", "model_memory", "count_step_ops", "paper_costs", "cpu_rules",
           "profile_resources", "SAFETY", "CPU_GFLOPS", "CPU_RULE_HOURS", "totals", "format_table"]

# torchvision ResNets: block kind and blocks per stage (sslkit.training.networks._ARCHS)
_ARCHS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
          "resnet50": ("bottleneck", (3, 4, 6, 3))}


@dataclass(frozen=True)
class GPU:
    """An accelerator: dense bf16 and TF32 tensor-core peaks (TFLOP/s), memory (GB), and the model FLOP
    utilisation assumed for it (achieved / peak)."""

    name: str
    bf16_tflops: float
    tf32_tflops: float
    memory_gb: float
    mfu: float = 0.15
    op_us: float = 5.0

    def seconds(self, flops: float, precision: str = "bf16") -> float:
        """Wall seconds of ``flops`` at ``mfu`` x the peak of ``precision`` ("bf16" or "tf32")."""
        peak = self.bf16_tflops if precision == "bf16" else self.tf32_tflops
        return float(flops) / (self.mfu * peak * 1e12)

    def step_seconds(self, flops: float, ops: int = 0) -> float:
        """One eager training step: the GPU's compute time, or the host's time to issue its ``ops`` ATen
        operators at ``op_us`` each when that is longer (kernels run asynchronously to the host)."""
        return max(self.seconds(flops, "bf16"), ops * self.op_us * 1e-6)


#: datasheet dense peaks (no sparsity): A100 SXM 312 / 156, H100 SXM 989 / 494.5, H200 as H100
GPUS = {"a100": GPU("NVIDIA A100-SXM4-80GB", 312.0, 156.0, 80.0),
        "h100": GPU("NVIDIA H100-SXM5-80GB", 989.0, 494.5, 80.0),
        "h200": GPU("NVIDIA H200-SXM-141GB", 989.0, 494.5, 141.0)}


@dataclass(frozen=True)
class ResNetStats:
    """Per-image counts of a ResNet encoder (see :func:`resnet_stats`)."""

    forward_flops: int          # convolutions of one image
    conv1_flops: int            # the first convolution alone (no input gradient in training)
    params: int                 # trainable parameters (conv weights, BN weights and biases)
    buffers: int                # BN running means and variances (floats; + one counter per BN)
    out_dim: int                # hidden dimension h (global-average-pooled last stage)
    n_bn: int                   # batch-norm layers


def _conv(cin: int, cout: int, k: int, hw: tuple[int, int]) -> int:
    return 2 * cin * cout * k * k * hw[0] * hw[1]


def _out(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def resnet_stats(arch: str, image_size: int | tuple[int, int], width: float = 1.0, small_stem: bool = False,
                 in_channels: int = 3) -> ResNetStats:
    """FLOPs and parameters of ``sslkit.training.networks.ResNetEncoder(arch, width, small_stem, in_channels)``
    on one ``image_size`` image, counted layer by layer (stem conv, [max-pool], four stages of
    torchvision basic/bottleneck blocks with the stride on the 3x3 convolution and a 1x1 projection
    shortcut where the shape changes; no classifier)."""
    if arch not in _ARCHS:
        raise ValueError(f"unknown encoder arch {arch!r}; expected one of {sorted(_ARCHS)}")
    kind, layers = _ARCHS[arch]
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    widths = [max(1, int(round(c * width))) for c in (64, 128, 256, 512)]
    flops = params = buffers = n_bn = 0

    def conv(cin, cout, k, stride, pad, hw):
        nonlocal flops, params
        out = (_out(hw[0], k, stride, pad), _out(hw[1], k, stride, pad))
        flops += _conv(cin, cout, k, out)
        params += cin * cout * k * k
        return out

    def bn(c):
        nonlocal params, buffers, n_bn
        params += 2 * c
        buffers += 2 * c
        n_bn += 1

    if small_stem:
        hw = conv(in_channels, widths[0], 3, 1, 1, (h, w))
    else:
        hw = conv(in_channels, widths[0], 7, 2, 3, (h, w))
    conv1 = flops
    bn(widths[0])
    if not small_stem:
        hw = (_out(hw[0], 3, 2, 1), _out(hw[1], 3, 2, 1))
    expansion = 1 if kind == "basic" else 4
    inplanes = widths[0]
    for stage, (planes, blocks) in enumerate(zip(widths, layers, strict=True)):
        for b in range(blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            if kind == "basic":
                out = conv(inplanes, planes, 3, stride, 1, hw)
                bn(planes)
                conv(planes, planes, 3, 1, 1, out)
                bn(planes)
            else:
                conv(inplanes, planes, 1, 1, 0, hw)
                bn(planes)
                out = conv(planes, planes, 3, stride, 1, hw)
                bn(planes)
                conv(planes, planes * expansion, 1, 1, 0, out)
                bn(planes * expansion)
            if stride != 1 or inplanes != planes * expansion:
                conv(inplanes, planes * expansion, 1, stride, 0, hw)
                bn(planes * expansion)
            inplanes, hw = planes * expansion, out
    return ResNetStats(forward_flops=flops, conv1_flops=conv1, params=params, buffers=buffers,
                       out_dim=widths[3] * expansion, n_bn=n_bn)


def mlp_stats(in_dim: int, hidden: Sequence[int], out_dim: int, batchnorm: bool = True,
              last_bias: bool = True) -> tuple[int, int, int]:
    """(forward FLOPs per sample, parameters, BN buffer floats) of ``sslkit.training.networks.mlp``."""
    flops = params = buffers = 0
    prev = int(in_dim)
    for wd in hidden:
        flops += 2 * prev * wd
        params += prev * wd + (0 if batchnorm else wd) + (2 * wd if batchnorm else 0)
        buffers += 2 * wd if batchnorm else 0
        prev = int(wd)
    flops += 2 * prev * out_dim
    params += prev * out_dim + (out_dim if last_bias else 0)
    return flops, params, buffers


def loss_flops(method: str, batch: int, d: int) -> int:
    """Forward FLOPs of the matrix products of a method's loss on two views of ``batch`` embeddings of
    dimension ``d`` (its backward costs twice this). Barlow Twins: C = Z1^T Z2 (2 B d^2); SimCLR:
    the 2B x 2B cosine similarities (2 (2B)^2 d); VICReg: one covariance per view (2 x 2 B d^2)."""
    if method == "barlow_twins":
        return 2 * batch * d * d
    if method == "simclr":
        return 2 * (2 * batch) ** 2 * d
    if method == "vicreg":
        return 2 * 2 * batch * d * d
    raise ValueError(f"no loss FLOP model for method {method!r} (barlow_twins, simclr, vicreg)")


def train_step_flops(enc: ResNetStats, proj_flops: int, method: str, batch: int, d: int, views: int = 2) -> int:
    """FLOPs of one training step: ``views x batch x (3 (F_enc + F_proj) - F_conv1)`` + 3 x the loss."""
    per_image = 3 * (enc.forward_flops + proj_flops) - enc.conv1_flops
    return views * batch * per_image + 3 * loss_flops(method, batch, d)


def eval_flops(enc: ResNetStats, proj_flops: int, method: str, batch: int, d: int) -> int:
    """FLOPs of one history row: a no-grad forward of both views of the evaluation batch and the loss."""
    return 2 * batch * (enc.forward_flops + proj_flops) + loss_flops(method, batch, d)


def ntk_flops(n_points: int, forward_flops: int, n_params: int, jacobian_passes: int | None = None) -> dict:
    """FLOPs of the scalarised eNTK of ``n_points`` points (``sslkit.theory.ntk.empirical_ntk``).

    ``bound``: 3 N F + N^2 P, every Jacobian row once and the symmetric product's N (N+1)/2 dot
    products; ``planned``: 3 F x ``jacobian_passes`` (the memory plan's per-point passes, default N)
    + N^2 P (1 + 128 / N) (the recursive-halving contraction with leaves of 128 rows).
    """
    n, f, p = int(n_points), int(forward_flops), int(n_params)
    passes = n if jacobian_passes is None else int(jacobian_passes)
    return {"jacobian": 3 * f * passes, "contraction": n * n * p * (1 + min(128, n) / n),
            "bound": 3 * n * f + n * n * p, "planned": 3 * f * passes + n * n * p * (1 + min(128, n) / n)}


def checkpoint_bytes(params: int, buffers: int, n_bn: int = 0) -> int:
    """Bytes of one training checkpoint: float32 weights, BN running statistics (+ an int64 counter
    per BN layer) and the optimiser's float32 momentum per parameter (SGD and LARS alike)."""
    return 4 * params + 4 * buffers + 8 * n_bn + 4 * params


def probe_cpu_flops(n_train: int, n_test: int, h: int, classes: int, max_iter: int) -> int:
    """CPU FLOPs of one checkpoint's probes (``sslkit.analysis.probes``), an upper bound: ``max_iter``
    lbfgs iterations of the multinomial logistic regression (logits and gradient: 2 products of
    N x h by h x classes) + the cosine k-NN's test x train similarities."""
    return max_iter * 2 * (2 * n_train * h * classes) + 2 * n_test * n_train * h


# ---------------------------------------------------------------------------------------------
# runs and rules of a configured workflow
# ---------------------------------------------------------------------------------------------

@dataclass
class RunCost:
    """Cost of one training run (:func:`run_cost`)."""

    name: str
    steps: int
    batch: int
    step_flops: int
    eval_rows: int
    eval_flops: int
    checkpoints: int
    checkpoint_bytes: int
    params: int
    forward_flops: int           # encoder + projector, one image
    mlflow_values: int           # metric values logged (rows x tracked columns)
    history_bytes: int
    d: int = 0                   # embedding dimension
    hidden: int = 0              # hidden dimension h

    @property
    def train_flops(self) -> int:
        return self.steps * self.step_flops

    @property
    def total_eval_flops(self) -> int:
        return self.eval_rows * self.eval_flops


def run_cost(rc: Mapping[str, Any]) -> RunCost:
    """FLOPs, checkpoints and logged rows of a resolved run config
    (``sslkit.training.engine.resolve_run_config``): checkpoint and history-row schedules from
    ``sslkit.training.engine.checkpoint_steps`` / ``eval_steps``, as the engine plans them."""
    from sslkit.training.engine import _TRACKED, checkpoint_steps, eval_steps

    enc_cfg = rc["encoder"]
    enc = resnet_stats(enc_cfg["arch"], int(rc["image_size"]), float(enc_cfg["width"]),
                       bool(enc_cfg["small_stem"]), int(rc["data"]["channels"]))
    pc = rc["method_config"]["projector"]
    pf, pp, pb = mlp_stats(enc.out_dim, pc["hidden"], int(pc["dim"]), bool(pc["batchnorm"]), bool(pc["last_bias"]))
    d, total = int(pc["dim"]), int(rc["steps"])
    ck, ev = rc["checkpoints"], rc["eval"]
    ckpts = checkpoint_steps(total, int(ck["log_points"]), ck.get("every"))
    rows = eval_steps(total, ev.get("every"), int(ev["log_points"]), ckpts)
    tracked = len(_TRACKED) + 2 * min(int(ev.get("mlflow_top", 32)), d)
    n_bn_proj = len(pc["hidden"]) if pc["batchnorm"] else 0
    return RunCost(
        name=f"{rc['method']}-{rc['init']}", steps=total, batch=int(rc["batch_size"]),
        step_flops=train_step_flops(enc, pf, rc["method"], int(rc["batch_size"]), d),
        eval_rows=len(rows), eval_flops=eval_flops(enc, pf, rc["method"], int(ev["batch_size"]), d),
        checkpoints=len(ckpts), checkpoint_bytes=checkpoint_bytes(enc.params + pp, enc.buffers + pb,
                                                                  enc.n_bn + n_bn_proj),
        params=enc.params + pp, forward_flops=enc.forward_flops + pf,
        mlflow_values=len(rows) * tracked,
        # history.csv: step and the tracked columns (12) and 2d eigenvalues, ~22 characters a value
        history_bytes=len(rows) * (1 + len(_TRACKED) + 2 * d) * 22, d=d, hidden=enc.out_dim)


#: the safety factor of profiles/slurm/profile.yaml over the estimates (runtime and memory), and the
#: fixed minutes added to every GPU job (start-up: data to the device, torch.compile, CUDA context)
SAFETY = 2.0
STARTUP_MIN = 15.0


@dataclass
class RuleCost:
    """One rule of the DAG: its jobs and what the most expensive one needs."""

    rule: str
    jobs: int
    device: str                  # "gpu" or "cpu"
    flops: float                 # all jobs
    hours: float                 # all jobs (GPU-h on GPU rules, CPU-h on CPU rules)
    job_hours: float             # the slowest job
    gpu_mem_gb: float            # peak GPU memory of one job (0 for CPU rules)
    host_mem_gb: float           # peak host memory of one job
    disk_gb: float               # what its outputs keep on disk (checkpoints, tables)
    mlflow_values: int           # metric values logged to MLflow
    mlflow_artifacts_mb: float
    note: str = ""
    detail: dict = field(default_factory=dict)


def workflow_costs(config: Mapping[str, Any], gpu: GPU, *, n_train: int, image_shape: tuple[int, int, int],
                   n_probe_train: int, n_probe_test: int, classes: int, cpu_gflops: float,
                   activation_bytes: int, max_layer_bytes: int, ntk_passes: int | None = None,
                   step_ops: Mapping[str, int] | None = None, process_gb: float = 6.0) -> list[RuleCost]:
    """Per-rule costs of the SSL stages of a validated config (train, analyze, probe, ntk_alignment)
    and the CPU rules.

    ``n_train``/``image_shape``: training images and their H x W x C; ``n_probe_*``: labelled images of
    the probes (after the config's caps); ``activation_bytes``: float32 bytes of all layer outputs of
    one image's forward (``sslkit.theory.ntk.activation_bytes_per_sample`` of the run's model), kept
    for the backward pass (an upper bound under bf16 autocast); ``max_layer_bytes``: the largest single
    layer output (no-grad evaluation keeps ~3 alive: input, output, a temporary); ``ntk_passes``:
    per-point Jacobian passes of the eNTK's memory plan (``sslkit.theory.ntk.plan_ntk``);
    ``step_ops``: ATen operators of one training step per method (:func:`count_step_ops`; sets the
    host-bound floor of :meth:`GPU.step_seconds`); ``process_gb``: host memory of a torch/CUDA
    process before data (CUDA context, libraries, torch.compile workers).
    """
    from sslkit.training.engine import resolve_run_config

    h_img, w_img, c_img = image_shape
    image_bytes = h_img * w_img * c_img
    stats = {"n_train": n_train, "height": h_img, "width": w_img, "channels": c_img,
             "mean": [0.5] * c_img, "std": [0.25] * c_img}
    tc = config["train"]
    runs = [(m, i) for m in tc["methods"] for i in tc["inits"]]
    ntk_init = config["ntk"]["init"]
    ntk_runs = [(m, ntk_init) for m in config["ntk"]["methods"] if (m, ntk_init) not in runs]
    GB = 1e9
    rows: list[RuleCost] = []

    # ---- train: every configured run and the App. E runs Tables 1-2 use
    costs = [run_cost(resolve_run_config(config, m, i, stats)) for m, i in runs + ntk_runs]
    rc0 = resolve_run_config(config, *runs[0], stats)
    size = int(rc0["image_size"])
    view_bytes = 3 * size * size * 4
    job_h, gpu_mem, flops, mlflow, art = [], [], 0.0, 0, 0.0
    for c in costs:
        ops = (step_ops or {}).get(c.name.split("-", 1)[0], 0)
        secs = c.steps * gpu.step_seconds(c.step_flops, ops) + gpu.seconds(c.total_eval_flops, "tf32")
        job_h.append(secs / 3600)
        flops += c.train_flops + c.total_eval_flops
        mlflow += c.mlflow_values
        art += c.history_bytes / 1e6
        eval_batch = int(tc["eval"]["batch_size"])
        gpu_mem.append((n_train * image_bytes                 # the training images, uint8
                        + 2 * eval_batch * view_bytes         # the fixed evaluation views, float32
                        + 14 * c.params                       # weights, grads, momentum (fp32), bf16 copies
                        + 2 * c.batch * activation_bytes      # both views' activations for the backward
                        + 3 * eval_batch * max_layer_bytes) / GB)  # the float32 evaluation forward
    rows.append(RuleCost(
        "train", len(costs), "gpu", flops, sum(job_h), max(job_h), max(gpu_mem),
        process_gb + 2 * n_train * image_bytes / GB,          # the images, concatenated and copied
        sum(c.checkpoints * c.checkpoint_bytes + c.history_bytes for c in costs) / GB,
        mlflow, art, note="bf16 steps + float32 evaluation rows",
        detail={c.name: c for c in costs}))

    # ---- analyze: spectra of every checkpoint on n pairs (BN re-estimation, embed, hidden: 3 forwards)
    acfg = config["analysis"]
    every = int(acfg["checkpoint_every"])
    configured = [c for c in costs if tuple(c.name.split("-", 1)) in runs]
    n_pairs = int(acfg["pairs"]["n"])
    a_h, a_flops, a_art = [], 0.0, 0.0
    for c in configured:
        n_ck = math.ceil(c.checkpoints / every)
        f = n_ck * 3 * 2 * n_pairs * c.forward_flops
        # spectra parquet: (2 d + h) eigenvalues per checkpoint, ~5 columns of 8 bytes
        a_art += n_ck * (2 * c.d + c.hidden) * 40 / 1e6
        a_flops += f
        a_h.append(gpu.seconds(f, "tf32") / 3600)
    pairs_gb = 2 * n_pairs * view_bytes / GB
    batch = int(acfg["batch_size"])
    rows.append(RuleCost(
        "analyze", len(configured), "gpu", a_flops, sum(a_h), max(a_h),
        pairs_gb + (16 * costs[0].params + 3 * batch * max_layer_bytes) / GB,
        process_gb + 2 * pairs_gb, a_art / 1e3, 4 * sum(math.ceil(c.checkpoints / every) for c in configured),
        a_art, note="float32 forwards: BN re-estimation, embeddings, hidden"))

    # ---- probe: BN re-estimation + features of train and test per checkpoint; CPU logistic regression
    pcfg = acfg["probe"]
    p_h, p_flops, p_cpu_h = [], 0.0, 0.0
    h_dim = resnet_stats(rc0["encoder"]["arch"], size, float(rc0["encoder"]["width"]),
                         bool(rc0["encoder"]["small_stem"]), c_img).out_dim
    for c in configured:
        n_ck = math.ceil(c.checkpoints / every)
        f = n_ck * (2 * n_probe_train + n_probe_test) * c.forward_flops
        cpu = n_ck * probe_cpu_flops(n_probe_train, n_probe_test, h_dim, classes, int(pcfg["max_iter"]))
        p_flops += f + cpu
        cpu_h = cpu / (cpu_gflops * 1e9) / 3600
        p_cpu_h += cpu_h
        p_h.append(gpu.seconds(f, "tf32") / 3600 + cpu_h)
    feat_gb = (n_probe_train + n_probe_test) * h_dim * 8 / GB
    rows.append(RuleCost(
        "probe", len(configured), "gpu", p_flops, sum(p_h), max(p_h),
        (16 * costs[0].params + 3 * batch * max_layer_bytes) / GB,
        process_gb + 3 * feat_gb + (n_probe_train + n_probe_test) * image_bytes / GB, 0.0,
        0, 0.0, note=f"incl. {p_cpu_h:.2f} CPU-h of logistic regression/k-NN at {cpu_gflops:.0f} GFLOP/s"))

    # ---- ntk_alignment: the eNTK of 2n points + f_exp
    ncfg = config["ntk"]
    n_pts = 2 * int(ncfg["pairs"]["n"])
    ntk_costs = [c for c in costs if c.name.endswith(f"-{ntk_init}") and c.name.split("-", 1)[0] in ncfg["methods"]]
    k = ntk_flops(n_pts, ntk_costs[0].forward_flops, ntk_costs[0].params, ntk_passes)
    per = k["planned"] + n_pts * ntk_costs[0].forward_flops
    n_h = gpu.seconds(per + (NTK_JACOBIAN_SLOWDOWN - 1) * k["jacobian"], "tf32") / 3600
    rows.append(RuleCost(
        "ntk_alignment", len(ntk_costs), "gpu", per * len(ntk_costs), n_h * len(ntk_costs), n_h,
        float(ncfg["memory_budget_mb"]) / 1e3 + 16 * ntk_costs[0].params / GB,
        process_gb + 3 * n_pts * n_pts * 8 / GB, n_pts * n_pts * 8 * len(ntk_costs) / GB, 0, 0.0,
        note=f"eNTK bound 3NF + N^2 P = {k['bound'] / 1e12:.0f} TFLOP, planned {k['planned'] / 1e12:.0f} TFLOP "
             f"(N = {n_pts})", detail=k))
    return rows


#: CPU GFLOP/s assumed for the probes' logistic regression and k-NN on a GPU job's 8 CPUs (BLAS-bound
#: float64 products); an assumption, not measured: the development machine's 2 cores, shared at load
#: ~20, reached 0.9 GFLOP/s wall on a ResNet-50 step (bench/paper_cost.py prints its measurement)
CPU_GFLOPS = 20.0
#: bound on each CPU rule of the paper DAG (data, linear model, MLP, figures, tables): the CIFAR-10
#: workflow (79 jobs, the same m = 1200 linear model and 50-image MLP) took 30 min in all on 2 cores
CPU_RULE_HOURS = 0.5


def model_memory(rc: Mapping[str, Any], n_ntk_points: int | None = None, ntk_budget_mb: float | None = None) -> dict:
    """Quantities of a run's real model (built on the CPU, one forward of one image): float32 bytes of all
    layer outputs (``sslkit.theory.ntk.activation_bytes_per_sample``), the largest single layer output,
    and -- with ``n_ntk_points``/``ntk_budget_mb`` -- the per-point Jacobian passes of the eNTK's
    memory plan (``sslkit.theory.ntk.plan_ntk``)."""
    import torch

    from sslkit.theory.ntk import activation_bytes_per_sample, plan_ntk
    from sslkit.training.networks import build_model

    torch.manual_seed(0)
    model = build_model(dict(rc)).eval()
    size = int(rc["image_size"])
    x = torch.zeros(1, int(rc["data"]["channels"]), size, size)
    largest = 0

    def hook(_m, _i, out):
        nonlocal largest
        if isinstance(out, torch.Tensor):
            largest = max(largest, out.numel() * out.element_size())

    hs = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hs:
            h.remove()
    out = {"activation_bytes": activation_bytes_per_sample(model, x), "max_layer_bytes": largest}
    if n_ntk_points is not None:
        plan = plan_ntk(model, x, int(ntk_budget_mb * 2**20), int(n_ntk_points))
        out.update(ntk_passes=plan.jacobian_passes, ntk_groups=len(plan.groups), ntk_chunk=plan.chunk_size,
                   ntk_estimated_peak_bytes=plan.estimated_peak_bytes)
    return out


def count_step_ops(rc: Mapping[str, Any], image_size: int = 32, batch: int = 4) -> int:
    """ATen operators dispatched by one eager training step of a run config on the CPU (augmentation of
    both views, forward, loss, backward, optimiser; the project's own pieces), counted with a
    ``TorchDispatchMode``. The augmentation is batched, so the count does not depend on the batch or
    (``image_size``) on the image side: a small step stands for the paper's."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from sslkit.training.augment import build_augment
    from sslkit.training.methods import make_method
    from sslkit.training.networks import build_model
    from sslkit.training.optim import build_optimizer

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += 1
            return func(*args, **(kwargs or {}))

    rc = {**rc, "image_size": int(image_size)}
    torch.manual_seed(0)
    model = build_model(rc)
    method = make_method(model, rc)
    opt = build_optimizer(model.online_parameters(), rc["optimizer"])
    aug = build_augment(rc, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (batch, image_size, image_size, int(rc["data"]["channels"])), dtype=torch.uint8)

    def step():
        v1, v2 = aug(data, gen, 0), aug(data, gen, 1)
        loss, _, _ = method.loss(v1, v2, 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # optimiser state created
    counter = Count()
    with counter:
        step()
    return counter.n


def paper_costs(config: Mapping[str, Any], gpu: GPU, *, cpu_gflops: float = CPU_GFLOPS,
                cpu_rule_jobs: Mapping[str, int] | None = None) -> tuple[list[RuleCost], dict]:
    """:func:`workflow_costs` of a validated config on its dataset's published split sizes
    (``sslkit.data.EXPECTED_COUNTS``), with the model quantities of :func:`model_memory`; plus one
    row per CPU rule in ``cpu_rule_jobs`` (rule -> jobs) at ``CPU_RULE_HOURS``. Returns (rows, inputs)."""
    from sslkit.data import EXPECTED_COUNTS
    from sslkit.training.engine import resolve_run_config

    ds = config["dataset"]
    if ds not in EXPECTED_COUNTS:
        raise ValueError(f"dataset {ds!r}: no published split sizes to cost (have {sorted(EXPECTED_COUNTS)})")
    counts = EXPECTED_COUNTS[ds]
    tc = config["train"]
    n_train = sum(counts[s][0] for s in tc["splits"])
    side = int(tc["image_size"] or (96 if ds == "stl10" else 32))
    shape = (side, side, 3)
    stats = {"n_train": n_train, "height": side, "width": side, "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3}
    pcfg = config["analysis"]["probe"]
    n_ptr = min(counts["train"][0], pcfg["max_train"] or counts["train"][0])
    n_pte = min(counts["test"][0], pcfg["max_test"] or counts["test"][0])
    ncfg = config["ntk"]
    m0, i0 = tc["methods"][0], tc["inits"][0]
    mem = model_memory(resolve_run_config(config, m0, i0, stats))
    ntk = model_memory(resolve_run_config(config, ncfg["methods"][0], ncfg["init"], stats),
                       2 * int(ncfg["pairs"]["n"]), float(ncfg["memory_budget_mb"]))
    ops = {m: count_step_ops(resolve_run_config(config, m, i0, stats)) for m in tc["methods"]}
    rows = workflow_costs(config, gpu, n_train=n_train, image_shape=shape, n_probe_train=n_ptr,
                          n_probe_test=n_pte, classes=10, cpu_gflops=cpu_gflops,
                          activation_bytes=mem["activation_bytes"], max_layer_bytes=mem["max_layer_bytes"],
                          ntk_passes=ntk["ntk_passes"], step_ops=ops)
    for rule, jobs in (cpu_rule_jobs or {}).items():
        rows.append(RuleCost(rule, int(jobs), "cpu", float("nan"), jobs * CPU_RULE_HOURS, CPU_RULE_HOURS, 0.0,
                             0.0, 0.0, 0, 0.0, note="bound, not FLOP-modelled"))
    inputs = {"n_train": n_train, "image_shape": shape, "n_probe_train": n_ptr, "n_probe_test": n_pte,
              "model": mem, "ntk": ntk, "step_ops": ops}
    return rows, inputs


def cpu_rules(job_stats: Mapping[str, int]) -> dict[str, int]:
    """The rules of a ``snakemake -n`` job count that :func:`workflow_costs` does not model (all but
    train, analyze, probe, ntk_alignment and the target rule ``all``)."""
    modelled = {"train", "analyze", "probe", "ntk_alignment", "all"}
    return {r: n for r, n in job_stats.items() if r not in modelled}


#: per-point Jacobians (vmap(jacrev)) run this many times slower than their 3 F FLOPs at the MFU of a
#: batched step: they are memory-bound (bench/ntk.py, ResNet-18 on the CPU: 37x the FLOP bound)
NTK_JACOBIAN_SLOWDOWN = 37.0
#: bytes of one MLflow metric value in its backend store (a row of the metrics table + its index)
MLFLOW_VALUE_BYTES = 150
#: the shortest runtime (minutes) the SLURM profile gives a GPU job
MIN_RUNTIME = 60


def profile_resources(row: RuleCost, safety: float = SAFETY, startup_min: float = STARTUP_MIN) -> dict:
    """SLURM ``runtime`` (minutes) and ``mem_mb`` for a rule: ``safety`` x (the slowest job's hours
    and the peak host memory), plus ``startup_min`` minutes; runtime rounded up to 30 min, memory to 4 GB."""
    runtime = max(math.ceil((safety * row.job_hours * 60 + startup_min) / 30) * 30, MIN_RUNTIME)
    mem_mb = math.ceil(safety * row.host_mem_gb * 1000 / 4000) * 4000
    return {"runtime": int(runtime), "mem_mb": int(mem_mb)}


def totals(rows: Sequence[RuleCost]) -> dict:
    """GPU-hours, CPU-hours (CPU rules, and the CPU part of GPU rules is inside their GPU-hours),
    disk (GB) and MLflow volume (MB) of all rows."""
    return {"gpu_hours": sum(r.hours for r in rows if r.device == "gpu"),
            "cpu_hours": sum(r.hours for r in rows if r.device == "cpu"),
            "disk_gb": sum(r.disk_gb for r in rows),
            "mlflow_mb": sum(r.mlflow_values * MLFLOW_VALUE_BYTES / 1e6 + r.mlflow_artifacts_mb for r in rows),
            "pflop": sum(r.flops for r in rows if not math.isnan(r.flops)) / 1e15}


def format_table(rows: Sequence[RuleCost]) -> str:
    """Markdown table of :func:`workflow_costs` rows, with a total line."""
    head = ("| rule | jobs | device | PFLOP | hours (all jobs) | slowest job (h) | peak GPU mem (GB) | "
            "host mem (GB) | disk (GB) | MLflow metric values | MLflow (MB) | note |")
    out = [head, "|" + "---|" * 12]

    def num(v: float, fmt: str) -> str:
        return "-" if math.isnan(v) or v == 0 else format(v, fmt)

    for r in rows:
        unit = "GPU-h" if r.device == "gpu" else "CPU-h"
        mb = r.mlflow_values * MLFLOW_VALUE_BYTES / 1e6 + r.mlflow_artifacts_mb
        out.append(f"| `{r.rule}` | {r.jobs} | {r.device} | {num(r.flops / 1e15, '.1f')} | {r.hours:.1f} {unit} | "
                   f"{r.job_hours:.2f} | {num(r.gpu_mem_gb, '.1f')} | {num(r.host_mem_gb, '.1f')} | "
                   f"{num(r.disk_gb, '.1f')} | {r.mlflow_values:,} | {num(mb, '.0f')} | {r.note} |")
    t = totals(rows)
    out.append(f"| **total** | {sum(r.jobs for r in rows)} | | {t['pflop']:.0f} | {t['gpu_hours']:.1f} GPU-h + "
               f"{t['cpu_hours']:.1f} CPU-h | | | | {t['disk_gb']:.1f} | "
               f"{sum(r.mlflow_values for r in rows):,} | {t['mlflow_mb']:.0f} | |")
    return "\n".join(out)
