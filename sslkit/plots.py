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

__all__ = ["STYLE", "SOURCES", "style", "save_figure", "mode_colors", "fig2ab_mlp"]


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


# ============================================================================================
# Wide MLP vs kernel theory (Fig. 2A-B; rules/mlp.smk)
# ============================================================================================

def fig2ab_mlp(traj: dict, summary: dict, title: str = "") -> "matplotlib.figure.Figure":
    """Loss (A) and eigenvalues of C (B) of the wide MLP against time t = lr x step.

    Args:
        traj: arrays of ``results/mlp/{dataset}/trajectory.npz``: ``t`` (T), ``eval_loss``,
            ``train_loss`` (T), ``eig`` (T x d), ``t_pred`` (T'), ``loss_pred_pop``,
            ``loss_pred_init``, ``loss_pred_final`` (T'), ``lam_pred_pop``, ``lam_pred_init``
            (T' x d), ``tau_pred_pop`` (d).
        summary: ``results/mlp/{dataset}/summary.json`` (alignments, step counts).

    Solid: measured on the fixed evaluation points. Kernelised theory (Eq. 40-42) from the
    initial eNTK: dashed, on ``kernel_draws`` crop draws (population estimate); dotted, on the
    evaluation draw's 2n points only. Panel A also shows the prediction of the final eNTK
    (dash-dot) and marks the predicted step times (population kernel).
    """
    t, eig = np.asarray(traj["t"]), np.asarray(traj["eig"])
    tp = np.asarray(traj["t_pred"])
    d = eig.shape[1]
    colors = mode_colors(d)
    keep = t > 0
    draws = summary.get("kernel_init_population", {}).get("draws", 1)
    fig, (axA, axB) = plt.subplots(1, 2, figsize=(11, 5.0))
    axA.plot(t[keep], np.asarray(traj["train_loss"])[keep], color="0.75", lw=1.0)
    axA.plot(t[keep], np.asarray(traj["eval_loss"])[keep], color="k")
    axA.plot(tp, np.asarray(traj["loss_pred_pop"]), "--", color="tab:red", lw=1.2)
    axA.plot(tp, np.asarray(traj["loss_pred_init"]), ":", color="tab:red", lw=1.2)
    axA.plot(tp, np.asarray(traj["loss_pred_final"]), "-.", color="tab:blue", lw=1.0)
    for j, tj in enumerate(np.asarray(traj["tau_pred_pop"])):
        if np.isfinite(tj) and tp[0] <= tj <= tp[-1]:
            axA.axvline(tj, color=colors[j], ls="--", lw=0.6, alpha=0.6)
    axA.set(xscale="log", xlabel="t = lr x step", ylabel="loss", ylim=(-0.3, d + 0.5),
            title="A  loss (vertical: predicted step times)")
    for j in range(d):
        axB.plot(t[keep], np.clip(eig[keep, j], 1e-12, None), color=colors[j], lw=1.5)
        axB.plot(tp, np.clip(np.asarray(traj["lam_pred_pop"])[:, j], 1e-12, None), "--",
                 color=colors[j], lw=1.0)
        axB.plot(tp, np.clip(np.asarray(traj["lam_pred_init"])[:, j], 1e-12, None), ":",
                 color=colors[j], lw=0.9)
    axB.set(xscale="log", yscale="log", xlabel="t = lr x step", ylabel="eigenvalue of C",
            ylim=(1e-6, 3.0), title="B  embedding eigenvalues (colour: mode)")
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color="k", lw=1.6, label="experiment, evaluation points"),
        Line2D([], [], color="0.75", lw=1.0, label="experiment, training batch (A)"),
        Line2D([], [], color="k", ls="--", lw=1.1, label=f"theory: initial eNTK, {draws} crop draws"),
        Line2D([], [], color="k", ls=":", lw=1.1, label="theory: initial eNTK, evaluation draw"),
        Line2D([], [], color="k", ls="-.", lw=1.0, label="theory: final eNTK, evaluation draw (A)"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, bbox_to_anchor=(0.5, 0.0), fontsize=8)
    ki, kf = summary["kernel_init"], summary["kernel_final"]
    rnd = summary["random_alignment"]["analytic"]
    steps = summary["steps"]
    stats = (f"{steps['n_distinct']} distinct steps ({steps['n_learned']} modes learned);  "
             f"a(P_exp, P_th): initial eNTK {ki['alignment_exp_th']:.2f}, final {kf['alignment_exp_th']:.2f};  "
             f"a(P_exp, P_NTK): {ki['alignment_exp_ntk']:.2f}, {kf['alignment_exp_ntk']:.2f};  "
             f"random {rnd:.2f}")
    fig.suptitle(f"{title}\n{stats}" if title else stats, fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig
