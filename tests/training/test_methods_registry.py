"""The SSL method registry: its torch-free view equals the imported one, the schema is built from it,
models and labels follow the declarations, and malformed declarations fail naming the module."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
import yaml

from sslkit import config as cfgmod
from sslkit import registry as R
from sslkit.training import methods as M
from sslkit.training.networks import build_model


def test_light_view_equals_imported_registry():
    light = R.read_specs()
    assert list(light) == list(M.METHODS) == list(R.METHODS)
    for name, cls in M.METHODS.items():
        assert cls.spec == light[name], name
        assert cls.spec.loss_keys == light[name].loss_keys, name
        assert issubclass(cls, M.Method) and cls.spec.name == name
    assert R.METHOD_LABELS == {n: c.spec.label for n, c in M.METHODS.items()}


def test_light_view_imports_no_torch(repo):
    code = "import sslkit.registry, sslkit.config; sslkit.config.load_schema()"
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                       cwd=repo, timeout=120)
    assert r.returncode == 0, r.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if "|" in line]
    assert imported, r.stderr[-2000:]
    assert not [m for m in imported if m.split(".")[0] in ("torch", "matplotlib", "torchvision")]
    assert "sslkit.training" not in imported


def test_schema_is_composed_from_the_registry():
    base = cfgmod.load_schema(registry=False)
    assert "enum" not in base["$defs"]["method"]
    assert not [k for k in base["$defs"] if k.startswith(("method_", "init_", "loss_")) and k != "method_common"
                and k != "init_common"]
    schema = cfgmod.load_schema()
    assert schema["$defs"]["method"]["enum"] == list(M.METHODS)
    assert schema["$defs"]["init"]["enum"] == list(R.INITS)
    assert list(schema["properties"]["methods"]["properties"]) == list(M.METHODS)
    ema = [n for n, c in M.METHODS.items() if c.spec.ema]
    assert schema["properties"]["noncontrastive"]["properties"]["methods"]["items"]["enum"] == ema
    for name, cls in M.METHODS.items():
        loss = schema["$defs"][f"method_{name}"]["allOf"][1]["properties"]["loss"]
        assert set(loss["properties"]) == set(cls.spec.loss_keys)


def test_default_config_has_a_block_per_trained_method():
    cfg = cfgmod.load_config()
    assert set(cfg["train"]["methods"]) <= set(cfg["methods"]) <= set(M.METHODS)


def _declare(tmp_path, name, body):
    (tmp_path / f"{name}.py").write_text(body)


def test_malformed_declarations_fail_naming_the_module(tmp_path):
    _declare(tmp_path, "a", "@register(name='a', label='A', loss_keys={}, ema=True)\nclass A(Method): pass\n")
    assert list(R.read_specs(tmp_path)) == ["a"] and R.read_specs(tmp_path)["a"].ema is True
    _declare(tmp_path, "b", "@register(name='a', label='B', loss_keys={})\nclass B(Method): pass\n")
    with pytest.raises(R.RegistryError, match=r"'a' is declared in both a.py and b.py"):
        R.read_specs(tmp_path)
    (tmp_path / "b.py").write_text("X = {}\n@register(name='b', label='B', loss_keys=X)\nclass B(Method): pass\n")
    with pytest.raises(R.RegistryError, match=r"b.py: @register keyword loss_keys= must be a literal"):
        R.read_specs(tmp_path)
    (tmp_path / "b.py").write_text("@register(name='b', label='B', loss_keys={}, predictor='deep')\nclass B: pass\n")
    with pytest.raises(R.RegistryError, match=r"b.py: predictor='deep'"):
        R.read_specs(tmp_path)
    (tmp_path / "b.py").write_text("@register(name='b', loss_keys={})\nclass B: pass\n")
    with pytest.raises(R.RegistryError, match=r"b.py: @register is missing keyword\(s\) \['label'\]"):
        R.read_specs(tmp_path)


def test_register_rejects_a_clash_and_a_missing_projector_builder():
    with pytest.raises(R.RegistryError, match="registered twice"):
        @M.register(name="simclr", label="Other", loss_keys={})
        class Other(M.Method):
            pass
    with pytest.raises(R.RegistryError, match="does not override build_projector"):
        @M.register(name="zz_test_only", label="Z", loss_keys={}, projector={"type": "object"})
        class Z(M.Method):
            pass
    assert "zz_test_only" not in M.METHODS and M.METHODS["simclr"].spec.label == "SimCLR"


def _run_config(method):
    cfg = cfgmod.load_config({"train": {"steps": 3}})
    block = copy.deepcopy(cfg["methods"][method])
    for init in R.INITS:
        block.pop(init, None)
    return {"method": method, "encoder": {"arch": "resnet18", "width": 0.0625, "small_stem": True},
            "data": {"channels": 1}, "method_config": block, "init_scale": 1.0, "loss": block["loss"],
            "steps": 3}


@pytest.mark.parametrize("method", list(R.METHODS))
def test_models_have_the_declared_parts(method):
    spec = M.METHODS[method].spec
    torch.manual_seed(0)
    model = build_model(_run_config(method))
    assert hasattr(model, "target") == spec.ema
    assert hasattr(model, "predictor") == (spec.predictor is not None)
    if spec.predictor == "linear":
        assert not model.predictor.weight.requires_grad and model.corr.shape == (model.predictor.in_features,) * 2
    x = torch.randn(4, 1, 8, 8)
    assert model.embed(x).shape == (4, _run_config(method)["method_config"]["projector"]["dim"])


def test_unknown_method_is_rejected_naming_it():
    rc = _run_config("simclr") | {"method": "moco"}
    with pytest.raises(ValueError, match=r"unknown method 'moco'.*'simclr'"):
        build_model(rc)
    cfg = yaml.safe_load(open(cfgmod.DEFAULT_CONFIG))
    cfg["train"]["methods"] = ["moco"]
    with pytest.raises(cfgmod.ConfigError, match=r"config key 'train.methods.0': 'moco' is not one of"):
        cfgmod.validate(cfg)


def test_table_labels_come_from_the_registry():
    from sslkit.analysis import tables

    assert tables.METHOD_LABELS is R.METHOD_LABELS
    rows = tables.table1_rows({"simclr": {"a_exp_th": 0.5, "a_exp_ntk": 0.4, "random_analytic": 0.1,
                                          "random_empirical": 0.1, "n": 10, "d": 2}})
    assert f"| {R.METHOD_LABELS['simclr']} |" in tables.table1_markdown(rows)
