"""Appendix G speed-ups (sslkit.training.speedup_variants) against their definitions and hand computations, the
experiment's measures (sslkit.experiments.speedups), and a tiny Snakemake run of rules/speedups.smk."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sslkit.experiments import speedups as X
from sslkit.training import losses as L
from sslkit.training import speedup_variants as S

torch.set_num_threads(1)


def _diag_pair(c: np.ndarray, n: int = 40, seed: int = 0):
    """z1, z2 (n x d, float64) whose symmetrised cross-correlation is exactly diag(c)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, len(c))))
    z1 = q * np.sqrt(n * np.abs(c))
    z2 = z1 * np.sign(c)
    return torch.tensor(z1, requires_grad=True), torch.tensor(z2, requires_grad=True)


def _random_sym(d: int, eigs, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
    return q @ torch.diag(torch.as_tensor(eigs, dtype=torch.float64)) @ q.T


# ---------------------------------------------------------------------------------------------
# G.2 / G.3 losses
# ---------------------------------------------------------------------------------------------

C_DIAG = np.array([2.3, 1.0, 0.49, 0.04, 1e-6, -0.25])


@pytest.mark.parametrize("lambd", [1.0, 0.0051])
def test_sharpened_loss_equals_elementwise_definition_on_diagonal_C(lambd):
    z1, z2 = _diag_pair(C_DIAG)
    c = L.cross_correlation(z1, z2, symmetric=True).detach().numpy()
    np.testing.assert_allclose(c, np.diag(C_DIAG), atol=1e-12)
    got = S.barlow_twins_spectral_loss(z1, z2, lambd=lambd, transform="sqrt")
    want = sum((1 - math.copysign(abs(x) ** 0.5, x)) ** 2 for x in C_DIAG)
    assert float(got.detach()) == pytest.approx(want, rel=1e-10)


def test_smooth_and_quartic_losses_equal_their_definitions_on_diagonal_C():
    z1, z2 = _diag_pair(C_DIAG)
    for eps in (0.0, 0.1):
        got = S.barlow_twins_spectral_loss(z1, z2, transform="smooth", cfg={"smooth_eps": eps})
        want = sum((1 - min(x, 1 + eps * (1 - x))) ** 2 for x in C_DIAG)
        assert float(got.detach()) == pytest.approx(want, rel=1e-10)
    got = S.barlow_twins_spectral_loss(z1, z2, power=4)
    assert float(got.detach()) == pytest.approx(sum((1 - x) ** 4 for x in C_DIAG), rel=1e-10)


def test_identity_transform_is_the_original_symmetrised_loss_and_quartic_is_trace_power_4():
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(50, 5, dtype=torch.float64, generator=g)
    z2 = z1 + 0.3 * torch.randn(50, 5, dtype=torch.float64, generator=g)
    for lambd in (1.0, 0.0051):
        a = S.barlow_twins_spectral_loss(z1, z2, lambd=lambd)
        b = L.barlow_twins_loss(z1, z2, lambd=lambd, batchnorm=False, symmetric=True)
        assert float(a) == pytest.approx(float(b), rel=1e-12)
    c = L.cross_correlation(z1, z2, symmetric=True)
    m = c - torch.eye(5, dtype=torch.float64)
    lam = torch.linalg.eigvalsh(c)
    quart = S.barlow_twins_spectral_loss(z1, z2, power=4)
    assert float(quart.detach()) == pytest.approx(float(torch.trace(m @ m @ m @ m)), rel=1e-10)
    assert float(quart.detach()) == pytest.approx(float(((1 - lam) ** 4).sum()), rel=1e-10)


def test_g3_functions_match_definitions():
    lam = torch.tensor([-1.0, 0.0, 0.3, 1.0, 1.5, 4.0], dtype=torch.float64)
    np.testing.assert_allclose(S.g_smooth(lam).numpy(), [-1, 0, 0.3, 1, 1, 1])
    np.testing.assert_allclose(S.g_smooth(lam, 0.1).numpy(), [-1, 0, 0.3, 1, 0.95, 0.7])
    np.testing.assert_allclose(S.g_smooth_prime(lam, 0.1).numpy(), [1, 1, 1, 1, -0.1, -0.1])
    np.testing.assert_allclose(S.g_sqrt(lam).numpy(), [-1, 0, 0.3 ** 0.5, 1, 1.5 ** 0.5, 2])
    np.testing.assert_allclose(S.g_sqrt_prime(torch.tensor([0.25, -4.0, 0.0]), 1e-8).numpy(),
                               [1.0, 0.25, 0.5e4], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# stable gradient through the eigendecomposition
# ---------------------------------------------------------------------------------------------

def test_spectral_gradient_matches_finite_differences_on_separated_eigenvalues():
    c = _random_sym(4, [0.2, 0.7, 1.6, 3.0]).requires_grad_()
    for g, gp in ((S.g_sqrt, S.g_sqrt_prime), (S.g_smooth, S.g_smooth_prime)):
        assert torch.autograd.gradcheck(lambda m, g=g, gp=gp: S.spectral_function(0.5 * (m + m.T), g, gp), (c,))


def test_spectral_gradient_finite_at_nearly_equal_eigenvalues():
    d = 5
    # two pairs of (nearly) equal eigenvalues, one of them at zero where g_sqrt' is infinite
    c = _random_sym(d, [0.5, 0.5 + 1e-13, 0.0, 1e-15, 2.0], seed=3).requires_grad_()
    w = _random_sym(d, [1.0, -2.0, 0.5, 3.0, 0.1], seed=4)  # random symmetric weights
    loss = (S.spectral_function(c, S.g_sqrt, S.g_sqrt_prime) * w).sum()
    (grad,) = torch.autograd.grad(loss, c)
    assert torch.isfinite(grad).all()
    # hand computation (Daleckii-Krein): equal eigenvalues l_i = l_j use g'(l); pairs use the divided difference
    lam, u = torch.linalg.eigh(c.detach())
    gl = S.g_sqrt(lam)
    gp = S.g_sqrt_prime(lam)
    k = torch.empty(d, d, dtype=torch.float64)
    for i in range(d):
        for j in range(d):
            k[i, j] = gp[i] if abs(lam[i] - lam[j]) < 1e-9 else (gl[i] - gl[j]) / (lam[i] - lam[j])
    want = u @ (k * (u.T @ w @ u)) @ u.T
    torch.testing.assert_close(grad, want, rtol=1e-6, atol=1e-6)
    # whereas autograd through eigh itself is not finite here
    c2 = c.detach().clone().requires_grad_()
    lam2, u2 = torch.linalg.eigh(c2)
    naive = ((u2 * S.g_sqrt(lam2)) @ u2.T * w).sum()
    (g2,) = torch.autograd.grad(naive, c2)
    assert not torch.isfinite(g2).all() or g2.abs().max() > 1e6


def test_sharpened_loss_trains_from_zero_with_finite_gradients():
    z = torch.zeros(32, 4, dtype=torch.float64, requires_grad=True)  # C = 0: all eigenvalues equal, at 0
    loss = S.barlow_twins_spectral_loss(z, z, transform="sqrt")
    loss.backward()
    assert float(loss) == pytest.approx(4.0) and torch.isfinite(z.grad).all()


# ---------------------------------------------------------------------------------------------
# G.1 preconditioning hook
# ---------------------------------------------------------------------------------------------

def test_precondition_hook_leaves_diverged_embeddings_to_the_trainer():
    """Non-finite embeddings (a diverged run) get no hook and no eigensolver error: the loss is
    non-finite, which the trainer reports as NonFiniteLossError (recorded as 'diverged')."""
    w = torch.ones(6, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(24, 6, dtype=torch.float64)
    x[3, 2] = float("nan")
    z1, z2 = x @ w, x @ w
    S.attach_preconditioner(z1, z2, 0.1, True)
    loss = L.barlow_twins_loss(z1, z2, lambd=1.0, batchnorm=False, symmetric=True)
    assert not torch.isfinite(loss)


@pytest.mark.parametrize("relative", [False, True])
def test_precondition_hook_keeps_the_loss_and_right_multiplies_the_gradient(relative):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(24, 6, dtype=torch.float64, generator=gen)
    xp = x + 0.2 * torch.randn(24, 6, dtype=torch.float64, generator=gen)
    w0 = 0.3 * torch.randn(6, 4, dtype=torch.float64, generator=gen)
    alpha = 0.05

    def run(hook: bool):
        w = w0.clone().requires_grad_()
        z1, z2 = x @ w, xp @ w
        z1.retain_grad()
        z2.retain_grad()
        if hook:
            S.attach_preconditioner(z1, z2, alpha, relative)
        loss = L.barlow_twins_loss(z1, z2, lambd=1.0, batchnorm=False, symmetric=True)
        loss.backward()
        return float(loss), w.grad

    loss0, gw0 = run(False)
    loss1, gw1 = run(True)
    assert loss1 == loss0
    # hand computation with numpy: dL/dF by the closed form of ||C - I||^2, P from its definition
    f1, f2 = (x @ w0).numpy(), (xp @ w0).numpy()
    n = f1.shape[0]
    c = (f1.T @ f2 + f2.T @ f1) / (2 * n)
    dc = 2 * (c - np.eye(4))
    g1, g2 = f2 @ dc / n, f1 @ dc / n  # dL/dz1, dL/dz2
    F = np.vstack([f1, f2])
    if relative:
        s = F.T @ F / (2 * n)
        p = (1 + alpha) * np.linalg.inv(s / np.linalg.eigvalsh(s)[-1] + alpha * np.eye(4))
    else:
        p = np.linalg.inv(F.T @ F + alpha * np.eye(4))
    np.testing.assert_allclose(gw0.numpy(), x.numpy().T @ g1 + xp.numpy().T @ g2, rtol=1e-10)
    np.testing.assert_allclose(gw1.numpy(), x.numpy().T @ (g1 @ p) + xp.numpy().T @ (g2 @ p), rtol=1e-9)
    assert not np.allclose(gw1.numpy(), gw0.numpy())


@pytest.mark.parametrize("method", ["barlow_twins", "simclr"])
def test_eq52_variant_preconditions_by_eq52_computed_with_numpy(method):
    """The measured variant ``precondition_eq52`` (config speedups.variants) replaces the gradient that reaches
    F = [z1; z2] by grad_F (F^T F + a I)^{-1} -- Eq. 52 of App. G.1 as written, checked with numpy -- and
    ``precondition_relative`` is a different matrix (the relative form)."""
    from sslkit.config import load_config
    from sslkit.training.engine import resolve_run_config
    from sslkit.training.methods import make_method
    from sslkit.training.networks import build_model

    cfg = load_config(Path(__file__).resolve().parents[2] / "config" / "config.yaml")
    stats = {"n_train": 256, "height": 8, "width": 8, "channels": 1, "mean": [0.3], "std": [0.3]}
    variants = cfg["speedups"]["variants"]
    assert {"precondition_eq52", "precondition_relative"} <= set(cfg["speedups"]["methods"][method])
    gen = torch.Generator().manual_seed(0)
    x1 = torch.rand(24, 1, 8, 8, generator=gen)
    x2 = (x1 + 0.1 * torch.randn(24, 1, 8, 8, generator=gen)).clamp(0, 1)
    grads = {}
    for name in ("baseline", "precondition_eq52", "precondition_relative"):
        rc = resolve_run_config(X.variant_method_config(cfg, method, variants[name], steps=10, seed=0),
                                method, "standard", stats, "digits")
        torch.manual_seed(0)  # the same weights for every variant: the same embeddings
        loss, z1, z2 = make_method(build_model(rc), rc).loss(x1, x2, 0)
        z1.retain_grad()  # retained after the hooks: the gradient that flows on into the network
        z2.retain_grad()
        loss.backward()
        grads[name] = (z1.grad.double().numpy(), z2.grad.double().numpy(),
                       np.vstack([z1.detach().double().numpy(), z2.detach().double().numpy()]),
                       float((rc.get("speedups") or {}).get("precondition_alpha", math.nan)))
    g1, g2, F0, _ = grads["baseline"]  # no hooks: dL/dz1, dL/dz2
    h1, h2, F, a = grads["precondition_eq52"]
    np.testing.assert_array_equal(F, F0)
    assert a == 0.1
    p52 = np.linalg.inv(F.T @ F + a * np.eye(F.shape[1]))  # Eq. 52
    scale = np.abs(g1 @ p52).max()
    np.testing.assert_allclose(h1, g1 @ p52, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(h2, g2 @ p52, rtol=1e-4, atol=1e-5 * scale)
    assert not np.allclose(h1, g1, rtol=1e-2)
    r1 = grads["precondition_relative"][0]
    assert not np.allclose(r1, g1 @ p52, rtol=1e-2)  # the relative form is another matrix


def test_relative_preconditioner_gains():
    f = torch.tensor(np.diag([3.0, 1.0, 0.0]) @ np.eye(3), dtype=torch.float64).repeat(4, 1)
    p = S.precondition_matrix(f, 0.1, relative=True).numpy()
    # S/s_max = diag(1, 1/9, 0): gains (1.1)/(1.1), 1.1/(1/9 + 0.1), 1.1/0.1
    np.testing.assert_allclose(np.diag(p), [1.0, 1.1 / (1 / 9 + 0.1), 11.0], rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# wiring into methods and run configs
# ---------------------------------------------------------------------------------------------

def test_methods_use_the_variants_and_reject_bt_only_ones_elsewhere():
    from sslkit.config import ConfigError, load_config
    from sslkit.training.engine import resolve_run_config
    from sslkit.training.methods import make_method
    from sslkit.training.networks import build_model

    cfg = load_config(Path(__file__).resolve().parents[2] / "config" / "config.yaml")
    stats = {"n_train": 256, "height": 8, "width": 8, "channels": 1, "mean": [0.3], "std": [0.3]}
    rc = resolve_run_config(cfg, "barlow_twins", "small", stats, "digits")
    assert "speedups" not in rc  # off: run config unchanged (existing checkpoints still resume)
    x1 = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x2 = x1 + 0.1
    torch.manual_seed(0)
    model = build_model(rc)
    base = float(make_method(model, rc).loss(x1, x2, 0)[0])
    z1, z2 = model.embed(x1).float(), model.embed(x2).float()
    for sp, want in (({"transform": "sqrt"}, S.barlow_twins_spectral_loss(z1, z2, transform="sqrt")),
                     ({"power": 4}, S.barlow_twins_spectral_loss(z1, z2, power=4)),
                     ({"precondition": True}, base)):
        cfg["methods"]["barlow_twins"]["speedups"].update(sp)
        rcv = resolve_run_config(cfg, "barlow_twins", "small", stats, "digits")
        assert rcv["speedups"]["transform"] == sp.get("transform", "identity")
        assert float(make_method(model, rcv).loss(x1, x2, 0)[0]) == pytest.approx(float(want), rel=1e-5)
        cfg["methods"]["barlow_twins"]["speedups"].update(S.DEFAULTS)
    cfg["methods"]["simclr"]["speedups"]["transform"] = "sqrt"
    with pytest.raises(ConfigError, match="speedups"):
        resolve_run_config(cfg, "simclr", "small", stats, "digits")


# ---------------------------------------------------------------------------------------------
# experiment measures
# ---------------------------------------------------------------------------------------------

def test_rank_times_and_speedup_factors():
    t = np.array([0.0, 1, 2, 3, 4])
    eigs = np.array([[1e-3, 1e-5, 1e-6], [1, 1e-5, 1e-6], [1, 1e-3, 1e-6], [1, 0.8, 1e-5], [1, 1, 0.9]])
    assert X.rank_times(t, eigs, 0.5, [1, 2, 3]) == {1: 1.0, 2: 3.0, 3: 4.0}
    assert math.isnan(X.rank_times(t[:3], eigs[:3], 0.5, [2])[2])
    rows = []
    for seed, (tb, tv) in enumerate([(8.0, 2.0), (6.0, 3.0)]):
        rows += [{"method": "bt", "init": "small", "variant": "baseline", "seed": seed, "k": 2,
                  "time_to_rank_k": tb, "final_rank": 3, "probe_accuracy": 0.5},
                 {"method": "bt", "init": "small", "variant": "fast", "seed": seed, "k": 2,
                  "time_to_rank_k": tv, "final_rank": 3, "probe_accuracy": 0.6},
                 {"method": "bt", "init": "small", "variant": "never", "seed": seed, "k": 2,
                  "time_to_rank_k": math.nan, "final_rank": 1, "probe_accuracy": 0.4}]
    f = X.speedup_table(pd.DataFrame(rows)).set_index("variant")
    assert f.loc["fast", "speedup_median"] == pytest.approx(3.0)  # median of 4 and 2
    assert (f.loc["fast", "speedup_min"], f.loc["fast", "speedup_max"]) == (2.0, 4.0)
    assert f.loc["never", "speedup_median"] == 0.0 and f.loc["baseline", "speedup_median"] == 1.0
    records = [{"variant": "a", "factor": 1, "stable": True}, {"variant": "a", "factor": 4, "stable": False},
               {"variant": "a", "factor": 2, "stable": True}, {"variant": "b", "factor": 1, "stable": False}]
    assert X.largest_stable(records) == {"a": 2.0, "b": None}


def _history(rank_at: dict[int, int], steps: int = 100, every: int = 10, d: int = 4) -> pd.DataFrame:
    """A history.csv of a BT run (eig_C_*) whose rank (eigenvalues at 1 vs 1e-6) rises at the given steps."""
    rows = []
    for step in range(0, steps + 1, every):
        rank = max([r for s, r in rank_at.items() if step >= s], default=0)
        rows.append({"step": step, "t": 0.5 * step,
                     **{f"eig_C_{i}": (1.0 if i < rank else 1e-6) for i in range(d)}})
    return pd.DataFrame(rows)


def test_budget_steps_follow_the_slowest_baseline_seed_times_the_margin():
    seeds = [_history({20: 1, 30: 2, 40: 3}), _history({20: 2, 50: 3})]  # rank 3 at steps 40 and 50
    b = X.budget_steps(seeds, "barlow_twins", [1, 3], cap=300, eval_every=10, margin=2.0)
    assert b["baseline_steps"] == [40, 50] and b["steps"] == 100 and 1e-6 < b["threshold"] < 1
    b = X.budget_steps(seeds, "barlow_twins", [3], cap=300, eval_every=10, margin=1.5)
    assert b["steps"] == 80  # 1.5 x 50 = 75, rounded up to a multiple of eval_every
    assert X.budget_steps(seeds, "barlow_twins", [3], cap=90, eval_every=10, margin=2.0)["steps"] == 90
    # a seed that never reaches max(ks), a diverged seed (None), margin null: the cap
    never = [seeds[0], _history({20: 2})]
    assert X.budget_steps(never, "barlow_twins", [3], cap=300, eval_every=10, margin=2.0)["steps"] == 300
    assert X.budget_steps([seeds[0], None], "barlow_twins", [3], cap=300, eval_every=10, margin=2.0)["steps"] == 300
    assert X.budget_steps(seeds, "barlow_twins", [3], cap=300, eval_every=10, margin=None)["steps"] == 300
    with pytest.raises(ValueError, match="budget_margin"):
        X.budget_steps(seeds, "barlow_twins", [3], cap=300, eval_every=10, margin=0.5)
    # measures of the group are taken on steps <= B
    assert X.truncate_history(seeds[1], 30)["step"].tolist() == [0, 10, 20, 30]


def test_grown_threshold_pools_runs():
    a = np.array([[1e-6, 1e-6], [1.0, 1e-6]])
    b = np.array([[1e-6, 1e-6], [1.0, 1.0]])
    bands = X.grown_threshold([a, b])
    assert 1e-6 < bands["upper"] < 1.0 and bands["separated"]


# ---------------------------------------------------------------------------------------------
# the rules end to end (tiny)
# ---------------------------------------------------------------------------------------------

SMOKE = """
train:
  encoder: {arch: resnet18, width: 0.0625, small_stem: true}
  eval: {batch_size: 64, every: 5, log_points: 0, rank_tol: 0.01, mlflow_top: 4}
  progress: false
methods:
  barlow_twins:
    batch_size: 32
    projector: {hidden: [16], dim: 4, batchnorm: true, last_bias: false}
  simclr:
    batch_size: 32
    projector: {hidden: [16], dim: 4, batchnorm: true, last_bias: false}
analysis:
  probe: {max_train: 200, max_test: 100}
speedups:
  methods:
    barlow_twins: [baseline, sharpen, quartic]
    simclr: [baseline, precondition_relative, precondition_eq52]
    vicreg: []
  inits: [small]
  seeds: [0]
  steps: {barlow_twins: 12, simclr: 12}
  eval_every: 3
  ks: [1, 2]
  lr_sweep: {method: barlow_twins, init: small, variants: [baseline], factors: [1, 1000], steps: 6, blowup: 10.0}
"""


def test_speedups_rules_tiny_run(repo, tmp_path):
    from sslkit.io import load_json

    (tmp_path / "config").symlink_to(repo / "config")
    (tmp_path / "smoke.yaml").write_text(SMOKE)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    targets = ["results/tables/speedups.csv", "results/figures/speedups_digits.png"]

    def snakemake(*want):
        r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--cores", "2",
                            "--configfile", "smoke.yaml", "--", *(want or targets)], cwd=tmp_path, capture_output=True,
                           text=True, timeout=600, env=env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]

    snakemake()
    table = pd.read_csv(tmp_path / "results/tables/speedups.csv")
    assert list(table.columns) == X.TABLE_COLUMNS
    assert len(table) == (3 + 3) * 2  # runs x ks
    # both forms of G.1 are measured and reported, under their own names
    assert set(table["variant"]) == {"baseline", "sharpen", "quartic", "precondition_relative", "precondition_eq52"}
    factors = pd.read_csv(tmp_path / "results/speedups/digits/speedup_factors.csv")
    assert {"precondition_relative", "precondition_eq52"} <= set(factors.loc[factors["method"] == "simclr", "variant"])
    assert table["probe_accuracy"].between(0, 1).all()
    summary = load_json(tmp_path / "results/speedups/digits/summary.json")
    assert {r["factor"] for r in summary["lr_sweep"]} == {1.0, 1000.0}
    # one job per (method, init) and one for the lr sweep, not one per run
    bench = tmp_path / "benchmarks"
    assert len(list((bench / "speedups_run/digits").glob("*.tsv"))) == 2
    assert len(list((bench / "speedups_lr/digits").glob("*.tsv"))) == 1
    group = load_json(tmp_path / "results/speedups/digits/groups/barlow_twins-small.json")
    budget = group["budget"]["steps"]
    assert 3 <= budget <= 12 and budget % 3 == 0 and summary["budgets"]["barlow_twins-small"]["steps"] == budget
    man = load_json(tmp_path / "results/speedups/digits/barlow_twins-small-sharpen-s0/manifest.json")
    assert man["steps"] == budget and man["run_config"]["speedups"]["transform"] == "sqrt"
    base = load_json(tmp_path / "results/speedups/digits/barlow_twins-small-baseline-s0/manifest.json")
    assert base["steps"] == 12  # the baseline trains for the cap; its probe is taken at step B
    assert load_json(tmp_path / "results/speedups/digits/barlow_twins-small-baseline-s0/probe.json")[
        "probed_step"] == budget
    assert not (tmp_path / "results/train").exists()  # the experiment has its own run folders
    assert (tmp_path / "results/figures/speedups_digits.pdf").stat().st_size > 0
    # one MLflow model run per trained model, as before
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'results/mlflow.db'}")
    exp = client.get_experiment_by_name("stepwise-ssl")
    models = client.search_runs([exp.experiment_id], "tags.`sslkit.kind` = 'model'", max_results=100)
    assert sorted(r.data.tags["sslkit.model"] for r in models) == sorted(
        f"digits/speedups/{m}-small-{v}-s0" for m, vs in (("barlow_twins", ("baseline", "sharpen", "quartic")),
                                                          ("simclr", ("baseline", "precondition_relative",
                                                                      "precondition_eq52"))) for v in vs)
    # a group job that reruns (its record lost) keeps the finished runs instead of training them again
    (tmp_path / "results/speedups/digits/groups/barlow_twins-small.json").unlink()
    snakemake("results/speedups/digits/groups/barlow_twins-small.json")  # (asked for: the tables are current)
    again = load_json(tmp_path / "results/speedups/digits/groups/barlow_twins-small.json")
    assert all(r["skipped"] for r in again["runs"]) and again["budget"] == group["budget"]


def test_kept_baseline_without_its_probe_is_probed_on_the_rerun(tmp_path):
    """A speed-up job killed after a baseline finished training but before its probe: on the rerun the
    baseline is kept (not retrained) but probed, also when no budget is set (probe step None both times)."""
    from sslkit.experiments.speedups import _set_probe_step
    from sslkit.io import save_json
    from sslkit.training.engine import config_hash

    rc = {"method": "barlow_twins", "steps": 10}
    run = tmp_path / "bt-small-baseline-s0"
    run.mkdir()
    save_json(run / "manifest.json", {"config_hash": config_hash(rc), "complete": True})
    for step in (None, 40):
        r = {"probe_step": step, "skipped": True, "diverged": False, "dir": run.name, "rc": rc}
        _set_probe_step(r, step, tmp_path)
        assert r["skipped"] is False  # no probe.json: probe() will run
        save_json(run / "probe.json", {"probed_step": step})
        r = {"probe_step": step, "skipped": True, "diverged": False, "dir": run.name, "rc": rc}
        _set_probe_step(r, step, tmp_path)
        assert r["skipped"] is True  # probed at that step: kept as it is
        (run / "probe.json").unlink()
