"""DirectPred (Tian et al. 2021): BYOL with a linear predictor set from the running correlation.

Loss keys: ``ema_base`` (as BYOL), ``rho`` (F_hat <- rho F_hat + (1 - rho) E[f f^T]), ``eps`` (of the
predictor rule) and ``freq`` (steps between predictor updates).
"""

from __future__ import annotations

import torch

from sslkit.training import losses as L
from sslkit.training.methods.base import fp32, register
from sslkit.training.methods.byol import BYOL


@register(
    name="directpred",
    label="DirectPred",
    loss=L.byol_loss,
    predictor="linear",
    ema=True,
    projector="mlp",
    loss_keys={
        "ema_base": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.99},
        "rho": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.3},
        "eps": {"type": "number", "minimum": 0, "default": 0.1},
        "freq": {"type": "integer", "minimum": 1, "default": 1},
    },
)
class DirectPred(BYOL):
    """BYOL with a linear predictor set from the eigendecomposition of F_hat every ``freq`` steps."""

    def _predictor_weight(self, corr: torch.Tensor) -> torch.Tensor:
        return L.directpred_predictor(corr, self.loss_cfg["eps"])

    def prepare_predictor(self, z1, z2, step, update):
        if not update:
            return
        m = self.model
        f = torch.cat([z1, z2]).detach().float()
        with fp32(f):
            new = L.update_correlation(m.corr.float(), f, self.loss_cfg["rho"], bool(m.corr_initialized))
            m.corr.copy_(new)
            first = not bool(m.corr_initialized)
            m.corr_initialized.fill_(True)
            if first or step % self.loss_cfg["freq"] == 0:
                with torch.no_grad():
                    m.predictor.weight.copy_(self._predictor_weight(m.corr.float()))

    def predict(self, z):
        return self.model.predictor(z.to(self.model.predictor.weight.dtype)).float()
