"""The SSL method registry, read without importing torch (for the Snakefile and the config schema).

Every SSL method is declared once, in its own module ``sslkit/training/methods/<name>.py``, by the
class decorator ``@register(...)`` of :mod:`sslkit.training.methods` on its ``Method`` class::

    @register(
        name="simclr",                 # config key methods.<name>, the {method} wildcard
        label="SimCLR",                # tables and figures
        loss=L.nt_xent_loss,           # loss function (the only keyword read at import time only)
        predictor=None,                # None | "mlp" (trained, config block `predictor`) | "linear" (set from F_hat)
        ema=False,                     # EMA target network (BYOL family)
        projector="mlp",               # "mlp" (config block `projector`) | JSON schema of its own projector block
        loss_keys={"temperature": {"type": "number", "exclusiveMinimum": 0, "default": 0.2}},
    )
    class SimCLR(Method): ...

``loss_keys`` is the JSON schema of the method's ``loss`` config block, one entry per key; the
``default`` of a key fills ``methods.<name>.loss`` when the config leaves it out.

This module reads those decorator keywords statically (``ast.literal_eval``; every keyword but
``loss`` must therefore be a literal), so that parsing the Snakefile and validating a config
import neither torch nor the method modules. ``tests/training/test_methods_registry.py`` checks
that this view equals the imported registry. The schema's method enum and its per-method blocks
are composed from it (:func:`compose_schema`), so ``config/schema.yaml`` holds no per-method part.
"""

from __future__ import annotations

import ast
import copy
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "INITS",
    "METHODS",
    "METHOD_LABELS",
    "METHODS_DIR",
    "MethodSpec",
    "RegistryError",
    "specs",
    "read_specs",
    "compose_schema",
    "PREDICTOR_KINDS",
]

#: init names of a method block's override sub-blocks: small / standard (Figs. 1-4) and ntk (an
#: extra run for the eNTK comparison of App. E, used where config ntk.init names it)
INITS = ("small", "standard", "ntk")
#: predictor kinds: none, a trained MLP (BYOL), a fixed linear map set from the running correlation
PREDICTOR_KINDS = (None, "mlp", "linear")
#: the folder of the method modules (one per method; files starting with "_" and base.py declare none)
METHODS_DIR = Path(__file__).resolve().parent / "training" / "methods"
_NOT_METHOD_MODULES = {"__init__.py", "base.py"}
#: decorator keywords read statically, with their defaults
_STATIC_KEYWORDS = {"name": None, "label": None, "predictor": None, "ema": False, "projector": "mlp",
                    "loss_keys": None}


class RegistryError(ValueError):
    """A method declaration is malformed or two methods clash; the message names the module."""


@dataclass(frozen=True)
class MethodSpec:
    """One method's declaration (the literal keywords of its ``@register``)."""

    name: str
    label: str
    predictor: str | None
    ema: bool
    projector: Any  # "mlp" or a dict: the JSON schema of the method's own projector block
    loss_keys: dict = field(hash=False)
    module: str  # file name of its module, e.g. "simclr.py"

    @property
    def loss_defaults(self) -> dict:
        return {k: copy.deepcopy(s["default"]) for k, s in self.loss_keys.items() if "default" in s}


def check_spec(spec: MethodSpec) -> MethodSpec:
    """Raise :class:`RegistryError` (naming the module and keyword) if ``spec`` is malformed."""
    where = f"@register of {spec.module}"
    if not isinstance(spec.name, str) or not spec.name.isidentifier() or not spec.name.islower():
        raise RegistryError(f"{where}: name={spec.name!r} must be a lower-case identifier (it is a config key "
                            f"and a wildcard value)")
    if "-" in spec.name:
        raise RegistryError(f"{where}: name={spec.name!r} must not contain '-' (run labels are method-init)")
    if not isinstance(spec.label, str) or not spec.label:
        raise RegistryError(f"{where}: label={spec.label!r} must be a non-empty string")
    if spec.predictor not in PREDICTOR_KINDS:
        raise RegistryError(f"{where}: predictor={spec.predictor!r}; expected one of {PREDICTOR_KINDS}")
    if not isinstance(spec.ema, bool):
        raise RegistryError(f"{where}: ema={spec.ema!r} must be True or False")
    if spec.projector != "mlp" and not isinstance(spec.projector, dict):
        raise RegistryError(f"{where}: projector={spec.projector!r}; expected 'mlp' or the JSON schema (a dict) "
                            f"of the method's own projector block")
    if not isinstance(spec.loss_keys, dict) or not all(isinstance(v, dict) for v in spec.loss_keys.values()):
        raise RegistryError(f"{where}: loss_keys must map each key of the method's loss block to its JSON "
                            f"schema (a dict), got {spec.loss_keys!r}")
    return spec


def _decorator_keywords(path: Path) -> dict | None:
    """The literal keywords of the ``@register(...)`` decorator in ``path`` (None: no declaration)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        for dec in node.decorator_list:
            if isinstance(dec, ast.Call) and getattr(dec.func, "id", getattr(dec.func, "attr", None)) == "register":
                found.append(dec)
    if not found:
        return None
    if len(found) > 1:
        raise RegistryError(f"{path.name}: {len(found)} @register declarations; one method per module")
    dec = found[0]
    if dec.args:
        raise RegistryError(f"{path.name}: @register takes keyword arguments only")
    kw = {}
    for k in dec.keywords:
        if k.arg not in _STATIC_KEYWORDS:
            continue
        try:
            kw[k.arg] = ast.literal_eval(k.value)
        except ValueError as err:
            raise RegistryError(f"{path.name}: @register keyword {k.arg}= must be a literal (str, bool, None, "
                                f"dict/list of literals) so the registry can be read without imports") from err
    return kw


def read_specs(methods_dir: Path = METHODS_DIR) -> dict[str, MethodSpec]:
    """Parse every method module of ``methods_dir``: name -> :class:`MethodSpec`, sorted by name."""
    out: dict[str, MethodSpec] = {}
    for path in sorted(Path(methods_dir).glob("*.py")):
        if path.name in _NOT_METHOD_MODULES or path.name.startswith("_"):
            continue
        kw = _decorator_keywords(path)
        if kw is None:
            continue
        missing = [k for k in ("name", "label", "loss_keys") if k not in kw]
        if missing:
            raise RegistryError(f"{path.name}: @register is missing keyword(s) {missing}")
        spec = check_spec(MethodSpec(**{**_STATIC_KEYWORDS, **kw}, module=path.name))
        if spec.name in out:
            raise RegistryError(f"method {spec.name!r} is declared in both {out[spec.name].module} and {path.name}")
        out[spec.name] = spec
    if not out:
        raise RegistryError(f"no @register method declaration found in {methods_dir}")
    return dict(sorted(out.items()))


@functools.cache
def specs() -> dict[str, MethodSpec]:
    """The registry (parsed once per process)."""
    return read_specs()


METHODS: tuple[str, ...] = tuple(specs())
METHOD_LABELS: dict[str, str] = {name: s.label for name, s in specs().items()}


# ---- the schema's registry-derived parts ------------------------------------------------------


def _loss_schema(spec: MethodSpec, with_defaults: bool) -> dict:
    props = {}
    for k, s in spec.loss_keys.items():
        s = copy.deepcopy(s)
        if not with_defaults:
            s.pop("default", None)
        props[k] = s
    schema = {"type": "object", "additionalProperties": False, "properties": props}
    required = [k for k, s in spec.loss_keys.items() if "default" not in s]
    if with_defaults and required:
        schema["required"] = required
    return schema


def _method_defs(spec: MethodSpec) -> dict:
    """$defs ``init_<name>`` (an init override block) and ``method_<name>`` (the method's block)."""
    projector = {"$ref": "#/$defs/projector"} if spec.projector == "mlp" else copy.deepcopy(spec.projector)
    init = {
        "allOf": [{"$ref": "#/$defs/init_common"},
                  {"properties": {"loss": _loss_schema(spec, False), "projector": projector}}],
        "unevaluatedProperties": False,
    }
    props: dict[str, Any] = {"loss": _loss_schema(spec, True), "projector": projector}
    props.update({i: {"$ref": f"#/$defs/init_{spec.name}"} for i in INITS})
    block: dict[str, Any] = {
        "description": f"{spec.label} (sslkit/training/methods/{spec.module})",
        "allOf": [{"$ref": "#/$defs/method_common"}, {"properties": props}],
        "unevaluatedProperties": False,
    }
    if spec.predictor == "mlp":
        props["predictor"] = {"$ref": "#/$defs/predictor"}
        block["allOf"].append({"required": ["predictor"]})
    return {f"init_{spec.name}": init, f"method_{spec.name}": block}


def compose_schema(base: dict, registry: dict[str, MethodSpec] | None = None) -> dict:
    """``base`` (config/schema.yaml) completed with the registry's parts (a new dict).

    Sets ``$defs.method.enum`` (the registered names), ``$defs.init.enum`` (:data:`INITS`), the
    ``$defs`` ``method_<name>``/``init_<name>`` blocks, ``properties.methods.properties`` and the
    enum of ``noncontrastive.methods`` (the methods with an EMA target).
    """
    registry = specs() if registry is None else registry
    schema = copy.deepcopy(base)
    try:
        defs = schema["$defs"]
        defs["method"]["enum"] = list(registry)
        defs["init"]["enum"] = list(INITS)
        for spec in registry.values():
            defs.update(_method_defs(spec))
        schema["properties"]["methods"]["properties"] = {
            n: {"$ref": f"#/$defs/method_{n}"} for n in registry}
        nc_items = schema["properties"]["noncontrastive"]["properties"]["methods"]["items"]
        nc_items["enum"] = [n for n, s in registry.items() if s.ema]
    except KeyError as err:
        raise RegistryError(f"the base schema lacks {err}: it needs $defs.method, $defs.init, "
                            f"properties.methods and properties.noncontrastive.properties.methods.items") from err
    return schema
