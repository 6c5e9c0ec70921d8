"""DirectCLR (Jing et al. 2022, "Understanding dimensional collapse in contrastive self-supervised
learning"): InfoNCE on the first d0 coordinates of the encoder's representation, with no projector
and no predictor.

The embedding the loss sees is z = h[:, :d0] (h = the encoder's N x h representation), taken by a
parameter-free "projector" (:class:`FirstCoordinates`), so ``model.embed(x) = model.hidden(x)[:, :d0]``
and the analysis stage's contract (``sslkit.training.networks``) holds unchanged. Config block
``methods.directclr.projector: {dim: d0}`` (d0 <= h). Loss key: ``temperature`` of
``sslkit.training.losses.nt_xent_loss`` (cosine similarity / temperature over the 2N views).
The gradient reaches h only through its first d0 coordinates; the remaining h - d0 learn only
through the weights they share with them (the dimensional-collapse argument of Jing et al.).
"""

from __future__ import annotations

import torch
from torch import nn

from sslkit.training import losses as L
from sslkit.training.methods.base import Method, register


class FirstCoordinates(nn.Module):
    """N x h -> N x d0: the first ``d0`` coordinates (no parameters)."""

    def __init__(self, d0: int):
        super().__init__()
        self.d0 = int(d0)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h[:, : self.d0]

    def extra_repr(self) -> str:
        return f"d0={self.d0}"


@register(
    name="directclr",
    label="DirectCLR",
    loss=L.nt_xent_loss,
    predictor=None,
    ema=False,
    projector={
        "description": "no trainable projector: the loss sees the first dim = d0 coordinates of the representation",
        "type": "object",
        "additionalProperties": False,
        "required": ["dim"],
        "properties": {"dim": {"type": "integer", "minimum": 1}},
    },
    loss_keys={"temperature": {"type": "number", "exclusiveMinimum": 0, "default": 0.2}},
)
class DirectCLR(Method):
    """The base class's loss, ``nt_xent_loss(z1, z2, temperature)``, on z = h[:, :d0]."""

    @classmethod
    def build_projector(cls, in_dim: int, cfg: dict) -> nn.Module:
        d0 = int(cfg["dim"])
        if not 1 <= d0 <= in_dim:
            raise ValueError(f"config key 'methods.directclr.projector.dim': d0 = {d0} must be between 1 and the "
                             f"encoder's representation size h = {in_dim} (raise encoder.width or lower dim)")
        return FirstCoordinates(d0)
