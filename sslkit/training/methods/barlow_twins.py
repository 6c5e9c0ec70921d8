"""Barlow Twins (Zbontar et al. 2021), with the Appendix G spectral variants of its loss.

Loss keys: ``lambda`` (off-diagonal weight), ``batchnorm`` (standardise embeddings before C),
``scale`` (loss factor), ``symmetric`` (use (C + C^T)/2). ``run_config['speedups']`` ``transform`` /
``power`` (G.2/G.3) switch to ``sslkit.training.speedup_variants.barlow_twins_spectral_loss``.
"""

from __future__ import annotations

from sslkit.training import losses as L
from sslkit.training import speedup_variants as S
from sslkit.training.methods.base import Method, fp32, register


@register(
    name="barlow_twins",
    label="Barlow Twins",
    loss=L.barlow_twins_loss,
    predictor=None,
    ema=False,
    projector="mlp",
    loss_keys={
        "lambda": {"type": "number", "minimum": 0, "default": 0.0051},
        "batchnorm": {"type": "boolean", "default": True},
        "scale": {"type": "number", "exclusiveMinimum": 0, "default": 1.0},
        "symmetric": {"type": "boolean", "default": False},
    },
)
class BarlowTwins(Method):
    def loss(self, x1, x2, step, update=True):
        z1, z2 = self.embeddings(x1, x2)
        c = self.loss_cfg
        sp = self.speedups
        with fp32(z1):
            if sp["transform"] != "identity" or int(sp["power"]) != 2:
                loss = S.barlow_twins_spectral_loss(z1, z2, lambd=c["lambda"], batchnorm=c["batchnorm"],
                                                    scale=c["scale"], transform=sp["transform"],
                                                    power=int(sp["power"]), cfg=sp)
            else:
                loss = L.barlow_twins_loss(z1, z2, lambd=c["lambda"], batchnorm=c["batchnorm"],
                                           scale=c["scale"], symmetric=c["symmetric"])
        return loss, z1, z2
