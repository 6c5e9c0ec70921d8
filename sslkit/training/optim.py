"""Optimisers and learning-rate schedules of the SSL runs.

- :class:`LARS` follows the official Barlow Twins code (also VICReg's): parameters of one
  dimension (biases, batch-norm weights and biases) are excluded from weight decay *and* from the
  layer-wise adaptation; for the others the update direction is
  ``g + wd * w`` rescaled by the trust ratio ``eta * ||w|| / ||g + wd * w||`` (1 if either norm is 0),
  then heavy-ball momentum ``mu <- m * mu + update``, ``w <- w - lr * mu``.
- SGD is ``torch.optim.SGD`` (momentum, weight decay on every parameter, as in PyTorch).
- Parameters are split into two groups, ``weights`` (ndim > 1) and ``biases`` (ndim == 1, biases
  and norm parameters), so the biases can have their own learning rate (Barlow Twins: 0.0048 vs
  0.2 per 256 images).
- :class:`LrSchedule` multiplies every group's base lr: linear warm-up from 0 over ``warmup_steps``
  (official Barlow Twins form ``step / warmup``), then ``constant`` or ``cosine`` decay to
  ``final_factor`` x base lr at ``total_steps``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["LARS", "LrSchedule", "param_groups", "build_optimizer", "build_scheduler"]


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You et al. 2017) in the official Barlow Twins form.

    Args:
        params: parameters or groups; a group may set ``exclude`` (bool) to exclude all its
            parameters from weight decay and adaptation; otherwise 1-D parameters are excluded
            when ``exclude_1d`` is true (default).
        lr: learning rate. weight_decay: L2 coefficient. momentum: heavy-ball momentum.
        eta: trust coefficient (0.001 in the official code).
    """

    def __init__(self, params: Iterable, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                 eta: float = 0.001, exclude_1d: bool = True):
        if lr < 0 or weight_decay < 0 or momentum < 0 or eta <= 0:
            raise ValueError(f"invalid LARS settings lr={lr}, weight_decay={weight_decay}, "
                             f"momentum={momentum}, eta={eta}")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta,
                        exclude=None, exclude_1d=exclude_1d)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                excluded = g["exclude"] if g["exclude"] is not None else (g["exclude_1d"] and p.ndim == 1)
                if not excluded:
                    dp = dp.add(p, alpha=g["weight_decay"])
                    param_norm = torch.linalg.vector_norm(p)
                    update_norm = torch.linalg.vector_norm(dp)
                    one = torch.ones_like(param_norm)
                    q = torch.where(param_norm > 0,
                                    torch.where(update_norm > 0, g["eta"] * param_norm / update_norm, one), one)
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])
        return loss


def param_groups(params: Iterable[nn.Parameter], lr: float, lr_biases: float | None = None) -> list[dict]:
    """Split parameters into ``weights`` (ndim > 1) and ``biases`` (ndim <= 1: biases, norm params)."""
    params = list(params)
    weights = [p for p in params if p.ndim > 1]
    biases = [p for p in params if p.ndim <= 1]
    groups = [{"params": weights, "lr": lr, "name": "weights"}]
    if biases:
        groups.append({"params": biases, "lr": lr if lr_biases is None else lr_biases, "name": "biases"})
    return groups


@dataclass
class LrSchedule:
    """Multiplier of the base learning rate at a step (picklable, for ``LambdaLR``).

    ``warmup_steps``: linear ramp ``step / warmup_steps`` (0 at step 0); then ``decay`` =
    ``constant`` (1) or ``cosine`` (from 1 at the end of warm-up to ``final_factor`` at
    ``total_steps``).
    """

    total_steps: int
    warmup_steps: int = 0
    decay: str = "constant"
    final_factor: float = 0.0

    def __post_init__(self):
        if self.decay not in ("constant", "cosine"):
            raise ValueError(f"unknown lr decay {self.decay!r}; expected 'constant' or 'cosine'")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / self.warmup_steps
        if self.decay == "constant":
            return 1.0
        span = max(self.total_steps - self.warmup_steps, 1)
        frac = min((step - self.warmup_steps) / span, 1.0)
        q = 0.5 * (1 + math.cos(math.pi * frac))
        return q + self.final_factor * (1 - q)


def build_optimizer(params: Iterable[nn.Parameter], cfg: dict) -> torch.optim.Optimizer:
    """``cfg``: {name: sgd|lars, lr, lr_biases (null = lr), momentum, weight_decay, eta (LARS)}."""
    groups = param_groups(params, cfg["lr"], cfg.get("lr_biases"))
    name = cfg["name"]
    if name == "lars":
        return LARS(groups, lr=cfg["lr"], weight_decay=cfg["weight_decay"], momentum=cfg["momentum"],
                    eta=cfg.get("eta", 0.001))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    raise ValueError(f"unknown optimizer {name!r}; expected 'sgd' or 'lars'")


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: LrSchedule) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
