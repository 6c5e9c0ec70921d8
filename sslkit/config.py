"""Workflow configuration: loading overlays, schema validation with readable errors.

The schema is ``config/schema.yaml`` completed with the SSL method registry's parts (the method
enum, one block per registered method: ``sslkit.registry.compose_schema``), so that the methods
the config accepts are exactly the registered ones. The Snakefile validates with :func:`validate`
(filling defaults, as ``snakemake.utils.validate`` did), and so do bench scripts, notebooks and
tests. jsonschema's errors become one line per error that names the offending key, e.g.
``config key 'pairs.n': -5 is less than the minimum of 1``. Imports neither torch nor the method
modules (the registry is read statically).

Command-line values: Snakemake parses a nested ``--config 'pairs={n: 100}'`` with YAML's base
loader, so every nested scalar arrives as a string (``{'n': '100'}``). :func:`validate` first
types such strings by the schema (:func:`coerce`: where the schema does not allow a string, a
string that reads as a value of an allowed type -- integer, number, true/false, null, or a list or
mapping typed likewise -- is replaced by it), so nested overrides work; a string that does not
read as an allowed type is reported with a pointer to overlay files (``--configfile my.yaml``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "config"
SCHEMA_PATH = CONFIG_DIR / "schema.yaml"
DEFAULT_CONFIG = CONFIG_DIR / "config.yaml"

__all__ = ["ConfigError", "load_schema", "validate", "load_config", "deep_update", "key_path", "coerce"]


class ConfigError(ValueError):
    """A config value is missing, unknown or out of range; the message names the key."""


def load_schema(path: str | os.PathLike = SCHEMA_PATH, registry: bool = True) -> dict:
    """The config schema: the file ``path`` completed with the method registry's parts (``registry=False``:
    the file alone)."""
    with open(path) as fh:
        schema = yaml.safe_load(fh)
    if registry:
        from sslkit.registry import compose_schema

        schema = compose_schema(schema)
    return schema


def deep_update(base: dict, overlay: Mapping) -> dict:
    """Recursively merge ``overlay`` into ``base`` (in place) the way Snakemake merges configfiles."""
    for k, v in overlay.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            deep_update(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def key_path(error) -> str:
    """Dotted config key of a jsonschema error (the unexpected key for additionalProperties)."""
    parts = [str(p) for p in error.absolute_path]
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        import re

        extra = re.findall(r"'([^']+)' (?:was|were) unexpected", error.message)
        names = re.findall(r"'([^']+)'", error.message.split("(")[-1]) if not extra else extra
        if names:
            parts.append(names[0])
    return ".".join(parts) or "<top level>"


def _resolve(node: Any, root: Mapping) -> list[Mapping]:
    """The sub-schemas that apply to one value: ``node`` with local ``$ref`` and ``allOf`` expanded."""
    if not isinstance(node, Mapping):
        return []
    out = [node]
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        out += _resolve(target, root)
    for sub in node.get("allOf", []):
        out += _resolve(sub, root)
    return out


def _types(schemas: list[Mapping], root: Mapping) -> set[str] | None:
    """The JSON types the schemas allow (None: unconstrained)."""
    allowed = None
    for sc in schemas:
        t = sc.get("type")
        branches = sc.get("anyOf") or sc.get("oneOf")
        if t is not None:
            ts = {t} if isinstance(t, str) else set(t)
        elif branches:
            ts = set()
            for b in branches:
                bt = _types(_resolve(b, root), root)
                if bt is None:
                    ts = None
                    break
                ts |= bt
            if ts is None:
                continue
        else:
            continue
        allowed = ts if allowed is None else allowed & ts
    return allowed


def _parse_text(text: str, types: set[str]) -> Any:
    """``text`` as a value of one of ``types`` (not string), or the text itself if it reads as none."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
        return text  # YAML 1.1's yes/no/on/off: too easily a typo; only true/false are booleans here
    if isinstance(value, str) and ("number" in types):
        try:
            value = float(text)  # YAML 1.1 reads 1e-3 (no dot) as a string
        except ValueError:
            return text
    fits = {"integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "boolean": isinstance(value, bool), "null": value is None,
            "array": isinstance(value, list), "object": isinstance(value, dict)}
    return value if any(fits.get(t, False) for t in types) else text


def coerce(config: Any, schema: Mapping, root: Mapping | None = None) -> Any:
    """Type the string values of ``config`` by ``schema`` (in place where possible; returns the value).

    Snakemake's ``--config 'pairs={n: 100}'`` gives ``{'n': '100'}``; where the schema does not allow a
    string there, ``'100'`` becomes ``100`` (likewise numbers, booleans, ``null`` and lists). Values the
    schema allows as strings, and strings that read as no allowed type, are left for validation to report.
    """
    root = schema if root is None else root
    schemas = _resolve(schema, root)
    if isinstance(config, str):
        types = _types(schemas, root)
        if types and "string" not in types:
            value = _parse_text(config, types)
            return coerce(value, schema, root) if isinstance(value, (list, dict)) else value
        return config
    if isinstance(config, dict):
        for key in list(config):
            sub = [sc["properties"][key] for sc in schemas if key in sc.get("properties", {})]
            if not sub:
                sub = [sc["additionalProperties"] for sc in schemas
                       if isinstance(sc.get("additionalProperties"), Mapping)]
            if sub:
                config[key] = coerce(config[key], {"allOf": sub}, root)
        return config
    if isinstance(config, list):
        items = [sc["items"] for sc in schemas if isinstance(sc.get("items"), Mapping)]
        if items:
            config[:] = [coerce(v, {"allOf": items}, root) for v in config]
    return config


_OVERLAY_HINT = ("(values inside a nested --config 'key={...}' arrive as text; if this one is not what you meant, "
                 "put the change in an overlay file and pass it with --configfile my.yaml)")


def _validator(schema: dict):
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    validate_props = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return jsonschema.validators.extend(cls, {"properties": set_defaults})(schema)


def validate(config: dict, schema: dict | None = None, set_defaults: bool = True) -> dict:
    """Type string values by the schema (:func:`coerce`), then validate ``config`` against it (filling
    defaults in place); raise ``ConfigError``.

    All violations are reported, one per line, each naming its key.
    """
    schema = schema if schema is not None else load_schema()
    coerce(config, schema)
    if set_defaults:
        validator = _validator(schema)
    else:
        import jsonschema

        validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    # an object whose sub-schema failed also reports its keys as "unevaluated": keep the real error
    paths = [tuple(map(str, e.absolute_path)) for e in errors]
    errors = [e for e, p in zip(errors, paths)
              if not (e.validator == "unevaluatedProperties"
                      and any(len(q) > len(p) and q[:len(p)] == p for q in paths))]
    if errors:
        lines = [f"config key '{key_path(e)}': {e.message}"
                 + (f" {_OVERLAY_HINT}" if e.validator == "type" and isinstance(e.instance, str) else "")
                 for e in errors]
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    return config


def load_config(*overlays: str | os.PathLike | Mapping, base: str | os.PathLike | None = DEFAULT_CONFIG,
                check: bool = True) -> dict:
    """Default config, overlaid by YAML files or dicts in order (like ``--configfile``/``--config``)."""
    config: dict = {}
    if base is not None:
        with open(base) as fh:
            config = yaml.safe_load(fh) or {}
    for ov in overlays:
        if not isinstance(ov, Mapping):
            with open(ov) as fh:
                ov = yaml.safe_load(fh) or {}
        deep_update(config, ov)
    return validate(config) if check else config
