"""sslkit.analysis.checkpoints.recompute_bn_stats ("precise BN") and the bn_stats option of the spectra."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sslkit.analysis import checkpoints as analysis  # noqa: E402


class Net(torch.nn.Module):
    """x -> Linear -> BN (hidden) -> Linear -> BN (embedding); ``other`` is a BN off that path."""

    def __init__(self, scale: float):
        super().__init__()
        self.a, self.bn1 = torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5)
        self.b, self.bn2 = torch.nn.Linear(5, 3), torch.nn.BatchNorm1d(3)
        self.other = torch.nn.BatchNorm1d(3)
        with torch.no_grad():
            for p in list(self.a.parameters()) + list(self.b.parameters()):
                p.mul_(scale)

    def hidden(self, x):
        return self.bn1(self.a(x))

    def embed(self, x):
        return self.bn2(self.b(torch.relu(self.hidden(x))))


def test_running_stats_are_the_statistics_of_the_inputs():
    torch.manual_seed(0)
    net = Net(1e-3).eval()  # stale statistics: mean 0, variance 1, activations ~1e-3
    x = torch.randn(64, 6, dtype=torch.float64)
    net.double()
    n = analysis.recompute_bn_stats(net, net.embed, [x[:40], x[40:]])
    assert n == 2 and not net.training
    with torch.no_grad():
        h = (x @ net.a.weight.T + net.a.bias).numpy()
    # cumulative average over the two chunks of their means and unbiased variances
    mean = (h[:40].mean(0) + h[40:].mean(0)) / 2
    var = (h[:40].var(0, ddof=1) + h[40:].var(0, ddof=1)) / 2
    np.testing.assert_allclose(net.bn1.running_mean.numpy(), mean, rtol=1e-10)
    np.testing.assert_allclose(net.bn1.running_var.numpy(), var, rtol=1e-10)
    assert net.bn1.momentum == 0.1  # restored
    # off-path layer untouched
    assert torch.equal(net.other.running_var, torch.ones(3, dtype=torch.float64))


def test_recomputed_spectra_equal_batch_statistics_and_running_ones_do_not():
    """One evaluation chunk: eval mode after precise BN = train mode on that chunk (up to the
    unbiased-variance factor n/(n-1) BatchNorm stores); stale running stats are far off."""
    torch.manual_seed(1)
    net = Net(1e-3).double()
    x1 = torch.randn(200, 6, dtype=torch.float64)
    x2 = x1 + 0.3 * torch.randn(200, 6, dtype=torch.float64)  # positive pairs: correlated views
    pairs = {"x1": x1, "x2": x2}
    stale = analysis.checkpoint_spectra(net, pairs, batch_size=400, bn_stats="running")
    fresh = analysis.checkpoint_spectra(net, pairs, batch_size=400, bn_stats="recompute")
    net.train()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.momentum = 0.0  # batch statistics, running ones unchanged
        z = net.embed(torch.cat([x1, x2])).numpy()
    z1, z2 = z[:200], z[200:]
    C = (z1.T @ z2 + z2.T @ z1) / 400
    ref = np.linalg.eigvalsh(C)[::-1]
    # precise BN: bn2's input comes from bn1's output computed with the recomputed stats, so the
    # two agree up to the sqrt(n/(n-1)) factor per layer
    np.testing.assert_allclose(fresh["eigenvalues"]["embedding_C"], ref, rtol=2e-2, atol=1e-3 * abs(ref).max())
    assert abs(stale["eigenvalues"]["embedding_C"][0]) < 1e-3 * abs(ref[0])
    with pytest.raises(ValueError, match="bn_stats"):
        analysis.checkpoint_spectra(net, pairs, bn_stats="train")


def _history_style_spectra(net, x1, x2):
    """What the engine's history records (engine.evaluate -> method.loss(update=False) -> embeddings):
    each view forwarded separately in train mode (its own batch statistics), buffers restored,
    eigenvalues by engine.embedding_spectra (covariance normalised by 2N - 1)."""
    from sslkit.training import engine

    saved = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    with torch.no_grad():
        z1, z2 = net.embed(x1), net.embed(x2)
    net.load_state_dict(saved)
    eig_c, eig_cov = engine.embedding_spectra(z1, z2)
    return np.asarray(eig_c), np.asarray(eig_cov)


@pytest.mark.parametrize("noise, shift", [(0.0, 0.0), (0.3, 1.0)])
def test_history_spectra_vs_analysis_stage_bn(noise, shift):
    """The history's BN handling (per-view batch statistics) equals the analysis stage's precise BN
    (statistics pooled over both views, eval mode) when the two views have the same statistics, up to
    O(1/N) factors (unbiased variance in BN's running_var; 2N - 1 vs 2N in the covariance). When the
    views' statistics differ (``noise``, ``shift``), the two differ -- and precise BN estimated per view
    reproduces the history: the whole difference is pooled vs per-view statistics (docs/theory.md §15)."""
    torch.manual_seed(2)
    net = Net(1.0).double()
    N = 256
    x1 = torch.randn(N, 6, dtype=torch.float64)
    x2 = x1 + noise * torch.randn(N, 6, dtype=torch.float64) + shift  # shift: view 2 has another mean
    hist_c, hist_cov = _history_style_spectra(net, x1, x2)
    ana = analysis.checkpoint_spectra(net, {"x1": x1, "x2": x2}, batch_size=N, bn_stats="recompute")
    rtol = 3.0 / N
    close = (np.allclose(ana["eigenvalues"]["embedding_C"], hist_c, rtol=rtol)
             and np.allclose(ana["eigenvalues"]["embedding_cov"], hist_cov, rtol=rtol))
    assert close == (shift == 0.0)
    # per-view precise BN = the history's per-view batch statistics
    z = []
    for x in (x1, x2):
        analysis.recompute_bn_stats(net, net.embed, [x])
        with torch.no_grad():
            z.append(net.embed(x))
    per_view = np.linalg.eigvalsh(((z[0].T @ z[1] + z[1].T @ z[0]) / (2 * N)).numpy())[::-1]
    np.testing.assert_allclose(per_view, hist_c, rtol=rtol, atol=1e-12)
