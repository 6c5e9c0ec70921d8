"""DirectCLR: InfoNCE on the first d0 coordinates of the representation, no projector, no predictor."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sslkit import config as cfgmod
from sslkit.training.methods import METHODS, make_method
from sslkit.training.networks import build_model


def run_config(d0=5, init_scale=1.0, temperature=0.3):
    return {"method": "directclr", "encoder": {"arch": "resnet18", "width": 0.0625, "small_stem": True},
            "data": {"channels": 1}, "method_config": {"projector": {"dim": d0}}, "init_scale": init_scale,
            "loss": {"temperature": temperature}, "steps": 10}


def infonce_reference(h1: np.ndarray, h2: np.ndarray, d0: int, temperature: float) -> float:
    """InfoNCE over the 2N views of the first d0 coordinates, written out with numpy loops."""
    z = np.concatenate([h1[:, :d0], h2[:, :d0]]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for k in range(n2):
        pos = (k + n) % n2
        logits = [z[k] @ z[j] / temperature for j in range(n2) if j != k]
        total += -(z[k] @ z[pos] / temperature) + np.log(np.sum(np.exp(logits)))
    return total / n2


def test_registry_declaration():
    spec = METHODS["directclr"].spec
    assert (spec.label, spec.predictor, spec.ema) == ("DirectCLR", None, False)
    assert spec.loss_defaults == {"temperature": 0.2}


def test_model_has_no_projector_or_predictor_parameters():
    torch.manual_seed(0)
    model = build_model(run_config(d0=5))
    assert list(model.projector.parameters()) == [] and not hasattr(model, "predictor")
    assert not hasattr(model, "target")
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in model.encoder.parameters())
    x = torch.randn(6, 1, 8, 8)
    model.eval()
    h = model.hidden(x)
    assert h.shape == (6, 32) and torch.equal(model.embed(x), h[:, :5])


def test_loss_matches_numpy_infonce_on_sliced_representation():
    torch.manual_seed(1)
    model = build_model(run_config(d0=5, temperature=0.3))
    model.eval()  # batch statistics aside, the same h in the loss and in the reference
    x1, x2 = torch.randn(7, 1, 8, 8), torch.randn(7, 1, 8, 8)
    loss, z1, z2 = make_method(model, run_config(d0=5, temperature=0.3)).loss(x1, x2, 0)
    with torch.no_grad():
        h1, h2 = model.hidden(x1).numpy(), model.hidden(x2).numpy()
    assert z1.shape == (7, 5)
    want = infonce_reference(h1, h2, 5, 0.3)
    assert float(loss.detach()) == pytest.approx(want, rel=1e-5)
    # and not the InfoNCE of the whole representation (the slicing matters)
    assert abs(infonce_reference(h1, h2, 32, 0.3) - want) > 1e-3


def test_gradient_reaches_only_the_first_d0_coordinates():
    torch.manual_seed(2)
    model = build_model(run_config(d0=3))
    method = make_method(model, run_config(d0=3))
    method.embed = model.projector  # the "views" are h itself
    h1 = torch.randn(9, 32, requires_grad=True)
    h2 = torch.randn(9, 32, requires_grad=True)
    loss, _, _ = method.loss(h1, h2, 0)
    loss.backward()
    for g in (h1.grad, h2.grad):
        assert torch.count_nonzero(g[:, 3:]) == 0
        assert (g[:, :3].abs().sum(dim=0) > 0).all()


def test_d0_larger_than_representation_is_rejected_naming_the_key():
    with pytest.raises(ValueError, match=r"'methods.directclr.projector.dim': d0 = 33 .* h = 32"):
        build_model(run_config(d0=33))


def test_config_block_validates_and_rejects_a_projector_mlp():
    cfg = cfgmod.load_config()
    assert "directclr" in cfg["train"]["methods"]
    assert cfg["methods"]["directclr"]["projector"]["dim"] <= 32
    bad = copy.deepcopy(cfg)
    bad["methods"]["directclr"]["projector"]["hidden"] = [64]
    with pytest.raises(cfgmod.ConfigError, match=r"'methods.directclr.projector.hidden'"):
        cfgmod.validate(bad)
