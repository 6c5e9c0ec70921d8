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


BAD_METHODS = [
    ({"methods": {"moco": {}}}, "methods.moco"),                                   # unregistered method
    ({"methods": {"simclr": {"loss": {"tau": 0.1}}}}, "methods.simclr.loss.tau"),  # not one of its loss keys
    ({"methods": {"simclr": {"loss": {"temperature": 0}}}}, "methods.simclr.loss.temperature"),  # out of range
    ({"methods": {"simclr": {"predictor": {"hidden": [8], "batchnorm": True}}}}, "methods.simclr.predictor"),
    ({"methods": {"vicreg": {"small": {"loss": {"lambda": 1.0}}}}}, "methods.vicreg.small.loss.lambda"),
    ({"noncontrastive": {"methods": ["simclr"]}}, "noncontrastive.methods.0"),      # no EMA target
    ({"ntk": {"methods": ["barlow_twins", "moco"]}}, "ntk.methods.1"),
]


@pytest.mark.parametrize("overlay,key", BAD_METHODS, ids=[k for _, k in BAD_METHODS])
def test_registry_parts_of_schema_reject_naming_key(default, overlay, key):
    """The method enum and per-method blocks come from the registry; violations name their key."""
    cfg = cfgmod.deep_update(copy.deepcopy(default), overlay)
    with pytest.raises(cfgmod.ConfigError) as err:
        cfgmod.validate(cfg)
    assert f"'{key}'" in str(err.value), str(err.value)


def test_loss_defaults_fill_the_method_block_not_its_init_overrides(default):
    """A loss key left out of methods.<m>.loss takes the registry's default; an init override block
    gets no defaults (they would silently replace the method's own values)."""
    from sslkit.registry import specs

    cfg = copy.deepcopy(default)
    del cfg["methods"]["barlow_twins"]["loss"]["scale"]
    cfg["methods"]["vicreg"]["loss"] = {"sim_coeff": 10.0}
    cfgmod.validate(cfg)
    bt = cfg["methods"]["barlow_twins"]
    assert bt["loss"]["scale"] == specs()["barlow_twins"].loss_defaults["scale"] == 1.0
    assert bt["small"]["loss"] == default["methods"]["barlow_twins"]["small"]["loss"]
    assert cfg["methods"]["vicreg"]["loss"] == {"sim_coeff": 10.0, "std_coeff": 25.0, "cov_coeff": 1.0, "eps": 1e-4}
    assert "loss" not in cfg["methods"]["vicreg"]["small"]


def test_nested_command_line_values_are_typed_by_the_schema():
    """Snakemake's --config 'pairs={n: 100}' gives strings ({'n': '100'}), which validation used to reject."""
    from snakemake.cli import parse_config

    over = parse_config(["pairs={n: 100, crop: null}", "train={checkpoints: {every: 3}, steps: 7}",
                         "methods={simclr: {optimizer: {lr: 1e-3}, projector: {hidden: [16, 32]}}}"])
    assert over["pairs"] == {"n": "100", "crop": "null"}  # what Snakemake passes on
    cfg = cfgmod.load_config(over)
    assert cfg["pairs"]["n"] == 100 and cfg["pairs"]["crop"] is None
    assert cfg["train"]["checkpoints"]["every"] == 3 and cfg["train"]["steps"] == 7
    assert cfg["methods"]["simclr"]["optimizer"]["lr"] == 1e-3
    assert cfg["methods"]["simclr"]["projector"]["hidden"] == [16, 32]
    assert cfg["pairs"]["split"] == "train"  # strings the schema allows stay strings
    with pytest.raises(cfgmod.ConfigError, match=r"'pairs.n': 'lots' is not of type.*--configfile"):
        cfgmod.load_config(parse_config(["pairs={n: lots}"]))
