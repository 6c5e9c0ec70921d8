"""sslkit.analysis.probes: near-perfect on separable features, chance on random labels, exact k-NN votes."""
from __future__ import annotations

import numpy as np
import pytest

from sslkit.analysis import probes as probe


def blobs(n, n_cls=5, dim=20, sep=6.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = sep * rng.normal(size=(n_cls, dim))
    y = rng.integers(0, n_cls, size=n)
    return centres[y] + rng.normal(size=(n, dim)), y


def test_separable_features_near_perfect():
    x_all, y_all = blobs(2100, seed=0)  # one set of class centres, split into train and test
    xtr, ytr, xte, yte = x_all[:1500], y_all[:1500], x_all[1500:], y_all[1500:]
    r = probe.probe_features(xtr, ytr, xte, yte, k=10)
    assert r["linear_acc"] >= 0.99 and r["knn_acc"] >= 0.99
    assert r["n_train"] == 1500 and r["n_test"] == 600 and r["converged"]


def test_linear_but_not_cosine_separable_is_found_by_the_linear_probe():
    """Labels = sign of one coordinate, buried under large isotropic nuisance dimensions."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 50))
    y = (x[:, 0] > 0).astype(int)
    x[:, 0] *= 0.05  # small scale: standardisation must undo it
    r = probe.linear_probe(x[:1500], y[:1500], x[1500:], y[1500:])
    assert r["accuracy"] > 0.95


def test_random_labels_give_chance():
    rng = np.random.default_rng(2)
    n_cls, n_te = 5, 3000
    x = rng.normal(size=(2000 + n_te, 30))
    y = rng.integers(0, n_cls, size=2000 + n_te)
    r = probe.probe_features(x[:2000], y[:2000], x[2000:], y[2000:], k=20)
    sd = np.sqrt(0.2 * 0.8 / n_te)  # binomial standard deviation of the accuracy at chance
    assert abs(r["linear_acc"] - 1 / n_cls) < 4 * sd
    assert abs(r["knn_acc"] - 1 / n_cls) < 4 * sd


def test_knn_matches_bruteforce_reference():
    rng = np.random.default_rng(3)
    xtr, ytr = rng.normal(size=(200, 8)), rng.integers(0, 4, size=200)
    xte, yte = rng.normal(size=(50, 8)), rng.integers(0, 4, size=50)
    k = 7
    un = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    sim = un(xte) @ un(xtr).T
    pred = []
    for i in range(50):
        nb = np.argsort(-sim[i])[:k]
        counts = np.bincount(ytr[nb], minlength=4)
        best = np.flatnonzero(counts == counts.max())
        ssum = [sim[i, nb][ytr[nb] == c].sum() for c in best]
        pred.append(best[int(np.argmax(ssum))])
    ref = float((np.array(pred) == yte).mean())
    assert probe.knn_accuracy(xtr, ytr, xte, yte, k=k, chunk=16) == ref


def test_subsample_caps_deterministic_and_unlabelled_dropped():
    a = probe.subsample(1000, 100, seed=4)
    assert len(a) == 100 and np.array_equal(a, probe.subsample(1000, 100, seed=4)) and np.all(np.diff(a) > 0)
    assert len(probe.subsample(50, 100)) == 50 and len(probe.subsample(50, None)) == 50
    x, y = blobs(400, seed=5)
    y = y.copy()
    y[:100] = -1
    r = probe.probe_features(x[:300], y[:300], x[300:], y[300:], max_train=250, max_test=None)
    assert r["n_train"] == (y[probe.subsample(300, 250, 0)] >= 0).sum() and r["n_test"] == 100
    r1 = probe.probe_features(x[:300], y[:300], x[300:], y[300:], max_train=250)
    assert r1 == probe.probe_features(x[:300], y[:300], x[300:], y[300:], max_train=250)


def test_bad_inputs():
    with pytest.raises(ValueError, match="labels"):
        probe.linear_probe(np.zeros((5, 2)), np.zeros(4), np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        probe.knn_accuracy(np.full((5, 2), np.nan), np.zeros(5), np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="no labelled"):
        probe.linear_probe(np.zeros((5, 2)), -np.ones(5), np.zeros((3, 2)), np.zeros(3))
