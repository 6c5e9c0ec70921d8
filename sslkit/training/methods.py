"""One training step's loss for each SSL method, wiring ``sslkit.training.networks`` to ``sslkit.training.losses``.

``make_method(model, run_config)`` returns a :class:`Method` with

- ``loss(x1, x2, step, update=True) -> (loss, z1, z2)``: x1, x2 are N x C x H x W views; z1, z2
  the N x d online embeddings (the ones whose spectra are logged). ``update=False`` leaves every
  piece of method state alone (DirectPred/DirectCopy's running correlation F_hat and predictor),
  for evaluation on the fixed batch.
- ``after_step(step)``: called after optimiser step ``step`` (0-based); BYOL-family EMA update of
  the target with tau = ``ema_momentum(step + 1, total_steps, base)``.

Both views go through the network separately (batch-norm statistics per view, as in the official
Barlow Twins and VICReg code). Losses are computed in float32 (embeddings are cast and autocast
is switched off around them, ``_fp32``), also under bf16 autocast: their matmuls (C = z1^T z2 / N,
the covariance, SimCLR's logits) would otherwise run in bf16.

Method-specific keys of ``run_config['loss']``:

- barlow_twins: lambda, batchnorm, scale, symmetric
- simclr: temperature
- vicreg: sim_coeff, std_coeff, cov_coeff, eps
- byol: ema_base
- directpred: ema_base, rho, eps, freq
- directcopy: ema_base, rho, eps, freq

``run_config['speedups']`` (present only when something is switched on; ``sslkit.training.speedup_variants``):
G.1 ``precondition`` (any method: hooks on z1, z2 that right-multiply their gradient by
(F^T F + a I)^{-1}), G.2/G.3 ``transform``/``power`` (Barlow Twins: the loss of
``sslkit.training.speedup_variants.barlow_twins_spectral_loss``).
"""

from __future__ import annotations

from typing import Callable

import torch

from sslkit.training import losses as L
from sslkit.training import speedup_variants as S
from sslkit.training.networks import SSLModel

__all__ = ["Method", "make_method"]


def _fp32(z: torch.Tensor):
    """Autocast off on ``z``'s device: what runs inside keeps float32 inputs in float32."""
    return torch.autocast(z.device.type, enabled=False)


class Method:
    """Base class: ``loss`` returns (loss, z1, z2); ``after_step`` updates non-gradient state."""

    def __init__(self, model: SSLModel, run_config: dict, embed: Callable | None = None):
        self.model = model
        self.loss_cfg = dict(run_config["loss"])
        self.total_steps = int(run_config["steps"])
        self.embed = embed if embed is not None else model.embed
        self.speedups = S.validate_speedups(run_config.get("speedups"), run_config["method"])

    def embeddings(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z1, z2 = self.embed(x1).float(), self.embed(x2).float()
        if self.speedups["precondition"]:
            S.attach_preconditioner(z1, z2, float(self.speedups["precondition_alpha"]),
                                    bool(self.speedups["precondition_relative"]))
        return z1, z2

    def loss(self, x1, x2, step: int, update: bool = True):
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        pass


class BarlowTwins(Method):
    def loss(self, x1, x2, step, update=True):
        z1, z2 = self.embeddings(x1, x2)
        c = self.loss_cfg
        sp = self.speedups
        with _fp32(z1):
            if sp["transform"] != "identity" or int(sp["power"]) != 2:
                loss = S.barlow_twins_spectral_loss(z1, z2, lambd=c["lambda"], batchnorm=c["batchnorm"],
                                                    scale=c["scale"], transform=sp["transform"],
                                                    power=int(sp["power"]), cfg=sp)
            else:
                loss = L.barlow_twins_loss(z1, z2, lambd=c["lambda"], batchnorm=c["batchnorm"],
                                           scale=c["scale"], symmetric=c["symmetric"])
        return loss, z1, z2


class SimCLR(Method):
    def loss(self, x1, x2, step, update=True):
        z1, z2 = self.embeddings(x1, x2)
        with _fp32(z1):
            loss = L.nt_xent_loss(z1, z2, temperature=self.loss_cfg["temperature"])
        return loss, z1, z2


class VICReg(Method):
    def loss(self, x1, x2, step, update=True):
        z1, z2 = self.embeddings(x1, x2)
        c = self.loss_cfg
        with _fp32(z1):
            loss = L.vicreg_loss(z1, z2, c["sim_coeff"], c["std_coeff"], c["cov_coeff"], c["eps"])
        return loss, z1, z2


class BYOL(Method):
    """Online encoder -> projector -> predictor regresses the EMA target's embedding of the other view."""

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.predictor(z).float()

    def prepare_predictor(self, z1: torch.Tensor, z2: torch.Tensor, step: int, update: bool) -> None:
        pass

    def loss(self, x1, x2, step, update=True):
        z1, z2 = self.embeddings(x1, x2)
        self.prepare_predictor(z1, z2, step, update)
        with torch.no_grad():
            t1 = self.model.target(x1).float()
            t2 = self.model.target(x2).float()
        p1, p2 = self.predict(z1), self.predict(z2)
        with _fp32(z1):
            loss = L.byol_loss(p1, t2.detach()) + L.byol_loss(p2, t1.detach())
        return loss, z1, z2

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        tau = L.ema_momentum(step + 1, self.total_steps, self.loss_cfg["ema_base"])
        online = [self.model.encoder, self.model.projector]
        for src, dst in zip(online, [self.model.target.encoder, self.model.target.projector]):
            for ps, pd in zip(src.parameters(), dst.parameters()):
                pd.mul_(tau).add_(ps.detach(), alpha=1 - tau)
            for bs, bd in zip(src.buffers(), dst.buffers()):
                bd.copy_(bs)


class DirectPred(BYOL):
    """BYOL with a linear predictor set from the eigendecomposition of F_hat every ``freq`` steps."""

    def _predictor_weight(self, corr: torch.Tensor) -> torch.Tensor:
        return L.directpred_predictor(corr, self.loss_cfg["eps"])

    def prepare_predictor(self, z1, z2, step, update):
        if not update:
            return
        m = self.model
        f = torch.cat([z1, z2]).detach().float()
        with _fp32(f):
            new = L.update_correlation(m.corr.float(), f, self.loss_cfg["rho"], bool(m.corr_initialized))
            m.corr.copy_(new)
            first = not bool(m.corr_initialized)
            m.corr_initialized.fill_(True)
            if first or step % self.loss_cfg["freq"] == 0:
                with torch.no_grad():
                    m.predictor.weight.copy_(self._predictor_weight(m.corr.float()))

    def predict(self, z):
        return self.model.predictor(z.to(self.model.predictor.weight.dtype)).float()


class DirectCopy(DirectPred):
    """BYOL with the linear predictor W_p = F_hat / ||F_hat|| + eps I, every ``freq`` steps."""

    def _predictor_weight(self, corr):
        return L.directcopy_predictor(corr, self.loss_cfg["eps"])


_METHODS = {"barlow_twins": BarlowTwins, "simclr": SimCLR, "vicreg": VICReg, "byol": BYOL,
            "directpred": DirectPred, "directcopy": DirectCopy}


def make_method(model: SSLModel, run_config: dict, embed: Callable | None = None) -> Method:
    """The :class:`Method` of ``run_config['method']`` for ``model`` (``embed``: optional compiled embed)."""
    name = run_config["method"]
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {sorted(_METHODS)}")
    return _METHODS[name](model, run_config, embed)
