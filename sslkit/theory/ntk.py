"""Scalarised empirical NTK of any torch module, block by block (paper App. D.5; ``docs/theory.md`` §7).

For a network with d outputs f_1..f_d, the scalarised eNTK is

    K(x, x') = d * < grad_theta g(x), grad_theta g(x') >,     g = (1/d) sum_k f_k,

(the factor d recovers the per-output NTK in the infinite-width limit). For f(x) = W x without
bias, grad_W g = (1/d) 1 x^T and K(x, x') = d * (1/d^2) * d * x^T x' = x^T x' exactly; a bias b
adds d * (1/d^2) * d = 1.

Computation (``empirical_ntk``): per-point Jacobians (one row of P_g entries per point and
parameter group) are computed with ``torch.func`` (``functional_call`` + ``vmap`` + ``jacrev``),
``chunk_size`` points per call, or (``jacobian="loop"``, chosen by ``jacobian="auto"`` on a CPU for
networks of >= ``LOOP_MIN_FLOPS`` forward FLOPs per point) one batch-1 autograd backward per point, or
(``jacobian="batched"``, chosen by ``auto`` on a CPU below ``BATCHED_MAX_FLOPS`` for the layers it
supports) one batched forward + backward per chunk with the per-sample weight gradients formed layer
by layer (``sslkit.theory.per_sample``), and written into one float32 matrix J_g. K = d sum_g J_g J_g^T is
contracted in float32 GEMMs of at most 256 rows x 4096 parameter columns, summed in float64; the
symmetric product J J^T is cut by recursive halving so that only the upper triangle is computed
(n^2 P (1 + 128 / n) FLOPs in large GEMMs) and mirrored at the end.

The plan (``plan_ntk``, from a memory budget) keeps the whole N x P Jacobian when it fits, so every
Jacobian row is computed exactly once. Otherwise the parameters are split into groups of whole
tensors whose N x P_g Jacobians fit (one forward + backward per group and point; a deep group's
backward is short), or the points are cut into row panels: a panel's Jacobians are held while
the column chunks after it stream past (recomputed for every panel before them, about
N^2 / (2 R) extra rows; the column loop runs backwards so that its last chunk, the next panel's
first points, is reused). The cost model counts per-point passes in FLOPs (``pass_flops``) plus a
fixed cost per ``vmap`` call. Explicit ``chunk_size`` / ``row_chunk_size`` give the one-group plan
with those sizes (``plan_chunks`` sizes them for a budget).

The network is evaluated in eval mode (BatchNorm uses its running statistics, dropout is off);
the module itself is not modified (its parameters are passed functionally, its training flags are
restored).
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

__all__ = ["NTKResult", "empirical_ntk", "n_parameters", "activation_bytes_per_sample",
           "estimate_peak_bytes", "plan_chunks", "chunk_size_for_budget", "PeakMemory", "NTKPlan", "plan_ntk",
           "estimate_plan_bytes", "contraction_temp_bytes"]


@dataclass
class NTKResult:
    """Kernel matrix and run statistics.

    Attributes:
        K: float64 kernel, N x N (or N x N2 for a cross kernel).
        stats: ``time_s`` (total), ``jacobian_time_s``, ``contraction_time_s``, ``n_points``,
            ``n_points2``, ``n_params`` (P), ``d`` (outputs), ``chunk_size``, ``n_chunks``,
            ``jacobian_chunks`` and ``jacobian_samples`` (computed, with recomputation),
            ``jacobian_chunk_bytes`` (one chunk's Jacobian, c * P * 4), ``estimated_peak_bytes``,
            ``peak_bytes`` (measured increase over the start: CUDA allocator peak, or the process
            resident-set high-water mark on Linux CPUs; None where unavailable), ``device``.
    """

    K: np.ndarray
    stats: dict = field(default_factory=dict)


def n_parameters(model: nn.Module) -> int:
    """Number of trainable parameters P (those the eNTK differentiates)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, f in flags.items():
            m.training = f


def _state(model: nn.Module, device: torch.device, dtype: torch.dtype):
    def conv(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().to(device)
        return t.to(dtype) if t.is_floating_point() else t

    params = {k: conv(v) for k, v in model.named_parameters() if v.requires_grad}
    frozen = {k: conv(v) for k, v in model.named_parameters() if not v.requires_grad}
    buffers = {k: conv(v) for k, v in model.named_buffers()}
    if not params:
        raise ValueError("the model has no trainable parameters (requires_grad=False everywhere)")
    return params, frozen, buffers


def _as_tensor(x, device: torch.device, dtype: torch.dtype, name: str) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(f"{name} must hold at least one point along its first dimension, got shape {tuple(x.shape)}")
    return x.to(device=device, dtype=dtype)


class PeakMemory:
    """Measure the peak memory increase of a block of code on ``device``.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensor memory). CPU on Linux: the process
    resident-set high-water mark ``VmHWM`` (reset through ``/proc/self/clear_refs``), which counts
    everything the process touches (tensors, BLAS/oneDNN workspaces, Python objects), minus the
    resident size at the start. ``peak_bytes`` is None where neither is available.
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.peak_bytes: int | None = None

    @staticmethod
    def _status(key: str) -> int | None:
        try:
            with open("/proc/self/status") as fh:
                m = re.search(rf"^{key}:\s+(\d+)\s+kB", fh.read(), re.M)
            return int(m.group(1)) * 1024 if m else None
        except OSError:
            return None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._start = None
            if sys.platform.startswith("linux"):
                try:
                    with open("/proc/self/clear_refs", "w") as fh:
                        fh.write("5")  # reset the peak RSS (VmHWM) to the current RSS
                    self._start = self._status("VmRSS")
                except OSError:
                    self._start = None
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device) - self._start)
        elif self._start is not None:
            hwm = self._status("VmHWM")
            self.peak_bytes = None if hwm is None else max(hwm - self._start, 0)


def activation_bytes_per_sample(model: nn.Module, example: torch.Tensor) -> int:
    """Bytes of all module outputs for one sample (forward hooks, eval mode, no grad)."""
    total = 0

    def hook(_m, _i, out):
        nonlocal total
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    _forward_once(model, example, [m.register_forward_hook(hook) for m in leaves])
    return total


def _forward_once(model: nn.Module, example: torch.Tensor, hooks: list) -> None:
    """One no-grad, eval-mode forward pass of the first example point, then remove ``hooks``."""
    try:
        with torch.no_grad(), _eval_mode(model):
            p = next(model.parameters())
            model(example[:1].to(device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()


# leaf modules whose FLOPs pass_flops counts by formula (convolutions and matrix products; the others do none
# that torch.utils.flop_counter counts)
_FORMULA_LEAVES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm,
                   nn.GroupNorm, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Tanh, nn.Sigmoid,
                   nn.Softplus, nn.Hardswish, nn.Identity, nn.Flatten, nn.Unflatten, nn.Dropout,
                   nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
                   nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _formula_flops(m: nn.Module, out: torch.Tensor) -> int:
    """FLOPs of one call of a ``_FORMULA_LEAVES`` module, as torch.utils.flop_counter counts them."""
    if isinstance(m, nn.modules.conv._ConvNd):
        k = int(np.prod(m.kernel_size))
        return 2 * out.numel() * (m.in_channels // m.groups) * k
    if isinstance(m, nn.Linear):
        return 2 * out.numel() * m.in_features
    return 0


# torch functions that do the FLOPs torch.utils.flop_counter counts (products and convolutions)
_PRODUCT_FUNCTIONS = frozenset({
    "matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "einsum", "linear", "bilinear", "conv1d", "conv2d",
    "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "convolution", "addmm", "addbmm",
    "baddbmm", "addmv", "mv", "dot", "vdot", "tensordot", "inner", "outer", "ger", "chain_matmul", "multi_dot",
    "scaled_dot_product_attention"})


class _ProductsOutsideLeaves(torch.overrides.TorchFunctionMode):
    """Records the first product or convolution a model does outside its leaf modules' forwards (e.g.
    ``q @ k.T`` in a parent's forward): FLOPs that counting leaves by formula would miss."""

    def __init__(self):
        super().__init__()
        self.depth, self.found = 0, None

    def enter(self, *_):
        self.depth += 1

    def leave(self, *_):
        self.depth -= 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.depth == 0 and self.found is None and getattr(func, "__name__", "") in _PRODUCT_FUNCTIONS:
            self.found = func.__name__
        return func(*args, **(kwargs or {}))


def pass_flops(model: nn.Module, example: torch.Tensor) -> tuple[int, dict[str, int]]:
    """Forward FLOPs F of one point and, per trainable parameter, the backward FLOPs of a Jacobian pass
    that differentiates only the group starting there (``plan_ntk``'s cost model).

    Leaf modules are timed in FLOPs (``torch.utils.flop_counter``) in their forward call order. A pass
    for a parameter group costs F (forward) + the FLOPs of every leaf from the group's first one on
    (gradients w.r.t. activations) + the FLOPs of the group's own leaves (weight gradients): 3 F for
    all parameters, less for groups deep in the network. Returns (F, {name: position-independent
    backward FLOPs from that parameter's leaf on}) as (F, {name: (from_here, own)}).
    """
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    order: list[tuple[str, int]] = []
    outside = None
    if all(isinstance(m, _FORMULA_LEAVES) for _, m in leaves):
        # FLOPs by formula (what torch.utils.flop_counter counts for these modules: 2 per multiply-add
        # of a convolution or matrix product, 0 for the rest), without FlopCounterMode, whose first use
        # imports torch._dynamo (~1 s per process); valid when no product happens outside the leaves.
        outside = _ProductsOutsideLeaves()

        def post(name):
            def hook(m, i, o):
                outside.leave()
                order.append((name, _formula_flops(m, o)))
            return hook

        hooks = [m.register_forward_pre_hook(outside.enter) for _, m in leaves]
        hooks += [m.register_forward_hook(post(n)) for n, m in leaves]
        with outside:
            _forward_once(model, example, hooks)
        total = sum(f for _, f in order)
    if outside is None or outside.found is not None:
        order = []
        from torch.utils.flop_counter import FlopCounterMode

        marks: dict[str, int] = {}
        with FlopCounterMode(display=False) as fc:
            def pre(name):
                return lambda _m, _i: marks.__setitem__(name, fc.get_total_flops())

            def post(name):
                return lambda _m, _i, _o: order.append((name, fc.get_total_flops() - marks[name]))

            hs = [m.register_forward_pre_hook(pre(n)) for n, m in leaves]
            hs += [m.register_forward_hook(post(n)) for n, m in leaves]
            _forward_once(model, example, hs)
            total = int(fc.get_total_flops())
    first = {}
    for i, (n, _) in enumerate(order):
        first.setdefault(n, i)
    suffix = np.cumsum([f for _, f in order][::-1])[::-1].tolist() + [0]
    own: dict[str, int] = {}
    for n, f in order:          # a module called several times: the weight gradient of every call
        own[n] = own.get(n, 0) + f
    out = {}
    for k, v in model.named_parameters():
        if not v.requires_grad:
            continue
        mod = k.rsplit(".", 1)[0] if "." in k else ""
        i = first.get(mod, 0)  # a parameter not owned by a called leaf: the whole backward
        out[k] = (int(suffix[i]), int(own.get(mod, total)))
    return total, out


def estimate_peak_bytes(n_params: int, act_bytes: int, chunk_size: int, row_chunk_size: int | None = None,
                        act_factor: float = 4.0) -> int:
    """Model of the peak memory of ``empirical_ntk`` above the start (float32).

    The row panel's Jacobians (row_chunk_size * P * 4 bytes), one column chunk's Jacobians twice
    (2 * chunk_size * P * 4: the result and the per-sample weight-gradient temporaries of vmap's
    backward, measured on ResNet-18) and the autograd working set of one chunk: ``act_factor`` x
    the forward activations of ``chunk_size`` samples.
    """
    rows = chunk_size if row_chunk_size is None else row_chunk_size
    return int((rows + 2 * chunk_size) * n_params * 4 + act_factor * chunk_size * act_bytes)


def plan_chunks(model: nn.Module, example: torch.Tensor, budget_bytes: int, chunk_size: int | None = 32,
                act_factor: float = 4.0, jacobian: str = "vmap") -> tuple[int, int]:
    """``(chunk_size, row_chunk_size)`` whose ``estimate_peak_bytes`` fits in ``budget_bytes``.

    With ``chunk_size`` given (the vmap batch; 16-64 keeps the kernels efficient) the rest of the
    budget goes to the row panel, which minimises recomputation; it is lowered if even two chunks
    do not fit. ``chunk_size=None`` gives the symmetric plan (row panel = chunk).
    ``jacobian="loop"`` (``empirical_ntk``'s per-point Jacobians) needs no vmap temporaries: a column
    point costs its Jacobian row only and the activations are those of one point, so the same budget
    holds a larger panel (the column chunk then only sets how often the panel is swept in the contraction).
    """
    P = n_parameters(model)
    act = activation_bytes_per_sample(model, example)
    if jacobian == "loop" and chunk_size is not None:
        c = max(min(int(chunk_size), int((budget_bytes - act_factor * act) // (2 * P * 4))), 1)
        rows = int((budget_bytes - c * P * 4 - act_factor * act) // (P * 4))
        return c, max(rows, c)
    per_col = 2 * P * 4 + act_factor * act  # one more point in the column chunk
    if chunk_size is None:
        c = max(int(budget_bytes // (per_col + P * 4)), 1)
        return c, c
    c = max(min(int(chunk_size), int(budget_bytes // (per_col + P * 4))), 1)
    rows = int((budget_bytes - c * per_col) // (P * 4))
    return c, max(rows, c)


def chunk_size_for_budget(model: nn.Module, example: torch.Tensor, budget_bytes: int,
                          act_factor: float = 4.0) -> int:
    """Largest symmetric chunk size (row panel = chunk) whose estimate fits in ``budget_bytes``."""
    return plan_chunks(model, example, budget_bytes, None, act_factor)[0]


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


# contraction blocking: rows of a symmetric block product, parameter columns per float32 GEMM
_ROW_BLOCK = 256
_COL_BLOCK = 4096
_GRAM_LEAF = 128
# plan_ntk: fixed cost of one vmap(jacrev) call in FLOP equivalents (fitted to the digits ResNet on one CPU
# thread: 1.5 ms per point at chunk 32 against 0.4 ms at chunk 512, with 3 F = 0.84 MFLOP per point)
_CALL_OVERHEAD_FLOPS = 5e7


def contraction_temp_bytes(n_cols: int) -> int:
    """Working memory of the contraction: a float32 GEMM result of ``_ROW_BLOCK`` rows (and its float64 cast)."""
    return 3 * _ROW_BLOCK * int(n_cols) * 4


@dataclass
class NTKPlan:
    """How ``empirical_ntk`` cuts the work (``plan_ntk``).

    Attributes:
        groups: parameter names per group (whole tensors, in registration order). The Jacobian of
            each group is computed separately (one forward + backward pass per group and point) and
            K = sum_g d J_g J_g^T is accumulated in float64.
        row_panels: points per row panel for each group; ``>= N`` means the group's whole Jacobian
            (N x P_g) is held and every Jacobian row is computed exactly once.
        chunk_size: points per ``vmap(jacrev)`` call (and per streamed column chunk).
        estimated_peak_bytes: memory model of the plan (``estimate_plan_bytes``).
        jacobian_passes: per-point Jacobian passes the plan performs (sum over groups of the points
            differentiated; 1 x N when everything fits).
        budget_bytes: the budget the plan was made for (None: explicit chunk sizes).
    """

    groups: list[tuple[str, ...]]
    group_sizes: list[int]
    row_panels: list[int]
    chunk_size: int
    estimated_peak_bytes: int
    jacobian_passes: int
    budget_bytes: int | None = None


def _panel_samples(n: int, rows: int, chunk: int, symmetric: bool = True, n2: int | None = None) -> int:
    """Per-point Jacobians the row-panel scheme computes (column chunks recomputed per panel, the
    first chunk after a panel reused as the next panel's start)."""
    if not symmetric:
        return n + len(_chunks(n, rows)) * int(n2)
    rows = min(rows, n)
    panels = _chunks(n, rows)
    return n + sum(n - p.stop for p in panels) - sum(min(chunk, n - p.stop) for p in panels[:-1])


def estimate_plan_bytes(group_sizes, row_panels, chunk_size: int, act_bytes: int, n_points: int,
                        n_points2: int | None = None, act_factor: float = 4.0, jacobian: str = "vmap") -> int:
    """Peak memory model of a plan (float32 Jacobians, float64 K), the largest over its groups:

    K (N x N2 float64) + the contraction temporaries + the group's row panel (R x P_g x 4) + one
    chunk's Jacobian twice (2 c P_g 4: the result and vmap's per-sample weight-gradient temporaries)
    + ``act_factor`` x the chunk's forward activations. ``jacobian="loop"`` (per-point backward passes):
    the chunk's Jacobian once and the activations of one point.
    """
    n2 = n_points if n_points2 is None else n_points2
    base = n_points * n2 * 8 + contraction_temp_bytes(n2)
    c = min(int(chunk_size), max(n_points, n2))
    copies, act_points = (1, 1) if jacobian == "loop" else (2, c)
    worst = 0
    for pg, r in zip(group_sizes, row_panels, strict=True):
        worst = max(worst, min(r, n_points) * pg * 4 + copies * c * pg * 4)
    return int(base + worst + act_factor * act_points * act_bytes)


def plan_ntk(model: nn.Module, example: torch.Tensor, budget_bytes: int, n_points: int,
             n_points2: int | None = None, *, max_chunk: int = 512, min_chunk: int = 8,
             act_factor: float = 4.0, jacobian: str = "vmap") -> NTKPlan:
    """Cheapest plan whose ``estimate_plan_bytes`` fits in ``budget_bytes``.

    Candidates: (1) one group, the whole N x P Jacobian held (every Jacobian row computed once, one
    symmetric blocked product); (2) parameter groups: consecutive parameter tensors packed greedily
    so that each group's N x P_g Jacobian fits (a tensor too large on its own gets row panels);
    (3) one group in row panels (the rows of later points recomputed per panel). Cost model, in
    per-point passes: sum over groups of the points differentiated x (1 + 64 / chunk), a pass
    counted as a full forward + backward (an upper bound for a group's pass) and 64 / chunk the
    per-call overhead of ``vmap`` (measured: ~4x per point at chunk 32 vs 512 on the digits ResNet).
    Within a candidate the chunk is the largest power of two <= ``max_chunk`` that fits.
    ``jacobian="loop"``: the memory of per-point Jacobians (``estimate_plan_bytes``); the chunk term of
    the cost then stands for the contraction's sweeps over a row panel (one per column chunk).
    """
    named = [(k, v.numel()) for k, v in model.named_parameters() if v.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters (requires_grad=False everywhere)")
    act = activation_bytes_per_sample(model, example)
    N = int(n_points)
    symmetric = n_points2 is None
    n_all = N if symmetric else max(N, int(n_points2))
    P = sum(n for _, n in named)
    chunks = [c for c in (2 ** k for k in range(20)) if min_chunk <= c <= max_chunk]
    chunks = sorted({min(c, n_all) for c in chunks} | {max(min(min_chunk, n_all), 1)}, reverse=True)

    def estimate(sizes, rows, c):
        return estimate_plan_bytes(sizes, rows, c, act, N, n_points2, act_factor, jacobian)

    F, back = pass_flops(model, example)
    F = max(F, 1)

    def cost(groups, rows, c):
        """(modelled cost in full-pass units, points differentiated)."""
        samples, total = 0, 0.0
        for names, r in zip(groups, rows, strict=True):
            n = _panel_samples(N, r, c, symmetric, n_points2)
            w = (F + max(back[k][0] for k in names) + sum(back[k][1] for k in names)) / (3 * F)
            samples += n
            total += n * w
        return total * (1 + _CALL_OVERHEAD_FLOPS / (3 * F * c)), samples

    def max_rows(pg, c):
        """Largest row panel for a group of pg parameters at chunk c (0: not even one row)."""
        spare = budget_bytes - estimate([pg], [0], c)
        return int(spare // (pg * 4)) if spare > 0 else 0

    cands = []
    for c in chunks:
        # (1) / (3): all parameters in one group
        r = max_rows(P, c)
        if r >= max(c, 1):
            rows = [min(r, N)]
            names = [tuple(k for k, _ in named)]
            cands.append((cost(names, rows, c), names, [P], rows, c))
        # (2): greedy consecutive groups of whole tensors
        cap = None
        lo, hi = 1, P
        while lo < hi:  # largest group size whose whole Jacobian fits
            mid = (lo + hi + 1) // 2
            if max_rows(mid, c) >= N:
                lo = mid
            else:
                hi = mid - 1
        cap = lo if max_rows(lo, c) >= N else 0
        if cap == 0:
            continue
        groups, sizes, cur, cur_n = [], [], [], 0
        for k, n in named:
            if cur and cur_n + n > cap:
                groups.append(tuple(cur)), sizes.append(cur_n)
                cur, cur_n = [], 0
            cur.append(k)
            cur_n += n
        groups.append(tuple(cur)), sizes.append(cur_n)
        rows = [min(max_rows(s, c), N) for s in sizes]
        if len(groups) > 1 and all(r >= c for r in rows):
            cands.append((cost(groups, rows, c), groups, sizes, rows, c))
    if not cands:
        raise MemoryError(f"no eNTK plan fits in {budget_bytes / 2**20:.1f} MiB (N = {N}, P = {P}: the kernel "
                          f"alone takes {N * (N if symmetric else n_points2) * 8 / 2**20:.1f} MiB)")
    ((_, samples), groups, sizes, rows, c) = min(cands, key=lambda t: (t[0][0], len(t[1])))
    return NTKPlan(groups=groups, group_sizes=sizes, row_panels=rows, chunk_size=c,
                   estimated_peak_bytes=estimate(sizes, rows, c), jacobian_passes=samples,
                   budget_bytes=int(budget_bytes))


def _add_product(K: torch.Tensor, A: torch.Tensor, B: torch.Tensor, counter: list) -> None:
    """K (float64 view) += A B^T: float32 GEMMs of at most ``_ROW_BLOCK`` rows x ``_COL_BLOCK`` parameter
    columns (bounded temporaries), summed in float64."""
    for i0 in range(0, A.shape[0], _ROW_BLOCK):
        Ki, Ai = K[i0:i0 + _ROW_BLOCK], A[i0:i0 + _ROW_BLOCK]
        for k0 in range(0, A.shape[1], _COL_BLOCK):
            Ki += torch.mm(Ai[:, k0:k0 + _COL_BLOCK], B[:, k0:k0 + _COL_BLOCK].T)
    counter[0] += 2 * A.shape[0] * B.shape[0] * A.shape[1]


def _add_gram_upper(K: torch.Tensor, J: torch.Tensor, counter: list) -> None:
    """Upper triangle of K (n x n float64) += J J^T (the lower triangle gets garbage or nothing).

    Recursive halving: K = [[A, B], [., C]] with B = J_1 J_2^T one product and A, C recursed, down
    to diagonal blocks of <= ``_GRAM_LEAF`` rows done as full products: n^2 P (1 + leaf / n) FLOPs
    in large GEMMs instead of 2 n^2 P.
    """
    n = J.shape[0]
    if n <= _GRAM_LEAF:
        _add_product(K, J, J, counter)
        return
    h = (n + 1) // 2
    _add_gram_upper(K[:h, :h], J[:h], counter)
    _add_product(K[:h, h:], J[:h], J[h:], counter)
    _add_gram_upper(K[h:, h:], J[h:], counter)


def _mirror_upper(K: torch.Tensor) -> None:
    """Make K symmetric from its upper triangle, in row blocks (no N x N temporary)."""
    n = K.shape[0]
    for i0 in range(0, n, _ROW_BLOCK):
        i1 = min(i0 + _ROW_BLOCK, n)
        blk = K[i0:i1, i0:i1]
        blk.copy_(torch.triu(blk) + torch.triu(blk, 1).T)
        K[i1:, i0:i1] = K[i0:i1, i1:].T


# jacobian="auto": per-point autograd on a CPU from this many forward FLOPs per point. Measured on the
# 2-core development CPU: ResNet-50 at 96 px (1.5 GFLOP, P = 27.8M; the paper rehearsal's eNTK, 220 points,
# the same 107-row panels, 2 threads) 131-156 s per eNTK with the loop against 175-202 s with vmap(jacrev) at
# chunk 8 (its per-sample conv weight gradients); bench/ntk.py's SmallResNet (98 MFLOP, P = 309k, N = 512,
# the whole Jacobian held, 1 thread) 9.08 s with the loop against 6.81 s with vmap at chunk 8, and the
# digits ResNet (~0.3 MFLOP) is per-op overhead, which only vmap's batching amortises.
LOOP_MIN_FLOPS = 5e8
# jacobian="auto": one batched forward + backward per chunk (sslkit.theory.per_sample) on a CPU below this many
# forward FLOPs per point, for models it supports. Measured side by side (1 thread, quiet, the whole Jacobian
# held): the digits ResNet (0.28 MFLOP, P = 46,908, N = 2000) 0.66-0.68 s of Jacobians batched against
# 0.72-0.82 s with vmap at chunks 128-512 (1.09 s against 1.76 s at chunk 32), and no torch._dynamo import
# (~1 s the first vmap call of a process costs); config/cifar10.yaml's App. E ResNet (width 1/4 at 16 px,
# 17.6 MFLOP, P = 718,864, N = 2000, 6000 MB) 19.6-19.8 s batched against 24.5 s (vmap, chunk 128) and 30.1 s
# (chunk 256); bench/ntk.py's SmallResNet (98 MFLOP, N = 512, chunk 32) 4.9 s batched against 3.5 s with vmap
# (its 32 x 32 convolutions' per-sample weight gradients by unfold + bmm lose to vmap's). The crossover lies
# between 17.6 and 98 MFLOP.
BATCHED_MAX_FLOPS = 4e7
# points per batched forward + backward (more only adds memory traffic: digits ResNet 0.5 s at 128, 0.7 s at 512)
BATCHED_CHUNK = 128
JACOBIAN_MODES = ("auto", "vmap", "loop", "batched")


def _batched_disagreement(model: nn.Module, example: torch.Tensor, out_fn, rtol: float = 1e-4) -> str | None:
    """None if ``per_sample.unsupported_reason`` finds nothing and ``per_sample_grads`` on a small batch gives
    each point's gradient as a batch-1 autograd backward does, else why not: checks that the points do not
    interact and that no parameter escapes the hooks (e.g. a weight also used functionally by another module,
    or a user hook on a layer's output)."""
    from sslkit.theory.per_sample import Refused, per_sample_grads, unsupported_reason

    why = unsupported_reason(model)
    if why is not None:
        return why
    with torch.no_grad(), _eval_mode(model):
        p = next(model.parameters())
        x = example[:3].to(device=p.device, dtype=p.dtype)
        if len(x) < 2:        # a second, different point: interaction through the batch must show
            x = torch.cat([x, x.flip(-1) * 0.5 + 0.25])
        names = [k for k, v in model.named_parameters() if v.requires_grad]
        try:
            rows = per_sample_grads(model, lambda xs: out_fn(model(xs)), x, names)
        except Refused as e:
            return e.reason
        except Exception as e:  # noqa: BLE001 - any failure of the batched path on this model means: not batched
            return f"the batched pass failed ({type(e).__name__}: {e})"
        wrt = [v for k, v in model.named_parameters() if v.requires_grad]
        for i in range(len(x)):
            with torch.enable_grad():
                y = out_fn(model(x[i:i + 1])).reshape(-1).mean()
                gs = torch.autograd.grad(y, wrt, allow_unused=True)
            for k, g in zip(names, gs):
                ref = torch.zeros_like(rows[k][i]) if g is None else g.reshape(-1)
                if not torch.allclose(rows[k][i], ref, rtol=rtol, atol=rtol * float(ref.abs().max()) + 1e-12):
                    err = float((rows[k][i] - ref).abs().max() / max(float(ref.abs().max()), 1e-30))
                    return (f"the per-sample gradient of {k} at point {i} differs from per-point autograd "
                            f"(max relative difference {err:.1e})")
    return None


def _batched_agrees(model: nn.Module, example: torch.Tensor, out_fn, rtol: float = 1e-4) -> bool:
    """Whether ``_batched_disagreement`` finds nothing."""
    return _batched_disagreement(model, example, out_fn, rtol) is None


def jacobian_mode(model: nn.Module, example: torch.Tensor, device: torch.device, jacobian: str = "auto",
                  output_fn: Callable[[object], torch.Tensor] | None = None) -> str:
    """``vmap``, ``loop`` or ``batched`` for ``empirical_ntk(jacobian=...)``. ``auto`` on a CPU: the loop when
    one point's forward pass takes at least ``LOOP_MIN_FLOPS`` (counted by ``pass_flops``); ``batched`` below
    ``BATCHED_MAX_FLOPS`` when the model's layers are supported and a check on the first points of ``example``
    (``_batched_disagreement``) matches batch-1 autograd; else vmap. On a GPU: vmap (its batched
    kernels keep the device busy; the batched path is not measured there). An explicit ``batched`` is checked
    the same way and raises, naming the reason, where it would be wrong."""
    if jacobian not in JACOBIAN_MODES:
        raise ValueError(f"jacobian must be one of {', '.join(JACOBIAN_MODES)}, got {jacobian!r}")
    out_fn = output_fn or (lambda o: o)
    if jacobian == "batched":
        why = _batched_disagreement(model, example, out_fn)
        if why is not None:
            raise ValueError(f"jacobian='batched' cannot differentiate this model: {why}; use 'vmap' or 'loop'")
    if jacobian != "auto":
        return jacobian
    if torch.device(device).type != "cpu":
        return "vmap"
    flops = pass_flops(model, example)[0]
    if flops >= LOOP_MIN_FLOPS:
        return "loop"
    if flops < BATCHED_MAX_FLOPS and _batched_disagreement(model, example, out_fn) is None:
        return "batched"
    return "vmap"


class _Engine:
    """Jacobians of parameter groups (``vmap(jacrev)`` of a chunk, one autograd backward per point with
    ``jacobian="loop"``, or per-sample gradients of a batched pass with ``jacobian="batched"``; written into
    J_g) and their contraction."""

    def __init__(self, model, device, dtype, out_fn, chunk_size: int, timing: dict, jacobian: str = "vmap"):
        self.model, self.device, self.dtype, self.out_fn = model, device, dtype, out_fn
        self.chunk_size, self.timing, self.jacobian = chunk_size, timing, jacobian
        self.params, self.frozen, self.buffers = _state(model, device, dtype)
        self.n_params = sum(v.numel() for v in self.params.values())
        self._sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
        self.d: int | None = None

    def forward(self, dicts, xs):
        return self.out_fn(functional_call(self.model, dicts, (xs,)))

    def set_d(self, x1: torch.Tensor) -> None:
        with torch.no_grad():
            self.d = int(self.forward((self.params, self.frozen, self.buffers), x1).reshape(1, -1).shape[1])

    def group(self, names: tuple[str, ...]):
        """(fill, P_g): fill(xs, out) writes the per-point Jacobians w.r.t. the group into the rows of
        ``out`` (len(xs) x P_g, columns in the group's parameter order)."""
        pg = {k: self.params[k] for k in names}
        rest = {k: v for k, v in self.params.items() if k not in pg}
        frozen, buffers = self.frozen, self.buffers

        def g(p, xi):
            return self.forward((p, rest, frozen, buffers), xi.unsqueeze(0)).reshape(-1).mean()

        per_sample = vmap(jacrev(g), in_dims=(None, 0))
        offsets, o = [], 0
        for k in names:
            offsets.append((k, o, o + pg[k].numel()))
            o += pg[k].numel()
        timing = self.timing

        def by_vmap(xc: torch.Tensor, rows: torch.Tensor) -> None:
            with torch.no_grad():
                Jc = per_sample(pg, xc)
            for k, a, b in offsets:
                rows[:, a:b] = Jc[k].reshape(len(xc), -1)

        leaves = {k: v.detach().requires_grad_(True) for k, v in pg.items()}
        wrt = [leaves[k] for k in names]

        def by_loop(xc: torch.Tensor, rows: torch.Tensor) -> None:
            # one forward + backward of batch 1 per point: g's gradient, as jacrev(g) of each point
            with torch.enable_grad():
                for i in range(len(xc)):
                    y = self.forward((leaves, rest, frozen, buffers), xc[i:i + 1]).reshape(-1).mean()
                    for (_, a, b), gk in zip(offsets, torch.autograd.grad(y, wrt, allow_unused=True)):
                        if gk is None:      # a parameter the output does not depend on
                            rows[i, a:b] = 0
                        else:
                            rows[i, a:b] = gk.reshape(-1)

        workspace: dict = {}          # per-sample weight gradients, reused from chunk to chunk of this group

        def by_batch(xc: torch.Tensor, rows: torch.Tensor) -> None:
            from sslkit.theory.per_sample import per_sample_grads

            for s in _chunks(len(xc), BATCHED_CHUNK):
                per = per_sample_grads(self.model, lambda xs: self.forward((pg, rest, frozen, buffers), xs),
                                       xc[s], list(names), workspace)
                for k, a, b in offsets:
                    rows[s, a:b] = per[k]

        compute = {"loop": by_loop, "batched": by_batch}.get(self.jacobian, by_vmap)

        def fill(xs: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            for s in _chunks(len(xs), self.chunk_size):
                self._sync()
                t0 = time.perf_counter()
                compute(xs[s], out[s])
                self._sync()
                timing["jac"] += time.perf_counter() - t0
                timing["jac_chunks"] += 1
                timing["jac_samples"] += s.stop - s.start
                if timing.get("on_progress") is not None:
                    timing["on_progress"](timing["jac_samples"], timing["total_samples"])
            return out

        return fill, o

    def contract(self, fn, *args) -> None:
        self._sync()
        t0 = time.perf_counter()
        fn(*args, self.timing["flops"])
        self._sync()
        self.timing["con"] += time.perf_counter() - t0

    def _new(self, n: int, p: int) -> torch.Tensor:
        return torch.empty((n, p), dtype=self.dtype, device=self.device)

    def cross(self, K, names, xa, xb, rows: int) -> None:
        """K (N x N2) += J_g(xa) J_g(xb)^T: row panels of xa held, chunks of xb streamed."""
        fill, p = self.group(names)
        panels = _chunks(len(xa), max(min(rows, len(xa)), 1))
        self.timing["n_panels"] += len(panels)
        for si in panels:
            Ja = fill(xa[si], self._new(si.stop - si.start, p))
            for sj in _chunks(len(xb), self.chunk_size):
                self.contract(_add_product, K[si, sj], Ja, fill(xb[sj], self._new(sj.stop - sj.start, p)))
            del Ja

    def symmetric(self, K, names, xa, rows: int) -> None:
        """Upper triangle of K (N x N) += J_g J_g^T: the whole J_g when rows >= N, else row panels with
        the later points streamed in chunks (the first chunk after a panel carried into the next)."""
        fill, p = self.group(names)
        N = len(xa)
        panels = _chunks(N, max(min(rows, N), 1))
        self.timing["n_panels"] += len(panels)
        carry = None
        for si in panels:
            Ja = self._new(si.stop - si.start, p)
            done = 0
            if carry is not None:
                done = len(carry)
                Ja[:done] = carry
                carry = None
            if done < len(Ja):
                fill(xa[si.start + done:si.stop], Ja[done:])
            self.contract(_add_gram_upper, K[si, si], Ja)
            # backwards, so that the last column chunk (the next panel's first points) is kept
            for c in reversed(_chunks(N - si.stop, self.chunk_size)):
                sj = slice(si.stop + c.start, si.stop + c.stop)
                Jb = fill(xa[sj], self._new(sj.stop - sj.start, p))
                self.contract(_add_product, K[si, sj], Ja, Jb)
                if c.start == 0:
                    carry = Jb
                del Jb
            del Ja


def empirical_ntk(model: nn.Module, x, x2=None, *, chunk_size: int = 64,
                  row_chunk_size: int | None = None, memory_budget_bytes: int | None = None,
                  plan: NTKPlan | None = None, device=None,
                  dtype: torch.dtype = torch.float32,
                  output_fn: Callable[[object], torch.Tensor] | None = None,
                  measure_memory: bool = True,
                  on_progress: Callable[[int, int], None] | None = None,
                  jacobian: str = "auto") -> NTKResult:
    """Scalarised eNTK K(x_a, x_b) = d <grad g(x_a), grad g(x_b)>, g = mean of the d outputs.

    Args:
        model: any module mapping a batch ``B x ...`` to outputs ``B x d`` (or ``B x ...``, flattened).
            It is evaluated in eval mode; it is not modified.
        x: the N points, ``N x ...`` (tensor or array).
        x2: optional second set ``N2 x ...``: returns the cross kernel K(x, x2) (N x N2) instead.
        chunk_size: points per Jacobian computation (one vmap call; sets the activation memory)
            and per column chunk (ignored when ``memory_budget_bytes`` or ``plan`` is given).
        row_chunk_size: points per row panel whose Jacobians are held while the column chunks
            stream past (default ``chunk_size``; ``>= N``: the whole Jacobian, each row computed once).
        memory_budget_bytes: plan the computation for this budget (``plan_ntk``: the whole
            Jacobian when it fits, else parameter groups or row panels) instead of the chunk sizes.
        plan: an explicit ``NTKPlan`` (overrides the chunk sizes and the budget).
        device: where to compute (default: the device of the model's first parameter).
        dtype: compute dtype of parameters, inputs and Jacobians (float32; K is summed in float64).
        output_fn: maps the model's output to the ``B x d`` embedding tensor (e.g. pick one
            element of a tuple); default: the output itself.
        measure_memory: record ``stats['peak_bytes']`` (see ``PeakMemory``).
        on_progress: called as ``on_progress(done, total)`` after every Jacobian chunk, with the
            per-point Jacobian passes done so far and the plan's total (for progress lines).
        jacobian: how a chunk's per-point Jacobians are computed: ``vmap`` (``vmap(jacrev)`` of the
            chunk), ``loop`` (one forward + backward of batch 1 per point, plain autograd), ``batched``
            (one forward + backward of the chunk, per-sample gradients by ``sslkit.theory.per_sample``;
            Linear / Conv2d / BatchNorm / LayerNorm parameters only, points must not interact) or ``auto``
            (``jacobian_mode``, on a CPU: loop from ``LOOP_MIN_FLOPS`` forward FLOPs per point, batched
            below ``BATCHED_MAX_FLOPS`` where supported and checked on the first points, else vmap). All
            give the same kernel up to float32 rounding.

    Returns:
        ``NTKResult`` with ``K`` (float64, N x N, symmetric; or N x N2) and ``stats``.
    """
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    chunk_size = int(chunk_size)
    row_chunk_size = chunk_size if row_chunk_size is None else int(row_chunk_size)
    if row_chunk_size < chunk_size:
        raise ValueError(f"row_chunk_size ({row_chunk_size}) must be >= chunk_size ({chunk_size})")
    first = next(model.parameters(), None)
    if first is None:
        raise ValueError("the model has no parameters")
    device = torch.device(device) if device is not None else first.device
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device} requested but CUDA is not available")
    xa = _as_tensor(x, device, dtype, "x")
    xb = None if x2 is None else _as_tensor(x2, device, dtype, "x2")
    if xb is not None and xb.shape[1:] != xa.shape[1:]:
        raise ValueError(f"x and x2 must have the same point shape, got {tuple(xa.shape[1:])} and "
                         f"{tuple(xb.shape[1:])}")
    out_fn = output_fn or (lambda o: o)
    t_start = time.perf_counter()
    jacobian = jacobian_mode(model, xa[:3], device, jacobian, out_fn)
    N, N2 = len(xa), None if xb is None else len(xb)
    act = activation_bytes_per_sample(model, xa)
    if plan is None and memory_budget_bytes is not None:
        plan = plan_ntk(model, xa[:1], int(memory_budget_bytes), N, N2, jacobian=jacobian)
    if plan is None:
        names = tuple(k for k, v in model.named_parameters() if v.requires_grad)
        P_all = n_parameters(model)
        c = min(chunk_size, max(N, N2 or 0))
        plan = NTKPlan(groups=[names], group_sizes=[P_all], row_panels=[row_chunk_size], chunk_size=c,
                       estimated_peak_bytes=estimate_plan_bytes([P_all], [row_chunk_size], c, act, N, N2,
                                                                jacobian=jacobian),
                       jacobian_passes=_panel_samples(N, row_chunk_size, chunk_size, xb is None, N2))
    timing = {"jac": 0.0, "con": 0.0, "jac_chunks": 0, "jac_samples": 0, "n_panels": 0, "flops": [0],
              "on_progress": on_progress, "total_samples": plan.jacobian_passes}
    with _eval_mode(model):
        eng = _Engine(model, device, dtype, out_fn, plan.chunk_size, timing, jacobian)
        eng.set_d(xa[:1])
        peak = PeakMemory(device) if measure_memory else contextlib.nullcontext()
        with peak:
            K = torch.zeros((N, N if xb is None else N2), dtype=torch.float64, device=device)
            for names, rows in zip(plan.groups, plan.row_panels, strict=True):
                if xb is None:
                    eng.symmetric(K, names, xa, rows)
                else:
                    eng.cross(K, names, xa, xb, rows)
            if xb is None:
                _mirror_upper(K)
            K.mul_(eng.d)
            K = K.cpu().numpy()
    chunk_size, P, d = plan.chunk_size, eng.n_params, eng.d
    stats = {
        "time_s": time.perf_counter() - t_start,
        "jacobian_time_s": timing["jac"],
        "contraction_time_s": timing["con"],
        "contraction_flops": float(timing["flops"][0]),
        "n_points": N,
        "n_points2": N2,
        "n_params": P,
        "d": d,
        "chunk_size": chunk_size,
        "row_chunk_size": min(plan.row_panels) if len(plan.row_panels) == 1 else list(plan.row_panels),
        "n_groups": len(plan.groups),
        "group_sizes": list(plan.group_sizes),
        "row_panels": list(plan.row_panels),
        "n_chunks": timing["n_panels"],
        "jacobian_chunks": timing["jac_chunks"],
        "jacobian_samples": timing["jac_samples"],
        "jacobian_chunk_bytes": chunk_size * P * 4,
        "activation_bytes_per_sample": act,
        "estimated_peak_bytes": plan.estimated_peak_bytes,
        "budget_bytes": plan.budget_bytes,
        "peak_bytes": getattr(peak, "peak_bytes", None),
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "jacobian": jacobian,
    }
    if not np.all(np.isfinite(K)):
        raise FloatingPointError("the eNTK has non-finite entries (check the model's outputs)")
    return NTKResult(K=K, stats=stats)
