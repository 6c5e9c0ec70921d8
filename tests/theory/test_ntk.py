"""Empirical NTK (sslkit.theory.ntk) against a brute-force reference and the linear model."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from sslkit.theory import ntk


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_cnn(d: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 5, 3, stride=2), nn.BatchNorm2d(5), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, d),
    )


def brute_force_ntk(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """One autograd backward per sample in float64 (eval mode), explicit dot products."""
    ref = copy.deepcopy(model).double().eval()
    params = [p for p in ref.parameters() if p.requires_grad]
    grads = []
    for xi in x.double():
        out = ref(xi[None])
        d = out.numel()
        g = torch.autograd.grad(out.mean(), params)
        grads.append(torch.cat([t.reshape(-1) for t in g]).numpy())
    G = np.stack(grads)
    K = np.empty((len(G), len(G)))
    for i in range(len(G)):
        for j in range(len(G)):
            K[i, j] = d * float(np.dot(G[i], G[j]))
    return K


@pytest.fixture(scope="module")
def cnn_and_data():
    model = small_cnn()
    x = torch.randn(7, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    model.train()
    with torch.no_grad():  # non-trivial running statistics, so that eval mode matters
        for _ in range(3):
            model(2.0 * torch.randn(16, 3, 6, 6) + 0.5)
    return model, x, brute_force_ntk(model, x)


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 7, 10])  # 2, 3, 4 do not divide N = 7
def test_entk_matches_brute_force(cnn_and_data, chunk):
    model, x, K_ref = cnn_and_data
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    res = ntk.empirical_ntk(model, x, chunk_size=chunk)
    assert res.K.dtype == np.float64 and res.K.shape == (7, 7)
    assert np.abs(res.K - K_ref).max() <= 1e-5 * np.abs(K_ref).max()
    assert np.array_equal(res.K, res.K.T)
    # the module is left as it was: training flag restored, running statistics untouched
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())
    n_c = -(-7 // chunk)
    assert res.stats["n_chunks"] == n_c
    assert res.stats["jacobian_chunks"] == 1 + n_c * (n_c - 1) // 2
    assert res.stats["n_params"] == sum(p.numel() for p in model.parameters())
    assert res.stats["d"] == 3


def test_entk_uses_running_statistics(cnn_and_data):
    """A train-mode (batch statistics) reference would differ: eval mode is really used."""
    model, x, K_ref = cnn_and_data
    fresh = copy.deepcopy(model)
    for m in fresh.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
    K_fresh = ntk.empirical_ntk(fresh, x, chunk_size=4).K
    assert np.abs(K_fresh - K_ref).max() > 1e-2 * np.abs(K_ref).max()


@pytest.mark.parametrize("chunk,rows", [(1, 3), (2, 5), (3, 4), (2, 7), (3, 100)])
def test_entk_row_panels_match_brute_force(cnn_and_data, chunk, rows):
    """Row panels larger than the column chunk (including non-dividing sizes) give the same K."""
    model, x, K_ref = cnn_and_data
    res = ntk.empirical_ntk(model, x, chunk_size=chunk, row_chunk_size=rows)
    assert np.abs(res.K - K_ref).max() <= 1e-5 * np.abs(K_ref).max()
    # every panel is differentiated once, plus the column chunks after it, minus the reused chunk
    R = min(rows, 7)
    panels = [(s, min(s + R, 7)) for s in range(0, 7, R)]
    expected = 7 + sum(7 - stop for _, stop in panels) - sum(min(chunk, 7 - stop) for _, stop in panels[:-1])
    assert res.stats["jacobian_samples"] == expected


def test_cross_kernel(cnn_and_data):
    model, x, K_ref = cnn_and_data
    res = ntk.empirical_ntk(model, x[:3], x[3:], chunk_size=2, row_chunk_size=3)
    assert res.K.shape == (3, 4)
    assert np.abs(res.K - K_ref[:3, 3:]).max() <= 1e-5 * np.abs(K_ref).max()


@pytest.mark.parametrize("d", [1, 5])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_model_entk_is_inner_product(d, bias):
    """f(x) = W x (+ b): grad_W g = (1/d) 1 x^T, so d <grad g, grad g'> = x^T x' (+ 1) exactly."""
    m, N = 6, 9
    model = nn.Linear(m, d, bias=bias)
    X = torch.randn(N, m, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    res = ntk.empirical_ntk(model, X, chunk_size=4, dtype=torch.float64)
    expected = (X @ X.T).numpy() + (1.0 if bias else 0.0)
    assert np.abs(res.K - expected).max() <= 1e-12 * np.abs(expected).max()
    # float32 compute, float64 accumulation: float32 rounding only
    res32 = ntk.empirical_ntk(model, X.float(), chunk_size=4)
    assert np.abs(res32.K - expected).max() <= 1e-6 * np.abs(expected).max()


def test_memory_stats_and_budget(cnn_and_data):
    model, x, _ = cnn_and_data
    res = ntk.empirical_ntk(model, x, chunk_size=3)
    P = res.stats["n_params"]
    assert res.stats["jacobian_chunk_bytes"] == 3 * P * 4
    assert res.stats["estimated_peak_bytes"] >= 3 * 3 * P * 4
    c = ntk.chunk_size_for_budget(model, x, budget_bytes=10 * res.stats["estimated_peak_bytes"])
    assert c >= 10 * 3 - 1
    assert res.stats["peak_bytes"] is not None  # Linux: VmHWM is available
    assert ntk.chunk_size_for_budget(model, x, budget_bytes=1) == 1
    budget = 10 * res.stats["estimated_peak_bytes"]
    c, rows = ntk.plan_chunks(model, x, budget, chunk_size=4)
    act = ntk.activation_bytes_per_sample(model, x)
    assert c == 4 and rows > 4
    assert ntk.estimate_peak_bytes(P, act, c, rows) <= budget < ntk.estimate_peak_bytes(P, act, c, rows + 1)
    with pytest.raises(ValueError, match="row_chunk_size"):
        ntk.empirical_ntk(model, x, chunk_size=4, row_chunk_size=2)


def test_bad_arguments():
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="chunk_size"):
        ntk.empirical_ntk(model, torch.zeros(4, 3), chunk_size=0)
    with pytest.raises(ValueError, match="same point shape"):
        ntk.empirical_ntk(model, torch.zeros(4, 3), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="at least one point"):
        ntk.empirical_ntk(model, torch.zeros(0, 3))
