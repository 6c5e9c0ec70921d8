"""Batched per-sample gradients (sslkit.theory.per_sample) and the eNTK's jacobian="batched" path, against
one float64 autograd backward per point."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from sslkit.theory import ntk
from sslkit.theory.per_sample import per_sample_grads, unsupported_reason

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Mixed(nn.Module):
    """Every supported layer kind: grouped, strided, dilated and biased convolutions (one with a single output
    position, as a ResNet's last stage on small images), BatchNorm2d/1d (eval),
    an in-place ReLU right after a BatchNorm, a residual branch, a Linear over a sequence (3-d input) with
    bias, LayerNorm over the last dimension, and one Linear called twice (its per-sample gradient is the sum)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2, bias=False)
        self.short = nn.Conv2d(4, 6, 1, stride=2)
        self.seq = nn.Linear(6, 5)
        self.ln = nn.LayerNorm(5)
        self.twice = nn.Linear(5, 5, bias=False)
        self.bn2 = nn.BatchNorm1d(5)
        self.head = nn.Linear(5, 3)
        self.top = nn.Conv2d(6, 5, 3, stride=2, padding=1)

    def forward(self, x):
        h = self.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.conv2(h) + self.short(h))               # n x 6 x 3 x 3
        s = self.ln(self.seq(h.flatten(2).transpose(1, 2)))          # n x 9 x 5: a sequence of 9 positions
        s = self.twice(torch.tanh(self.twice(s))).mean(1)            # n x 5
        s = s + self.top(h[:, :, :2, :2]).flatten(1)                 # n x 5 x 1 x 1: one output position
        return self.head(self.bn2(s))


def trained(model: nn.Module, shape) -> nn.Module:
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():                     # running statistics away from 0 / 1: eval mode matters
        for _ in range(3):
            model(2.0 * torch.randn(16, *shape) + 0.5)
    for p in model.parameters():              # BatchNorm / LayerNorm affine terms away from 1 / 0
        if p.dim() == 1:
            p.data.add_(0.3 * torch.randn_like(p))
    return model.eval()


def autograd_rows(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Each point's gradient of the mean output, one float64 backward of batch 1 each."""
    ref = copy.deepcopy(model).double().eval()
    params = [p for p in ref.parameters() if p.requires_grad]
    rows = []
    for xi in x.double():
        gs = torch.autograd.grad(ref(xi[None]).mean(), params, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, gs)]))
    return torch.stack(rows).numpy()


@pytest.fixture(scope="module")
def mixed():
    torch.manual_seed(0)
    model = trained(Mixed(), (2, 6, 6))
    x = torch.randn(5, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    return model, x, autograd_rows(model, x)


def test_per_sample_grads_match_per_point_autograd(mixed):
    model, x, ref = mixed
    m64 = copy.deepcopy(model).double()
    names = [k for k, _ in m64.named_parameters()]
    out = per_sample_grads(m64, m64, x.double(), names)
    rows = torch.cat([out[k] for k in names], dim=1).numpy()
    assert rows.shape == ref.shape
    assert np.abs(rows - ref).max() <= 1e-10 * np.abs(ref).max()
    # every layer kind contributes (a dropped term would leave a block of zeros)
    offsets = np.cumsum([0] + [dict(m64.named_parameters())[k].numel() for k in names])
    assert all(np.abs(ref[:, a:b]).max() > 0 for a, b in zip(offsets[:-1], offsets[1:]))


def test_per_sample_grads_of_a_subset_and_of_an_unreached_parameter(mixed):
    model, x, ref = mixed
    m64 = copy.deepcopy(model).double()
    params = dict(m64.named_parameters())
    offsets = dict(zip(params, np.cumsum([0] + [p.numel() for p in params.values()])[:-1]))
    out = per_sample_grads(m64, m64, x.double(), ["twice.weight", "bn1.bias"])
    assert set(out) == {"twice.weight", "bn1.bias"}
    for k in out:
        a = offsets[k]
        assert np.abs(out[k].numpy() - ref[:, a:a + params[k].numel()]).max() <= 1e-10 * np.abs(ref).max()
    # the output does not depend on a parameter of a module never called: zero rows
    m64.unused = nn.Linear(2, 2).double()
    out = per_sample_grads(m64, m64, x.double(), ["unused.weight"])
    assert out["unused.weight"].shape == (5, 4) and not out["unused.weight"].any()


def test_a_workspace_is_reused_across_batches_without_changing_the_gradients(mixed):
    """Weight gradients written into the caller's workspace: the same values as without it, batch after batch
    (sizes 3, 3, 2): the buffers reused while the shape repeats, replaced when it changes."""
    model, x, ref = mixed
    m64 = copy.deepcopy(model).double()
    names = [k for k, _ in m64.named_parameters()]
    workspace: dict = {}
    ptrs = []
    for s in (slice(0, 3), slice(2, 5), slice(3, 5)):
        out = per_sample_grads(m64, m64, x[s].double(), names, workspace)
        rows = torch.cat([out[k] for k in names], dim=1).numpy()     # a copy, before the next call reuses the buffers
        assert np.abs(rows - ref[s]).max() <= 1e-10 * np.abs(ref).max()
        ptrs.append({k: t.data_ptr() for k, t in workspace.items()})
    assert ptrs[0] and ptrs[1] == ptrs[0]
    assert set(ptrs[2]) == set(ptrs[0]) and all(ptrs[2][k] != ptrs[0][k] for k in ptrs[0])


def test_a_layer_called_twice_on_vectors_sums_its_gradients():
    """A Linear applied twice to one vector per point, beside another Linear, all three summed: its per-sample
    gradient is the sum over both calls, and the other layer's is untouched (autograd hands the sum's one
    gradient tensor to all three hooks, and each bias term is a view of it: summing in place would corrupt it)."""
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.other, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, z):
            return self.head(torch.tanh(self.lin(z) + self.lin(torch.tanh(z)) + self.other(z)))

    torch.manual_seed(0)
    model = Twice().double().eval()
    z = torch.randn(5, 4, dtype=torch.float64)
    ref = autograd_rows(model, z)
    names = [k for k, _ in model.named_parameters()]
    for workspace in (None, {}):
        out = per_sample_grads(model, model, z, names, workspace)
        rows = torch.cat([out[k] for k in names], dim=1).numpy()
        assert np.abs(rows - ref).max() <= 1e-12 * np.abs(ref).max()


def test_unsupported_models_are_named():
    class Custom(nn.Linear):
        def forward(self, x):
            return super().forward(x) ** 2

    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.s

    assert unsupported_reason(nn.Sequential(nn.Linear(3, 3), Custom(3, 2))) == \
        "parameter 1.weight belongs to a Custom (supported: Linear, Conv2d, BatchNorm1d, BatchNorm2d, " \
        "BatchNorm3d, LayerNorm)"
    assert "parameter 1.s belongs to a Scale" in unsupported_reason(nn.Sequential(nn.Linear(3, 3), Scale()))
    assert "batch statistics" in unsupported_reason(nn.Sequential(nn.Linear(3, 3),
                                                                  nn.BatchNorm1d(3, track_running_stats=False)))
    assert "padding_mode='reflect'" in unsupported_reason(nn.Conv2d(1, 1, 3, padding_mode="reflect"))
    assert "padding='same'" in unsupported_reason(nn.Conv2d(1, 1, 3, padding="same"))
    assert "held by 2 modules" in unsupported_reason(_tied(nn.Linear(3, 3)))
    assert unsupported_reason(Mixed()) is None
    with pytest.raises(ValueError, match="jacobian='batched' cannot differentiate this model: parameter 1.s"):
        ntk.empirical_ntk(nn.Sequential(nn.Linear(3, 3), Scale()), torch.randn(4, 3), jacobian="batched")


def _tied(shared: nn.Linear) -> nn.Module:
    other = nn.Linear(3, 3)
    other.weight = shared.weight              # one Parameter held by two modules
    return nn.Sequential(shared, nn.ReLU(), other)


@pytest.mark.parametrize("chunk,rows", [(2, 2), (3, 4), (5, 100)])
def test_batched_entk_matches_per_point_autograd(mixed, chunk, rows):
    """The eNTK from batched Jacobians: row panels, parameter groups and cross kernels."""
    model, x, ref = mixed
    d = 3
    K_ref = d * ref @ ref.T
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    res = ntk.empirical_ntk(model, x, chunk_size=chunk, row_chunk_size=rows, jacobian="batched")
    assert res.stats["jacobian"] == "batched"
    assert np.abs(res.K - K_ref).max() <= 1e-5 * np.abs(K_ref).max()
    cross = ntk.empirical_ntk(model, x[:2], x[2:], chunk_size=chunk, row_chunk_size=rows, jacobian="batched")
    assert np.abs(cross.K - K_ref[:2, 2:]).max() <= 1e-5 * np.abs(K_ref).max()
    names = [k for k, _ in model.named_parameters()]
    groups = [tuple(names[:5]), tuple(names[5:])]
    sizes = [sum(dict(model.named_parameters())[k].numel() for k in g) for g in groups]
    plan = ntk.NTKPlan(groups=groups, group_sizes=sizes, row_panels=[rows, chunk + 1], chunk_size=chunk,
                       estimated_peak_bytes=0, jacobian_passes=0)
    grouped = ntk.empirical_ntk(model, x, plan=plan, jacobian="batched")
    assert np.abs(grouped.K - K_ref).max() <= 1e-5 * np.abs(K_ref).max()
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())


def test_auto_takes_batched_only_where_it_agrees_with_autograd(mixed):
    """auto on a CPU: batched for a small supported model; vmap when the points interact through the batch
    (a parameter-free layer that centres over the batch: batch-1 gradients differ) or a layer is unsupported."""
    model, x, _ = mixed
    cpu = torch.device("cpu")
    assert ntk.jacobian_mode(model, x[:3], cpu) == "batched"
    assert ntk.jacobian_mode(model, x[:1], cpu) == "batched"          # a second point is made up
    assert ntk.jacobian_mode(model, x[:3], torch.device("cuda")) == "vmap"

    class BatchCentre(nn.Module):
        def forward(self, z):
            return z - z.mean(0, keepdim=True) * 0.5

    mixing = nn.Sequential(nn.Linear(4, 6), BatchCentre(), nn.Tanh(), nn.Linear(6, 2))
    z = torch.randn(3, 4)
    assert unsupported_reason(mixing) is None
    assert not ntk._batched_agrees(mixing, z, lambda o: o)
    assert ntk.jacobian_mode(mixing, z, cpu) == "vmap"
    ok = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    assert ntk._batched_agrees(ok, z, lambda o: o) and ntk.jacobian_mode(ok, z, cpu) == "batched"
    big = nn.Sequential(nn.Conv2d(3, 64, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(64, 2))
    assert ntk.BATCHED_MAX_FLOPS <= ntk.pass_flops(big, torch.randn(1, 3, 96, 96))[0] < ntk.LOOP_MIN_FLOPS
    assert ntk.jacobian_mode(big, torch.randn(2, 3, 96, 96), cpu) == "vmap"


def test_formula_flops_equal_the_flop_counter():
    """pass_flops counts convolutions and products by formula when every leaf is a known module (no
    FlopCounterMode, which imports torch._dynamo): the same totals and per-parameter passes."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = Mixed().eval()
    x = torch.randn(1, 2, 6, 6)
    F, back = ntk.pass_flops(model, x)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    assert F == fc.get_total_flops() > 0
    assert back["head.weight"] == (2 * 5 * 3, 2 * 5 * 3)
    assert back["twice.weight"][1] == 2 * 2 * 9 * 5 * 5       # called twice on 9 positions


def test_a_layer_applied_to_a_constant_is_refused():
    """A Linear applied to a buffer (not to the input) would escape the hooks: explicit batched raises,
    auto falls back to vmap, and vmap still gives the per-point autograd kernel."""

    class Offset(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("code", torch.ones(1, 3))
            self.embed = nn.Linear(3, 4)
            self.body = nn.Linear(4, 2)

        def forward(self, z):
            return self.body(z + self.embed(self.code))

    torch.manual_seed(0)
    model, z = Offset().eval(), torch.randn(4, 4)
    assert unsupported_reason(model) is None
    with pytest.raises(ValueError, match="cannot differentiate this model: the per-sample gradient of embed.weight"):
        ntk.empirical_ntk(model, z, jacobian="batched")
    with pytest.raises(ValueError, match="Linear of the model is applied to something that does not depend"):
        frozen = {k: v.detach() for k, v in model.named_parameters()}    # as the eNTK engine calls it
        per_sample_grads(model, lambda xs: torch.func.functional_call(model, frozen, (xs,)), z, ["embed.weight"])
    assert ntk.jacobian_mode(model, z, torch.device("cpu")) == "vmap"
    rows = autograd_rows(model, z)
    K = ntk.empirical_ntk(model, z).K
    assert np.abs(K - 2 * rows @ rows.T).max() <= 1e-5 * np.abs(K).max()


def test_models_the_batched_path_would_get_wrong_are_refused():
    """A Linear called with a keyword argument (its input unseen by the hook) and a weight also used functionally
    by the parent (a tied decoder): auto falls back to vmap, an explicit batched raises naming the reason."""

    class Keyword(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, z):
            return self.lin(input=z)

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(3, 4)

        def forward(self, z):
            return torch.nn.functional.linear(torch.tanh(self.enc(z)), self.enc.weight.T)

    torch.manual_seed(0)
    z, cpu = torch.randn(4, 3), torch.device("cpu")
    for model, reason in ((Keyword(), "a Linear of the model is called without a positional input; use"),
                          (Tied(), "the per-sample gradient of enc.weight at point 0 differs from per-point autograd")):
        assert unsupported_reason(model) is None
        assert ntk.jacobian_mode(model, z, cpu) == "vmap"
        with pytest.raises(ValueError, match=f"jacobian='batched' cannot differentiate this model: {reason}"):
            ntk.empirical_ntk(model, z, jacobian="batched")
        rows = autograd_rows(model, z)
        K = ntk.empirical_ntk(model, z).K
        d = model(z[:1]).shape[1]
        assert np.abs(K - d * rows @ rows.T).max() <= 1e-5 * np.abs(K).max()


def test_pass_flops_counts_products_outside_the_leaves():
    """An attention-like parent multiplies its Linears' outputs itself: those FLOPs are counted (FlopCounterMode
    takes over from the per-leaf formula), so auto does not pick the batched path for an 84 MFLOP model."""
    from torch.utils.flop_counter import FlopCounterMode

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(64, 64) for _ in range(4))

        def forward(self, z):
            a = torch.softmax(self.q(z) @ self.k(z).transpose(1, 2), -1)
            return self.o(a @ self.v(z)).mean(1)

    model, z = Attention().eval(), torch.randn(2, 512, 64)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(z[:1])
    F, back = ntk.pass_flops(model, z)
    assert F == fc.get_total_flops() > ntk.BATCHED_MAX_FLOPS
    assert back["q.weight"][1] == 2 * 512 * 64 * 64
    assert ntk.jacobian_mode(model, z, torch.device("cpu")) == "vmap"
