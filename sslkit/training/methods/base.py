"""The :class:`Method` base class, the ``@register`` decorator and the registry ``METHODS``.

A method is one module of this package holding one ``Method`` subclass declared with
``@register(...)`` (the keywords are listed in :mod:`sslkit.registry`). ``make_method(model,
run_config)`` returns the registered class's instance for ``run_config['method']``, with

- ``loss(x1, x2, step, update=True) -> (loss, z1, z2)``: x1, x2 are N x C x H x W views; z1, z2
  the N x d online embeddings (the ones whose spectra are logged). ``update=False`` leaves every
  piece of method state alone (DirectPred/DirectCopy's running correlation F_hat and predictor),
  for evaluation on the fixed batch. The base class computes ``loss_fn(z1, z2, **run_config['loss'])``
  with ``loss_fn`` the ``loss=`` of the declaration; methods with more than a loss of two
  embeddings override it.
- ``after_step(step)``: called after optimiser step ``step`` (0-based), e.g. the EMA update.
- ``build_projector(in_dim, cfg)`` (class method): the projector of ``methods.<name>.projector``;
  the default is the MLP of ``sslkit.training.networks.mlp``. A method declared with its own
  ``projector`` schema overrides it.

Both views go through the network separately (batch-norm statistics per view, as in the official
Barlow Twins and VICReg code). Losses are computed in float32 (embeddings are cast and autocast
is switched off around them, ``fp32``), also under bf16 autocast: their matmuls (C = z1^T z2 / N,
the covariance, SimCLR's logits) would otherwise run in bf16.

``run_config['speedups']`` (present only when something is switched on; ``sslkit.training.speedup_variants``):
G.1 ``precondition`` (any method: hooks on z1, z2 that right-multiply their gradient by
(F^T F + a I)^{-1}); G.2/G.3 are Barlow Twins' (see its module).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from sslkit.plan import validate_speedups
from sslkit.registry import MethodSpec, RegistryError, check_spec
from sslkit.training import speedup_variants as S

if TYPE_CHECKING:
    from sslkit.training.networks import SSLModel

__all__ = ["Method", "register", "METHODS", "make_method", "fp32"]

#: name -> registered Method class (filled by @register when the method modules are imported)
METHODS: dict[str, type[Method]] = {}


def fp32(z: torch.Tensor):
    """Autocast off on ``z``'s device: what runs inside keeps float32 inputs in float32."""
    return torch.autocast(z.device.type, enabled=False)


def register(*, name: str, label: str, loss: Callable | None = None, predictor: str | None = None,
             ema: bool = False, projector: Any = "mlp", loss_keys: dict) -> Callable[[type], type]:
    """Class decorator declaring an SSL method (see :mod:`sslkit.registry` for the keywords).

    Every keyword but ``loss`` must be written as a literal: :mod:`sslkit.registry` reads them
    without importing the module.
    """

    def deco(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise RegistryError(f"@register(name={name!r}) decorates {cls!r}, not a Method subclass")
        module = cls.__module__.rsplit(".", 1)[-1] + ".py"
        spec = check_spec(MethodSpec(name=name, label=label, predictor=predictor, ema=ema, projector=projector,
                                     loss_keys=loss_keys, module=module))
        if name in METHODS and METHODS[name] is not cls:
            raise RegistryError(f"method {name!r} is registered twice ({METHODS[name].__module__} and "
                                f"{cls.__module__})")
        if projector != "mlp" and cls.build_projector.__func__ is Method.build_projector.__func__:
            raise RegistryError(f"method {name!r} declares its own projector block but {cls.__name__} does not "
                                f"override build_projector")
        cls.spec = spec
        cls.loss_fn = staticmethod(loss) if loss is not None else None
        METHODS[name] = cls
        return cls

    return deco


class Method:
    """Base class: ``loss`` returns (loss, z1, z2); ``after_step`` updates non-gradient state."""

    spec: MethodSpec
    loss_fn: Callable | None = None

    def __init__(self, model: SSLModel, run_config: dict):
        self.model = model
        self.loss_cfg = {**self.spec.loss_defaults, **run_config["loss"]}
        self.total_steps = int(run_config["steps"])
        self.embed = model.embed
        self.speedups = validate_speedups(run_config.get("speedups"), run_config["method"])

    @classmethod
    def build_projector(cls, in_dim: int, cfg: dict) -> nn.Module:
        """The projector (N x in_dim -> N x d) of the config block ``methods.<name>.projector``."""
        from sslkit.training.networks import mlp

        return mlp(in_dim, cfg["hidden"], cfg["dim"], cfg["batchnorm"], cfg["last_bias"])

    def embeddings(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z1, z2 = self.embed(x1).float(), self.embed(x2).float()
        if self.speedups["precondition"]:
            S.attach_preconditioner(z1, z2, float(self.speedups["precondition_alpha"]),
                                    bool(self.speedups["precondition_relative"]))
        return z1, z2

    def loss(self, x1, x2, step: int, update: bool = True):
        if self.loss_fn is None:
            raise NotImplementedError(f"{type(self).__name__} declares no loss= and does not override loss()")
        z1, z2 = self.embeddings(x1, x2)
        with fp32(z1):
            loss = self.loss_fn(z1, z2, **self.loss_cfg)
        return loss, z1, z2

    def after_step(self, step: int) -> None:
        pass


def make_method(model: SSLModel, run_config: dict) -> Method:
    """The :class:`Method` of ``run_config['method']`` for ``model``."""
    name = run_config["method"]
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {sorted(METHODS)} (a method is a module of "
                         f"sslkit/training/methods/ declared with @register)")
    return METHODS[name](model, run_config)
