"""Spectra of learned representations (paper Sec. 6, App. D.4; ``docs/theory.md`` §11).

For a checkpoint and a fixed set of n positive pairs (x_i, x'_i) this module computes, in float64:

``embedding_C``     eigenvalues of the symmetrised cross-correlation of the embeddings f,
                    C = (1/2n) sum_i [f(x_i) f(x'_i)^T + f(x'_i) f(x_i)^T]   (d x d; uncentred, as in
                    the paper's Eq. 2 -- what Barlow Twins' theory is about; may be negative).
``embedding_cov``   eigenvalues of the centred covariance Sigma = E[(f - E f)(f - E f)^T] of the
                    embeddings (what the paper reports for SimCLR and VICReg, App. D.4).
``hidden_cov``      the same centred covariance of the hidden representations h (Fig. 5).

Choice (App. D.4 leaves it open): the covariance is taken over the 2n embeddings of *both* views
stacked, {f(x_1), ..., f(x_n), f(x'_1), ..., f(x'_n)}, because both views are samples of the same
augmented distribution; the expectation is the plain sample mean (normalised by 1/2n, not
1/(2n - 1)), matching E_x in App. D.4 and the 1/2n of C. With this normalisation C and Sigma agree
when the two views coincide and the embeddings are centred.

Every spectrum is returned in descending order. Spectra are always computed for every method;
which one a figure shows is the figure's choice (BT: C, others: covariance).

RankMe (Garrido et al., ICML 2023) of a representation matrix Z (N x D, *uncentred*, N = 2n rows
here) is exp(-sum_k p_k log p_k) with p_k = sigma_k(Z) / ||sigma(Z)||_1 + eps, sigma_k the singular
values of Z and eps = 1e-7 (their value). It lies in [1, min(N, D)] up to O(eps) corrections.

Threshold counts (``threshold_counts``): the number of eigenvalues strictly above each absolute
threshold ("abs") and strictly above each fraction of the top eigenvalue ("rel", i.e.
lambda_j > r * lambda_1). Relative counts are scale free (they ignore the overall magnitude, which
differs between methods and inits by orders of magnitude); absolute ones mirror the paper's
dashed threshold lines.

Large evaluation sets are processed in chunks: ``MomentAccumulator`` keeps the running mean and the
centred scatter matrix (Chan et al.'s pairwise update, numerically stable for embeddings with a
large mean), so only d x d (and D x D for hidden representations) float64 matrices are kept.

Tidy output: ``spectra_table`` turns per-checkpoint results into one row per
(checkpoint, space, index) with columns step, t, space, index, eigenvalue; ``write_table`` writes it
atomically as Parquet (needs pyarrow, which sslkit's environment pins) or CSV, chosen by the file
suffix. ``TABLE_SUFFIX`` is ".parquet" when pyarrow is importable and ".csv" otherwise, so a
workflow can name its outputs consistently at parse time (the documented CSV fallback);
``read_table`` reads either.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sslkit.io import atomic_path

__all__ = [
    "SPACES",
    "RANKME_EPS",
    "TABLE_SUFFIX",
    "TABLE_COLUMNS",
    "cross_correlation",
    "covariance",
    "eigvals_desc",
    "rankme",
    "rankme_from_gram",
    "threshold_counts",
    "MomentAccumulator",
    "SpectraAccumulator",
    "compute_checkpoint_spectra",
    "spectra_table",
    "summary_table",
    "trajectories",
    "HISTORY_SPACES",
    "history_table",
    "read_run_history",
    "dense_table",
    "write_table",
    "read_table",
]

#: names of the spectra, in the order they appear in the tidy table
SPACES = ("embedding_C", "embedding_cov", "hidden_cov")
#: epsilon of RankMe (Garrido et al. 2023)
RANKME_EPS = 1e-7
#: columns of the tidy spectra table
TABLE_COLUMNS = ("step", "t", "space", "index", "eigenvalue")


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:  # pragma: no cover - pyarrow is a pinned dependency
        return False
    return True


#: suffix of tidy tables: Parquet when pyarrow is available, else CSV (documented fallback)
TABLE_SUFFIX = ".parquet" if _has_pyarrow() else ".csv"


# ---------------------------------------------------------------------------------------------
# Matrices and their spectra (arrays in memory)
# ---------------------------------------------------------------------------------------------
def _as_2d(a, name: str) -> np.ndarray:
    """Any array/tensor of shape B x ... as a float64 B x D numpy array (trailing dims flattened)."""
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().to("cpu").double().numpy()
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        raise ValueError(f"{name} must be a batch (B x D), got a vector of shape {a.shape}")
    a = a.reshape(a.shape[0], -1)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf values (diverged checkpoint?)")
    return a


def cross_correlation(z1, z2) -> np.ndarray:
    """C = (z1^T z2 + z2^T z1) / 2n for paired embeddings ``z1, z2`` (n x d); returns d x d."""
    z1, z2 = _as_2d(z1, "z1"), _as_2d(z2, "z2")
    if z1.shape != z2.shape:
        raise ValueError(f"paired embeddings must have equal shapes, got {z1.shape} and {z2.shape}")
    G = z1.T @ z2
    return (G + G.T) / (2 * z1.shape[0])


def covariance(z) -> np.ndarray:
    """Centred covariance (1/N) sum_i (z_i - mean)(z_i - mean)^T of ``z`` (N x D); returns D x D.

    For the embedding/hidden spectra pass both views stacked, ``np.vstack([z1, z2])``.
    """
    z = _as_2d(z, "z")
    zc = z - z.mean(axis=0)
    return zc.T @ zc / z.shape[0]


def eigvals_desc(S: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric matrix, descending (float64)."""
    S = np.asarray(S, dtype=np.float64)
    return np.linalg.eigvalsh((S + S.T) / 2)[::-1].copy()


def rankme(z=None, *, singular_values=None, eps: float = RANKME_EPS) -> float:
    """RankMe of ``z`` (N x D, uncentred) or of given singular values: exp of the entropy of p.

    p_k = sigma_k / sum_k sigma_k + eps (Garrido et al. 2023, eps = 1e-7). A matrix of exact rank
    r with equal non-zero singular values has RankMe = r (up to O(eps * D)). Returns 1.0 for the
    zero matrix by convention (no direction is used) -- note: the formula itself is undefined there.
    """
    if (z is None) == (singular_values is None):
        raise ValueError("pass exactly one of z or singular_values")
    s = np.linalg.svd(_as_2d(z, "z"), compute_uv=False) if z is not None else np.asarray(singular_values, np.float64)
    s = np.clip(s, 0.0, None)
    total = s.sum()
    if total <= 0:
        return 1.0
    p = s / total + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def rankme_from_gram(gram: np.ndarray, eps: float = RANKME_EPS) -> float:
    """RankMe from the uncentred Gram matrix Z^T Z (D x D): sigma_k = sqrt(eig_k(Z^T Z)).

    Singular values below ~1e-8 sigma_1 are lost to rounding in the Gram route; they contribute
    less than eps to p and so do not change RankMe at eps = 1e-7.
    """
    ev = np.clip(np.linalg.eigvalsh((gram + gram.T) / 2), 0.0, None)
    return rankme(singular_values=np.sqrt(ev)[::-1], eps=eps)


def _threshold_key(kind: str, thr: float) -> str:
    return f"n_gt_{kind}_{thr:g}"


def threshold_counts(eigenvalues, absolute: Sequence[float] = (), relative: Sequence[float] = ()) -> dict[str, int]:
    """Counts of eigenvalues above thresholds.

    ``absolute``: for each a, #{j : lambda_j > a}, key ``n_gt_abs_{a:g}``.
    ``relative``: for each r, #{j : lambda_j > r * max_j lambda_j}, key ``n_gt_rel_{r:g}``
    (0 when the top eigenvalue is not positive).
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    out: dict[str, int] = {}
    for a in absolute:
        out[_threshold_key("abs", a)] = int((lam > a).sum())
    top = lam.max() if lam.size else 0.0
    for r in relative:
        out[_threshold_key("rel", r)] = int((lam > r * top).sum()) if top > 0 else 0
    return out


# ---------------------------------------------------------------------------------------------
# Streaming (chunked) accumulation
# ---------------------------------------------------------------------------------------------
class MomentAccumulator:
    """Running count, mean and centred scatter M2 = sum (z - mean)(z - mean)^T of rows, in float64.

    Chunks are merged with the pairwise update of Chan, Golub & LeVeque (1979), which stays
    accurate when the mean is large compared with the spread (small-init embeddings, ReLU
    features). ``covariance()`` = M2 / N; ``gram()`` = Z^T Z = M2 + N mean mean^T (for RankMe).
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def update(self, z) -> None:
        z = _as_2d(z, "z")
        nb = z.shape[0]
        if nb == 0:
            return
        mb = z.mean(axis=0)
        zc = z - mb
        m2b = zc.T @ zc
        if self.n == 0:
            self.n, self.mean, self.m2 = nb, mb, m2b
            return
        if z.shape[1] != self.mean.shape[0]:
            raise ValueError(f"feature dimension changed between chunks: {self.mean.shape[0]} -> {z.shape[1]}")
        n = self.n + nb
        delta = mb - self.mean
        self.m2 = self.m2 + m2b + np.outer(delta, delta) * (self.n * nb / n)
        self.mean = self.mean + delta * (nb / n)
        self.n = n

    def covariance(self) -> np.ndarray:
        if self.n == 0:
            raise ValueError("no samples accumulated")
        return self.m2 / self.n

    def gram(self) -> np.ndarray:
        if self.n == 0:
            raise ValueError("no samples accumulated")
        return self.m2 + self.n * np.outer(self.mean, self.mean)


class SpectraAccumulator:
    """Accumulates paired embeddings (and optional hidden representations) chunk by chunk.

    ``update(z1, z2, h1=None, h2=None)`` with z1, z2 of shape B x d (paired rows) and h1, h2 of
    shape B x D (any trailing shape; flattened). ``result()`` returns the spectra dict described in
    ``compute_checkpoint_spectra``.
    """

    def __init__(self) -> None:
        self.n = 0
        self.cross: np.ndarray | None = None
        self.emb = MomentAccumulator()
        self.hid: MomentAccumulator | None = None

    def update(self, z1, z2, h1=None, h2=None) -> None:
        z1, z2 = _as_2d(z1, "embeddings of view 1"), _as_2d(z2, "embeddings of view 2")
        if z1.shape != z2.shape:
            raise ValueError(f"paired embeddings must have equal shapes, got {z1.shape} and {z2.shape}")
        G = z1.T @ z2
        self.cross = G if self.cross is None else self.cross + G
        self.n += z1.shape[0]
        self.emb.update(z1)
        self.emb.update(z2)
        if (h1 is None) != (h2 is None):
            raise ValueError("pass hidden representations of both views or of neither")
        if h1 is not None:
            if self.hid is None:
                if self.n != z1.shape[0]:
                    raise ValueError("hidden representations must be given for every chunk or for none")
                self.hid = MomentAccumulator()
            self.hid.update(h1)
            self.hid.update(h2)
        elif self.hid is not None:
            raise ValueError("hidden representations must be given for every chunk or for none")

    def result(self, eps: float = RANKME_EPS, absolute: Sequence[float] = (),
               relative: Sequence[float] = ()) -> dict[str, Any]:
        if self.n == 0:
            raise ValueError("no pairs accumulated")
        C = (self.cross + self.cross.T) / (2 * self.n)
        eig = {"embedding_C": eigvals_desc(C), "embedding_cov": eigvals_desc(self.emb.covariance())}
        rk = {"embedding": rankme_from_gram(self.emb.gram(), eps)}
        if self.hid is not None:
            eig["hidden_cov"] = eigvals_desc(self.hid.covariance())
            rk["hidden"] = rankme_from_gram(self.hid.gram(), eps)
        counts = {space: threshold_counts(lam, absolute, relative) for space, lam in eig.items()}
        return {"n_pairs": self.n, "eigenvalues": eig, "rankme": rk, "counts": counts}


@contextlib.contextmanager
def _no_grad():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    with torch.no_grad():
        yield


def compute_checkpoint_spectra(
    embed_fn: Callable | None,
    hidden_fn: Callable | None,
    x1,
    x2,
    *,
    joint_fn: Callable | None = None,
    batch_size: int = 256,
    absolute: Sequence[float] = (),
    relative: Sequence[float] = (),
    eps: float = RANKME_EPS,
) -> dict[str, Any]:
    """Spectra of one checkpoint on n evaluation pairs, computed chunk by chunk in float64.

    ``embed_fn(x) -> f(x)`` (B x d) and ``hidden_fn(x) -> h(x)`` (B x ..., flattened) are applied to
    chunks of ``x1`` and ``x2`` (paired inputs, n x ...; numpy arrays or torch tensors -- torch
    outputs are detached and moved to the CPU, under ``torch.no_grad()``). ``hidden_fn`` may be None
    (no hidden spectrum). ``joint_fn(x) -> (h(x), f(x))``, when given, replaces both and avoids a
    second forward pass through the encoder. The model should be in eval mode so that the result
    does not depend on ``batch_size``.

    Returns ``{"n_pairs": n, "eigenvalues": {"embedding_C": (d,), "embedding_cov": (d,),
    "hidden_cov": (D,)}, "rankme": {"embedding": float, "hidden": float},
    "counts": {space: threshold_counts(...)}}`` (hidden entries only with hidden representations);
    eigenvalues descending; RankMe of the 2n stacked (uncentred) rows.
    """
    n = len(x1)
    if len(x2) != n:
        raise ValueError(f"x1 and x2 must hold the same number of pairs, got {n} and {len(x2)}")
    if n == 0:
        raise ValueError("no evaluation pairs")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if joint_fn is None and embed_fn is None:
        raise ValueError("pass embed_fn (and optionally hidden_fn) or joint_fn")
    acc = SpectraAccumulator()
    with _no_grad():
        for lo in range(0, n, batch_size):
            a, b = x1[lo:lo + batch_size], x2[lo:lo + batch_size]
            if joint_fn is not None:
                h1, z1 = joint_fn(a)
                h2, z2 = joint_fn(b)
            else:
                z1, z2 = embed_fn(a), embed_fn(b)
                h1, h2 = (hidden_fn(a), hidden_fn(b)) if hidden_fn is not None else (None, None)
            acc.update(z1, z2, h1, h2)
    return acc.result(eps=eps, absolute=absolute, relative=relative)


# ---------------------------------------------------------------------------------------------
# Tidy tables
# ---------------------------------------------------------------------------------------------
def spectra_table(records: Iterable[Mapping[str, Any]]):
    """Tidy table of spectra: one row per (checkpoint, space, index).

    ``records``: per checkpoint, a mapping with ``step`` (int), ``t`` (float) and ``eigenvalues``
    ({space: descending array}), e.g. ``{"step": s, "t": t, **compute_checkpoint_spectra(...)}``.
    Returns a pandas DataFrame with columns step (int64), t (float64), space (str), index (int64,
    0 = largest) and eigenvalue (float64), sorted by step, space (in ``SPACES`` order), index.
    """
    import pandas as pd

    parts = []
    for rec in records:
        for space, lam in rec["eigenvalues"].items():
            lam = np.asarray(lam, dtype=np.float64).ravel()
            parts.append(pd.DataFrame({
                "step": np.full(lam.size, int(rec["step"]), dtype=np.int64),
                "t": np.full(lam.size, float(rec["t"])),
                "space": space,
                "index": np.arange(lam.size, dtype=np.int64),
                "eigenvalue": lam,
            }))
    if not parts:
        return pd.DataFrame({"step": pd.Series(dtype="int64"), "t": pd.Series(dtype="float64"),
                             "space": pd.Series(dtype="object"), "index": pd.Series(dtype="int64"),
                             "eigenvalue": pd.Series(dtype="float64")})
    df = pd.concat(parts, ignore_index=True)
    order = {s: i for i, s in enumerate(SPACES)}
    key = df["space"].map(lambda s: order.get(s, len(order)))
    df = df.assign(_k=key).sort_values(["step", "_k", "space", "index"], kind="stable").drop(columns="_k")
    return df.reset_index(drop=True)


def summary_table(records: Iterable[Mapping[str, Any]]):
    """One row per (checkpoint, space): step, t, space, rankme, n_eigenvalues and the counts.

    Both embedding spaces carry the RankMe of the embeddings (it is a property of the 2n x d
    embedding matrix, not of C or the covariance); ``hidden_cov`` carries the hidden RankMe.
    """
    import pandas as pd

    rows = []
    for rec in records:
        rk = rec.get("rankme", {})
        for space, lam in rec["eigenvalues"].items():
            row = {"step": int(rec["step"]), "t": float(rec["t"]), "space": space,
                   "rankme": rk.get("hidden" if space.startswith("hidden") else "embedding", np.nan),
                   "n_eigenvalues": int(np.size(lam))}
            row.update(rec.get("counts", {}).get(space, {}))
            rows.append(row)
    return pd.DataFrame(rows)


def trajectories(table, space: str, n_modes: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalue trajectories of one space from a tidy table: ``(step, t, eigs)``.

    ``eigs`` is T x k (checkpoints sorted by step, column j = the j-th largest eigenvalue), the
    input of ``sslkit.analysis.steps.detect_steps``; ``n_modes`` keeps the top k only.
    """
    sub = table[table["space"] == space]
    if sub.empty:
        raise KeyError(f"space {space!r} not in the table (has: {sorted(set(table['space']))})")
    wide = sub.pivot_table(index=["step", "t"], columns="index", values="eigenvalue", aggfunc="first")
    wide = wide.sort_index(level="step")
    if wide.isna().any().any():
        raise ValueError(f"space {space!r}: checkpoints have different numbers of eigenvalues")
    eigs = wide.to_numpy(dtype=np.float64)
    if n_modes is not None:
        eigs = eigs[:, :n_modes]
    steps = wide.index.get_level_values("step").to_numpy()
    t = wide.index.get_level_values("t").to_numpy(dtype=np.float64)
    return steps, t, eigs


#: tidy space name -> column prefix of the training history (``sslkit.training.engine``: eig_C_j, eig_cov_j)
HISTORY_SPACES = {"embedding_C": "eig_C_", "embedding_cov": "eig_cov_"}


def history_table(history):
    """The embedding spectra a run's ``history.csv`` records, as a tidy table (``spectra_table`` columns).

    The engine evaluates them at every history row (step 0, ``train.eval.log_points`` log-spaced
    steps, multiples of ``train.eval.every`` and the checkpoint steps), so this is the dense
    counterpart of the checkpoint spectra. Spaces ``embedding_C`` (columns eig_C_0..) and
    ``embedding_cov`` (eig_cov_0..). A step recorded twice (a resumed run) keeps its last row.
    How these spectra differ from the analysis stage's: ``docs/theory.md`` §15.
    """
    import pandas as pd

    if "step" not in history.columns or "t" not in history.columns:
        raise KeyError(f"history lacks step/t columns (has {list(history.columns)[:8]}...): not an engine history.csv")
    hist = history.drop_duplicates("step", keep="last").sort_values("step")
    parts = []
    for space, prefix in HISTORY_SPACES.items():
        cols = sorted((c for c in hist.columns if c.startswith(prefix) and c[len(prefix):].isdigit()),
                      key=lambda c: int(c[len(prefix):]))
        if not cols:
            raise KeyError(f"history has no {prefix}j columns: written by an engine without eigenvalues?")
        vals = hist[cols].to_numpy(dtype=np.float64)
        T, k = vals.shape
        parts.append(pd.DataFrame({
            "step": np.repeat(hist["step"].to_numpy(dtype=np.int64), k),
            "t": np.repeat(hist["t"].to_numpy(dtype=np.float64), k),
            "space": space,
            "index": np.tile(np.arange(k, dtype=np.int64), T),
            "eigenvalue": vals.ravel(),
        }))
    return pd.concat(parts, ignore_index=True)


def read_run_history(manifest_path: str | os.PathLike):
    """A run's history.csv (pandas), found through its ``manifest.json`` (key ``history``)."""
    import json

    import pandas as pd

    manifest_path = Path(manifest_path)
    name = json.loads(manifest_path.read_text()).get("history")
    if not name:
        raise KeyError(f"{manifest_path} names no history file (key 'history'); retrain the run with this engine")
    return pd.read_csv(manifest_path.parent / name)


def dense_table(history, table=None):
    """Tidy spectra for the step analysis and Figs. 1C-D, 2C-F, 3-5: the embedding spaces from the
    dense training history (``history_table``) and, when a checkpoint ``table`` is given, its hidden
    spaces (``hidden_cov``: hidden features exist only in checkpoints)."""
    import pandas as pd

    parts = [history_table(history)]
    if table is not None:
        parts.append(table[~table["space"].isin(list(HISTORY_SPACES))])
    return pd.concat(parts, ignore_index=True)


def write_table(df, path: str | os.PathLike) -> None:
    """Write a DataFrame atomically; the format follows the suffix (.parquet or .csv).

    Parquet needs pyarrow (pinned in sslkit's environment); without it, name the output with
    ``TABLE_SUFFIX`` (".csv" then) -- the CSV fallback keeps every float exactly (%.17g).
    """
    path = Path(path)
    fmt = path.suffix.lower()
    if fmt not in (".parquet", ".csv"):
        raise ValueError(f"{path}: table suffix must be .parquet or .csv")
    if fmt == ".parquet" and not _has_pyarrow():  # pragma: no cover
        raise ImportError(f"{path}: writing Parquet needs pyarrow; install it or use a .csv path "
                          f"(sslkit.analysis.spectra.TABLE_SUFFIX)")
    with atomic_path(path) as tmp:
        if fmt == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False, float_format="%.17g")


def read_table(path: str | os.PathLike):
    """Read a table written by ``write_table`` (Parquet or CSV, by suffix)."""
    import pandas as pd

    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path)
    raise ValueError(f"{path}: table suffix must be .parquet or .csv")
