"""All figures of the workflow: one function per figure, one shared style.

Figure functions take small, already-computed tables/arrays (never checkpoints) and return a
matplotlib Figure; ``save_figure`` writes it as PNG and PDF atomically. The style lives in
``stepwise.mplstyle`` beside this file. Figure rules declare this module and the style file as
inputs, so editing either reruns exactly the figure jobs. Importing this module selects no
matplotlib backend; the rule jobs select Agg in ``sslkit.rule_script.script_run``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from sslkit.io import atomic_path
from sslkit.viz import SOURCES, STYLE

__all__ = ["STYLE", "SOURCES", "style", "save_figure", "mode_colors", "fig1ab_linear", "fig6_appendix_c",
           "fig2ab_mlp",
           "eigen_columns", "training_curves", "speedups_figure", "variant_label", "noncontrastive_figure"]


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


def fig6_appendix_c(t: np.ndarray, A: np.ndarray, s_pred: np.ndarray, a_pred: np.ndarray,
                    title: str | None = None):
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
        ax.set_title(title or f"Appendix C: d = {d}, m = {m}, $\\gamma_j = 2^{{-j}}$")
        ax.legend(loc="lower right", ncol=2, frameon=True, framealpha=0.9)
        fig.tight_layout()
    return fig


# =============================================================================================
# Analysis stage (rules/analysis.smk): spectra, steps and probes of the SSL runs
# (Figs. 1C-D, 2C-F, 3, 4, 5, 7). Inputs are the small tidy tables of the stage:
#   history  (training): step, t, epoch, loss, lr, eig_C_0.., eig_cov_0..
#   spectra  (sslkit.analysis.spectra.spectra_table): step, t, space, index, eigenvalue
#   probe    : step, t, epoch, linear_acc, knn_acc
#   steps    (sslkit.analysis.steps.detect_steps / analyze_run dicts): step_times, bands
# Eigenvalue axes are logarithmic; the time axis is t = lr x step, linear as in the paper's deep
# runs unless t_scale="log" (points at t <= 0 are then left out).
# =============================================================================================
__all__ += ["history_eigs", "fig1cd", "fig2cf", "fig3", "fig4", "fig5", "fig7"]


def history_eigs(history, prefix: str = "eig_C_") -> tuple[np.ndarray, np.ndarray]:
    """``(t, eigs)`` from a training-history table: columns ``{prefix}0``, ``{prefix}1``, ... (T x k)."""
    cols = [c for c in history.columns if c.startswith(prefix) and c[len(prefix):].isdigit()]
    if not cols:
        raise KeyError(f"history has no {prefix}<j> columns (has: {', '.join(map(str, history.columns))})")
    cols.sort(key=lambda c: int(c[len(prefix):]))
    h = history.sort_values("step")
    return h["t"].to_numpy(dtype=float), h[cols].to_numpy(dtype=float)


def _table_eigs(table, space: str, max_modes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    from sslkit.analysis.spectra import trajectories

    _, t, eigs = trajectories(table, space, n_modes=max_modes)
    return t, eigs


def _plot_modes(ax, t, eigs, t_scale: str = "linear", max_modes: int | None = None, lw: float = 1.2,
                label_top: str | None = None) -> None:
    """One line per eigenvalue column (top mode darkest), log y; non-positive values left out."""
    t = np.asarray(t, dtype=float)
    eigs = np.asarray(eigs, dtype=float)
    if max_modes is not None:
        eigs = eigs[:, :max_modes]
    keep = t > 0 if t_scale == "log" else np.ones(t.size, bool)
    vals = np.where(eigs > 0, eigs, np.nan)[keep]
    colors = mode_colors(vals.shape[1])
    for j in range(vals.shape[1]):
        ax.plot(t[keep], vals[:, j], color=colors[j], lw=lw, label=label_top if j == 0 else None)
    ax.set_yscale("log")
    ax.set_xscale(t_scale)
    ax.set_xlabel("t = lr x step")


def _vlines(ax, times, **kw) -> None:
    for x in times or []:
        if x is not None:
            ax.axvline(x, **{"color": "0.5", "ls": ":", "lw": 0.8, **kw})


def _space_for(label: str, space) -> str:
    """Space shown for a method: the given one, or the paper's choice (BT: C, others: covariance)."""
    if isinstance(space, str):
        return space
    if isinstance(space, dict) and label in space:
        return space[label]
    return "embedding_C" if "barlow" in label.lower() else "embedding_cov"


def fig1cd(history, spectra=None, *, space: str = "embedding_C", step_times=None, t_scale: str = "linear",
           loss_scale: str = "linear", max_modes: int | None = None, title: str = "Barlow Twins, small init"):
    """Fig. 1C-D: loss (C) and embedding eigenvalues (D) vs t for Barlow Twins from small init.

    Eigenvalues come from ``spectra`` (tidy table, ``space``) when given, else from the history's
    ``eig_C_<j>`` columns. ``step_times`` (detected steps) are marked by dotted vertical lines.
    """
    with style():
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
        h = history.sort_values("step")
        keep = h["t"] > 0 if t_scale == "log" else np.ones(len(h), bool)
        a1.plot(h["t"][keep], h["loss"][keep], color="k")
        a1.set_xscale(t_scale)
        a1.set_yscale(loss_scale)
        a1.set_xlabel("t = lr x step")
        a1.set_ylabel("loss")
        a1.set_title(f"(C) {title}: loss")
        t, eigs = _table_eigs(spectra, space, max_modes) if spectra is not None else history_eigs(history, "eig_C_")
        _plot_modes(a2, t, eigs, t_scale, max_modes)
        a2.set_ylabel("eigenvalue of C" if space == "embedding_C" else "embedding eigenvalue")
        a2.set_title(f"(D) {title}: embedding eigenvalues")
        for ax in (a1, a2):
            _vlines(ax, step_times)
        fig.tight_layout()
    return fig


def fig2cf(histories, spectra=None, *, space="embedding_cov", step_times=None, t_scale: str = "linear",
           loss_scale: str = "linear", max_modes: int | None = None):
    """Fig. 2C-F: loss (top row) and embedding eigenvalues (bottom row) vs t, one column per method
    (SimCLR and VICReg from small init in the paper).

    ``histories``: {method label: history table}; ``spectra``: {label: tidy table} (else the
    history's ``eig_cov_<j>`` columns); ``space``: a space name or {label: space};
    ``step_times``: {label: [times]}.
    """
    labels = list(histories)
    with style():
        fig, axes = plt.subplots(2, len(labels), figsize=(4.8 * len(labels), 6.4), squeeze=False)
        for c, lab in enumerate(labels):
            h = histories[lab].sort_values("step")
            keep = h["t"] > 0 if t_scale == "log" else np.ones(len(h), bool)
            ax = axes[0, c]
            ax.plot(h["t"][keep], h["loss"][keep], color="k")
            ax.set_xscale(t_scale)
            ax.set_yscale(loss_scale)
            ax.set_xlabel("t = lr x step")
            ax.set_ylabel("loss")
            ax.set_title(f"{lab}: loss")
            sp = _space_for(lab, space)
            if spectra is not None and lab in spectra:
                t, eigs = _table_eigs(spectra[lab], sp, max_modes)
            else:
                t, eigs = history_eigs(h, "eig_C_" if sp == "embedding_C" else "eig_cov_")
            _plot_modes(axes[1, c], t, eigs, t_scale, max_modes)
            axes[1, c].set_ylabel("eigenvalue of C" if sp == "embedding_C" else "covariance eigenvalue")
            axes[1, c].set_title(f"{lab}: embedding eigenvalues")
            for ax in axes[:, c]:
                _vlines(ax, (step_times or {}).get(lab))
        fig.tight_layout()
    return fig


def _dip_note(bim) -> str:
    """'\\ndip 0.081, p = 0.005: bimodal' (a second title line) from a ``sslkit.analysis.steps.bimodality``
    result ('' without)."""
    if not bim or bim.get("dip") is None:
        return ""
    verdict = "bimodal" if bim["bimodal"] else "unimodality not rejected"
    return f"\ndip {bim['dip']:.3f}, p = {bim['p_value']:.2g}: {verdict}"


def fig3(spectra, bands=None, *, space=None, t_scale: str = "linear", max_modes: int | None = None,
         bimodality=None):
    """Fig. 3: embedding eigenvalues vs t from standard init, one panel per method, with the
    grown/ungrown threshold (dashed) and the band edges (dotted) of ``sslkit.analysis.steps``.

    ``spectra``: {label: tidy table}; ``bands``: {label: bands dict (``detect_steps(...)["bands"]``)};
    ``space``: a space name, {label: space}, or None for the paper's choice per method;
    ``bimodality``: {label: ``sslkit.analysis.steps.bimodality`` result}, printed in the panel titles.
    """
    labels = list(spectra)
    with style():
        fig, axes = plt.subplots(1, len(labels), figsize=(4.8 * len(labels), 3.8), squeeze=False)
        for c, lab in enumerate(labels):
            ax = axes[0, c]
            sp = _space_for(lab, space)
            t, eigs = _table_eigs(spectra[lab], sp, max_modes)
            _plot_modes(ax, t, eigs, t_scale, max_modes, lw=0.9)
            b = (bands or {}).get(lab)
            if b and b.get("threshold"):
                ax.axhline(b["threshold"], color="k", ls="--", lw=1.0, label="grown / ungrown threshold")
                for edge in ("lower", "upper"):
                    if b.get(edge):
                        ax.axhline(b[edge], color="k", ls=":", lw=0.7)
                ax.legend(loc="lower right")
            ax.set_ylabel("eigenvalue of C" if sp == "embedding_C" else "covariance eigenvalue")
            ax.set_title(f"({chr(65 + c)}) {lab}, standard init" + _dip_note((bimodality or {}).get(lab)))
        fig.tight_layout()
    return fig


def _pick_checkpoints(t: np.ndarray, times, n_times: int) -> list[int]:
    """Indices of the checkpoints nearest to ``times`` (or ``n_times`` spread over the run, t > 0)."""
    if times is not None:
        return [int(np.argmin(np.abs(t - x))) for x in times]
    idx = np.nonzero(t > 0)[0] if (t > 0).any() else np.arange(t.size)
    return [int(idx[i]) for i in np.unique(np.linspace(0, idx.size - 1, n_times).round().astype(int))]


def fig4(spectra, bands=None, *, space=None, times=None, n_times: int = 4, bins: int = 40,
         max_modes: int | None = None, bimodality=None):
    """Fig. 4: histograms of the embedding eigenvalues at selected times (log-spaced bins on a log
    axis), one row per method, with the threshold lines of Fig. 3. A bimodal histogram = a band of
    grown and a band of ungrown eigenvalues.

    ``times``: {label: [t...]} or one list for all (the nearest spectra rows: dense history rows where the
    run has them, else checkpoints); default ``n_times`` rows spread over the run. Non-positive eigenvalues
    are left out (their count is shown).
    ``bimodality``: {label: ``sslkit.analysis.steps.bimodality`` result}, printed above each row's first panel.
    """
    labels = list(spectra)
    with style():
        def chosen(lab):
            return times.get(lab) if isinstance(times, dict) else times

        ncols = max(n_times if chosen(lab) is None else len(chosen(lab)) for lab in labels)
        fig, axes = plt.subplots(len(labels), ncols, figsize=(3.0 * ncols, 2.4 * len(labels)), squeeze=False)
        for r, lab in enumerate(labels):
            sp = _space_for(lab, space)
            t, eigs = _table_eigs(spectra[lab], sp, max_modes)
            picks = _pick_checkpoints(t, chosen(lab), n_times)
            pos = eigs[eigs > 0]
            lo, hi = (pos.min(), pos.max()) if pos.size else (1e-12, 1.0)
            edges = np.geomspace(lo / 1.5, hi * 1.5, bins + 1)
            b = (bands or {}).get(lab) or {}
            for c in range(axes.shape[1]):
                ax = axes[r, c]
                ax.set_xscale("log")
                if c >= len(picks):
                    ax.set_visible(False)
                    continue
                lam = eigs[picks[c]]
                ax.hist(lam[lam > 0], bins=edges, color="C0", alpha=0.8)
                if b.get("threshold"):
                    ax.axvline(b["threshold"], color="k", ls="--", lw=1.0)
                n_bad = int((lam <= 0).sum())
                note = _dip_note((bimodality or {}).get(lab)) if c == 0 else ""
                ax.set_title(f"{lab}: t = {t[picks[c]]:.4g}" + (f" ({n_bad} <= 0)" if n_bad else "") + note,
                             fontsize=9)
                ax.set_xlabel("eigenvalue")
                if c == 0:
                    ax.set_ylabel("count")
        fig.tight_layout()
    return fig


def fig5(spectra, *, space=None, hidden_space: str = "hidden_cov", step_times=None, t_scale: str = "linear",
         max_modes: int | None = None, max_hidden_modes: int | None = None):
    """Fig. 5: embedding eigenvalues (top row) and hidden-representation covariance eigenvalues
    (bottom row) vs t, one column per method (small init). ``step_times``: {label: embedding step
    times}, drawn on both rows to show whether hidden steps coincide with embedding steps.
    """
    labels = list(spectra)
    with style():
        fig, axes = plt.subplots(2, len(labels), figsize=(4.8 * len(labels), 6.4), squeeze=False)
        for c, lab in enumerate(labels):
            sp = _space_for(lab, space)
            t, eigs = _table_eigs(spectra[lab], sp, max_modes)
            _plot_modes(axes[0, c], t, eigs, t_scale, max_modes)
            axes[0, c].set_ylabel("embedding eigenvalue")
            axes[0, c].set_title(f"({chr(65 + 2 * c)}) {lab}: embeddings")
            th, eh = _table_eigs(spectra[lab], hidden_space, max_hidden_modes)
            _plot_modes(axes[1, c], th, eh, t_scale, max_hidden_modes, lw=0.9)
            axes[1, c].set_ylabel("hidden covariance eigenvalue")
            axes[1, c].set_title(f"({chr(66 + 2 * c)}) {lab}: hidden representations")
            for ax in axes[:, c]:
                _vlines(ax, (step_times or {}).get(lab))
        fig.tight_layout()
    return fig


def fig7(probes, *, metric: str = "linear_acc", x: str = "epoch"):
    """Fig. 7: probe accuracy vs epoch, small vs standard init, one panel per method.

    ``probes``: {method label: {init: probe table}} (columns step, t, epoch, linear_acc,
    knn_acc); ``metric`` is drawn solid, the other accuracy (k-NN / linear) dashed and faint.
    """
    other = "knn_acc" if metric == "linear_acc" else "linear_acc"
    names = {"linear_acc": "linear probe", "knn_acc": "k-NN"}
    init_color = {"small": "C3", "standard": "C0"}
    labels = list(probes)
    with style():
        fig, axes = plt.subplots(1, len(labels), figsize=(4.2 * len(labels), 3.4), squeeze=False)
        for c, lab in enumerate(labels):
            ax = axes[0, c]
            for i, (init, tab) in enumerate(probes[lab].items()):
                tab = tab.sort_values("step")
                col = init_color.get(init, f"C{i + 4}")
                ax.plot(tab[x], tab[metric], color=col, label=f"{init}-init" if init in init_color else init)
                if other in tab:
                    ax.plot(tab[x], tab[other], color=col, ls="--", lw=0.9, alpha=0.6)
            ax.set_xlabel(x)
            ax.set_ylabel(f"test accuracy ({names.get(metric, metric)})")
            ax.set_ylim(0, 1)
            ax.set_title(lab)
            ax.legend(title=f"dashed: {names.get(other, other)}")
        fig.tight_layout()
    return fig


# ============================================================================================
# Wide MLP vs kernel theory (Fig. 2A-B; rules/mlp.smk)
# ============================================================================================

def fig2ab_mlp(traj: dict, summary: dict, title: str = "") -> matplotlib.figure.Figure:
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


# ---------------------------------------------------------------------------------------------
# Beyond the paper: Appendix G speed-ups (rules/speedups.smk)
# ---------------------------------------------------------------------------------------------

VARIANT_STYLE = {"baseline": ("k", "-"), "precondition_relative": ("tab:blue", "-"),
                 "precondition_eq52": ("tab:cyan", "-"), "sharpen": ("tab:red", "-"),
                 "smooth": ("tab:green", "-"), "quartic": ("tab:purple", "-")}
#: legend / bar labels of the variants (the two G.1 forms must stay distinguishable; docs/theory.md §12)
VARIANT_LABEL = {"baseline": "baseline", "precondition_relative": "G.1 relative (1+a)(S/s_max+aI)^-1",
                 "precondition_eq52": "G.1 Eq. 52 (F^T F+aI)^-1", "sharpen": "G.2 sharpen",
                 "smooth": "G.3 smooth", "quartic": "G.3 quartic"}
VARIANT_SHORT = {"precondition_relative": "G1-rel", "precondition_eq52": "G1-Eq52", "sharpen": "sharpen",
                 "smooth": "smooth", "quartic": "quartic"}


def _variant_style(name: str, i: int):
    return VARIANT_STYLE.get(name, (plt.get_cmap("tab10")(i % 10), "-"))


def variant_label(name: str, short: bool = False) -> str:
    """Legend (or, ``short``, bar) label of a speed-up variant; unknown names are shown as they are."""
    return (VARIANT_SHORT if short else VARIANT_LABEL).get(name, name)


def speedups_figure(curves, factors, lr_sweep: Sequence[dict], title: str = ""):
    """Rank staircases per (method, init) and variant, speed-up factors, and the lr sweep.

    ``curves``: DataFrame (method, init, variant, seed, t, rank) -- number of embedding eigenvalues
    in the grown band over t; one line per seed. ``factors``: DataFrame of
    ``sslkit.experiments.speedups.speedup_table`` (median and min-max over seeds per k).
    ``lr_sweep``: records {variant, factor, stable, final_top_eigenvalue}.
    """
    groups = list(dict.fromkeys(zip(curves["method"], curves["init"])))
    n = len(groups) + 2
    ncol = min(4, n)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol, 2.9 * nrow), squeeze=False)
    axes = axes.ravel()
    variants = list(dict.fromkeys(curves["variant"]))
    for ax, (method, init) in zip(axes, groups):
        g = curves[(curves["method"] == method) & (curves["init"] == init)]
        for i, v in enumerate(variants):
            col, _ = _variant_style(v, i)
            for j, (_seed, s) in enumerate(g[g["variant"] == v].groupby("seed")):
                ax.step(s["t"], s["rank"], where="post", color=col, lw=1.2, alpha=0.85,
                        ls="-" if j == 0 else "--", label=variant_label(v) if j == 0 else None)
        ax.set_title(f"{method}, {init} init", fontsize="medium")
        ax.set_xlabel("t = lr x step")
        ax.set_ylabel("eigenvalues in grown band")
    axes[0].legend(fontsize="x-small", loc="lower right")
    # speed-up factors at the largest k reached by the baseline (median, min-max over seeds)
    ax = axes[len(groups)]
    f = factors[factors["variant"] != "baseline"]
    labels, med, lo, hi, cols = [], [], [], [], []
    for (method, init, variant), g in f.groupby(["method", "init", "variant"], sort=False):
        g = g[np.isfinite(g["speedup_median"])]
        if g.empty:
            continue
        r = g.loc[g["k"].idxmax()]
        labels.append(f"{method[:6]}-{init[:3]} {variant_label(variant, short=True)} k{int(r['k'])}")
        med.append(r["speedup_median"])
        lo.append(r["speedup_median"] - r["speedup_min"])
        hi.append(r["speedup_max"] - r["speedup_median"])
        cols.append(_variant_style(variant, variants.index(variant) if variant in variants else 0)[0])
    y = np.arange(len(labels))
    med_plot = np.clip(np.asarray(med, float), 1e-2, None)
    ax.barh(y, med_plot, color=cols, alpha=0.8)
    ax.errorbar(med_plot, y, xerr=[np.asarray(lo), np.asarray(hi)], fmt="none", ecolor="k", lw=0.8)
    ax.axvline(1.0, color="k", lw=0.8, ls=":")
    ax.set_yticks(y, labels, fontsize="xx-small")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap
    ax.set_xlabel("speed-up in time to rank k (0 -> 0.01)")
    ax.set_title("largest k: median, seed range", fontsize="medium")
    # lr sweep
    ax = axes[len(groups) + 1]
    for i, v in enumerate(dict.fromkeys(r["variant"] for r in lr_sweep)):
        rs = sorted((r for r in lr_sweep if r["variant"] == v), key=lambda r: r["factor"])
        x = [r["factor"] for r in rs]
        top = [r["final_top_eigenvalue"] if r["final_top_eigenvalue"] is not None else np.nan for r in rs]
        col, _ = _variant_style(v, i)
        ax.plot(x, top, "-o", color=col, label=variant_label(v), ms=3)
        bad = [xx for xx, r in zip(x, rs) if not r["stable"]]
        ax.plot(bad, [1e3] * len(bad), "x", color=col, ms=7)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("lr / default lr")
    ax.set_ylabel("top eigenvalue at end (x: unstable)")
    ax.set_title("lr sweep", fontsize="medium")
    ax.legend(fontsize="x-small")
    for ax in axes[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Beyond the paper: non-contrastive methods (rules/noncontrastive.smk)
# ---------------------------------------------------------------------------------------------

def noncontrastive_figure(spectra: dict, records: dict, summary: dict, space: str = "embedding_cov",
                          title: str = ""):
    """Per method (columns): embedding eigenvalues over t with the detected steps (top), and the
    predictor's p_j^2 against the correlation eigenvalues s_j at several checkpoints (bottom).

    ``spectra``: method -> tidy spectra table (step, t, space, index, eigenvalue); ``records``:
    method -> list of ``sslkit.analysis.noncontrastive.checkpoint_record`` dicts with step, t;
    ``summary``: the rule's summary.json (methods -> n_steps, sequential, step_times, final).
    """
    from sslkit.analysis.spectra import trajectories

    methods = list(records)
    fig, axes = plt.subplots(2, len(methods), figsize=(3.6 * len(methods), 6.2), squeeze=False)
    for c, m in enumerate(methods):
        info = summary["methods"][m]
        ax = axes[0, c]
        _, t, eigs = trajectories(spectra[m], space)
        _plot_modes(ax, t, eigs, t_scale="linear")
        _vlines(ax, info.get("step_times") or [])
        ax.set_yscale("log")
        ax.set_xlabel("t = lr x step")
        ax.set_ylabel(f"eigenvalues ({space.replace('embedding_', '')})")
        seq = info.get("sequential")
        n_steps = info.get("n_steps") or 0
        ax.set_title(f"{m}: {n_steps} step{'' if n_steps == 1 else 's'}"
                     + ("" if seq is None else (", sequential" if seq else ", not sequential")), fontsize="medium")
        ax = axes[1, c]
        recs = records[m]
        pick = sorted({int(round(i)) for i in np.linspace(len(recs) // 3, len(recs) - 1, 4)})
        cols = plt.get_cmap("viridis")(np.linspace(0.1, 0.9, len(pick)))
        for col, i in zip(cols, pick):
            r = recs[i]
            s = np.asarray(r["s"], float)
            p2 = np.asarray(r["p"], float) ** 2
            ok = (s > 0) & (p2 > 0)
            ax.loglog(s[ok], p2[ok], "o", color=col, ms=4, label=f"t = {r['t']:.3g}")
        fin = info["final"]
        s = np.asarray(info["final_s"], float)
        s = s[s > 0]
        if s.size and fin.get("invariance_intercept") is not None:
            xs = np.geomspace(s.min(), s.max(), 10)
            ax.loglog(xs, xs / 10 ** fin["invariance_intercept"], "k:", lw=1, label="p^2 ~ s")
        slope = fin.get("invariance_slope")
        ax.set_title(f"slope {slope:.2f}, align {fin['alignment']:.2f}, R2 {fin['linear_r2']:.2f}"
                     if slope is not None else f"align {fin['alignment']:.2f}", fontsize="small")
        ax.set_xlabel("s_j (eigenvalues of F = E[f f^T])")
        ax.set_ylabel("p_j^2 (predictor along u_j)")
        ax.legend(fontsize="xx-small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Modewise landscapes (rules/theory_figures.smk): Fig. 8 (App. F) and Fig. 9 (App. G)
# ---------------------------------------------------------------------------------------------

__all__ += ["fig8_symmetry_breaking", "fig9_landscapes"]


def _trajectories(ax, t, sim, theory, label_sim="GD, linear model", label_theory="exact solution"):
    """Simulated (solid) and exact (dashed) curves per mode on a log-time axis (t > 0 only)."""
    t = np.asarray(t, dtype=float)
    keep = t > 0
    colors = mode_colors(sim.shape[1])
    for j in range(sim.shape[1]):
        ax.plot(t[keep], sim[keep, j], color=colors[j], lw=2.2, alpha=0.75, label=label_sim if j == 0 else None)
        ax.plot(t[keep], theory[keep, j], color="k", ls="--", lw=0.9, dashes=(3, 2),
                label=label_theory if j == 0 else None)
    ax.set_xscale("log")
    ax.set_xlabel("t = lr x step")


def fig8_symmetry_breaking(arrays: dict, summary: dict, title: str = ""):
    """Fig. 8: A the SSL modewise landscape (1 - s~^2)^2, B the supervised one (1 - c~)^2, C-D the
    trajectories of every mode from small aligned init (GD on the linear model solid, closed forms dashed;
    one colour per gamma_j, legend gives gamma_j). ``arrays``/``summary`` from ``run_fig8``."""
    from sslkit.theory.landscapes import modewise_loss, supervised_modewise_loss

    g = np.asarray(arrays["gamma"])
    with style():
        fig, axes = plt.subplots(2, 2, figsize=(10.5, 7.5))
        s = np.linspace(-1.6, 1.6, 801)
        ax = axes[0, 0]
        ax.plot(s, modewise_loss("original", s), color="k")
        ax.plot([-1, 1], [0, 0], "o", color="tab:green", label="minima $\\tilde s = \\pm 1$")
        ax.plot([0], [1], "o", color="tab:red", label="unstable equilibrium")
        ax.set_ylim(-0.1, 2.0)
        ax.set_xlabel("$\\tilde s_j = \\gamma_j^{1/2} s_j$")
        ax.set_ylabel("$L_j$")
        ax.set_title("A  SSL: $(1 - \\tilde s^2)^2$")
        ax.legend(loc="upper center")
        c = np.linspace(-0.6, 2.6, 801)
        ax = axes[0, 1]
        ax.plot(c, supervised_modewise_loss(c), color="k")
        ax.plot([1], [0], "o", color="tab:green", label="single minimum $\\tilde c = \\tilde c^* = 1$")
        ax.set_ylim(-0.1, 2.0)
        ax.set_xlabel("$\\tilde c_j = \\gamma_j c_j$")
        ax.set_title("B  supervised: $(\\tilde c^* - \\tilde c)^2$")
        ax.legend(loc="upper center")
        ax = axes[1, 0]
        _trajectories(ax, arrays["t_ssl"], arrays["ssl_sim"], arrays["ssl_theory"])
        ax.set_ylabel("$\\tilde s_j(t)$")
        ax.set_ylim(-1.15, 1.15)
        ax.set_title(f"C  SSL from $|\\tilde s_j(0)| \\leq$ {np.abs(np.sqrt(g) * arrays['s0']).max():.0e}, "
                     f"alternating signs")
        ax.legend(loc="lower left")
        ax = axes[1, 1]
        _trajectories(ax, arrays["t_supervised"], arrays["supervised_sim"], arrays["supervised_theory"])
        colors = mode_colors(g.size)
        for j in range(g.size):
            ax.plot([], [], color=colors[j], lw=2.2, label=f"$\\gamma_{j + 1}$ = {g[j]:.3g}")
        ax.set_ylabel("$\\tilde c_j(t)$")
        ax.set_ylim(-1.15, 1.15)
        ax.set_title("D  supervised from the same small init")
        ax.legend(loc="lower left", ncol=2)
        fig.suptitle(title or "Fig. 8: SSL breaks a symmetry; supervised learning does not")
        fig.tight_layout()
    return fig


FIG9_TITLES = {
    "original": "A  original $(1 - \\tilde s^2)^2$",
    "sharpened": "B  sharpened $(1 - |\\tilde s|)^2$",
    "smoothed": "C  smoothed $(1 - \\min(\\tilde s^2, 1 + \\epsilon(1 - \\tilde s^2)))^2$",
    "quartic": "D  quartic $(1 - \\tilde s^2)^4$",
}


def fig9_landscapes(arrays: dict, summary: dict, title: str = ""):
    """Fig. 9: top row the four modewise landscapes L_j(s~); bottom row lambda_j(t) = s~_j(t)^2 of every mode
    under that loss from the same small aligned init (GD solid, exact solution dashed), log axes.
    ``arrays``/``summary`` from ``run_fig9``."""
    from sslkit.theory.landscapes import LOSSES, modewise_loss

    eps = float(summary.get("eps", 0.1))
    s = np.linspace(-1.6, 1.6, 801)
    with style():
        fig, axes = plt.subplots(2, 4, figsize=(16.0, 7.0), sharey="row")
        for i, name in enumerate(LOSSES):
            ax = axes[0, i]
            ax.plot(s, modewise_loss(name, s, eps), color="k")
            ax.set_ylim(-0.05, 1.6)
            ax.set_xlabel("$\\tilde s$")
            ax.set_title(FIG9_TITLES[name].replace("\\epsilon", f"{eps:g}") if name == "smoothed"
                         else FIG9_TITLES[name], fontsize=9.5)
            ax = axes[1, i]
            sim, th = arrays[f"{name}_sim"] ** 2, arrays[f"{name}_theory"] ** 2
            _trajectories(ax, arrays["t"], sim, th)
            ax.set_yscale("log")
            ax.set_ylim(max(float(np.nanmin(th[th > 0])) / 3, 1e-18), 3.0)
            err = summary["losses"][name]["max_abs_error"]
            ax.set_title(f"{name}: max |sim - exact| of $\\tilde s$ = {err:.1e}", fontsize=9)
        axes[0, 0].set_ylabel("$L_j$")
        axes[1, 0].set_ylabel("$\\lambda_j(t) = \\tilde s_j(t)^2$")
        axes[1, 0].legend(loc="center left")
        fig.suptitle(title or "Fig. 9: modewise losses and their dynamics")
        fig.tight_layout()
    return fig
