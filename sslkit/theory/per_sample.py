"""Per-sample gradients of a batch from one batched forward + backward (``empirical_ntk(jacobian="batched")``).

For g_i = mean of the outputs of point i, the gradient of g_i with respect to a layer's weight
depends only on that layer's input a_i and on the gradient gy_i of g_i with respect to the layer's
output. When the points do not interact (eval mode), one backward pass of sum_i g_i gives every gy_i
at once, and the per-sample weight gradients follow layer by layer (the Goodfellow / Opacus
construction, without either library):

- ``Linear``: grad W_i = gy_i^T a_i (summed over any middle dimensions), grad b_i = sum gy_i;
- ``Conv2d`` (zero padding, any stride / dilation / groups): grad W_i = gy_i unfold(a_i)^T per
  group, grad b_i = gy_i summed over positions;
- ``BatchNorm`` in eval mode with running statistics: grad w_i = sum gy_i xhat_i, grad b_i = sum gy_i,
  xhat = (a - running_mean) / sqrt(running_var + eps);
- ``LayerNorm``: the same with xhat normalised over the last dimensions of each point.

Everything else (activations, pooling, residual sums, parameter-free modules) only passes gradients
on. ``unsupported_reason`` says why a model cannot take this path (a parameter owned by another
module type or by a subclass with its own ``forward``, a shared parameter, batch statistics);
``empirical_ntk`` then uses ``vmap(jacrev)`` or the per-point loop. Plain autograd only: no
``torch.func``, whose first use imports ``torch._dynamo`` (~1 s per process).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SUPPORTED_TYPES", "Refused", "unsupported_reason", "per_sample_grads"]

SUPPORTED_TYPES = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm)


class Refused(ValueError):
    """A layer the batched pass cannot see whole; ``reason`` says which and why."""

    def __init__(self, reason: str):
        super().__init__(f"{reason}; its per-sample gradients need jacobian='vmap' or 'loop'")
        self.reason = reason


def _owners(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """id(parameter) -> [(module, attribute)] for every module holding it directly."""
    out: dict[int, list[tuple[nn.Module, str]]] = {}
    for mod in model.modules():
        for attr, p in mod.named_parameters(recurse=False):
            out.setdefault(id(p), []).append((mod, attr))
    return out


def unsupported_reason(model: nn.Module) -> str | None:
    """None if every trainable parameter of ``model`` can take the batched path, else why not."""
    owners = _owners(model)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        held = owners.get(id(p), [])
        if len(held) != 1:
            return f"parameter {name} is held by {len(held)} modules"
        mod, attr = held[0]
        kind = type(mod)
        if kind not in SUPPORTED_TYPES:
            return f"parameter {name} belongs to a {kind.__name__} (supported: " \
                   f"{', '.join(t.__name__ for t in SUPPORTED_TYPES)})"
        if attr not in ("weight", "bias"):
            return f"parameter {name}: unexpected attribute {attr!r} of {kind.__name__}"
        if isinstance(mod, nn.Conv2d) and mod.padding_mode != "zeros":
            return f"parameter {name}: Conv2d with padding_mode={mod.padding_mode!r}"
        if isinstance(mod, nn.Conv2d) and isinstance(mod.padding, str):
            return f"parameter {name}: Conv2d with padding={mod.padding!r} (numbers are supported)"
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.running_mean is None:
            return f"parameter {name}: BatchNorm without running statistics uses batch statistics in eval mode"
    return None


def _conv2d(m: nn.Conv2d, a: torch.Tensor, gy: torch.Tensor, buf) -> dict[str, torch.Tensor]:
    n, G = a.shape[0], m.groups
    g = gy.reshape(n, m.out_channels, -1)                                 # n x Cout x L
    if g.shape[-1] == 1 and G == 1:
        # one output position (a ResNet's last stage on small images): its window is the top-left corner of
        # the padded input, and each per-sample gradient is an outer product. Measured at n = 256, Cin = Cout
        # = 32, k = 3 (1 thread): unfold + bmm 5.5 ms, this 1.2 ms.
        (ph, pw), (dh, dw), (kh, kw) = m.padding, m.dilation, m.kernel_size
        u = F.pad(a, (pw, pw, ph, ph))[:, :, :dh * (kh - 1) + 1:dh, :dw * (kw - 1) + 1:dw].reshape(n, 1, -1)
        return {"weight": torch.mul(g, u, out=buf((n, g.shape[1], u.shape[2]))).reshape(n, -1), "bias": g[:, :, 0]}
    u = F.unfold(a, m.kernel_size, m.dilation, m.padding, m.stride)      # n x (Cin k k) x L
    if G == 1:
        w = torch.bmm(g, u.transpose(1, 2), out=buf((n, g.shape[1], u.shape[1])))
    else:
        w = torch.einsum("ngol,ngil->ngoi", g.reshape(n, G, -1, g.shape[-1]), u.reshape(n, G, -1, u.shape[-1]))
    return {"weight": w.reshape(n, -1), "bias": g.sum(2)}


def _linear(m: nn.Linear, a: torch.Tensor, gy: torch.Tensor, buf) -> dict[str, torch.Tensor]:
    n = a.shape[0]
    a3, g3 = a.reshape(n, -1, a.shape[-1]), gy.reshape(n, -1, gy.shape[-1])
    w = buf((n, g3.shape[2], a3.shape[2]))
    if a3.shape[1] == 1:             # one vector per point: an outer product (bmm of rank-1 products is ~10x slower)
        return {"weight": torch.mul(g3.transpose(1, 2), a3, out=w).reshape(n, -1), "bias": g3[:, 0]}
    return {"weight": torch.bmm(g3.transpose(1, 2), a3, out=w).reshape(n, -1), "bias": g3.sum(1)}


def _norm(xhat: torch.Tensor, gy: torch.Tensor, keep: int) -> dict[str, torch.Tensor]:
    """Per-sample sums of gy * xhat and gy over every dimension but the batch and the ``keep`` parameter
    dimensions (the channel axis 1 for BatchNorm: keep < 0 marks that; the last ``keep`` for LayerNorm)."""
    n = gy.shape[0]
    if keep < 0:                     # BatchNorm: channels on axis 1
        c = gy.shape[1]
        gw, gb = (gy * xhat).reshape(n, c, -1).sum(2), gy.reshape(n, c, -1).sum(2)
    else:
        p = gy.shape[gy.dim() - keep:].numel()
        gw, gb = (gy * xhat).reshape(n, -1, p).sum(1), gy.reshape(n, -1, p).sum(1)
    return {"weight": gw, "bias": gb}


def _batchnorm(m: nn.modules.batchnorm._BatchNorm, a: torch.Tensor, gy: torch.Tensor, buf) -> dict[str, torch.Tensor]:
    shape = (1, -1) + (1,) * (a.dim() - 2)
    xhat = (a - m.running_mean.reshape(shape)) * torch.rsqrt(m.running_var.reshape(shape) + m.eps)
    return _norm(xhat, gy, -1)


def _layernorm(m: nn.LayerNorm, a: torch.Tensor, gy: torch.Tensor, buf) -> dict[str, torch.Tensor]:
    dims = tuple(range(a.dim() - len(m.normalized_shape), a.dim()))
    var, mean = torch.var_mean(a, dim=dims, unbiased=False, keepdim=True)
    return _norm((a - mean) * torch.rsqrt(var + m.eps), gy, len(m.normalized_shape))


def _rule(m: nn.Module):
    if isinstance(m, nn.Conv2d):
        return _conv2d
    if isinstance(m, nn.Linear):
        return _linear
    if isinstance(m, nn.LayerNorm):
        return _layernorm
    return _batchnorm


def _buffer(workspace: dict | None, key: int, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor for the weight gradient of call ``key``: the workspace's, when it fits."""
    t = None if workspace is None else workspace.get(key)
    if t is None or t.shape != shape or t.dtype != like.dtype or t.device != like.device:
        t = torch.empty(shape, dtype=like.dtype, device=like.device)
        if workspace is not None:
            workspace[key] = t
    return t


def per_sample_grads(model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                     names: list[str], workspace: dict | None = None) -> dict[str, torch.Tensor]:
    """Per-sample gradients of g_i = mean(forward(x)[i]) w.r.t. the parameters ``names`` of ``model``.

    ``forward`` evaluates the model on a batch (e.g. through ``functional_call``, whose tensors the
    modules then hold during the call); the model must pass ``unsupported_reason`` and treat its points
    independently. Returns {name: len(x) x numel}, zeros for a parameter the output does not reach.

    ``workspace``: a dict the caller keeps across calls on batches of the same model; the weight gradients
    are then written into its tensors, reused from call to call, and the returned tensors are valid only
    until the next call with it. A fresh multi-megabyte tensor per layer and call costs page faults on first
    touch: measured on config/cifar10.yaml's App. E ResNet (718,864 parameters, 64 points per call, 1 thread)
    2.03-2.11 s per 512 points with a workspace against 3.03-3.14 s without (copies into J included); in its
    whole eNTK (N = 2000) the Jacobians took 15.4 s against 17.7 s, identical K. No change on the digits ResNet.
    """
    owners = _owners(model)
    by_module: dict[nn.Module, list[tuple[str, str]]] = {}
    params = dict(model.named_parameters())
    for name in names:
        mod, attr = owners[id(params[name])][0]
        by_module.setdefault(mod, []).append((name, attr))
    calls: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
    grads: dict[int, torch.Tensor] = {}

    refused: list[str] = []

    def hook(mod, inputs, out):
        if not inputs:               # called with keyword arguments only: the layer's input is not seen
            refused.append(f"a {type(mod).__name__} of the model is called without a positional input")
            return
        if not out.requires_grad:    # not computed from x: its weight gradient would escape the hooks
            refused.append(f"a {type(mod).__name__} of the model is applied to something that does not depend "
                           f"on the input")
            return
        i = len(calls)
        calls.append((mod, inputs[0].detach(), out))

        def keep(g, i=i):
            grads[i] = g

        out.register_hook(keep)      # fires with the gradient of this output, even if later modified in place

    handles = [m.register_forward_hook(hook) for m in by_module]
    try:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            y = forward(xg).reshape(len(x), -1).mean(1).sum()
            if y.requires_grad:
                torch.autograd.grad(y, xg, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    if refused:
        raise Refused(refused[0])
    n = len(x)
    out: dict[str, torch.Tensor] = {}
    for i, (mod, a, _) in enumerate(calls):
        if i not in grads:
            continue
        with torch.no_grad():
            per = _rule(mod)(mod, a, grads[i].detach(), partial(_buffer, workspace, i, like=a))
        for name, attr in by_module[mod]:
            # out of place: a result may be a view of a gradient that autograd handed to several hooks
            out[name] = out[name] + per[attr] if name in out else per[attr]
    for name in names:
        if name not in out:
            out[name] = torch.zeros((n, params[name].numel()), dtype=x.dtype, device=x.device)
    return out
