"""sslkit.analysis.spectra: eigenvalues of C and of the covariance against direct numpy, RankMe, counts, tables."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sslkit.analysis import spectra as sp


@pytest.fixture
def paired():
    rng = np.random.default_rng(0)
    n, d, D = 300, 6, 9
    z1 = rng.normal(size=(n, d)) * np.linspace(2.0, 0.1, d) + 3.0  # large mean on purpose
    z2 = z1 + 0.3 * rng.normal(size=(n, d))
    h1 = rng.normal(size=(n, D)) ** 2
    h2 = h1 + 0.1 * rng.normal(size=(n, D))
    return z1, z2, h1, h2


def ref_C(z1, z2):
    n = len(z1)
    C = sum(np.outer(z1[i], z2[i]) + np.outer(z2[i], z1[i]) for i in range(n)) / (2 * n)
    return np.sort(np.linalg.eigvals(C).real)[::-1]


def ref_cov(z):
    return np.sort(np.linalg.eigvals(np.cov(z.T, bias=True)).real)[::-1]


def test_C_and_covariance_match_numpy(paired):
    z1, z2, h1, h2 = paired
    np.testing.assert_allclose(sp.eigvals_desc(sp.cross_correlation(z1, z2)), ref_C(z1, z2), rtol=1e-10, atol=1e-12)
    both = np.vstack([z1, z2])
    np.testing.assert_allclose(sp.eigvals_desc(sp.covariance(both)), ref_cov(both), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("batch_size", [1000, 64, 7])
def test_chunked_checkpoint_spectra_match_direct(paired, batch_size):
    z1, z2, h1, h2 = paired
    # the "network": inputs are (h, z) concatenated; hidden_fn / embed_fn slice them
    x1, x2 = np.hstack([h1, z1]), np.hstack([h2, z2])
    D = h1.shape[1]
    res = sp.compute_checkpoint_spectra(lambda x: x[:, D:], lambda x: x[:, :D], x1, x2,
                                        batch_size=batch_size, absolute=[1.0], relative=[0.1])
    ev = res["eigenvalues"]
    assert res["n_pairs"] == len(z1)
    np.testing.assert_allclose(ev["embedding_C"], ref_C(z1, z2), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ev["embedding_cov"], ref_cov(np.vstack([z1, z2])), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ev["hidden_cov"], ref_cov(np.vstack([h1, h2])), rtol=1e-9, atol=1e-12)
    assert np.all(np.diff(ev["embedding_cov"]) <= 0)
    s = np.linalg.svd(np.vstack([z1, z2]), compute_uv=False)
    p = s / s.sum() + 1e-7
    assert res["rankme"]["embedding"] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-9)
    assert res["counts"]["hidden_cov"]["n_gt_abs_1"] == int((ref_cov(np.vstack([h1, h2])) > 1.0).sum())
    # joint_fn gives the same numbers
    res2 = sp.compute_checkpoint_spectra(None, None, x1, x2, joint_fn=lambda x: (x[:, :D], x[:, D:]),
                                         batch_size=batch_size)
    for k in ev:
        np.testing.assert_allclose(res2["eigenvalues"][k], ev[k], rtol=1e-12, atol=1e-14)


def test_covariance_stable_for_tiny_spread_large_mean():
    """Small-init embeddings: spread 1e-6 around a mean of 1; the streaming covariance keeps it."""
    rng = np.random.default_rng(1)
    z = 1.0 + 1e-6 * rng.normal(size=(4000, 3)) * np.array([1.0, 0.1, 0.01])
    acc = sp.MomentAccumulator()
    for lo in range(0, len(z), 333):
        acc.update(z[lo:lo + 333])
    np.testing.assert_allclose(sp.eigvals_desc(acc.covariance()), ref_cov(z), rtol=1e-6)


def test_torch_inputs_and_outputs():
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Linear(5, 3).double()
    x1 = torch.randn(50, 5, generator=g, dtype=torch.float64)
    x2 = x1 + 0.1 * torch.randn(50, 5, generator=g, dtype=torch.float64)
    res = sp.compute_checkpoint_spectra(net, None, x1, x2, batch_size=16)
    with torch.no_grad():
        z1, z2 = net(x1).numpy(), net(x2).numpy()
    np.testing.assert_allclose(res["eigenvalues"]["embedding_C"], ref_C(z1, z2), rtol=1e-10, atol=1e-13)
    assert "hidden_cov" not in res["eigenvalues"]


def test_rankme_known_rank():
    rng = np.random.default_rng(2)
    for r in (1, 3, 7):
        # exact rank r with equal singular values: RankMe = r (up to the epsilon)
        Q1, _ = np.linalg.qr(rng.normal(size=(200, r)))
        Q2, _ = np.linalg.qr(rng.normal(size=(16, r)))
        Z = 5.0 * Q1 @ Q2.T
        assert sp.rankme(Z) == pytest.approx(r, rel=1e-4)
        assert sp.rankme_from_gram(Z.T @ Z) == pytest.approx(r, rel=1e-4)
    # unequal singular values: below the rank, equal to exp(entropy)
    s = np.array([4.0, 2.0, 1.0, 1.0])
    p = s / s.sum()
    assert sp.rankme(singular_values=s, eps=0.0) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert sp.rankme(np.zeros((5, 3))) == 1.0


def test_threshold_counts():
    lam = np.array([2.0, 1.0, 0.5, 1e-3, 1e-6, -1e-9])
    c = sp.threshold_counts(lam, absolute=[1e-4, 0.5, 10.0], relative=[0.5, 1e-4])
    assert c == {"n_gt_abs_0.0001": 4, "n_gt_abs_0.5": 2, "n_gt_abs_10": 0,
                 "n_gt_rel_0.5": 1, "n_gt_rel_0.0001": 4}
    assert sp.threshold_counts(np.zeros(3), relative=[0.1]) == {"n_gt_rel_0.1": 0}


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="same number of pairs"):
        sp.compute_checkpoint_spectra(lambda x: x, None, np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        sp.compute_checkpoint_spectra(lambda x: x * np.nan, None, np.ones((3, 2)), np.ones((3, 2)))


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_tidy_table_roundtrip(tmp_path, suffix):
    recs = [{"step": s, "t": 0.1 * s, "eigenvalues": {"hidden_cov": np.array([3.0, 2.0, 1.0]),
                                                       "embedding_C": np.array([1.0, 1 / 3]),
                                                       "embedding_cov": np.array([0.5, 0.25])},
             "rankme": {"embedding": 1.5, "hidden": 2.5},
             "counts": {"embedding_C": {"n_gt_abs_0.5": 1}}}
            for s in (20, 0, 10)]
    df = sp.spectra_table(recs)
    assert list(df.columns) == list(sp.TABLE_COLUMNS)
    assert len(df) == 3 * 7
    assert df["step"].tolist()[:7] == [0] * 7
    assert df["space"].tolist()[:7] == ["embedding_C"] * 2 + ["embedding_cov"] * 2 + ["hidden_cov"] * 3
    path = tmp_path / f"spectra{suffix}"
    sp.write_table(df, path)
    back = sp.read_table(path)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert back["eigenvalue"].tolist() == df["eigenvalue"].tolist()  # exact, also in CSV
    steps, t, eigs = sp.trajectories(back, "hidden_cov", n_modes=2)
    assert steps.tolist() == [0, 10, 20] and np.allclose(t, [0, 1, 2]) and eigs.shape == (3, 2)
    summ = sp.summary_table(recs)
    assert set(summ["space"]) == set(sp.SPACES) and summ.loc[summ.space == "hidden_cov", "rankme"].iloc[0] == 2.5
    with pytest.raises(KeyError, match="not in the table"):
        sp.trajectories(back, "nope")
    with pytest.raises(ValueError, match="suffix"):
        sp.write_table(df, tmp_path / "x.txt")


def _history(steps, eig_c, eig_cov, lr=0.5):
    import pandas as pd

    h = pd.DataFrame({"step": steps, "t": lr * np.asarray(steps, float), "loss": np.nan})
    for j in range(eig_c.shape[1]):
        h[f"eig_C_{j}"] = eig_c[:, j]
    for j in range(eig_cov.shape[1]):
        h[f"eig_cov_{j}"] = eig_cov[:, j]
    return h


def test_history_table_gives_the_history_eigenvalues_as_trajectories():
    rng = np.random.default_rng(0)
    steps = [0, 1, 2, 5, 9, 10, 10, 12]  # step 10 twice (resumed run): the last row counts
    # 11 modes, so that a lexicographic column order (eig_C_10 before eig_C_2) would show
    eig_c = -np.sort(-rng.random((len(steps), 11)), axis=1)
    eig_cov = -np.sort(-rng.random((len(steps), 11)), axis=1)
    h = _history(steps, eig_c, eig_cov)
    table = sp.history_table(h)
    assert list(table.columns) == list(sp.TABLE_COLUMNS)
    s, t, e = sp.trajectories(table, "embedding_C")
    keep = [0, 1, 2, 3, 4, 6, 7]
    np.testing.assert_array_equal(s, np.array(steps)[keep])
    np.testing.assert_array_equal(t, 0.5 * np.array(steps, float)[keep])
    np.testing.assert_array_equal(e, eig_c[keep])
    np.testing.assert_array_equal(sp.trajectories(table, "embedding_cov")[2], eig_cov[keep])
    with pytest.raises(KeyError, match="eig_C_"):
        sp.history_table(h.drop(columns=[c for c in h.columns if c.startswith("eig_C_")]))


def test_dense_table_takes_embeddings_from_history_and_hidden_from_checkpoints(tmp_path):
    import json

    rng = np.random.default_rng(1)
    h = _history(list(range(0, 50, 2)), rng.random((25, 3)), rng.random((25, 3)))
    records = [{"step": s, "t": 0.5 * s, "eigenvalues": {"embedding_C": [9.0, 8.0, 7.0], "embedding_cov": [9.0, 8, 7],
                                                          "hidden_cov": [3.0, 2.0, 1.0, 0.5]}} for s in (0, 10, 48)]
    dense = sp.dense_table(h, sp.spectra_table(records))
    assert len(sp.trajectories(dense, "embedding_C")[0]) == 25      # all history rows
    assert (sp.trajectories(dense, "embedding_C")[2] < 1).all()      # not the checkpoint values
    assert list(sp.trajectories(dense, "hidden_cov")[0]) == [0, 10, 48]
    (tmp_path / "history.csv").write_text(h.to_csv(index=False))
    (tmp_path / "manifest.json").write_text(json.dumps({"history": "history.csv"}))
    assert sp.read_run_history(tmp_path / "manifest.json").shape == h.shape
