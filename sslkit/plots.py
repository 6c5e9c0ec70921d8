"""All figures of the workflow: one function per figure, one shared style.

Figure functions take small, already-computed tables/arrays (never checkpoints) and return a
matplotlib Figure; ``save_figure`` writes it as PNG and PDF atomically. The style lives in
``stepwise.mplstyle`` beside this file. Figure rules declare this module and the style file as
inputs, so editing either reruns exactly the figure jobs.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import atomic_path  # noqa: E402

STYLE = Path(__file__).with_name("stepwise.mplstyle")
#: files whose change must rerun every figure rule (declared as rule inputs)
SOURCES = [str(Path(__file__)), str(STYLE)]

__all__ = ["STYLE", "SOURCES", "style", "save_figure", "mode_colors", "eigen_columns", "training_curves"]


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Context in which figures are drawn with the project style."""
    with plt.style.context(str(STYLE)):
        yield


def mode_colors(n: int, cmap: str = "viridis") -> np.ndarray:
    """``n`` distinct colours, one per eigenmode, ordered from the top mode down."""
    return plt.get_cmap(cmap)(np.linspace(0.0, 0.9, max(n, 1)))


def save_figure(fig, paths: Sequence[str | os.PathLike]) -> None:
    """Save ``fig`` to every path (format from the suffix, e.g. .png and .pdf), atomically; close it."""
    try:
        for p in paths:
            p = Path(p)
            with atomic_path(p) as tmp:
                fig.savefig(tmp, format=p.suffix.lstrip("."))
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------------------------
# SSL training runs (rules/train.smk: train_curves)
# ---------------------------------------------------------------------------------------------

def eigen_columns(history, kind: str) -> list[str]:
    """Columns ``eig_<kind>_0..`` of a training history (kind ``C`` or ``cov``), in mode order."""
    prefix = f"eig_{kind}_"
    cols = [c for c in history.columns if c.startswith(prefix) and c[len(prefix):].isdigit()]
    return sorted(cols, key=lambda c: int(c[len(prefix):]))


def training_curves(history, method: str, title: str | None = None):
    """Loss and embedding eigenvalues vs t = lr x step of one run (a ``history.csv`` table).

    Panels: loss (evaluation batch, and mean training loss), eigenvalues of the matrix the paper
    reports for this method (C for Barlow Twins, centred covariance otherwise), and of the other
    one. Eigenvalues <= 0 are left out of the log-scale panels.
    """
    kinds = ["C", "cov"] if method == "barlow_twins" else ["cov", "C"]
    names = {"C": "eigenvalues of C", "cov": "eigenvalues of Cov"}
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    t = history["t"].to_numpy()
    ax = axes[0]
    ax.plot(t, history["loss"].to_numpy(), color="0.6", lw=1, label="train (mean since last row)")
    ax.plot(t, history["loss_eval"].to_numpy(), color="k", lw=1.5, label="evaluation batch")
    ax.set_xlabel("t = lr x step")
    ax.set_ylabel("loss")
    ax.legend(fontsize="small")
    for ax, kind in zip(axes[1:], kinds):
        cols = eigen_columns(history, kind)
        colors = mode_colors(len(cols))
        for c, col in zip(cols, colors):
            v = history[c].to_numpy(dtype=float)
            ax.plot(t, np.where(v > 0, v, np.nan), color=col, lw=1.2)
        ax.set_yscale("log")
        ax.set_xlabel("t = lr x step")
        ax.set_ylabel(names[kind] + (" (reported)" if kind == kinds[0] else ""))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
