"""BYOL (Grill et al. 2020): the online encoder -> projector -> MLP predictor regresses the EMA
target's embedding of the other view. Loss key: ``ema_base`` (base momentum of the target's cosine
schedule, ``sslkit.training.losses.ema_momentum``)."""

from __future__ import annotations

import torch

from sslkit.training import losses as L
from sslkit.training.methods.base import Method, fp32, register


@register(
    name="byol",
    label="BYOL",
    loss=L.byol_loss,
    predictor="mlp",
    ema=True,
    projector="mlp",
    loss_keys={"ema_base": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.99}},
)
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
        with fp32(z1):
            loss = L.byol_loss(p1, t2.detach()) + L.byol_loss(p2, t1.detach())
        return loss, z1, z2

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        tau = L.ema_momentum(step + 1, self.total_steps, self.loss_cfg["ema_base"])
        online = [self.model.encoder, self.model.projector]
        for src, dst in zip(online, [self.model.target.encoder, self.model.target.projector], strict=True):
            for ps, pd in zip(src.parameters(), dst.parameters(), strict=True):
                pd.mul_(tau).add_(ps.detach(), alpha=1 - tau)
            for bs, bd in zip(src.buffers(), dst.buffers(), strict=True):
                bd.copy_(bs)
