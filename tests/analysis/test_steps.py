"""sslkit.analysis.steps: step detection validated on the linear model, where the step times are known."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sslkit.analysis import steps
from sslkit.theory import linear

GAMMA = np.array([1.0, 0.5, 0.25, 0.125])


def log_grid(tau_min, tau_max, n=200):
    return np.concatenate([[0.0], np.geomspace(tau_min / 30, 3 * tau_max, n)])


@pytest.mark.parametrize("grid", ["log", "linear"])
@pytest.mark.parametrize("s0", [1e-4, 1e-7])
def test_recovers_closed_form_step_times(grid, s0):
    tau = linear.step_times(GAMMA, s0)
    t = log_grid(tau[0], tau[-1]) if grid == "log" else np.linspace(0, 1.5 * tau[-1], 150)
    lam = linear.lambda_closed_form(GAMMA, s0, t)
    r = steps.detect_steps(t, lam)
    assert r["n_steps"] == 4 and r["n_events"] == 4
    np.testing.assert_allclose(r["step_times"], tau, rtol=0.05)
    assert r["sequential"] is True and r["step_sizes"] == [1, 1, 1, 1]
    assert r["bands"]["gap_decades"] > 3
    # the Fig. 3 threshold separates the initial from the final spectrum
    assert lam[0].max() < r["bands"]["threshold"] < lam[-1].min()


def test_recovers_step_times_of_discrete_gd_from_generic_init():
    """Full-matrix gradient descent (Euler steps of dW/dt = -4 (W G W^T - I) W G) from a random small
    W(0); the detector recovers tau_j of Eq. 16 with the effective s_j(0) of Eq. 19."""
    rng = np.random.default_rng(0)
    m, d = 8, 4
    Q, _ = np.linalg.qr(rng.normal(size=(m, m)))
    Gamma = Q @ np.diag([1.0, 0.5, 0.25, 0.125, 0.06, 0.03, -0.1, -0.2]) @ Q.T
    g, V = linear.eigh_desc(Gamma)
    W = 1e-5 * rng.normal(size=(d, m))
    tau = linear.step_times(g[:d], linear.effective_s0(W, V))
    eta = 2e-3
    n_steps = int(2 * tau[-1] / eta)
    record = set(np.unique(np.geomspace(1, n_steps, 250).astype(int)).tolist()) | {0}
    ts, ev = [], []
    for k in range(n_steps + 1):
        if k in record:
            ts.append(k * eta)
            ev.append(np.linalg.eigvalsh(W @ Gamma @ W.T)[::-1])
        W = W - eta * 4 * (W @ Gamma @ W.T - np.eye(d)) @ W @ Gamma
    r = steps.detect_steps(np.array(ts), np.array(ev))
    assert r["n_steps"] == 4 and r["sequential"] is True
    np.testing.assert_allclose(r["step_times"], tau, rtol=0.05)


def test_flat_spectrum_has_no_steps():
    rng = np.random.default_rng(1)
    t = np.linspace(0, 100, 80)
    flat = np.tile(10.0 ** -np.arange(8.0), (t.size, 1)) * np.exp(0.1 * rng.normal(size=(t.size, 8)))
    r = steps.detect_steps(t, -np.sort(-flat, axis=1))
    assert r["n_steps"] == 0 and r["step_times"] == [] and r["sequential"] is None
    assert r["reason"] and "no eigenvalue rose" in r["reason"]
    # a constant spectrum has no two bands at all
    r = steps.detect_steps(t, np.full((t.size, 5), 0.3))
    assert r["n_steps"] == 0 and "no band gap" in r["reason"]
    r = steps.detect_steps(t, np.zeros((t.size, 5)))
    assert r["n_steps"] == 0 and r["reason"] == "no positive eigenvalue"


def test_close_steps_separated_when_resolvable_merged_when_not():
    s0 = 1e-4
    for g2, expect_steps in [(0.8, 2), (0.995, 1)]:
        gamma = np.array([1.0, g2])
        tau = linear.step_times(gamma, s0)
        t = log_grid(tau[0], tau[-1], 300)
        r = steps.detect_steps(t, linear.lambda_closed_form(gamma, s0, t))
        assert r["n_events"] == 2
        np.testing.assert_allclose([r["event_times"][0], r["event_times"][1]], tau, rtol=0.05)
        assert r["n_steps"] == expect_steps
        assert r["sequential"] is (expect_steps == 2)
        if expect_steps == 1:
            assert r["step_sizes"] == [2] and r["step_modes"] == [[0, 1]]


RISE_TIMES = 150 * 1.45 ** np.arange(8)


def bimodal_standard_init(seed=0, noise=0.15, rise=RISE_TIMES):
    """Standard-init-like sorted spectra: 6 modes grown from the start at heterogeneous levels,
    8 modes that jump (in log space) through the sparse gap at known times, 10 that never grow.
    Each jump is a logistic in log lambda centred on its time r with width 0.01 r: it crosses the gap
    within r (1 +- 0.05), so any sensible event definition lands within 5% of r."""
    rng = np.random.default_rng(seed)
    t = np.concatenate([[0.0], np.geomspace(10, 4000, 300)])  # 2% spacing: resolves r (1 +- 0.05)
    grown0 = 10 ** rng.uniform(-2.5, 0, 6)
    lam = [np.full(t.size, g) for g in grown0]
    for r in rise:
        lo, hi = rng.uniform(-7.5, -6.5), rng.uniform(-2.5, 0)
        lam.append(10 ** (lo + (hi - lo) / (1 + np.exp(-(t - r) / (0.01 * r)))))
    lam += [np.full(t.size, 10 ** rng.uniform(-7.5, -6.5)) for _ in range(10)]
    lam = np.array(lam).T * np.exp(noise * rng.normal(size=(t.size, 24)))

    return t, -np.sort(-lam, axis=1), rise


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_bimodal_standard_init(seed):
    t, lam, rise = bimodal_standard_init(seed)
    r = steps.detect_steps(t, lam)
    assert r["n_grown_initially"] == 6 and r["n_grown_final"] == 14
    assert r["n_steps"] == 8 and r["sequential"] is True
    np.testing.assert_allclose(r["step_times"], rise, rtol=0.05)
    b = r["bands"]
    assert 1e-7 < b["lower"] < b["threshold"] < b["upper"] < 1e-2


def test_simultaneous_rises_are_one_non_sequential_step():
    """'A few at a time' (paper footnote 17): modes rising in pairs, 1% apart -> 4 steps of 2."""
    rise = np.repeat(150 * 1.6 ** np.arange(4), 2) * np.tile([1.0, 1.01], 4)
    t, lam, _ = bimodal_standard_init(0, rise=rise)
    r = steps.detect_steps(t, lam)
    assert r["n_events"] == 8 and r["n_steps"] == 4
    assert r["step_sizes"] == [2, 2, 2, 2] and r["sequential"] is False and r["sequential_fraction"] == 0.0
    np.testing.assert_allclose(r["step_times"], rise[::2], rtol=0.05)


def test_robust_to_garbage():
    """Negative/zero/NaN eigenvalues, one checkpoint, pure noise: no crash, JSON-serialisable."""
    rng = np.random.default_rng(3)
    t = np.linspace(0, 10, 50)
    noisy = 10 ** rng.uniform(-8, 0, size=(50, 16))
    noisy[:, -3:] = -1e-9
    noisy[5, 2] = np.nan
    for tt, ee in [(t, noisy), (t[:1], noisy[:1]), (t[::-1], noisy)]:
        r = steps.detect_steps(tt, ee)
        json.dumps(r, allow_nan=False)
        assert r["n_steps"] == len(r["step_times"])
    with pytest.raises(ValueError, match="T x k"):
        steps.detect_steps(t, noisy[:10])
    with pytest.raises(ValueError, match="distinct"):
        steps.detect_steps([0, 1, 1], np.ones((3, 2)))
    with pytest.raises(KeyError, match="event_fractoin"):
        steps.detect_steps(t, noisy, {"event_fractoin": 0.5})


def test_top_mode_starting_between_the_bands_is_learned():
    """Paper heuristic (App. D.2): small init with the top eigenvalue ~1e-3 at init, the rest ~1e-8."""
    gamma = np.array([1.0, 0.5, 0.25])
    s0 = np.sqrt(np.array([1e-3, 1e-8, 1e-8]) / gamma)
    tau = linear.step_times(gamma, s0)
    t = log_grid(tau[0], tau[-1])
    r = steps.detect_steps(t, linear.lambda_closed_form(gamma, s0, t))
    assert r["n_steps"] == 3 and r["n_grown_initially"] == 0
    np.testing.assert_allclose(r["step_times"], tau, rtol=0.05)


def sharp_jumps(t, times, factor=3.0, width=0.01, noise=0.02, seed=0):
    """Hidden-like spectra: O(1) levels that jump by ``factor`` at ``times`` (logistic in log t)."""
    rng = np.random.default_rng(seed)
    k = len(times) + 3
    base = 10 ** (-np.arange(k) / 3)
    lam = np.tile(base, (t.size, 1))
    lt = np.log(np.maximum(t, 1e-6 * t[t > 0].min()))[:, None]
    lam[:, :len(times)] *= 1 + (factor - 1) / (1 + np.exp(np.clip(-(lt - np.log(times)[None, :]) / width, -50, 50)))
    lam *= np.exp(noise * rng.normal(size=lam.shape))
    return -np.sort(-lam, axis=1)


def test_jump_detector():
    t = np.concatenate([[0.0], np.geomspace(0.1, 100, 300)])
    times = np.array([0.5, 2.0, 8.0, 30.0])
    r = steps.detect_steps(t, sharp_jumps(t, times), detector="jumps")
    assert r["n_steps"] == 4 and r["sequential"] is True
    np.testing.assert_allclose(r["step_times"], times, rtol=0.05)
    assert 0 < r["noise_decades"] < 0.02 and r["min_jump"] >= 0.1
    flat = sharp_jumps(t, times, factor=1.0)
    r = steps.detect_steps(t, flat, detector="jumps")
    assert r["n_steps"] == 0 and r["reason"] == "no eigenvalue jumped"
    # noise alone, 10x larger: the noise-adaptive threshold keeps it quiet
    r = steps.detect_steps(t, sharp_jumps(t, times, factor=1.0, noise=0.2), detector="jumps")
    assert r["n_steps"] == 0 and r["min_jump"] > 0.3


def test_hidden_coincidence():
    s0 = 1e-4
    tau = linear.step_times(GAMMA, s0)
    t = log_grid(tau[0], tau[-1] * 1.6)
    emb = linear.lambda_closed_form(GAMMA, s0, t)
    # (a) hidden spectra that also grow by decades (band detector): same steps 3% later, or 50% later
    near = np.hstack([3 * linear.lambda_closed_form(GAMMA / 1.03, s0, t), np.full((t.size, 2), 1e-9)])
    far = 3 * linear.lambda_closed_form(GAMMA / 1.5, s0, t)
    bands = {"hidden_detector": "bands"}
    r = steps.analyze_run(t, emb, near, hidden_modes=6, params=bands)
    assert r["n_steps"] == 4 and r["hidden"]["n_steps"] == 4
    assert r["hidden_coincidence"] == 1.0 and r["hidden_coincidence_reverse"] == 1.0
    assert r["hidden_coverage"] < 0.5
    assert steps.analyze_run(t, emb, far, params=bands)["hidden_coincidence"] == 0.0
    # (b) O(1) hidden spectra that jump by 3x (jump detector, the default for hidden spaces)
    r = steps.analyze_run(t, emb, sharp_jumps(t, 1.03 * tau))
    assert r["hidden"]["detector"] == "jumps" and r["hidden"]["n_steps"] == 4
    assert r["hidden_coincidence"] == 1.0 and r["hidden_coverage"] < 0.5
    r = steps.analyze_run(t, emb, sharp_jumps(t, 1.5 * tau))
    assert r["hidden"]["n_steps"] == 4 and r["hidden_coincidence"] == 0.0
    r = steps.analyze_run(t, emb)
    assert r["hidden_coincidence"] is None and r["hidden"] is None
    text = json.dumps(r, allow_nan=False)
    assert all(k in json.loads(text) for k in ("step_times", "n_steps", "sequential", "hidden_coincidence"))
    assert steps.coincidence_fraction([], [[1.0, 2.0]]) is None
    assert steps.coincidence_fraction([1.0, 2.0], [[1.05, 1.1]], log_tol=0.1) == 0.5
    assert steps.coincidence_fraction([1.0], []) == 0.0
    assert steps.interval_coverage([[1.0, 2.0], [1.5, 4.0]], 1.0, 16.0, log_tol=0.0) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# Bimodality (dip test) of Figs. 3-4
# ---------------------------------------------------------------------------------------------

def test_dip_statistic_known_values():
    n = 101
    assert steps.dip_statistic(np.arange(n, dtype=float)) == pytest.approx(1 / (2 * n), rel=1e-12)
    two_points = np.r_[np.zeros(50), np.ones(50)]  # ties merge: two equal point masses
    assert steps.dip_statistic(two_points) == pytest.approx(0.25, rel=1e-12)
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, 300), rng.normal(6, 1, 300)]
    assert steps.dip_statistic(x) == pytest.approx(steps.dip_statistic(3 * x - 7), rel=1e-12)
    assert 0.1 < steps.dip_statistic(x) < 0.25 and steps.dip_statistic(rng.normal(size=600)) < 0.03


def _synthetic_spectra(kind: str, T: int = 60, k: int = 32, seed: int = 0):
    """T log-spaced times x k eigenvalues; every row drawn from the same spread of log10 eigenvalues."""
    rng = np.random.default_rng(seed)
    t = np.geomspace(1e-2, 1e2, T)
    if kind == "log-uniform":
        y = rng.uniform(-7, -1, (T, k))
    elif kind == "log-normal":
        y = rng.normal(-4, 1.5, (T, k))
    else:  # two bands 5 decades apart
        y = np.where(np.arange(k) < k // 2, rng.normal(-1, 0.3, (T, k)), rng.normal(-6, 0.3, (T, k)))
    return t, -np.sort(-(10.0 ** y), axis=1)


@pytest.mark.parametrize("kind", ["log-uniform", "log-normal"])
def test_dip_test_does_not_call_a_unimodal_spread_bimodal_but_the_otsu_gap_does(kind):
    """20 synthetic unimodal controls: the dip test calls at most a few bimodal (its 5 % false-alarm
    rate), while the 2-means split with its 1-decade gap "separates" every one of them."""
    results = [steps.bimodality(*_synthetic_spectra(kind, seed=s)) for s in range(20)]
    assert all(r["n"] == 8 * 32 and len(r["rows"]) == 8 for r in results)
    assert sum(r["bimodal"] for r in results) <= 3
    assert np.median([r["p_value"] for r in results]) > 0.2
    for s in range(20):
        bands = steps.estimate_bands(_synthetic_spectra(kind, seed=s)[1])
        assert bands["separated"] and bands["gap_decades"] > 2


def test_dip_test_finds_two_bands():
    results = [steps.bimodality(*_synthetic_spectra("bimodal", seed=s)) for s in range(20)]
    assert all(r["bimodal"] and r["p_value"] < 0.01 and r["dip"] > 0.15 for r in results)
    t, eigs = _synthetic_spectra("bimodal")
    assert steps.analyze_run(t, eigs)["bimodality"] == results[0]


def test_dip_test_p_value_is_calibrated_on_the_uniform_null():
    """Rejection rate of unimodal (uniform) samples at alpha = 0.1 is about 0.1 (not 0, not 1)."""
    rng = np.random.default_rng(5)
    p = [steps.dip_test(rng.random(64), trials=200, seed=1)["p_value"] for _ in range(100)]
    assert 0.03 <= np.mean(np.array(p) < 0.1) <= 0.2


def test_dip_parameters_are_checked():
    t, eigs = _synthetic_spectra("bimodal")
    with pytest.raises(ValueError, match="dip_alpha"):
        steps.bimodality(t, eigs, {"dip_alpha": 1.5})
    with pytest.raises(ValueError, match="dip_times"):
        steps.bimodality(t, eigs, {"dip_times": 0})
    assert steps.bimodality(t, np.zeros_like(eigs))["bimodal"] is None  # no positive eigenvalue
