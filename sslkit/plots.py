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

__all__ = ["STYLE", "SOURCES", "style", "save_figure", "mode_colors"]


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
# Linear model vs exact theory (rules/linear.smk): Fig. 1A-B and Fig. 6
# ---------------------------------------------------------------------------------------------


def fig1ab_linear(t: np.ndarray, loss: np.ndarray, eigs: np.ndarray, theory_eigs: np.ndarray,
                  tau_theory: np.ndarray, title: str | None = None):
    """Fig. 1A-B: loss and eigenvalues of C of the simulated linear model against the theory.

    Args:
        t: recorded times (R,); points with t <= 0 are dropped (log axis).
        loss: simulated loss ||C - I||_F^2 (R,).
        eigs: simulated eigenvalues of C, descending (R x d).
        theory_eigs: closed-form eigenvalues at ``t``, descending (R x d).
        tau_theory: Eq. 16 step times (d,).
    Panel A: solid loss, grey staircase of Eq. 20, dashed vertical lines at tau_j (one colour per
    mode). Panel B: solid eigenvalues, dashed theory, same colours; both axes logarithmic.
    """
    t = np.asarray(t, dtype=float)
    keep = t > 0
    t, loss, eigs, theory_eigs = t[keep], np.asarray(loss)[keep], np.asarray(eigs)[keep], np.asarray(theory_eigs)[keep]
    tau = np.asarray(tau_theory, dtype=float)
    d = eigs.shape[1]
    colors = mode_colors(d)
    with style():
        fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(11.0, 4.0))
        stair = (tau[None, :] > t[:, None]).sum(axis=1)
        ax_a.plot(t, stair, color="0.78", lw=4.0, drawstyle="steps-post", label="theory staircase (Eq. 20)")
        ax_a.plot(t, loss, color="k", lw=1.3, label="simulation")
        for j in range(d):
            ax_a.axvline(tau[j], color=colors[j], ls="--", lw=1.0, label="step times $\\tau_j$" if j == 0 else None)
        ax_a.set_xscale("log")
        ax_a.set_xlabel("t = lr x step")
        ax_a.set_ylabel("loss $\\|C - I\\|_F^2$")
        ax_a.set_title("A  loss")
        ax_a.legend(loc="lower left")
        for j in range(d):
            ax_b.plot(t, np.where(eigs[:, j] > 0, eigs[:, j], np.nan), color=colors[j], lw=1.6,
                      label="simulation" if j == 0 else None)
            ax_b.plot(t, theory_eigs[:, j], color=colors[j], ls="--", lw=1.2, alpha=0.9,
                      dashes=(3, 2), label="theory (Prop. 4.1)" if j == 0 else None)
        ax_b.set_xscale("log")
        ax_b.set_yscale("log")
        lo = np.nanmin(np.where(theory_eigs > 0, theory_eigs, np.nan))
        ax_b.set_ylim(max(lo / 3, 1e-16), 3.0)
        ax_b.set_xlabel("t = lr x step")
        ax_b.set_ylabel("eigenvalues of C")
        ax_b.set_title("B  embedding eigenvalues")
        ax_b.legend(loc="upper left")
        if title:
            fig.suptitle(title)
        fig.tight_layout()
    return fig


def fig6_appendix_c(t: np.ndarray, A: np.ndarray, s_pred: np.ndarray, a_pred: np.ndarray):
    """Fig. 6: |s_j(t)| = |A_jj| (red), |a_jk| for j < k (blue) and j > k (green) of the simulated A(t)
    (solid) with the predictions Eq. 47 and Eq. 48 (dashed; none exist for j > k). Log y axis.

    Shapes: t (T,), A (T x d x m), s_pred (T x d), a_pred (T x d x m, nan where no prediction).
    """
    t = np.asarray(t, dtype=float)
    _, d, m = A.shape
    with style():
        fig, ax = plt.subplots(figsize=(7.0, 4.6))
        reds = plt.get_cmap("Reds")(np.linspace(0.55, 0.95, d))
        upper = [(j, k) for j in range(d) for k in range(j + 1, m)]
        lower = [(j, k) for j in range(d) for k in range(min(j, m))]
        blues = plt.get_cmap("Blues")(np.linspace(0.4, 0.95, max(len(upper), 1)))
        greens = plt.get_cmap("Greens")(np.linspace(0.4, 0.95, max(len(lower), 1)))
        for i, (j, k) in enumerate(upper):
            ax.plot(t, np.abs(A[:, j, k]), color=blues[i], lw=1.2,
                    label="$|a_{jk}|$, j < k" if i == 0 else None)
            ax.plot(t, np.abs(a_pred[:, j, k]), color=blues[i], ls="--", lw=1.0, dashes=(3, 2))
        for i, (j, k) in enumerate(lower):
            y = np.abs(A[:, j, k])
            ax.plot(t, np.where(y > 0, y, np.nan), color=greens[i], lw=1.0,
                    label="$|a_{jk}|$, j > k (no theory)" if i == 0 else None)
        for j in range(d):
            ax.plot(t, np.abs(A[:, j, j]), color=reds[j], lw=2.0, label="$|s_j|$" if j == 0 else None)
            ax.plot(t, s_pred[:, j], color="k", ls="--", lw=1.0, dashes=(3, 2),
                    label="theory (Eq. 47, 48)" if j == 0 else None)
        ax.set_yscale("log")
        a0 = np.abs(A[0][np.abs(A[0]) > 0])
        ax.set_ylim(a0.min() * 1e-6, 10.0)      # entries born at zero enter from below
        ax.set_xlabel("t (Eq. 45 time, = 4 x gradient-flow time)")
        ax.set_ylabel("|entries of A(t)|")
        ax.set_title(f"Appendix C: d = {d}, m = {m}, $\\gamma_j = 2^{{-j}}$")
        ax.legend(loc="lower right", ncol=2, frameon=True, framealpha=0.9)
        fig.tight_layout()
    return fig
