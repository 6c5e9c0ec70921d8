"""Config schema: the defaults validate; bad values are rejected with the key named."""
from __future__ import annotations

import copy

import pytest
import yaml

from sslkit import config as cfgmod


@pytest.fixture(scope="module")
def default():
    with open(cfgmod.DEFAULT_CONFIG) as fh:
        return yaml.safe_load(fh)


def test_default_and_overlays_validate(repo, default):
    cfgmod.validate(copy.deepcopy(default))
    for overlay in sorted((repo / "config").glob("*.yaml")):
        if overlay.name in ("schema.yaml", "config.yaml"):
            continue
        cfgmod.load_config(overlay)


def test_defaults_are_filled_from_schema():
    cfg = cfgmod.validate({"dataset": "digits"})
    assert cfg["pairs"]["n"] == 500 and cfg["tracking"]["enabled"] is True


BAD = [
    ({"pairs": {"nn": 3}}, "pairs.nn"),                      # unknown key in a section
    ({"bogus_top_level": 1}, "bogus_top_level"),             # unknown top-level key
    ({"pairs": {"n": "many"}}, "pairs.n"),                   # wrong type
    ({"pairs": {"n": -5}}, "pairs.n"),                       # negative size
    ({"pairs": {"crop": 0}}, "pairs.crop"),                  # zero size
    ({"dataset": "mnist"}, "dataset"),                       # unknown dataset
    ({"train": {"methods": ["barlow_twins", "moco"]}}, "train.methods.1"),  # unknown method
    ({"download": "yes"}, "download"),                       # wrong type
]


@pytest.mark.parametrize("overlay,key", BAD, ids=[k for _, k in BAD])
def test_bad_config_rejected_naming_key(default, overlay, key):
    cfg = cfgmod.deep_update(copy.deepcopy(default), overlay)
    with pytest.raises(cfgmod.ConfigError) as err:
        cfgmod.validate(cfg)
    assert f"'{key}'" in str(err.value)


@pytest.mark.parametrize("overlay,key", BAD[:6], ids=[k for _, k in BAD[:6]])
def test_snakemake_validate_rejects_too(repo, default, overlay, key):
    """The Snakefile's own validate() call rejects the same configs, and names the key."""
    from snakemake.utils import validate

    cfg = cfgmod.deep_update(copy.deepcopy(default), overlay)
    with pytest.raises(Exception) as err:
        validate(cfg, str(repo / "config" / "schema.yaml"))
    msg = str(err.value)

    def instance(path):  # how jsonschema names a location: On instance['train']['methods'][1]
        return "On instance" + "".join(f"[{int(p)}]" if p.isdigit() else f"['{p}']" for p in path) + ":"

    *parent, last = key.split(".")
    # the bad value's own location, or (an unknown key) its section and the key's name
    assert instance(key.split(".")) in msg or (f"'{last}' was unexpected" in msg and instance(parent) in msg), msg
