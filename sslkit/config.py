"""Workflow configuration: loading overlays, schema validation with readable errors.

The schema is ``config/schema.yaml`` completed with the SSL method registry's parts (the method
enum, one block per registered method: ``sslkit.registry.compose_schema``), so that the methods
the config accepts are exactly the registered ones. The Snakefile validates with :func:`validate`
(filling defaults, as ``snakemake.utils.validate`` did), and so do bench scripts, notebooks and
tests. jsonschema's errors become one line per error that names the offending key, e.g.
``config key 'pairs.n': -5 is less than the minimum of 1``. Imports neither torch nor the method
modules (the registry is read statically).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "config"
SCHEMA_PATH = CONFIG_DIR / "schema.yaml"
DEFAULT_CONFIG = CONFIG_DIR / "config.yaml"

__all__ = ["ConfigError", "load_schema", "validate", "load_config", "deep_update", "key_path"]


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
    """Validate ``config`` against the schema (filling defaults in place); raise ``ConfigError``.

    All violations are reported, one per line, each naming its key.
    """
    schema = schema if schema is not None else load_schema()
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
        lines = [f"config key '{key_path(e)}': {e.message}" for e in errors]
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
