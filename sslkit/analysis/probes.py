"""Downstream evaluation of frozen representations: linear probe and k-NN (paper App. D.3, Fig. 7).

Both evaluate features of the train split (fit) on the test split (accuracy); labels < 0
(unlabelled images) are dropped. Everything is deterministic for a given ``seed``.

Linear probe: multinomial logistic regression (scikit-learn ``LogisticRegression``, lbfgs, L2
penalty with inverse strength ``C`` = 1.0 by default, ``max_iter`` = 1000) on features standardised
with the train split's mean and standard deviation (constant features are left at 0). The paper
does not give its probe's settings; C = 1 on standardised features is scikit-learn's default and a
mild regularisation for the 10^2-10^3-dimensional hidden representations used here. When lbfgs
stops at ``max_iter`` the result is kept and flagged ``converged: false``.

k-NN: cosine similarity between L2-normalised raw features (no standardisation, as usual for SSL
k-NN monitors); each test point takes the majority label of its ``k`` most similar train points
(default k = 20); ties go to the tied class with the larger summed similarity.

``max_train`` / ``max_test`` cap the number of points by a seeded subsample without replacement
(the same points for every checkpoint of a run), which keeps CIFAR-10 probes fast on a CPU.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["DEFAULTS", "subsample", "linear_probe", "knn_accuracy", "probe_features"]

DEFAULTS: dict[str, Any] = {
    "C": 1.0,            # inverse L2 strength of the logistic regression (standardised features)
    "max_iter": 1000,    # lbfgs iterations
    "k": 20,             # neighbours of the cosine k-NN classifier
    "max_train": 10000,  # cap on train points (seeded subsample); null = all
    "max_test": 10000,   # cap on test points; null = all
    "seed": 0,           # seed of the subsamples
}


def _features(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().to("cpu").numpy()
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"{name} must be N x D features, got shape {x.shape}")
    x = x.reshape(x.shape[0], -1).astype(np.float64, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf values")
    return x


def subsample(n: int, max_n: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded subsample of size min(n, max_n) from range(n) (all if max_n is None)."""
    if max_n is None or max_n >= n:
        return np.arange(n)
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    return np.sort(np.random.default_rng(seed).choice(n, size=max_n, replace=False))


def _labelled(x: np.ndarray, y, name: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.int64).ravel()
    if y.size != x.shape[0]:
        raise ValueError(f"{name}: {x.shape[0]} feature rows but {y.size} labels")
    keep = y >= 0
    if not keep.any():
        raise ValueError(f"{name}: no labelled points (all labels are -1)")
    return x[keep], y[keep]


def linear_probe(train_x, train_y, test_x, test_y, C: float = DEFAULTS["C"],
                 max_iter: int = DEFAULTS["max_iter"]) -> dict[str, Any]:
    """Test accuracy of a multinomial logistic regression fit on standardised train features.

    Returns ``{"accuracy": float, "train_accuracy": float, "n_iter": int, "converged": bool}``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    xtr, ytr = _labelled(_features(train_x, "train features"), train_y, "train")
    xte, yte = _labelled(_features(test_x, "test features"), test_y, "test")
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"train and test features differ in dimension: {xtr.shape[1]} vs {xte.shape[1]}")
    mu = xtr.mean(axis=0)
    sd = xtr.std(axis=0)
    sd[sd == 0] = 1.0
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    classes = np.unique(ytr)
    if classes.size < 2:  # a single class: the classifier is constant
        return {"accuracy": float((yte == classes[0]).mean()), "train_accuracy": 1.0, "n_iter": 0,
                "converged": True}
    clf = LogisticRegression(C=C, max_iter=max_iter, solver="lbfgs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(xtr, ytr)
    n_iter = int(np.max(clf.n_iter_))
    return {"accuracy": float((clf.predict(xte) == yte).mean()),
            "train_accuracy": float((clf.predict(xtr) == ytr).mean()),
            "n_iter": n_iter, "converged": n_iter < max_iter}


def knn_accuracy(train_x, train_y, test_x, test_y, k: int = DEFAULTS["k"], chunk: int = 1024) -> float:
    """Test accuracy of the cosine-similarity k-NN classifier (majority vote, ties by summed similarity)."""
    xtr, ytr = _labelled(_features(train_x, "train features"), train_y, "train")
    xte, yte = _labelled(_features(test_x, "test features"), test_y, "test")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, xtr.shape[0])

    def unit(a):
        norm = np.linalg.norm(a, axis=1, keepdims=True)
        return a / np.where(norm > 0, norm, 1.0)

    xtr, xte = unit(xtr), unit(xte)
    classes, ytr_idx = np.unique(ytr, return_inverse=True)
    n_cls = classes.size
    correct = 0
    for lo in range(0, xte.shape[0], chunk):
        sim = xte[lo:lo + chunk] @ xtr.T                                  # B x N
        nb = np.argpartition(-sim, k - 1, axis=1)[:, :k]                   # k most similar
        nb_sim = np.take_along_axis(sim, nb, axis=1)
        nb_cls = ytr_idx[nb]
        rows = np.repeat(np.arange(nb.shape[0]), k)
        votes = np.zeros((nb.shape[0], n_cls))
        np.add.at(votes, (rows, nb_cls.ravel()), 1.0)
        sims = np.zeros((nb.shape[0], n_cls))
        np.add.at(sims, (rows, nb_cls.ravel()), nb_sim.ravel())
        score = votes + (sims + k) / (2 * k + 1)                          # tie-break term in [0, 1)
        pred = classes[np.argmax(score, axis=1)]
        correct += int((pred == yte[lo:lo + chunk]).sum())
    return correct / xte.shape[0]


def probe_features(train_x, train_y, test_x, test_y, *, C: float = DEFAULTS["C"],
                   max_iter: int = DEFAULTS["max_iter"], k: int = DEFAULTS["k"],
                   max_train: int | None = DEFAULTS["max_train"], max_test: int | None = DEFAULTS["max_test"],
                   seed: int = DEFAULTS["seed"]) -> dict[str, Any]:
    """Linear-probe and k-NN test accuracy of frozen features (subsampled to the caps).

    Returns ``{"linear_acc", "knn_acc", "train_acc", "n_train", "n_test", "n_iter", "converged"}``.
    The caps apply to the given arrays; to avoid computing features that are thrown away, take the
    subsample of the images first with ``subsample(len(images), max_n, seed)``.
    """
    itr = subsample(len(train_y), max_train, seed)
    ite = subsample(len(test_y), max_test, seed + 1)
    xtr, ytr = _features(train_x, "train features")[itr], np.asarray(train_y)[itr]
    xte, yte = _features(test_x, "test features")[ite], np.asarray(test_y)[ite]
    lin = linear_probe(xtr, ytr, xte, yte, C=C, max_iter=max_iter)
    return {"linear_acc": lin["accuracy"], "knn_acc": knn_accuracy(xtr, ytr, xte, yte, k=k),
            "train_acc": lin["train_accuracy"], "n_train": int((ytr >= 0).sum()),
            "n_test": int((yte >= 0).sum()), "n_iter": lin["n_iter"], "converged": lin["converged"]}
