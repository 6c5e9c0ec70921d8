"""SSL methods: one module per method, each declaring its ``Method`` class with ``@register``.

Importing this package imports every method module, which fills the registry
:data:`METHODS` (name -> class, sorted by name; each class's ``spec`` is its declaration). The same declarations
are read without torch by :mod:`sslkit.registry` (Snakefile, config schema).

Adding a method: write ``sslkit/training/methods/<name>.py`` with a ``Method`` subclass decorated
with ``@register(name=..., label=..., loss=..., predictor=..., ema=..., projector=..., loss_keys=...)``,
add its config block ``methods.<name>`` to config/config.yaml, and a test. See the README.
"""

from __future__ import annotations

import importlib
import pkgutil

from sslkit.training.methods.base import METHODS, Method, fp32, make_method, register

__all__ = ["Method", "register", "METHODS", "make_method", "fp32"]

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base" and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")
# name order, as sslkit.registry (import order depends on which module imports which)
for _name in sorted(METHODS):
    METHODS[_name] = METHODS.pop(_name)
