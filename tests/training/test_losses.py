"""SSL losses vs direct reference computations (numpy, loops), invariances, predictor rules."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sslkit.training import losses as L


def _z(n=12, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return z1, z2


# -- Barlow Twins -------------------------------------------------------------------------------

def ref_barlow_twins(z1, z2, lambd, batchnorm, symmetric):
    a, b = z1.numpy().copy(), z2.numpy().copy()
    n, d = a.shape
    if batchnorm:
        a = (a - a.mean(0)) / np.sqrt(a.var(0) + 1e-5)
        b = (b - b.mean(0)) / np.sqrt(b.var(0) + 1e-5)
    c = np.zeros((d, d))
    for i in range(d):
        for j in range(d):
            c[i, j] = sum(a[k, i] * b[k, j] for k in range(n)) / n
    if symmetric:
        c = (c + c.T) / 2
    total = 0.0
    for i in range(d):
        for j in range(d):
            total += (1 - c[i, i]) ** 2 if i == j else lambd * c[i, j] ** 2
    return total


@pytest.mark.parametrize("lambd,batchnorm,symmetric", [(0.0051, True, False), (1.0, False, True),
                                                       (0.3, False, False)])
def test_barlow_twins_matches_reference(lambd, batchnorm, symmetric):
    z1, z2 = _z()
    got = L.barlow_twins_loss(z1, z2, lambd=lambd, batchnorm=batchnorm, scale=2.0, symmetric=symmetric)
    assert float(got) == pytest.approx(2.0 * ref_barlow_twins(z1, z2, lambd, batchnorm, symmetric), rel=1e-10)


def test_barlow_twins_lambda1_symmetric_is_frobenius_distance():
    z1, z2 = _z(d=4)
    c = (z1.T @ z2 + z2.T @ z1) / (2 * z1.shape[0])
    want = float(torch.linalg.matrix_norm(c - torch.eye(4)) ** 2)
    got = float(L.barlow_twins_loss(z1, z2, lambd=1.0, batchnorm=False, symmetric=True))
    assert got == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("fn", [
    lambda a, b: L.barlow_twins_loss(a, b, 0.0051, True),
    lambda a, b: L.barlow_twins_loss(a, b, 1.0, False, symmetric=True),
    lambda a, b: L.vicreg_loss(a, b),
], ids=["bt", "bt-small", "vicreg"])
def test_invariant_to_batch_order(fn):
    z1, z2 = _z(n=16, d=6)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(3))
    assert float(fn(z1[perm], z2[perm])) == pytest.approx(float(fn(z1, z2)), rel=1e-12)
    # pairing matters: shuffling one view alone changes the loss
    assert float(fn(z1[perm], z2)) != pytest.approx(float(fn(z1, z2)), rel=1e-6)


# -- SimCLR -------------------------------------------------------------------------------------

def ref_nt_xent(z1, z2, temperature):
    z = np.concatenate([z1.numpy(), z2.numpy()])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for k in range(n2):
        pos = (k + n) % n2
        denom = sum(math.exp(z[k] @ z[j] / temperature) for j in range(n2) if j != k)
        total += -math.log(math.exp(z[k] @ z[pos] / temperature) / denom)
    return total / n2


@pytest.mark.parametrize("temperature", [0.2, 0.5, 1.0])
def test_nt_xent_matches_reference(temperature):
    z1, z2 = _z(n=7, d=4, seed=1)
    got = float(L.nt_xent_loss(z1, z2, temperature))
    assert got == pytest.approx(ref_nt_xent(z1, z2, temperature), rel=1e-10)


def test_nt_xent_symmetric_in_views_and_scale_invariant():
    z1, z2 = _z(n=9, d=3, seed=2)
    base = float(L.nt_xent_loss(z1, z2, 0.2))
    assert float(L.nt_xent_loss(z2, z1, 0.2)) == pytest.approx(base, rel=1e-12)
    assert float(L.nt_xent_loss(3 * z1, 0.01 * z2, 0.2)) == pytest.approx(base, rel=1e-10)


# -- VICReg -------------------------------------------------------------------------------------

def ref_vicreg(z1, z2, s=25.0, v=25.0, c=1.0, eps=1e-4):
    a, b = z1.numpy(), z2.numpy()
    n, d = a.shape
    inv = ((a - b) ** 2).sum() / (n * d)
    var = 0.0
    cov = 0.0
    for x in (a, b):
        std = np.sqrt(x.var(0, ddof=1) + eps)
        var += np.maximum(0.0, 1 - std).mean() / 2
        k = np.cov(x, rowvar=False)  # ddof 1
        cov += (k ** 2).sum() - (np.diag(k) ** 2).sum()
    return s * inv + v * var + c * cov / d


def test_vicreg_matches_reference():
    z1, z2 = _z(n=20, d=6, seed=4)
    z1, z2 = 0.3 * z1, 0.3 * z2  # some dimensions below std 1, so the variance term is active
    assert float(L.vicreg_loss(z1, z2)) == pytest.approx(ref_vicreg(z1, z2), rel=1e-10)
    got = float(L.vicreg_loss(z1, z2, 1.0, 2.0, 3.0, 1e-3))
    assert got == pytest.approx(ref_vicreg(z1, z2, 1.0, 2.0, 3.0, 1e-3), rel=1e-10)


# -- BYOL, DirectPred, DirectCopy ---------------------------------------------------------------

def test_byol_loss_matches_reference():
    p, z = _z(n=8, d=5, seed=5)
    pn, zn = p.numpy(), z.numpy()
    cos = (pn * zn).sum(1) / np.linalg.norm(pn, axis=1) / np.linalg.norm(zn, axis=1)
    assert float(L.byol_loss(p, z)) == pytest.approx(float(np.mean(2 - 2 * cos)), rel=1e-12)


def test_ema_momentum_cosine_schedule():
    assert L.ema_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert L.ema_momentum(50, 100, 0.996) == pytest.approx(0.998)
    assert L.ema_momentum(100, 100, 0.996) == pytest.approx(1.0)


def test_update_correlation():
    corr = torch.eye(3, dtype=torch.float64)
    z = torch.randn(10, 3, dtype=torch.float64)
    want = 0.3 * corr.numpy() + 0.7 * (z.numpy().T @ z.numpy()) / 10
    assert np.allclose(L.update_correlation(corr, z, 0.3).numpy(), want)
    assert np.allclose(L.update_correlation(corr, z, 0.3, initialized=False).numpy(), z.numpy().T @ z.numpy() / 10)


def test_directpred_predictor_commutes_with_F_and_has_sqrt_spectrum():
    g = torch.Generator().manual_seed(6)
    a = torch.randn(30, 6, generator=g, dtype=torch.float64)
    f = a.T @ a / 30
    wp = L.directpred_predictor(f, eps=0.1)
    assert torch.allclose(wp @ f, f @ wp, atol=1e-12)
    s = np.linalg.eigvalsh(f.numpy())
    want = np.sort(np.sqrt(s) + 0.1 * s.max())
    assert np.allclose(np.sort(np.linalg.eigvalsh(wp.numpy())), want, rtol=1e-10)


def test_directcopy_predictor():
    g = torch.Generator().manual_seed(7)
    a = torch.randn(30, 4, generator=g, dtype=torch.float64)
    f = a.T @ a / 30
    want = f.numpy() / np.linalg.norm(f.numpy()) + 0.3 * np.eye(4)
    assert np.allclose(L.directcopy_predictor(f, 0.3).numpy(), want, atol=1e-14)


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match="N x d"):
        L.barlow_twins_loss(torch.zeros(4, 3), torch.zeros(4, 2))
