"""sslkit.theory.alignment (App. E algebra) and sslkit.analysis.tables (Tables 1-2 writers)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from sslkit.analysis import tables as tb
from sslkit.theory import kernel as kn
from sslkit.theory.alignment import augmented_pairs, network_alignment, pairwise_alignments, theory_alignment
from sslkit.theory.linear import auto_steps, effective_s0, eigh_desc, gamma_matrix, gd_reference, init_weights
from sslkit.theory.ntk import empirical_ntk


def _pairs(n=200, m=8, seed=0):
    """Two views with a clear gap after the 3rd eigenvalue of Gamma (~9, 6.3, 4 | < 0.5) and a
    view-specific (uncorrelated) direction of large variance, so that the top principal
    components of the 2n points (the linear eNTK's eigenvectors) differ from Gamma's top modes."""
    rng = np.random.default_rng(seed)
    scales = np.array([3.0, 2.5, 2.0, 0.5, 0.4, 0.3, 0.2, 0.0])[:m]
    private = np.zeros(m)
    private[-1] = 3.5
    Q, _ = np.linalg.qr(rng.standard_normal((m, m)))
    base = rng.standard_normal((n, m)) * scales
    X = (base + 0.05 * rng.standard_normal((n, m)) + private * rng.standard_normal((n, m))) @ Q.T
    Xp = (base + 0.05 * rng.standard_normal((n, m)) + private * rng.standard_normal((n, m))) @ Q.T
    return X, Xp


def _linear_ntk(W, Z):
    """eNTK of f(x) = W x (no bias) through the chunked engine, float64."""
    lin = torch.nn.Linear(W.shape[1], W.shape[0], bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W))
    return empirical_ntk(lin, torch.from_numpy(Z), chunk_size=16, dtype=torch.float64).K


def test_linear_model_trained_to_convergence_matches_theory_exactly():
    X, Xp = _pairs()
    d = 3
    G = gamma_matrix(X, Xp)
    gamma, V = eigh_desc(G)
    assert gamma[d] / gamma[d - 1] < 0.25  # the gap the test relies on
    W0 = init_weights(d, G.shape[0], alpha=1e-10, seed=0)
    lr = 0.02
    steps = auto_steps(gamma[:d], effective_s0(W0, V[:, :d]), lr, margin=1.0, level=0.999999)
    W = gd_reference(G, W0, lr, steps, record=np.array([0, steps])).W
    np.testing.assert_allclose(W @ G @ W.T, np.eye(d), atol=1e-6)  # converged: C = I

    Z = np.concatenate([X, Xp])
    K = _linear_ntk(W, Z)
    np.testing.assert_allclose(K, Z @ Z.T, rtol=1e-10, atol=1e-10)  # linear eNTK = x^T x'
    arrays, s = theory_alignment(K, W @ Z.T, random_trials=200)
    assert s["a_exp_th"] == pytest.approx(1.0, abs=1e-6)
    assert arrays["P_exp"].shape == arrays["P_th"].shape == arrays["P_NTK"].shape == (d, Z.shape[0])
    # the NTK's own top eigenvectors are the top PCs of Z, not Gamma's modes: not exactly aligned
    assert s["a_exp_ntk"] < 1 - 1e-3
    # before training the embedding subspace is random-like, far from the theory
    _, s0 = theory_alignment(K, W0 @ Z.T, random_trials=10)
    assert s0["a_exp_th"] < 0.9


def test_random_baseline_matches_d_over_2n():
    rng = np.random.default_rng(3)
    n, d = 100, 8
    F = rng.standard_normal((d, 2 * n))
    A = rng.standard_normal((2 * n, 2 * n))
    _, s = theory_alignment(A @ A.T, F, random_trials=500, seed=1)
    assert s["random_analytic"] == d / (2 * n)
    assert s["random_empirical"] == pytest.approx(d / (2 * n), rel=0.10)
    # an unrelated embedding is aligned with the kernel theory only at chance level (5 sigma)
    assert abs(s["a_exp_th"] - d / (2 * n)) < 5 * s["random_empirical_std"] + 0.01


def test_pairwise_alignments_symmetric_and_identity():
    rng = np.random.default_rng(0)
    P = {k: kn.random_subspace(4, 50, rng) for k in ("a", "b", "c")}
    P["a_copy"] = P["a"] * -1  # same subspace
    rows = pairwise_alignments(P)
    assert [(r["method_a"], r["method_b"]) for r in rows][:3] == [("a", "b"), ("a", "c"), ("a", "a_copy")]
    got = {(r["method_a"], r["method_b"]): r["alignment"] for r in rows}
    assert got[("a", "a_copy")] == pytest.approx(1.0, abs=1e-12)
    assert got[("a", "b")] == pytest.approx(kn.alignment(P["b"], P["a"]), abs=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        pairwise_alignments({"a": P["a"], "z": kn.random_subspace(3, 50, rng)})


def test_network_alignment_of_a_small_net_against_an_independent_kernel():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 64), torch.nn.Tanh(), torch.nn.Linear(64, 3))
    pts = np.random.default_rng(0).standard_normal((40, 5)).astype(np.float32)
    arrays, s = network_alignment(net, pts, chunk_size=8, row_chunk_size=16, random_trials=50)
    # independent eNTK: d * J_g J_g^T with g the mean output, by autograd one point at a time
    rows = []
    for x in torch.from_numpy(pts):
        net.zero_grad()
        net(x[None]).mean().backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in net.parameters()]).double())
    J = torch.stack(rows)
    np.testing.assert_allclose(arrays["K"], 3 * (J @ J.T).numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(arrays["f_exp"], net(torch.from_numpy(pts)).detach().double().numpy().T, rtol=1e-6)
    assert s["n"] == 20 and s["d"] == 3 and s["ntk"]["n_points"] == 40
    # recompute the alignments from the stored arrays
    assert s["a_exp_th"] == pytest.approx(kn.alignment(arrays["P_exp"], arrays["P_th"]), abs=1e-12)
    assert s["a_exp_ntk"] == pytest.approx(kn.alignment(arrays["P_exp"], kn.top_eigvec_subspace(arrays["K"], 3)),
                                           abs=1e-9)


def test_augmented_pairs_are_seeded_and_use_both_views():
    calls = []

    def augment(batch, gen, view=0):
        calls.append(view)
        noise = torch.rand(batch.shape[0], generator=gen).view(-1, 1, 1, 1)
        return batch.permute(0, 3, 1, 2).float() / 255 + noise + 10 * view

    imgs = np.random.default_rng(0).integers(0, 256, (30, 4, 4, 1), dtype=np.uint8)
    a = augmented_pairs(imgs, augment, 12, seed=5, chunk=5)
    b = augmented_pairs(imgs, augment, 12, seed=5, chunk=5)
    assert a["x1"].shape == a["x2"].shape == (12, 1, 4, 4)
    np.testing.assert_array_equal(a["x1"], b["x1"])
    np.testing.assert_array_equal(a["index"], b["index"])
    assert len(set(a["index"].tolist())) == 12  # without replacement
    assert set(calls) == {0, 1} and (a["x2"] - a["x1"]).min() > 8  # second view is view 1


# ---------------------------------------------------------------------------------------------
# table writers
# ---------------------------------------------------------------------------------------------

def _rows():
    rng = np.random.default_rng(7)
    rows1 = [{"method": m, "a_exp_th": float(rng.random()), "a_exp_ntk": np.float64(rng.random()),
              "random_analytic": 0.004, "random_empirical": float(rng.random() / 100), "n": 1000, "d": 8}
             for m in ("barlow_twins", "simclr", "vicreg")]
    rows2 = [{"method_a": a, "method_b": b, "alignment": float(rng.random())}
             for a, b in (("barlow_twins", "simclr"), ("barlow_twins", "vicreg"), ("simclr", "vicreg"))]
    return rows1, rows2


def test_csv_round_trips_exactly(tmp_path):
    rows1, rows2 = _rows()
    text1 = tb.to_csv(rows1, tb.TABLE1_COLUMNS)
    assert text1.splitlines()[0].startswith("method,a_exp_th,a_exp_ntk,random_analytic,random_empirical,n,d,")
    (tmp_path / "t1.csv").write_text(text1)
    back1 = tb.read_csv(tmp_path / "t1.csv")
    assert back1 == [{**{k: (float(v) if k not in ("method", "n", "d") else v) for k, v in r.items()},
                      **{k: None for k in tb.TABLE1_OPTIONAL}} for r in rows1]
    back2 = tb.read_csv(tb.to_csv(rows2, tb.TABLE2_COLUMNS))
    assert back2 == rows2
    import pandas as pd  # an independent reader agrees

    df = pd.read_csv(tmp_path / "t1.csv")
    assert list(df.columns) == list(tb.TABLE1_COLUMNS) and df["a_exp_th"].tolist() == [r["a_exp_th"] for r in rows1]


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"(?<![\w.])\d+\.\d+", text)]


def test_markdown_and_latex_print_ours_beside_the_paper():
    rows1, rows2 = _rows()
    md1 = tb.table1_markdown(rows1, "digits")
    tex1 = tb.table1_latex(rows1, "digits")
    for r in rows1:
        line = next(ln for ln in md1.splitlines() if ln.startswith(f"| {tb.METHOD_LABELS[r['method']]} |"))
        nums = _numbers(line)
        paper = tb.PAPER_TABLE1[r["method"]]
        # ours, ratio to random, paper, ours, ratio, paper, random analytic, empirical, paper random
        assert nums[0] == pytest.approx(r["a_exp_th"], abs=5e-4)
        assert nums[1] == pytest.approx(r["a_exp_th"] / 0.004, abs=0.05)
        assert nums[2] == paper["a_exp_th"] and nums[5] == paper["a_exp_ntk"]
        assert nums[3] == pytest.approx(r["a_exp_ntk"], abs=5e-4)
        assert nums[6] == pytest.approx(0.004) and nums[8] == tb.PAPER_RANDOM
        tline = next(ln for ln in tex1.splitlines() if ln.startswith(tb.METHOD_LABELS[r["method"]]))
        tnums = _numbers(tline)
        assert tnums[:4] == pytest.approx([r["a_exp_th"], paper["a_exp_th"], r["a_exp_ntk"], paper["a_exp_ntk"]],
                                          abs=5e-4)
    md2 = tb.table2_markdown(rows2, 0.004, "digits")
    assert "0.504" in md2 and "0.405" in md2 and "(random subspaces)" in md2
    for r in rows2:
        assert f"{r['alignment']:.3f}" in md2
    tex2 = tb.table2_latex(rows2, 0.004, "digits")
    assert tex2.count(r"\\") == len(rows2) + 2 and r"\begin{tabular}{llrr}" in tex2


def test_paper_config_reproduces_appendix_e(repo):
    from sslkit.config import load_config
    from sslkit.training.engine import resolve_run_config

    cfg = load_config(repo / "config/paper.yaml")
    assert cfg["dataset"] == "stl10" and cfg["train"]["encoder"]["arch"] == "resnet50"
    assert cfg["ntk"]["init"] == "ntk" and cfg["ntk"]["pairs"]["n"] == 1000
    stats = {"n_train": 105000, "height": 96, "width": 96, "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3}
    alphas = {"barlow_twins": 0.542, "simclr": 0.284, "vicreg": 0.604}
    assert cfg["ntk"]["methods"] == list(alphas)
    for m, alpha in alphas.items():
        rc = resolve_run_config(cfg, m, "ntk", stats, "stl10")
        assert rc["init_scale"] == alpha and rc["method_config"]["projector"]["dim"] == 50
    # Barlow Twins' small-init and App. E runs use the same loss: lambda 1, no batchnorm, symmetric C
    bt = [resolve_run_config(cfg, "barlow_twins", i, stats, "stl10")["loss"] for i in ("small", "ntk")]
    assert bt[0] == bt[1] == {"lambda": 1.0, "batchnorm": False, "scale": 1.0, "symmetric": True}
    # spectra on more views (2n) than ResNet-50's 2048 hidden features
    assert 2 * cfg["analysis"]["pairs"]["n"] > 2048
    # the CPU default reuses the small-init runs
    assert load_config(repo / "config/config.yaml")["ntk"]["init"] == "small"


def test_feature_span_baseline_matches_monte_carlo():
    from sslkit.theory.alignment import feature_baselines

    rng = np.random.default_rng(2)
    N, h, d = 120, 10, 3
    H = rng.standard_normal((h, 4)) @ rng.standard_normal((4, N))  # features of rank 4
    P = kn.random_subspace(d, N, rng)
    b = feature_baselines(P, H)
    assert b["feature_rank"] == 4
    S = np.linalg.svd(H, full_matrices=False)[2][:4]
    mc = np.mean([kn.alignment(P, kn.random_subspace(d, 4, rng) @ S) for _ in range(4000)])
    assert b["random_feature_span"] == pytest.approx(mc, rel=0.05)
    # an embedding inside the feature span: fully inside, and the baseline is d / r
    Pin = kn.random_subspace(d, 4, rng) @ S
    b_in = feature_baselines(Pin, H)
    assert b_in["exp_in_feature_span"] == pytest.approx(1.0) and b_in["random_feature_span"] == pytest.approx(d / 4)
    assert b_in["a_exp_hidden_pcs"] == pytest.approx(kn.alignment(Pin, np.linalg.svd(H, full_matrices=False)[2][:d]))


def test_missing_init_block_is_named(repo):
    from sslkit.config import ConfigError, load_config
    from sslkit.theory.alignment import ntk_methods

    cfg = load_config(repo / "config/config.yaml")
    assert ntk_methods(cfg) == ["barlow_twins", "simclr", "vicreg"]
    cfg["ntk"]["init"] = "ntk"
    with pytest.raises(ConfigError, match=r"methods\.barlow_twins\.ntk"):
        ntk_methods(cfg)


def test_fewer_pairs_than_d_is_refused_before_any_entk(repo):
    """K_Gamma has at most n positive eigenvalues, so ntk.pairs.n < d cannot give a top-d solution: the
    plan refuses it, naming the key (the paper configuration's d = 50 App. E runs need n >= 50)."""
    from sslkit.config import ConfigError, load_config
    from sslkit.theory.alignment import ntk_methods

    cfg = load_config(repo / "config/config.yaml", repo / "config/paper.yaml")
    assert cfg["methods"]["simclr"]["ntk"]["projector"]["dim"] == 50
    cfg["ntk"]["pairs"]["n"] = 50
    assert ntk_methods(cfg) == ["barlow_twins", "simclr", "vicreg"]
    cfg["ntk"]["pairs"]["n"] = 49
    with pytest.raises(ConfigError, match=r"'ntk\.pairs\.n': 49 pairs .* d = 50 of the run barlow_twins-ntk"):
        ntk_methods(cfg)
    # and the theory itself: a kernel on n pairs yields exactly n positive eigenvalues of K_Gamma
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2 * 6, 40))
    spec = kn.kernel_gamma(X @ X.T)
    assert (spec.gamma > 1e-9).sum() == 6
    spec.top(6)
    with pytest.raises(ValueError, match=r"at most n = 6.*ntk\.pairs\.n"):
        spec.top(7)


def test_table1_prints_feature_span_baselines_initial_entk_and_alpha_check():
    """The baselines that know the hidden features, the initial-eNTK alignment and the alpha check are
    in the table itself (CSV round trip, Markdown and LaTeX cells), not only in the JSON."""
    rows1, _ = _rows()
    summaries = {}
    for i, r in enumerate(rows1):
        s = {k: v for k, v in r.items() if k != "method"}
        s.update(random_feature_span=0.61 + i / 100, a_exp_hidden_pcs=0.97 - i / 100, a_exp_th_init=0.123 + i / 100,
                 a_exp_ntk_init=0.234 + i / 100,
                 alpha_check={"top_eigenvalue_init": 2e-3 * 10 ** -i, "paper_value": 1e-3, "passed": i == 0})
        summaries[r["method"]] = s
    rows = tb.table1_rows(summaries)
    back = tb.read_csv(tb.to_csv(rows, tb.TABLE1_COLUMNS))
    assert [b["alpha_check_passed"] for b in back] == [True, False, False]
    assert back[1]["a_exp_ntk_init"] == pytest.approx(0.244) and back[2]["top_eigenvalue_init"] == 2e-5
    md = tb.table1_markdown(rows, "digits")
    assert "random in feature span" in md and "initial eNTK" in md
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| {tb.METHOD_LABELS['simclr']} |"))
    assert "| 0.620 | 0.960 | 0.133 | 0.244 | 2.0e-04 (1e-03: fail) |" in line
    tex = tb.table1_latex(rows, "digits")
    assert "0.620 & 0.960 & 0.133 & 0.244" in tex and "2.0e-03 (1e-03: pass)" in tex
    # summaries without them (older JSON) still make a table, with empty cells
    old = tb.table1_rows({m: {k: v for k, v in r.items() if k != "method"} for m, r in zip(summaries, rows1)})
    assert old[0]["a_exp_ntk_init"] is None and "| - | - | - | - | - |" in tb.table1_markdown(old)


def test_initial_ntk_alignment_is_the_theory_on_k0():
    """initial_ntk_alignment(K0, P) = theory_alignment(K0, f) alignments for f spanning P."""
    from sslkit.theory.alignment import initial_ntk_alignment, theory_alignment

    rng = np.random.default_rng(3)
    A = rng.normal(size=(40, 40))
    K0 = A @ A.T
    f = rng.normal(size=(4, 40))
    arrays, sc = theory_alignment(K0, f, random_trials=2)
    res = initial_ntk_alignment(K0, arrays["P_exp"])
    assert res["a_exp_th_init"] == pytest.approx(sc["a_exp_th"], rel=1e-10)
    assert res["a_exp_ntk_init"] == pytest.approx(sc["a_exp_ntk"], rel=1e-10)
    with pytest.raises(ValueError, match="2n x 2n"):
        initial_ntk_alignment(K0[:10, :10], arrays["P_exp"])
