"""SimCLR (Chen et al. 2020): NT-Xent (InfoNCE) on the projector's embeddings. Loss key: ``temperature``."""

from __future__ import annotations

from sslkit.training import losses as L
from sslkit.training.methods.base import Method, register


@register(
    name="simclr",
    label="SimCLR",
    loss=L.nt_xent_loss,
    predictor=None,
    ema=False,
    projector="mlp",
    loss_keys={"temperature": {"type": "number", "exclusiveMinimum": 0, "default": 0.2}},
)
class SimCLR(Method):
    """The base class's loss: ``nt_xent_loss(z1, z2, temperature)``."""
