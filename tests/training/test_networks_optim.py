"""Encoders, projectors, small init, methods' gradient flow, LARS and lr schedules."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sslkit.training import networks as models
from sslkit.training import optim
from sslkit.training.engine import embedding_spectra
from sslkit.training.methods import make_method


def tiny_run_config(method="barlow_twins", alpha=1.0, d=4, channels=1, arch="resnet18", width=0.0625):
    loss = {"barlow_twins": {"lambda": 1.0, "batchnorm": False, "scale": 1.0, "symmetric": True},
            "simclr": {"temperature": 0.2},
            "vicreg": {"sim_coeff": 25.0, "std_coeff": 25.0, "cov_coeff": 1.0, "eps": 1e-4},
            "byol": {"ema_base": 0.99},
            "directpred": {"ema_base": 0.99, "rho": 0.3, "eps": 0.1, "freq": 1},
            "directcopy": {"ema_base": 0.99, "rho": 0.3, "eps": 0.3, "freq": 1}}[method]
    return {"method": method, "init_scale": alpha, "steps": 10,
            "encoder": {"arch": arch, "width": width, "small_stem": True},
            "data": {"channels": channels},
            "loss": loss,
            "method_config": {"projector": {"hidden": [16], "dim": d, "batchnorm": True, "last_bias": False},
                              "predictor": {"hidden": [8], "batchnorm": True}}}


# -- encoders ------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch,width,stem,size,h", [("resnet18", 0.0625, True, 8, 32),
                                                    ("resnet18", 0.125, False, 32, 64),
                                                    ("resnet50", 0.0625, True, 8, 128)])
def test_encoder_shapes(arch, width, stem, size, h):
    enc = models.build_encoder(arch, width, stem, in_channels=3)
    assert enc.out_dim == h
    assert enc(torch.randn(2, 3, size, size)).shape == (2, h)
    assert isinstance(enc.maxpool, torch.nn.Identity) == stem
    assert enc.conv1.kernel_size == ((3, 3) if stem else (7, 7))


def test_width_one_is_torchvision_resnet18():
    import torchvision

    ours = models.build_encoder("resnet18", 1.0, small_stem=False)
    ref = torchvision.models.resnet18()
    ref_shapes = {k: v.shape for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.state_dict().items()} == ref_shapes


def _torchvision_encoder(arch, width, small_stem, in_channels):
    """The reference: the encoder as sslkit built it on torchvision's ResNet class (before it was copied)."""
    from torch import nn
    from torchvision.models import resnet as tv

    block, layers = {"resnet18": (tv.BasicBlock, [2, 2, 2, 2]), "resnet50": (tv.Bottleneck, [3, 4, 6, 3])}[arch]
    enc = tv.ResNet.__new__(tv.ResNet)
    nn.Module.__init__(enc)
    enc._norm_layer, enc.groups, enc.base_width, enc.dilation = nn.BatchNorm2d, 1, 64, 1
    widths = [max(1, int(round(c * width))) for c in (64, 128, 256, 512)]
    enc.inplanes = widths[0]
    if small_stem:
        enc.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        enc.maxpool = nn.Identity()
    else:
        enc.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        enc.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    enc.bn1 = nn.BatchNorm2d(widths[0])
    enc.relu = nn.ReLU(inplace=True)
    enc.layer1 = enc._make_layer(block, widths[0], layers[0])
    for i, stride in ((2, 2), (3, 2), (4, 2)):
        setattr(enc, f"layer{i}", enc._make_layer(block, widths[i - 1], layers[i - 1], stride=stride))
    enc.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    enc.fc = nn.Identity()
    for m in enc.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    return enc


@pytest.mark.parametrize("arch,width,stem,channels,size", [("resnet18", 0.0625, True, 1, 8),
                                                           ("resnet50", 0.0625, False, 3, 32)])
def test_encoder_equals_the_torchvision_built_one(arch, width, stem, channels, size):
    """The encoder copied from torchvision: same parameter names, same initial values from the same seed
    (so checkpoints and runs stay as they were) and the same outputs and gradients."""
    torch.manual_seed(3)
    ours = models.build_encoder(arch, width, stem, in_channels=channels)
    torch.manual_seed(3)
    ref = _torchvision_encoder(arch, width, stem, channels)
    a, b = ours.state_dict(), ref.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(4, channels, size, size)
    ya, yb = ours(x), ref(x)
    assert torch.equal(ya, yb)
    ya.square().sum().backward()
    yb.square().sum().backward()
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(ours.parameters(), ref.parameters()))


def test_training_modules_do_not_import_torchvision():
    """torchvision imports torch._dynamo (~2 s of a job's start-up): the engine and networks do without."""
    import subprocess
    import sys

    code = ("import sys, sslkit.training.engine, sslkit.analysis.checkpoints\n"
            "print(sorted(m for m in ('torchvision', 'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_model_interface():
    rc = tiny_run_config("byol")
    torch.manual_seed(0)
    m = models.build_model(rc).eval()
    x = torch.randn(3, 1, 8, 8)
    assert m.hidden(x).shape == (3, 32) and m.embed(x).shape == (3, 4)
    assert torch.equal(m.embed(x), m.projector(m.encoder(x)))
    assert m.predictor(m.embed(x)).shape == (3, 4)
    assert hasattr(m, "target") and not hasattr(models.build_model(tiny_run_config("simclr")), "predictor")


# -- small init ------------------------------------------------------------------------------------

def test_init_scale_multiplies_every_parameter():
    rc1, rc2 = tiny_run_config("byol", 1.0), tiny_run_config("byol", 0.1)
    torch.manual_seed(1)
    m1 = models.build_model(rc1)
    torch.manual_seed(1)
    m2 = models.build_model(rc2)
    p1, p2 = dict(m1.named_parameters()), dict(m2.named_parameters())
    for name in p1:
        if name.startswith("target."):
            continue
        assert torch.allclose(p2[name], 0.1 * p1[name], atol=1e-12), name
        n1 = torch.linalg.vector_norm(p1[name].detach())
        if n1 > 0:
            assert float(torch.linalg.vector_norm(p2[name].detach()) / n1) == pytest.approx(0.1, rel=1e-5)
    # the target starts as a copy of the (scaled) online branch; buffers are not scaled
    assert torch.equal(m2.target.projector[0].weight, m2.projector[0].weight)
    assert torch.equal(m2.encoder.bn1.running_var, m1.encoder.bn1.running_var)


def test_top_eigenvalue_at_init_is_monotone_in_alpha():
    x1 = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    x2 = x1 + 0.1 * torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    tops = []
    for alpha in (0.05, 0.2, 0.5, 1.0):
        torch.manual_seed(4)
        m = models.build_model(tiny_run_config("barlow_twins", alpha))
        with torch.no_grad():
            eig_c, eig_cov = embedding_spectra(m.embed(x1), m.embed(x2))
        tops.append(eig_cov[0])
    assert all(a < b for a, b in zip(tops, tops[1:])), tops
    # at least the alpha^4 of the last two layers (BN's eps makes small-alpha layers scale too)
    assert tops[0] / tops[-1] < 2 * 0.05 ** 4


# -- gradients of the methods ----------------------------------------------------------------------

def test_byol_target_gets_no_gradient_and_ema_moves_it():
    rc = tiny_run_config("byol")
    torch.manual_seed(5)
    m = models.build_model(rc)
    meth = make_method(m, rc)
    x1, x2 = torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8)
    loss, z1, z2 = meth.loss(x1, x2, 0)
    loss.backward()
    assert all(p.grad is None for p in m.target.parameters())
    assert all(p.grad is not None for p in m.predictor.parameters())
    assert m.encoder.conv1.weight.grad is not None and float(m.encoder.conv1.weight.grad.abs().sum()) > 0
    assert all(id(p) not in {id(q) for q in m.target.parameters()} for p in m.online_parameters())
    before = m.target.projector[-1].weight.clone()
    with torch.no_grad():
        m.projector[-1].weight.add_(1.0)
    meth.after_step(0)
    tau = 1 - (1 - 0.99) * (np.cos(np.pi * 1 / 10) + 1) / 2
    want = tau * before + (1 - tau) * m.projector[-1].weight
    assert torch.allclose(m.target.projector[-1].weight, want, atol=1e-6)


@pytest.mark.parametrize("method", ["directpred", "directcopy"])
def test_direct_predictor_is_set_not_trained(method):
    rc = tiny_run_config(method)
    torch.manual_seed(6)
    m = models.build_model(rc)
    meth = make_method(m, rc)
    x1, x2 = torch.randn(16, 1, 8, 8), torch.randn(16, 1, 8, 8)
    loss, z1, z2 = meth.loss(x1, x2, 0)
    loss.backward()
    assert m.predictor.weight.grad is None
    assert all(p is not m.predictor.weight for p in m.online_parameters())  # not optimised
    f = torch.cat([z1, z2]).detach()
    assert torch.allclose(m.corr, f.T @ f / 32, atol=1e-6)
    w = m.predictor.weight
    assert torch.allclose(w @ m.corr, m.corr @ w, atol=1e-6 * float(m.corr.abs().max()) + 1e-9)
    # evaluation (update=False) leaves F_hat alone
    c0 = m.corr.clone()
    meth.loss(x2, x1, 1, update=False)
    assert torch.equal(m.corr, c0)


@pytest.mark.parametrize("method", ["barlow_twins", "simclr", "vicreg", "byol", "directpred"])
def test_losses_stay_float32_under_bf16_autocast(method):
    """Under bf16 autocast (the GPU default) the network runs in bf16 but the loss is computed in
    float32 from the returned embeddings: it equals the float32 loss recomputed outside autocast,
    far below bf16's rounding (2^-8 relative)."""
    rc = tiny_run_config(method, d=8)
    torch.manual_seed(7)
    m = models.build_model(rc)
    meth = make_method(m, rc)
    x1, x2 = torch.randn(32, 1, 8, 8), torch.randn(32, 1, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, z1, z2 = meth.loss(x1, x2, 0, update=False)
    assert z1.dtype == torch.float32 and loss.dtype == torch.float32
    if method in ("byol", "directpred"):
        assert torch.isfinite(loss)
        return
    from sslkit.training import losses as L

    c = rc["loss"]
    want = {"barlow_twins": lambda: L.barlow_twins_loss(z1, z2, lambd=c["lambda"], batchnorm=c["batchnorm"],
                                                        scale=c["scale"], symmetric=c["symmetric"]),
            "simclr": lambda: L.nt_xent_loss(z1, z2, temperature=c["temperature"]),
            "vicreg": lambda: L.vicreg_loss(z1, z2, c["sim_coeff"], c["std_coeff"], c["cov_coeff"], c["eps"]),
            }[method]()
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-5)


# -- LARS and schedules ----------------------------------------------------------------------------

def test_lars_step_matches_hand_computation():
    w = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64))
    b = torch.nn.Parameter(torch.tensor([0.1, -0.2], dtype=torch.float64))
    gw = torch.tensor([[0.3, 0.1], [-0.2, 0.4]], dtype=torch.float64)
    gb = torch.tensor([0.5, -1.0], dtype=torch.float64)
    lr, wd, mom, eta = 0.1, 0.01, 0.9, 0.002
    opt = optim.LARS(optim.param_groups([w, b], lr), lr=lr, weight_decay=wd, momentum=mom, eta=eta)
    wn, bn = w.detach().numpy().copy(), b.detach().numpy().copy()
    mu_w, mu_b = np.zeros_like(wn), np.zeros_like(bn)
    for _ in range(2):
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
        # hand computation: weights get decay + trust ratio, biases neither
        dw = gw.numpy() + wd * wn
        q = eta * np.linalg.norm(wn) / np.linalg.norm(dw)
        mu_w = mom * mu_w + q * dw
        wn = wn - lr * mu_w
        mu_b = mom * mu_b + gb.numpy()
        bn = bn - lr * mu_b
        assert np.allclose(w.detach().numpy(), wn, atol=1e-14)
        assert np.allclose(b.detach().numpy(), bn, atol=1e-14)


def test_lars_zero_weight_uses_unit_trust_ratio():
    w = torch.nn.Parameter(torch.zeros(2, 2))
    w.grad = torch.ones(2, 2)
    optim.LARS([w], lr=0.5, momentum=0.0).step()
    assert torch.allclose(w, torch.full((2, 2), -0.5))


def test_lr_schedule_warmup_and_cosine():
    s = optim.LrSchedule(total_steps=110, warmup_steps=10, decay="cosine", final_factor=0.001)
    assert s(0) == 0 and s(5) == pytest.approx(0.5) and s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.5 + 0.001 * 0.5)
    assert s(110) == pytest.approx(0.001)
    assert optim.LrSchedule(100)(57) == 1.0
    with pytest.raises(ValueError, match="decay"):
        optim.LrSchedule(10, decay="linear")


def test_param_groups_split_and_sgd_builds():
    m = models.mlp(4, [8], 2, batchnorm=True, last_bias=True)
    groups = optim.param_groups(m.parameters(), 0.1, 0.01)
    assert [g["name"] for g in groups] == ["weights", "biases"]
    assert all(p.ndim > 1 for p in groups[0]["params"]) and all(p.ndim == 1 for p in groups[1]["params"])
    opt = optim.build_optimizer(m.parameters(), {"name": "sgd", "lr": 0.1, "lr_biases": None,
                                                 "momentum": 0.9, "weight_decay": 1e-5})
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[1]["lr"] == 0.1
    with pytest.raises(ValueError, match="adam"):
        optim.build_optimizer(m.parameters(), {"name": "adam", "lr": 0.1})
