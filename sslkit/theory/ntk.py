"""Scalarised empirical NTK of any torch module, block by block (paper App. D.5; ``docs/theory.md`` §7).

For a network with d outputs f_1..f_d, the scalarised eNTK is

    K(x, x') = d * < grad_theta g(x), grad_theta g(x') >,     g = (1/d) sum_k f_k,

(the factor d recovers the per-output NTK in the infinite-width limit). For f(x) = W x without
bias, grad_W g = (1/d) 1 x^T and K(x, x') = d * (1/d^2) * d * x^T x' = x^T x' exactly; a bias b
adds d * (1/d^2) * d = 1.

Computation (``empirical_ntk``): per-sample Jacobians (one row of P entries per point) are
computed with ``torch.func`` (``functional_call`` + ``vmap`` + ``jacrev``) for ``chunk_size``
points at a time, and kernel blocks K_ab = d J_a J_b^T are accumulated parameter tensor by
parameter tensor (float32 products, float64 sum). The points are cut into row panels of
``row_chunk_size`` (default: ``chunk_size``); for each panel its Jacobians are held while the
column chunks after it stream past, so only blocks b >= a are computed (K is symmetric) and at
most (row_chunk_size + 2 chunk_size) x P floats of Jacobian exist at any time (the column chunk
plus vmap's temporaries): memory is bounded by the chunk sizes, never by N x P. The price is recomputation: column chunks are differentiated
again for every panel before them, about N^2 / (2 row_chunk_size) extra per-sample Jacobians, so
a large row panel (``plan_chunks`` gives it the memory budget) and a small column chunk is the
efficient shape. The column loop runs backwards so that its last chunk, the next panel's first
points, is reused rather than recomputed.

The network is evaluated in eval mode (BatchNorm uses its running statistics, dropout is off);
the module itself is not modified (its parameters are passed functionally, its training flags are
restored).
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

__all__ = ["NTKResult", "empirical_ntk", "n_parameters", "activation_bytes_per_sample",
           "estimate_peak_bytes", "plan_chunks", "chunk_size_for_budget", "PeakMemory"]


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

    def __enter__(self) -> "PeakMemory":
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
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad(), _eval_mode(model):
            p = next(model.parameters())
            model(example[:1].to(device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
    return total


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
                act_factor: float = 4.0) -> tuple[int, int]:
    """``(chunk_size, row_chunk_size)`` whose ``estimate_peak_bytes`` fits in ``budget_bytes``.

    With ``chunk_size`` given (the vmap batch; 16-64 keeps the kernels efficient) the rest of the
    budget goes to the row panel, which minimises recomputation; it is lowered if even two chunks
    do not fit. ``chunk_size=None`` gives the symmetric plan (row panel = chunk).
    """
    P = n_parameters(model)
    act = activation_bytes_per_sample(model, example)
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


def empirical_ntk(model: nn.Module, x, x2=None, *, chunk_size: int = 64,
                  row_chunk_size: int | None = None, device=None,
                  dtype: torch.dtype = torch.float32,
                  output_fn: Callable[[object], torch.Tensor] | None = None,
                  measure_memory: bool = True) -> NTKResult:
    """Scalarised eNTK K(x_a, x_b) = d <grad g(x_a), grad g(x_b)>, g = mean of the d outputs.

    Args:
        model: any module mapping a batch ``B x ...`` to outputs ``B x d`` (or ``B x ...``, flattened).
            It is evaluated in eval mode; it is not modified.
        x: the N points, ``N x ...`` (tensor or array).
        x2: optional second set ``N2 x ...``: returns the cross kernel K(x, x2) (N x N2) instead.
        chunk_size: points per Jacobian computation (one vmap call; sets the activation memory)
            and per column chunk.
        row_chunk_size: points per row panel whose Jacobians are held while the column chunks
            stream past (default ``chunk_size``). Larger panels mean less recomputation; memory
            ~ (row_chunk_size + 2 chunk_size) * P * 4 bytes plus one chunk's activations (see
            ``estimate_peak_bytes``, ``plan_chunks``).
        device: where to compute (default: the device of the model's first parameter).
        dtype: compute dtype of parameters, inputs and Jacobians (float32; K is summed in float64).
        output_fn: maps the model's output to the ``B x d`` embedding tensor (e.g. pick one
            element of a tuple); default: the output itself.
        measure_memory: record ``stats['peak_bytes']`` (see ``PeakMemory``).

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
        raise ValueError(f"x and x2 must have the same point shape, got {tuple(xa.shape[1:])} and {tuple(xb.shape[1:])}")
    out_fn = output_fn or (lambda o: o)
    t_start = time.perf_counter()
    timing = {"jac": 0.0, "con": 0.0, "jac_chunks": 0, "jac_samples": 0}
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    with _eval_mode(model):
        params, frozen, buffers = _state(model, device, dtype)
        P = sum(v.numel() for v in params.values())

        def forward(p, xs):
            return out_fn(functional_call(model, (p, frozen, buffers), (xs,)))

        with torch.no_grad():
            d = int(forward(params, xa[:1]).reshape(1, -1).shape[1])

        def g(p, xi):
            return forward(p, xi.unsqueeze(0)).reshape(-1).mean()

        per_sample_jac = vmap(jacrev(g), in_dims=(None, 0))

        def jac(xs: torch.Tensor) -> list[torch.Tensor]:
            sync()
            t0 = time.perf_counter()
            with torch.no_grad():
                J = per_sample_jac(params, xs)
            out = [J[k].reshape(len(xs), -1) for k in params]
            sync()
            timing["jac"] += time.perf_counter() - t0
            timing["jac_chunks"] += 1
            timing["jac_samples"] += len(xs)
            return out

        def contract(Ja: list[torch.Tensor], Jb: list[torch.Tensor]) -> np.ndarray:
            t0 = time.perf_counter()
            blk = None
            for a, b in zip(Ja, Jb):
                term = (a @ b.T).to(torch.float64)
                blk = term if blk is None else blk + term
            out = (d * blk).cpu().numpy()
            timing["con"] += time.perf_counter() - t0
            return out

        def panel(start: int, stop: int, prefix: list[torch.Tensor] | None) -> list[torch.Tensor]:
            """Jacobians of points [start, stop) in micro-batches of chunk_size, written into
            preallocated per-parameter buffers (no concatenation copies); the first
            ``len(prefix[0])`` rows may be given (reused from the previous row panel)."""
            done = start + (len(prefix[0]) if prefix is not None else 0)
            if prefix is not None and done == stop:
                return prefix
            if prefix is None and stop - start <= chunk_size:
                return jac(xa[start:stop])
            out = [torch.empty((stop - start, v.numel()), dtype=dtype, device=device) for v in params.values()]
            if prefix is not None:
                for buf, part in zip(out, prefix):
                    buf[: len(part)] = part
                prefix = None
            for s0 in range(done, stop, chunk_size):
                s1 = min(s0 + chunk_size, stop)
                part = jac(xa[s0:s1])
                for buf, blk in zip(out, part):
                    buf[s0 - start:s1 - start] = blk
                del part
            return out

        N = len(xa)
        rows = _chunks(N, row_chunk_size)
        peak = PeakMemory(device) if measure_memory else contextlib.nullcontext()
        with peak:
            if xb is None:
                K = np.empty((N, N), dtype=np.float64)
                carry = None
                for si in rows:
                    Ja = panel(si.start, si.stop, carry)
                    carry = None  # the panel owns (a copy of) it now
                    K[si, si] = contract(Ja, Ja)
                    cols = _chunks(N - si.stop, chunk_size)
                    # backwards, so that the last column chunk (the next panel's first points) is kept
                    for c in reversed(cols):
                        sj = slice(si.stop + c.start, si.stop + c.stop)
                        Jb = jac(xa[sj])
                        blk = contract(Ja, Jb)
                        K[si, sj] = blk
                        K[sj, si] = blk.T
                        if c.start == 0:
                            carry = Jb
                        del Jb
                    del Ja
                K = (K + K.T) / 2  # diagonal blocks: exact symmetry despite float32 products
            else:
                cols = _chunks(len(xb), chunk_size)
                K = np.empty((N, len(xb)), dtype=np.float64)
                for si in rows:
                    Ja = panel(si.start, si.stop, None)
                    for sj in cols:
                        K[si, sj] = contract(Ja, jac(xb[sj]))
                    del Ja
    act = activation_bytes_per_sample(model, xa)
    stats = {
        "time_s": time.perf_counter() - t_start,
        "jacobian_time_s": timing["jac"],
        "contraction_time_s": timing["con"],
        "n_points": len(xa),
        "n_points2": None if xb is None else len(xb),
        "n_params": P,
        "d": d,
        "chunk_size": chunk_size,
        "row_chunk_size": row_chunk_size,
        "n_chunks": len(rows),
        "jacobian_chunks": timing["jac_chunks"],
        "jacobian_samples": timing["jac_samples"],
        "jacobian_chunk_bytes": chunk_size * P * 4,
        "activation_bytes_per_sample": act,
        "estimated_peak_bytes": estimate_peak_bytes(P, act, min(chunk_size, len(xa)),
                                                    min(row_chunk_size, len(xa))),
        "peak_bytes": getattr(peak, "peak_bytes", None),
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
    }
    if not np.all(np.isfinite(K)):
        raise FloatingPointError("the eNTK has non-finite entries (check the model's outputs)")
    return NTKResult(K=K, stats=stats)
