"""sslkit.analysis.checkpoints: checkpoints -> evaluation pairs -> spectra / probe / steps, with a tiny torch model."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sslkit import data  # noqa: E402
from sslkit.analysis import checkpoints as analysis  # noqa: E402
from sslkit.analysis import spectra as spectrum  # noqa: E402


class Tiny(torch.nn.Module):
    """hidden = ReLU(A x) (16), embedding = B hidden (4); x is a normalised NCHW batch."""

    def __init__(self, in_dim: int, scale: float = 1.0):
        super().__init__()
        self.A = torch.nn.Linear(in_dim, 16)
        self.B = torch.nn.Linear(16, 4, bias=False)
        with torch.no_grad():
            for p in self.parameters():
                p.mul_(scale)

    def hidden(self, x):
        return torch.relu(self.A(x.flatten(1)))

    def embed(self, x):
        return self.B(self.hidden(x))


def augment(batch, gen, view=0):
    """Toy augmentation: random horizontal flip + pixel noise, drawn from ``gen``."""
    x = batch.permute(0, 3, 1, 2).float() / 255.0
    flip = torch.rand(x.shape[0], generator=gen, device=x.device) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    return x + 0.05 * torch.randn(x.shape, generator=gen, device=x.device)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    data.prepare_dataset("digits", out)
    return data.load_split(out, "train"), data.load_split(out, "test")


@pytest.fixture
def run(tmp_path, digits):
    """Three 'checkpoints' of a growing model, saved with torch.save, and their manifest entries."""
    torch.manual_seed(0)
    dim = int(np.prod(digits[0].images.shape[1:]))
    cks = []
    for i, scale in enumerate([1e-3, 0.1, 1.0, 1.0]):
        path = tmp_path / f"ck{i}.pt"
        torch.save(Tiny(dim, scale).state_dict(), path)
        cks.append({"step": 100 * i, "t": 0.1 * i, "epoch": i, "path": str(path)})

    def load_fn(path):
        m = Tiny(dim)
        m.load_state_dict(torch.load(path))
        return m, {"method": "barlow_twins"}

    return cks, load_fn


def test_select_checkpoints():
    cks = [{"step": s} for s in (30, 0, 10, 20, 40)]
    assert [c["step"] for c in analysis.select_checkpoints(cks, 1)] == [0, 10, 20, 30, 40]
    assert [c["step"] for c in analysis.select_checkpoints(cks, 2)] == [0, 20, 40]
    assert [c["step"] for c in analysis.select_checkpoints(cks, 3)] == [0, 30, 40]
    assert analysis.select_checkpoints([], 2) == []
    with pytest.raises(ValueError, match="checkpoint_every"):
        analysis.select_checkpoints(cks, 0)


def test_eval_pairs_are_seeded(digits):
    imgs = digits[0].images
    a = analysis.make_eval_pairs(imgs, augment, 300, seed=3, chunk=128)
    b = analysis.make_eval_pairs(imgs, augment, 300, seed=3, chunk=128)
    c = analysis.make_eval_pairs(imgs, augment, 300, seed=4, chunk=128)
    assert a["x1"].shape == (300, 1, 8, 8) and len(set(a["index"].tolist())) == 300
    assert torch.equal(a["x1"], b["x1"]) and torch.equal(a["x2"], b["x2"])
    assert not torch.equal(a["x1"], c["x1"]) and not torch.equal(a["x1"], a["x2"])
    # the two views are the training's view 0 and view 1 (their blur/solarisation probabilities differ)
    views = []
    analysis.make_eval_pairs(imgs, lambda b, g, view=0: views.append(view) or augment(b, g), 300, seed=3, chunk=128)
    assert views == [0, 1] * 3
    # more pairs than images: drawn with replacement
    assert len(analysis.make_eval_pairs(imgs[:50], augment, 80, seed=0)["index"]) == 80


def test_spectra_over_checkpoints_match_direct_numpy(run, digits):
    cks, load_fn = run
    imgs = digits[0].images
    recs = analysis.spectra_over_checkpoints(cks, imgs, n_pairs=400, seed=1, load_fn=load_fn,
                                             build_augment=lambda cfg, dev: augment, batch_size=64,
                                             relative=[1e-3])
    assert [r["step"] for r in recs] == [0, 100, 200, 300]
    pairs = analysis.make_eval_pairs(imgs, augment, 400, seed=1)
    model, _ = load_fn(cks[2]["path"])
    with torch.no_grad():
        z1, z2 = model.embed(pairs["x1"]).double().numpy(), model.embed(pairs["x2"]).double().numpy()
        h = torch.cat([model.hidden(pairs["x1"]), model.hidden(pairs["x2"])]).double().numpy()
    C = (z1.T @ z2 + z2.T @ z1) / (2 * 400)
    ev = recs[2]["eigenvalues"]
    np.testing.assert_allclose(ev["embedding_C"], np.sort(np.linalg.eigvalsh(C))[::-1], rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(ev["hidden_cov"], np.sort(np.linalg.eigvalsh(np.cov(h.T, bias=True)))[::-1],
                               rtol=1e-5, atol=1e-10)
    # small init -> tiny spectrum; the table has one row per (checkpoint, space, index)
    assert ev["embedding_cov"][0] > 1e3 * recs[0]["eigenvalues"]["embedding_cov"][0]
    table = spectrum.spectra_table(recs)
    assert len(table) == 4 * (4 + 4 + 16)
    # a diverged checkpoint fails naming its file
    torch.save({k: v * np.nan for k, v in torch.load(cks[3]["path"]).items()}, cks[3]["path"])
    with pytest.raises(ValueError, match=r"ck3\.pt \(step 300\).*NaN.*learning rate"):
        analysis.spectra_over_checkpoints(cks, imgs, n_pairs=50, seed=1, load_fn=load_fn,
                                          build_augment=lambda cfg, dev: augment)
    res = analysis.steps_from_table(table, "barlow_twins", {"max_modes": 4, "hidden_max_modes": 8})
    assert res["space"] == "embedding_C" and res["hidden_space"] == "hidden_cov"
    json.dumps(res, allow_nan=False)
    assert set(res) >= {"step_times", "n_steps", "sequential", "hidden_coincidence"}


def test_probe_over_checkpoints(run, digits):
    cks, load_fn = run
    train, test = digits
    tab = analysis.probe_over_checkpoints(cks[::3], train, test, load_fn=load_fn, max_train=600, max_test=300, k=5)
    assert list(tab["step"]) == [0, 300]
    assert set(tab.columns) >= {"step", "t", "epoch", "linear_acc", "knn_acc"}
    assert (tab["n_train"] == 600).all() and (tab["n_test"] == 300).all()
    # even a random ReLU layer gives digits features far above chance (0.1)
    assert tab["linear_acc"].iloc[-1] > 0.6 and tab["knn_acc"].iloc[-1] > 0.6
    tab2 = analysis.probe_over_checkpoints(cks[::3], train, test, load_fn=load_fn, max_train=600, max_test=300, k=5)
    assert tab.equals(tab2)


def test_config_defaults_match_module_defaults():
    """config/config.yaml's analysis.steps / analysis.probe are the modules' documented defaults."""
    import yaml

    from sslkit import config as cfgmod
    from sslkit.analysis import probes as probe
    from sslkit.analysis import steps

    with open(cfgmod.DEFAULT_CONFIG) as fh:
        cfg = yaml.safe_load(fh)["analysis"]
    params, n_modes, hidden_modes = analysis.step_config(cfg["steps"])
    assert n_modes is None and hidden_modes is None
    assert set(params) == set(steps.DEFAULTS)
    for k, v in steps.DEFAULTS.items():
        if isinstance(v, str):
            assert params[k] == v, k
        else:
            np.testing.assert_allclose(params[k], v, err_msg=k)
    assert cfg["probe"] == probe.DEFAULTS
    # the schema's defaults agree too
    filled = cfgmod.validate({"dataset": "digits"})["analysis"]
    assert filled["probe"] == probe.DEFAULTS and filled["steps"].keys() == cfg["steps"].keys()


@pytest.mark.parametrize("overlay,key", [
    ({"steps": {"band_margin": 0.7}}, "analysis.steps.band_margin"),
    ({"steps": {"event_fraction": 1.5}}, "analysis.steps.event_fraction"),
    ({"probe": {"k": 0}}, "analysis.probe.k"),
    ({"steps": {"hidden_detector": "peaks"}}, "analysis.steps.hidden_detector"),
    ({"pairs": {"nn": 5}}, "analysis.pairs.nn"),
    ({"checkpoint_every": 0}, "analysis.checkpoint_every"),
])
def test_bad_analysis_config_rejected(overlay, key):
    from sslkit import config as cfgmod

    with pytest.raises(cfgmod.ConfigError) as err:
        cfgmod.validate({"analysis": overlay})
    assert f"'{key}'" in str(err.value)


def test_alpha_check_against_the_papers_rule_of_thumb():
    import pandas as pd

    h = pd.DataFrame({"step": [0, 10], "t": [0.0, 1.0], "eig_C_0": [2e-3, 1.0], "eig_C_1": [1e-5, 0.5],
                      "eig_cov_0": [3e-8, 1.0], "eig_cov_1": [1e-9, 0.2]})
    bt = analysis.alpha_check(h, "barlow_twins", "small")  # C: 2e-3 vs 1e-3 -> within a decade
    assert bt["space"] == "embedding_C" and bt["top_eigenvalue_init"] == 2e-3 and bt["passed"] is True
    assert bt["log10_ratio"] == pytest.approx(np.log10(2))
    vr = analysis.alpha_check(h, "vicreg", "small")  # Cov: 3e-8 vs 1e-3 -> 4.5 decades too small
    assert vr["space"] == "embedding_cov" and vr["passed"] is False
    assert analysis.alpha_check(h, "simclr", "small")["passed"] is False  # 3e-8 vs 1e-6: 1.5 decades
    assert analysis.alpha_check(h, "simclr", "small", tolerance=2.0)["passed"] is True
    assert analysis.alpha_check(h, "barlow_twins", "standard")["passed"] is None  # no rule for standard init
    assert analysis.alpha_check(h, "byol", "small")["paper_value"] is None
    with pytest.raises(ValueError, match="step 0"):
        analysis.alpha_check(h[h["step"] > 0], "barlow_twins", "small")
