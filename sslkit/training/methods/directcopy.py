"""DirectCopy (Wang et al. 2021): BYOL with the linear predictor W_p = F_hat / ||F_hat||_F + eps I.

Loss keys as DirectPred's.
"""

from __future__ import annotations

from sslkit.training import losses as L
from sslkit.training.methods.base import register
from sslkit.training.methods.directpred import DirectPred


@register(
    name="directcopy",
    label="DirectCopy",
    loss=L.byol_loss,
    predictor="linear",
    ema=True,
    projector="mlp",
    loss_keys={
        "ema_base": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.99},
        "rho": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.3},
        "eps": {"type": "number", "minimum": 0, "default": 0.3},
        "freq": {"type": "integer", "minimum": 1, "default": 1},
    },
)
class DirectCopy(DirectPred):
    """BYOL with the linear predictor W_p = F_hat / ||F_hat|| + eps I, every ``freq`` steps."""

    def _predictor_weight(self, corr):
        return L.directcopy_predictor(corr, self.loss_cfg["eps"])
