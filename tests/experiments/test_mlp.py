"""Wide-MLP experiment (sslkit.experiments.mlp): pieces, lazy-regime agreement with kernel theory, workflow."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sslkit.experiments import mlp
from sslkit.theory import kernel as kn
from sslkit.theory.linear import lambda_closed_form
from sslkit.theory.ntk import empirical_ntk

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_bt_loss_matches_definition():
    rng = np.random.default_rng(0)
    F, Fp = rng.standard_normal((9, 3)), rng.standard_normal((9, 3))
    L, C = mlp.bt_loss(torch.tensor(F), torch.tensor(Fp))
    C_ref = sum(np.outer(F[i], Fp[i]) + np.outer(Fp[i], F[i]) for i in range(9)) / 18
    assert np.allclose(C.numpy(), C_ref) and np.allclose(C.numpy(), C.numpy().T)
    assert float(L) == pytest.approx(np.sum((C_ref - np.eye(3)) ** 2))
    # the kernel convention: C = F P F^T / 2n with F = [f(X); f(X')]^T
    Fall = np.concatenate([F, Fp]).T
    assert np.allclose(Fall @ kn.swap_matrix(9) @ Fall.T / 18, C_ref)


def test_crop_sampler_cuts_real_windows():
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (4, 8, 9, 2), dtype=np.uint8)
    s = mlp.CropSampler(imgs, crop=5, seed=3)
    X = s.sample().numpy()
    assert X.shape == (4, 5 * 5 * 2)
    for i in range(4):  # each row is some 5x5 window of image i, flattened (row, col, channel)
        windows = [imgs[i, r:r + 5, c:c + 5].reshape(-1) / 255.0 for r in range(4) for c in range(5)]
        assert min(np.abs(w - X[i]).max() for w in windows) < 1e-6
    X2, X3 = s.pair()
    assert not np.array_equal(X2.numpy(), X3.numpy())  # independent views
    with pytest.raises(ValueError, match="mlp.crop"):
        mlp.CropSampler(imgs, crop=9, seed=0)


@pytest.mark.parametrize("layers", ["readout", "all"])
def test_build_mlp_scales_default_init(layers):
    ref = mlp.build_mlp(7, 16, 3, alpha=1.0, seed=5)
    small = mlp.build_mlp(7, 16, 3, alpha=1e-3, alpha_layers=layers, seed=5)
    for (name, p), q in zip(ref.named_parameters(), small.parameters()):
        scaled = layers == "all" or name.startswith("2.")
        assert torch.allclose(q, p * (1e-3 if scaled else 1.0))


def test_count_steps_on_theory_curves():
    gamma = np.array([4.0, 2.0, 1.0, 0.9])
    s0 = np.full(4, 1e-4)
    t = np.logspace(-2, 1.5, 300)
    lam = lambda_closed_form(gamma, s0, t)
    tau = np.log(1 / (s0**2 * gamma)) / (8 * gamma)
    res = mlp.count_steps(t, lam, threshold=0.5, min_ratio=1.2)
    assert res["n_learned"] == 4
    # lambda(tau) is ~1/2 only to leading order: crossing within a few percent of tau
    assert np.allclose(res["crossing_times"], tau, rtol=0.05)
    assert res["n_distinct"] == 3  # tau_3 and tau_4 differ by less than the factor 1.2
    none = mlp.count_steps(t, lam * 1e-3)
    assert none["n_learned"] == 0 and none["n_distinct"] == 0 and np.all(np.isnan(none["crossing_times"]))


def test_record_epochs():
    e = mlp.record_epochs(7000, 50)
    assert e[0] == 0 and e[-1] == 7000 and np.all(np.diff(e) > 0) and 30 <= len(e) <= 51


class FixedPairs:
    def __init__(self, X, Xp):
        self.X, self.Xp = X, Xp

    def pair(self):
        return self.X, self.Xp


def test_wide_mlp_on_fixed_pairs_follows_initial_kernel():
    """Lazy regime: readout-scaled wide MLP on fixed pairs follows the initial-eNTK prediction."""
    torch.manual_seed(0)
    # lr small enough that discrete steps follow gradient flow: 4 lr gamma_1 ~ 0.1
    n, m, d, lr = 12, 10, 3, 1e-3
    base = torch.randn(n, m, dtype=torch.float64) * torch.linspace(1.0, 0.3, m, dtype=torch.float64)
    X = base + 0.3 * torch.randn(n, m, dtype=torch.float64)
    Xp = base + 0.3 * torch.randn(n, m, dtype=torch.float64)
    Z = torch.cat([X, Xp])
    model = mlp.build_mlp(m, 512, d, alpha=1e-4, alpha_layers="readout", seed=1).double()
    K0 = empirical_ntk(model, Z, chunk_size=10, dtype=torch.float64).K
    spec = kn.kernel_gamma(K0)
    with torch.no_grad():
        F0 = model(Z).numpy().T
    epochs = int(1.5 * kn.kernel_dynamics(spec, F0, [1.0]).tau[d - 1] / lr)
    rec = mlp.record_epochs(epochs, 100)
    traj = mlp.train_mlp(model, FixedPairs(X, Xp), Z, lr, epochs, rec)
    pred = kn.kernel_dynamics(spec, F0, traj["t"])
    steps = mlp.count_steps(traj["t"], traj["eig"])
    pred_steps = mlp.count_steps(traj["t"], pred.lam)
    assert steps["n_learned"] == d
    assert np.allclose(steps["crossing_times"], pred_steps["crossing_times"], rtol=0.1)
    # final embeddings span the predicted subspace (Eq. 49 with the initial kernel)
    assert np.allclose(traj["eig"][-1], 1.0, atol=1e-3)
    F_final = model(Z).detach().numpy().T
    P_th = kn.right_singular_subspace(kn.predicted_embeddings(spec, d))
    assert kn.alignment(kn.right_singular_subspace(F_final), P_th) > 0.95


# ------------------------------------------------------------------------------------------
# the workflow rule, end to end on digits with a tiny configuration
# ------------------------------------------------------------------------------------------

def smk(repo: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), *args],
                          cwd=workdir, capture_output=True, text=True, timeout=600, env=env)


def test_mlp_experiment_rule_end_to_end(repo, tmp_path):
    (tmp_path / "config").symlink_to(repo / "config")
    (tmp_path / "tiny.yaml").write_text(
        "mlp:\n  n_images: 12\n  width: 64\n  d: 3\n  epochs: 60\n  lr: 0.002\n"
        "  record_points: 15\n  prediction_points: 40\n  ntk_chunk_size: 10\n  random_trials: 20\n"
        "  kernel_draws: 2\n")
    r = smk(repo, tmp_path, "--cores", "2", "--configfile", "tiny.yaml", "--",
            "results/figures/fig2ab_mlp_digits.png", "results/figures/fig2ab_mlp_digits.pdf")
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "results/mlp/digits"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 12 and summary["m"] == 36 and summary["settings"]["crop"] == 6
    assert summary["random_alignment"]["analytic"] == pytest.approx(3 / 24)
    for key in ("kernel_init", "kernel_final", "kernel_init_population"):
        assert 0.0 <= summary[key]["alignment_exp_th"] <= 1.0 + 1e-9
    assert summary["kernel_init_population"]["n_points"] == 48
    traj = np.load(out / "trajectory.npz")
    assert traj["eig"].shape == (len(traj["t"]), 3) and traj["t"][-1] == pytest.approx(0.002 * 60)
    kernels = np.load(out / "kernels.npz")
    assert kernels["K_init"].shape == (24, 24) and np.allclose(kernels["K_init"], kernels["K_init"].T)
    # the population kernel's first draw is the evaluation draw: same points, same kernel entries
    Kp = kernels["K_init_population"]
    idx = np.r_[0:12, 24:36]
    assert Kp.shape == (48, 48) and np.allclose(Kp[np.ix_(idx, idx)], kernels["K_init"], rtol=1e-6)
    for ext in ("png", "pdf"):
        assert (tmp_path / f"results/figures/fig2ab_mlp_digits.{ext}").stat().st_size > 1000
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/results/mlflow.db")
    exp = client.get_experiment_by_name("stepwise-ssl")
    runs = {r.data.tags.get("rule"): r for r in client.search_runs([exp.experiment_id])}
    assert "mlp_experiment" in runs
    run = runs["mlp_experiment"]
    # the figure is attached to the run of the workflow invocation, the parent of the experiment's run
    inv = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert inv.data.tags["sslkit.kind"] == "invocation"
    assert [a.path for a in client.list_artifacts(inv.info.run_id)] == ["mlp_figure"]
    assert "alignment_exp_th_final" in run.data.metrics and run.data.params["mlp.width"] == "64"
    hist = client.get_metric_history(run.info.run_id, "eigenvalue_1")
    assert len(hist) == len(traj["t"])
