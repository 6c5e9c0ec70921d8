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


@pytest.mark.parametrize("jacobian", ["vmap", "auto"])      # auto: batched for this small CNN
@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 7, 10])  # 2, 3, 4 do not divide N = 7
def test_entk_matches_brute_force(cnn_and_data, chunk, jacobian):
    model, x, K_ref = cnn_and_data
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    res = ntk.empirical_ntk(model, x, chunk_size=chunk, jacobian=jacobian)
    assert res.stats["jacobian"] == {"vmap": "vmap", "auto": "batched"}[jacobian]
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
    # per-point Jacobians: no vmap temporaries, one point's activations: the panel takes the rest
    cl, rows_l = ntk.plan_chunks(model, x, budget, chunk_size=4, jacobian="loop")
    assert cl == 4 and rows_l > rows
    assert (rows_l + cl) * P * 4 + 4 * act <= budget < (rows_l + 1 + cl) * P * 4 + 4 * act
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


# ---------------------------------------------------------------------------------------------
# plans: whole Jacobian, parameter groups, row panels inside a group (issue 18)
# ---------------------------------------------------------------------------------------------

def torch_func_reference(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """functional_call + vmap(jacrev) for the full N x P Jacobian, then d J J^T (float64 product)."""
    from torch.func import functional_call, jacrev, vmap

    ref = copy.deepcopy(model).eval()
    params = {k: v.detach() for k, v in ref.named_parameters()}
    bufs = dict(ref.named_buffers())
    d = ref(x[:1]).numel()
    jd = vmap(jacrev(lambda p, xi: functional_call(ref, (p, bufs), (xi[None],)).mean()), in_dims=(None, 0))(params, x)
    J = torch.cat([v.reshape(len(x), -1) for v in jd.values()], dim=1).double()
    return (d * J @ J.T).numpy()


def test_torch_func_reference_agrees_with_brute_force(cnn_and_data):
    model, x, K_ref = cnn_and_data
    assert np.abs(torch_func_reference(model, x) - K_ref).max() <= 1e-5 * np.abs(K_ref).max()


@pytest.mark.parametrize("rows", [[7, 7, 7], [3, 7, 2], [2, 2, 2]])
def test_parameter_groups_match_brute_force(cnn_and_data, rows):
    """K = sum over parameter groups, each group whole or in row panels: the same kernel."""
    model, x, K_ref = cnn_and_data
    names = [k for k, _ in model.named_parameters()]
    groups = [tuple(names[:3]), tuple(names[3:7]), tuple(names[7:])]
    sizes = [sum(dict(model.named_parameters())[k].numel() for k in g) for g in groups]
    plan = ntk.NTKPlan(groups=groups, group_sizes=sizes, row_panels=rows, chunk_size=2,
                       estimated_peak_bytes=0, jacobian_passes=0)
    res = ntk.empirical_ntk(model, x, plan=plan)
    assert np.abs(res.K - K_ref).max() <= 1e-5 * np.abs(K_ref).max()
    assert np.array_equal(res.K, res.K.T)
    assert res.stats["n_groups"] == 3
    expected = sum(ntk._panel_samples(7, r, 2) for r in rows)
    assert res.stats["jacobian_samples"] == expected
    cross = ntk.empirical_ntk(model, x[:3], x[3:], plan=plan)
    assert np.abs(cross.K - K_ref[:3, 3:]).max() <= 1e-5 * np.abs(K_ref).max()


def test_budget_plans_match_reference_and_fit(cnn_and_data):
    model, x, K_ref = cnn_and_data
    N, P = 7, ntk.n_parameters(model)
    act = ntk.activation_bytes_per_sample(model, x)
    whole = ntk.estimate_plan_bytes([P], [N], 1, act, N)
    # ample budget: one group, the whole Jacobian, every row computed once
    plan = ntk.plan_ntk(model, x[:1], 100 * whole, N)
    assert len(plan.groups) == 1 and plan.row_panels == [N] and plan.jacobian_passes == N
    assert plan.estimated_peak_bytes <= 100 * whole
    res = ntk.empirical_ntk(model, x, memory_budget_bytes=100 * whole)
    assert np.abs(res.K - K_ref).max() <= 1e-5 * np.abs(K_ref).max()
    assert res.stats["jacobian_samples"] == N
    # tight budgets: groups or panels; every parameter in exactly one group, in order; the plan fits
    biggest = max(v.numel() for v in model.parameters())
    smallest = ntk.estimate_plan_bytes([biggest], [1], 1, act, N)  # one row of the largest tensor
    for budget in (whole - 1, (whole + smallest) // 2, smallest):
        plan = ntk.plan_ntk(model, x[:1], budget, N, min_chunk=1)
        assert [k for g in plan.groups for k in g] == [k for k, _ in model.named_parameters()]
        assert plan.estimated_peak_bytes <= budget
        assert len(plan.groups) > 1 or plan.row_panels[0] < N
        res = ntk.empirical_ntk(model, x, plan=plan)
        assert np.abs(res.K - K_ref).max() <= 1e-5 * np.abs(K_ref).max()
    with pytest.raises(MemoryError, match="no eNTK plan"):
        ntk.plan_ntk(model, x[:1], smallest - 1, N, min_chunk=1)
    # per-point Jacobians: a plan with vmap's temporaries left out, at least as large panels, same kernel
    budget = (whole + smallest) // 2
    vm = ntk.plan_ntk(model, x[:1], budget, N, min_chunk=1, max_chunk=1)
    lp = ntk.plan_ntk(model, x[:1], budget, N, min_chunk=1, max_chunk=1, jacobian="loop")
    assert lp.estimated_peak_bytes <= budget
    assert lp.jacobian_passes <= vm.jacobian_passes and sum(lp.row_panels) >= sum(vm.row_panels)
    assert lp.estimated_peak_bytes == ntk.estimate_plan_bytes(lp.group_sizes, lp.row_panels, lp.chunk_size, act, N,
                                                              jacobian="loop")
    assert ntk.estimate_plan_bytes([P], [3], 2, act, N, jacobian="loop") == \
        ntk.estimate_plan_bytes([P], [3], 2, act, N) - 2 * P * 4 - 4 * act
    res = ntk.empirical_ntk(model, x, plan=lp, jacobian="loop")
    assert np.abs(res.K - K_ref).max() <= 1e-5 * np.abs(K_ref).max()


@pytest.mark.parametrize("n", [1, 5, 128, 129, 301])
def test_gram_upper_triangle_and_flops(n):
    J = torch.randn(n, 37, generator=torch.Generator().manual_seed(n))
    K = torch.zeros(n, n, dtype=torch.float64)
    count = [0]
    ntk._add_gram_upper(K, J, count)
    ntk._mirror_upper(K)
    ref = J.double() @ J.double().T
    assert torch.allclose(K, ref, rtol=1e-5, atol=1e-4) and torch.equal(K, K.T)
    # only the upper triangle (plus the diagonal leaves in full): n^2 P (1 + leaf / n) at most
    assert count[0] <= n * n * 37 * (1 + ntk._GRAM_LEAF / n) and (n <= ntk._GRAM_LEAF or count[0] < 2 * n * n * 37)


def test_pass_flops_model():
    """A pass for all parameters costs 3 F; for the last layer only F + 2 F_last."""
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    F, back = ntk.pass_flops(model, torch.zeros(1, 5))
    assert F == 2 * 5 * 7 + 2 * 7 * 3
    assert back["0.weight"] == (F, 2 * 5 * 7) and back["2.weight"] == (2 * 7 * 3, 2 * 7 * 3)


@pytest.mark.parametrize("chunk, rows", [(4, 4), (3, 7)])
def test_progress_callback_counts_every_jacobian_pass(cnn_and_data, chunk, rows):
    """on_progress(done, total): increasing counts of per-point Jacobian passes that end at the plan's
    total, which equals the passes the engine reports (row panels recompute column chunks)."""
    model, x, _ = cnn_and_data
    calls = []
    res = ntk.empirical_ntk(model, x, chunk_size=chunk, row_chunk_size=rows,
                            on_progress=lambda done, total: calls.append((done, total)))
    done = [c[0] for c in calls]
    assert done == sorted(done) and len(set(done)) == len(done)
    assert {c[1] for c in calls} == {res.stats["jacobian_samples"]}
    assert done[-1] == res.stats["jacobian_samples"] >= len(x)


@pytest.mark.parametrize("chunk,rows", [(1, 1), (2, 5), (3, 100)])
def test_loop_jacobians_match_brute_force(cnn_and_data, chunk, rows):
    """jacobian='loop' (one batch-1 autograd backward per point) gives the brute-force kernel, in row
    panels, parameter groups and cross kernels alike, and leaves the module as it was."""
    model, x, K_ref = cnn_and_data
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    res = ntk.empirical_ntk(model, x, chunk_size=chunk, row_chunk_size=rows, jacobian="loop")
    assert res.stats["jacobian"] == "loop"
    assert np.abs(res.K - K_ref).max() <= 1e-5 * np.abs(K_ref).max()
    assert np.array_equal(res.K, res.K.T)
    assert res.stats["jacobian_samples"] == ntk._panel_samples(7, rows, chunk)
    cross = ntk.empirical_ntk(model, x[:3], x[3:], chunk_size=chunk, row_chunk_size=rows, jacobian="loop")
    assert np.abs(cross.K - K_ref[:3, 3:]).max() <= 1e-5 * np.abs(K_ref).max()
    names = [k for k, _ in model.named_parameters()]
    groups = [tuple(names[:3]), tuple(names[3:])]
    sizes = [sum(dict(model.named_parameters())[k].numel() for k in g) for g in groups]
    plan = ntk.NTKPlan(groups=groups, group_sizes=sizes, row_panels=[rows, chunk + 1], chunk_size=chunk,
                       estimated_peak_bytes=0, jacobian_passes=0)
    grouped = ntk.empirical_ntk(model, x, plan=plan, jacobian="loop")
    assert np.abs(grouped.K - K_ref).max() <= 1e-5 * np.abs(K_ref).max()
    assert model.training and all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())


def test_loop_handles_a_parameter_the_output_ignores(cnn_and_data):
    """A trainable parameter outside the output's graph has a zero Jacobian (as under vmap)."""
    model, x, K_ref = cnn_and_data

    class WithUnused(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model
            self.unused = nn.Linear(2, 2)

        def forward(self, z):
            return self.net(z)

    wrapped = WithUnused()
    loop = ntk.empirical_ntk(wrapped, x, chunk_size=3, jacobian="loop").K
    vm = ntk.empirical_ntk(wrapped, x, chunk_size=3, jacobian="vmap").K
    assert np.abs(loop - K_ref).max() <= 1e-5 * np.abs(K_ref).max()
    assert np.abs(vm - K_ref).max() <= 1e-5 * np.abs(K_ref).max()


def test_jacobian_mode_auto_follows_the_forward_flops():
    small = small_cnn()
    x_small = torch.randn(1, 3, 6, 6)
    assert ntk.pass_flops(small, x_small)[0] < ntk.BATCHED_MAX_FLOPS
    assert ntk.jacobian_mode(small, x_small, torch.device("cpu")) == "batched"
    torch.manual_seed(0)
    big = nn.Sequential(nn.Conv2d(3, 64, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(64, 2))
    x_big = torch.randn(1, 3, 240, 240)
    assert ntk.pass_flops(big, x_big)[0] >= ntk.LOOP_MIN_FLOPS
    assert ntk.jacobian_mode(big, x_big, torch.device("cpu")) == "loop"
    assert ntk.jacobian_mode(big, x_big, torch.device("cuda")) == "vmap"     # decided without a GPU
    assert ntk.jacobian_mode(big, x_big, torch.device("cpu"), "vmap") == "vmap"
    assert ntk.empirical_ntk(big, torch.randn(3, 3, 240, 240), chunk_size=2).stats["jacobian"] == "loop"
    with pytest.raises(ValueError, match="jacobian must be one of"):
        ntk.empirical_ntk(small, x_small, jacobian="columns")
