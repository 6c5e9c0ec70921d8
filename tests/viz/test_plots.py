"""Analysis-stage figure functions (sslkit.viz.plots, Figs. 1C-D, 2C-F, 3, 4, 5, 7) on small synthetic tables."""
from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

from sslkit.analysis import spectra as spectrum
from sslkit.analysis import steps
from sslkit.theory import linear
from sslkit.viz import plots

GAMMA = np.array([1.0, 0.5, 0.25, 0.125])
S0 = 1e-4


@pytest.fixture(scope="module")
def run():
    """History, spectra and step results of a synthetic 'run' (the linear model's closed form)."""
    t = np.linspace(0, 1.3 * linear.step_times(GAMMA, S0)[-1], 60)
    lam = linear.lambda_closed_form(GAMMA, S0, t)
    step = np.arange(t.size) * 10
    hist = pd.DataFrame({"step": step, "t": t, "epoch": step // 20, "loss": ((1 - lam) ** 2).sum(1),
                         "lr": 0.1, **{f"eig_C_{j}": lam[:, j] for j in range(4)},
                         **{f"eig_cov_{j}": 0.9 * lam[:, j] for j in range(4)}})
    recs = [{"step": s, "t": tt, "eigenvalues": {"embedding_C": lam_t, "embedding_cov": 0.9 * lam_t,
                                                   "hidden_cov": np.r_[3 * lam_t, 1e-9, 0.0, -1e-12]}}
            for s, tt, lam_t in zip(step, t, lam)]
    table = spectrum.spectra_table(recs)
    res = steps.analyze_run(t, lam, table.pipe(spectrum.trajectories, "hidden_cov")[2])
    probe = pd.DataFrame({"step": step, "t": t, "epoch": step // 20,
                          "linear_acc": np.linspace(0.1, 0.8, t.size), "knn_acc": np.linspace(0.1, 0.7, t.size)})
    return hist, table, res, probe


def n_mode_lines(ax):
    return sum(1 for ln in ax.get_lines() if len(ln.get_xdata()) > 2)


def test_fig1cd(run, tmp_path):
    hist, table, res, _ = run
    for spectra in (None, table):
        fig = plots.fig1cd(hist, spectra, step_times=res["step_times"])
        a_loss, a_eig = fig.axes
        assert a_eig.get_yscale() == "log" and n_mode_lines(a_eig) == 4
        assert n_mode_lines(a_loss) == 1
        xs = [ln.get_xdata()[0] for ln in a_eig.get_lines() if len(ln.get_xdata()) == 2]
        np.testing.assert_allclose(sorted(xs), res["step_times"])  # the step markers
        matplotlib.pyplot.close(fig)
    fig = plots.fig1cd(hist, t_scale="log", loss_scale="log")
    assert all(ax.get_xscale() == "log" for ax in fig.axes) and fig.axes[0].get_yscale() == "log"
    plots.save_figure(fig, [tmp_path / "fig1cd.png", tmp_path / "fig1cd.pdf"])
    assert (tmp_path / "fig1cd.png").stat().st_size > 1000 and (tmp_path / "fig1cd.pdf").exists()


def test_fig2cf(run):
    hist, table, res, _ = run
    fig = plots.fig2cf({"SimCLR": hist, "VICReg": hist}, {"SimCLR": table},
                       step_times={"SimCLR": res["step_times"]})
    assert len(fig.axes) == 4
    eig_axes = fig.axes[2:]
    assert all(ax.get_yscale() == "log" and n_mode_lines(ax) == 4 for ax in eig_axes)
    # VICReg drawn from the history's eig_cov_ columns, SimCLR from the table: same numbers here
    np.testing.assert_allclose(eig_axes[0].get_lines()[0].get_ydata(), eig_axes[1].get_lines()[0].get_ydata())
    matplotlib.pyplot.close(fig)


def test_fig3_threshold_lines(run):
    _, table, res, _ = run
    b = res["embedding"]["bands"]
    fig = plots.fig3({"Barlow Twins": table, "SimCLR": table}, {"Barlow Twins": b})
    a_bt, a_sc = fig.axes
    assert a_bt.get_yscale() == "log" and a_sc.get_yscale() == "log"
    hl = [ln.get_ydata()[0] for ln in a_bt.get_lines() if len(ln.get_ydata()) == 2]
    np.testing.assert_allclose(sorted(hl), sorted([b["lower"], b["threshold"], b["upper"]]))
    # Barlow Twins shows C, SimCLR the covariance (0.9 x C in this synthetic table)
    np.testing.assert_allclose(a_sc.get_lines()[0].get_ydata(), 0.9 * a_bt.get_lines()[0].get_ydata())
    matplotlib.pyplot.close(fig)
    bim = {"dip": 0.0812, "p_value": 0.005, "bimodal": True}
    fig2 = plots.fig3({"BT": table, "SimCLR": table}, bimodality={"BT": bim, "SimCLR": dict(bim, bimodal=False)})
    assert "dip 0.081, p = 0.005: bimodal" in fig2.axes[0].get_title()
    assert "unimodality not rejected" in fig2.axes[1].get_title()
    matplotlib.pyplot.close(fig2)


def test_fig4_histograms(run):
    _, table, res, _ = run
    fig = plots.fig4({"BT": table, "SimCLR": table}, {"BT": res["embedding"]["bands"]}, n_times=3)
    assert len(fig.axes) == 6 and all(ax.get_xscale() == "log" for ax in fig.axes)
    counts = [sum(p.get_height() for p in ax.patches) for ax in fig.axes]
    assert counts == [4] * 6  # every eigenvalue of each selected checkpoint is in its histogram
    fig2 = plots.fig4({"BT": table}, times={"BT": [0.0, 10.0]})
    assert len(fig2.axes) == 2
    matplotlib.pyplot.close(fig)
    matplotlib.pyplot.close(fig2)


def test_fig5_hidden_vs_embedding(run):
    _, table, res, _ = run
    fig = plots.fig5({"Barlow Twins": table}, step_times={"Barlow Twins": res["step_times"]})
    a_emb, a_hid = fig.axes
    assert a_emb.get_yscale() == "log" and a_hid.get_yscale() == "log"
    assert n_mode_lines(a_emb) == 4 and n_mode_lines(a_hid) == 7  # 3 frozen hidden modes drawn too
    fig2 = plots.fig5({"Barlow Twins": table}, max_hidden_modes=4)
    assert n_mode_lines(fig2.axes[1]) == 4
    matplotlib.pyplot.close(fig)
    matplotlib.pyplot.close(fig2)


def test_fig7_probe_curves(run):
    *_, probe = run
    fig = plots.fig7({"Barlow Twins": {"small": probe, "standard": probe.assign(linear_acc=probe.linear_acc + 0.05)},
                      "SimCLR": {"small": probe}})
    a_bt, a_sc = fig.axes
    assert len(a_bt.get_lines()) == 4 and len(a_sc.get_lines()) == 2
    np.testing.assert_allclose(a_bt.get_lines()[2].get_ydata(), probe.sort_values("step").linear_acc + 0.05)
    assert a_bt.get_xlabel() == "epoch"
    matplotlib.pyplot.close(fig)


def test_missing_columns_named(run):
    hist, table, *_ = run
    with pytest.raises(KeyError, match="eig_zz_"):
        plots.history_eigs(hist, "eig_zz_")
    with pytest.raises(KeyError, match="hidden_cov"):
        plots.fig5({"x": table[table.space != "hidden_cov"]})
