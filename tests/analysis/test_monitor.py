"""StepwiseMonitor: spectra against numpy, the forecast against the linear model's exact step times."""

import functools
import math

import numpy as np
import pytest

from sslkit.analysis.monitor import (
    StepwiseMonitor,
    fit_logit_growth,
    forecast_crossing,
    forecast_errors,
    log_spaced_steps,
    replay,
)
from sslkit.analysis.steps import detect_steps
from sslkit.theory import linear as L


def _logistic(t, rate, lam0, level=1.0):
    """lambda(t) / level = 1 / (1 + (1/x0 - 1) e^{-rate t}), x0 = lam0 / level."""
    x0 = lam0 / level
    return level / (1.0 + (1.0 / x0 - 1.0) * np.exp(-rate * t))


def test_logit_fit_of_a_logistic_forecasts_its_half_time_exactly():
    rate, lam0, level = 3.0, 1e-6, 0.8
    t = np.linspace(0.5, 2.0, 12)
    lam = _logistic(t, rate, lam0, level)
    p = lam / level
    fit = fit_logit_growth(t, np.log(p) - np.log1p(-p))
    assert fit["slope"] == pytest.approx(rate, rel=1e-10)
    t_star, lo, hi = forecast_crossing(fit, 0.0)
    tau = math.log(level / lam0 - 1.0) / rate  # logit(lambda / level) = 0
    assert t_star == pytest.approx(tau, rel=1e-9)
    assert lo <= t_star <= hi


@functools.cache
def _linear_run():
    """Gradient descent on the linear model (Sec. 4) with well-separated gamma_j: d = 6 steps."""
    rng = np.random.default_rng(0)
    m, d, alpha, lr = 40, 6, 1e-4, 5e-3
    gamma = np.concatenate([[1.0, 0.7, 0.5, 0.35, 0.25, 0.18], np.sort(rng.uniform(0.01, 0.1, m - d))[::-1]])
    V = np.linalg.qr(rng.standard_normal((m, m)))[0]
    W0 = L.init_weights(d, m, alpha, 1)
    steps = int(1.3 * L.step_times(gamma[:d], alpha * math.sqrt(m)).max() / lr)
    traj = L.gd_eigenbasis(gamma, V, W0, lr, steps, record=L.record_grid(steps, 400))
    tau = {j: L.first_crossing(traj.t, traj.eigs[:, j], 0.5) for j in range(d)}
    return gamma, traj, tau


def test_forecast_on_the_linear_model_within_5_percent_and_rates_match_prop_4_1():
    gamma, traj, tau = _linear_run()
    mon, made = replay(traj.t, traj.eigs, space="C", grown_level=1.0, window=8, min_rise_decades=3.0)
    err = forecast_errors(made, tau)
    assert set(err["per_mode"]) == set(range(6))  # every mode was forecast before its step
    assert err["worst"] <= 0.05
    assert err["median"] <= 0.01
    for j in range(6):  # the fitted logit rate is 8 gamma_j (Prop. 4.1)
        rates = [f["rate"] for f in made if f["mode"] == j]
        assert np.median(rates) == pytest.approx(8 * gamma[j], rel=0.05)
    # online detection at the end = the workflow's detector on the whole trajectory
    offline = detect_steps(traj.t, traj.eigs, detector="bands")
    assert mon.steps_so_far()["step_times"] == pytest.approx(offline["step_times"])
    assert mon.steps_so_far()["n_steps"] == 6


def test_online_steps_are_the_detector_on_the_prefix():
    _, traj, _ = _linear_run()
    k = len(traj.t) * 2 // 3
    mon = StepwiseMonitor(space="C", log_to_mlflow=False)
    for i in range(k):
        mon.observe(i, t=float(traj.t[i]), eig_c=traj.eigs[i])
    prefix = detect_steps(traj.t[:k], traj.eigs[:k], detector="bands")
    assert mon.steps_so_far()["step_times"] == pytest.approx(prefix["step_times"])
    assert 0 < prefix["n_steps"] < 6


def test_forecast_errors_respects_the_lead():
    fc = [{"mode": 0, "t": 11.0, "made_at": 5.0, "interval": [10.0, 12.0]},
          {"mode": 0, "t": 10.2, "made_at": 9.5, "interval": [10.1, 10.3]}]
    all_ = forecast_errors(fc, {0: 10.0})
    assert all_["n"] == 2 and all_["worst"] == pytest.approx(0.1) and all_["coverage"] == 0.5
    early = forecast_errors(fc, {0: 10.0}, lead=1.0)
    assert early["n"] == 1 and early["median"] == pytest.approx(0.1)


def test_update_from_embeddings_matches_numpy():
    rng = np.random.default_rng(1)
    z1 = rng.standard_normal((50, 4)) * [3, 1, 0.3, 0.01] + 0.5
    z2 = z1 + 0.1 * rng.standard_normal((50, 4))
    mon = StepwiseMonitor(space="cov", lr=0.1, log_to_mlflow=False)
    rec = mon.update(10, z1, z2)
    c = (z1.T @ z2 + z2.T @ z1) / 100
    z = np.vstack([z1, z2])
    cov = np.cov(z.T, bias=True)
    np.testing.assert_allclose(rec["eig_C"], np.sort(np.linalg.eigvalsh(c))[::-1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rec["eig_cov"], np.sort(np.linalg.eigvalsh(cov))[::-1], rtol=1e-10, atol=1e-12)
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum() + 1e-7
    assert rec["rankme"] == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-8)
    assert rec["t"] == pytest.approx(1.0)
    assert rec["rank"] == int(np.sum(rec["eig_cov"] > 0.01 * rec["eig_cov"][0]))


def test_bad_input_names_the_problem():
    mon = StepwiseMonitor(space="C", log_to_mlflow=False)
    with pytest.raises(ValueError, match="eig_c"):
        mon.observe(0, eig_cov=[1.0, 0.1])
    mon.observe(1, eig_c=[1.0, 0.1])
    with pytest.raises(ValueError, match="advance in time"):
        mon.observe(1, eig_c=[1.0, 0.1])
    with pytest.raises(ValueError, match="space"):
        StepwiseMonitor(space="hidden")


def test_cadence_is_the_training_engines():
    from sslkit.training.engine import eval_steps

    assert log_spaced_steps(2000, 320, 25) == eval_steps(2000, 25, 320)
    mon = StepwiseMonitor(every=25, log_points=320, log_to_mlflow=False)
    assert [s for s in range(2001) if mon.due(s, 2000)] == eval_steps(2000, 25, 320)


def test_logs_to_an_active_mlflow_run(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # (the user's, restored after the test)
    _, traj, _ = _linear_run()
    # set_tracking_uri also exports MLFLOW_TRACKING_URI (for subprocesses): undone below, or every later
    # Snakemake test of this session would log into this test's database
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        with mlflow.start_run() as run:
            mon = StepwiseMonitor(space="C", grown_level=1.0)
            for i in range(0, len(traj.t), 4):
                mon.observe(i, t=float(traj.t[i]), eig_c=traj.eigs[i])
        client = mlflow.tracking.MlflowClient()
        hist = client.get_metric_history(run.info.run_id, "monitor/n_steps")
        nxt = client.get_metric_history(run.info.run_id, "monitor/next_t")
    finally:
        mlflow.set_tracking_uri(None)
    assert len(hist) == len(range(0, len(traj.t), 4))
    assert max(m.value for m in hist) == mon.steps_so_far()["n_steps"] > 0
    assert nxt and all(m.value > 0 for m in nxt)
    import os

    assert "MLFLOW_TRACKING_URI" not in os.environ
