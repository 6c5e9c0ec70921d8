"""VICReg (Bardes et al. 2022): invariance + variance + covariance terms (official code).

Loss keys: ``sim_coeff``, ``std_coeff``, ``cov_coeff`` (25/25/1) and the variance term's ``eps``.
"""

from __future__ import annotations

from sslkit.training import losses as L
from sslkit.training.methods.base import Method, register


@register(
    name="vicreg",
    label="VICReg",
    loss=L.vicreg_loss,
    predictor=None,
    ema=False,
    projector="mlp",
    loss_keys={
        "sim_coeff": {"type": "number", "minimum": 0, "default": 25.0},
        "std_coeff": {"type": "number", "minimum": 0, "default": 25.0},
        "cov_coeff": {"type": "number", "minimum": 0, "default": 1.0},
        "eps": {"type": "number", "exclusiveMinimum": 0, "default": 1.0e-4},
    },
)
class VICReg(Method):
    """The base class's loss: ``vicreg_loss(z1, z2, sim_coeff, std_coeff, cov_coeff, eps)``."""
