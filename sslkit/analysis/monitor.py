"""A stepwise monitor for any SSL training loop: dense spectra, steps so far, a forecast of the next step.

``docs/theory.md`` §16. Give it, every few steps, the embeddings of a fixed evaluation batch (two
augmented views ``z1, z2``, N x d each) or their spectra; it records

- the eigenvalues of the symmetrised cross-correlation C = (z1^T z2 + z2^T z1) / 2N and of the centred
  covariance of the 2N stacked embeddings (``sslkit.analysis.spectra``), descending;
- RankMe (Garrido et al. 2023) of the stacked, uncentred embeddings and the effective rank (eigenvalues
  above ``rank_tol`` x the largest, as the training engine's progress bar);
- the steps detected so far: the workflow's detector (``sslkit.analysis.steps.detect_steps``, band
  detector) run on the history recorded up to now -- its online form;
- a forecast of the next steps. Before its step an ungrown eigenvalue grows exponentially, lambda_j ~
  e^{8 gamma_j t} (Prop. 4.1), and in the linear model it follows the logistic curve
  lambda_j / L = 1 / (1 + (L / lambda_j(0) - 1) e^{-8 gamma_j t}) towards its grown level L (L = 1 for
  Barlow Twins' C). So logit(lambda_j / L) is linear in t. Over the last ``window`` records the monitor
  fits that line by least squares for every ungrown mode whose growth is visible (slope > 0 at
  ``min_z`` standard errors), and forecasts the step time as the t where the line reaches
  logit(``event_fraction``) -- the detector's event level (lambda_j = L/2: the theory's step time,
  Eq. 16). The interval propagates the fit's standard errors (``z`` of them) through that solve.

L is ``grown_level`` when given, else the grown band of the spectrum so far (``detect_steps``'s bands):
the median of the latest values of the modes in the grown band, so the first forecast needs one
grown mode. t is the paper's time, lr x step, when ``lr`` is given
(constant learning rate), else the step; pass ``t=`` to ``update`` for schedules.

It logs to MLflow (metrics ``monitor/...``) when ``mlflow`` is importable and a run is active
(``log_to_mlflow="auto"``); mlflow is imported only then. Use::

    monitor = StepwiseMonitor(lr=0.3, space="C")
    for step in range(steps):
        if monitor.due(step, steps):
            with torch.no_grad():
                monitor.update(step, model(x_eval_1), model(x_eval_2))
        ...  # the training step
    print(monitor.report())
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sslkit.analysis.spectra import covariance, cross_correlation, eigvals_desc, rankme_from_gram
from sslkit.analysis.steps import DEFAULTS as STEP_DEFAULTS
from sslkit.analysis.steps import detect_steps, estimate_bands

__all__ = ["StepwiseMonitor", "fit_logit_growth", "forecast_crossing", "forecast_errors", "log_spaced_steps", "replay"]

SPACES = ("C", "cov")


def log_spaced_steps(total: int, points: int = 320, every: int | None = 25) -> list[int]:
    """0, ``points`` log-spaced steps in [1, total], the multiples of ``every`` and ``total`` (the
    training engine's evaluation cadence, ``sslkit.training.engine.eval_steps``)."""
    steps = {0, int(total)}
    if points > 0 and total > 0:
        steps |= {int(round(s)) for s in np.geomspace(1, total, points)}
    if every:
        steps |= set(range(every, total + 1, every))
    return sorted(s for s in steps if 0 <= s <= total)


def fit_logit_growth(t: np.ndarray, y: np.ndarray) -> dict[str, float] | None:
    """Least-squares line y = a + b (t - t_mean) with standard errors; None with fewer than 3 points.

    Returns ``slope`` b, ``slope_se``, ``t_mean``, ``y_mean`` (= a) and ``y_mean_se`` (the two
    estimates are uncorrelated at t_mean) and ``resid_sd``.
    """
    t, y = np.asarray(t, np.float64), np.asarray(y, np.float64)
    n = t.size
    if n < 3:
        return None
    tm, ym = float(t.mean()), float(y.mean())
    sxx = float(((t - tm) ** 2).sum())
    if sxx <= 0:
        return None
    b = float(((t - tm) * (y - ym)).sum() / sxx)
    resid = y - ym - b * (t - tm)
    s2 = float((resid**2).sum() / (n - 2))
    # a floor on the residual scale: a perfect logistic (the linear model) has ~0 residuals
    s = math.sqrt(max(s2, 1e-24))
    return {"slope": b, "slope_se": s / math.sqrt(sxx), "t_mean": tm, "y_mean": ym, "y_mean_se": s / math.sqrt(n),
            "resid_sd": s}


def forecast_crossing(fit: Mapping[str, float], level: float, z: float = 2.0) -> tuple[float, float, float]:
    """(t*, lower, upper): when the fitted line reaches ``level``, with the interval from moving the
    line's value at t_mean by -/+ z se and its slope by +/- z se (upper = inf when the slope may be <= 0)."""
    b, bse, tm, ym, yse = (fit[k] for k in ("slope", "slope_se", "t_mean", "y_mean", "y_mean_se"))
    t_star = tm + (level - ym) / b
    lo_b, hi_b = b + z * bse, b - z * bse
    lower = tm + (level - ym - z * yse) / lo_b
    upper = tm + (level - ym + z * yse) / hi_b if hi_b > 0 else math.inf
    return float(t_star), float(min(lower, t_star)), float(max(upper, t_star))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-300, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


class StepwiseMonitor:
    """Dense embedding spectra, RankMe, steps so far and a forecast of the next steps (module docstring).

    ``space``: the spectrum steps are detected and forecast on, "C" (Barlow Twins, the theory's C) or
    "cov" (SimCLR, VICReg and the non-contrastive methods, as the paper plots them). ``lr``: constant
    learning rate, so t = lr x step (else pass ``t`` to ``update``; without either t = step).
    ``every``/``log_points``: the cadence of :meth:`due`. ``window``: records per growth fit.
    ``grown_level``: L of the forecast (None: the grown band so far). ``step_params``: overrides of
    ``sslkit.analysis.steps.DEFAULTS``. ``detect_every``: run the detector every this many records.
    ``log_to_mlflow``: "auto" (when a run is active), True or False. ``verbose``: print a status line
    (:meth:`line`) to ``stream`` at the first record and whenever the number of steps so far changes
    (``"all"``: at every record).
    """

    def __init__(self, *, space: str = "C", lr: float | None = None, every: int | None = 25, log_points: int = 320,
                 window: int = 8, grown_level: float | None = None, rank_tol: float = 0.01, min_z: float = 3.0,
                 z: float = 2.0, min_rise_decades: float = 1.0, step_params: Mapping[str, Any] | None = None,
                 detect_every: int = 4, log_to_mlflow: bool | str = "auto", verbose: bool = False, stream=None):
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {space!r}")
        if window < 3:
            raise ValueError(f"window must be >= 3 records (a line fit with an error), got {window}")
        if lr is not None and not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if grown_level is not None and not grown_level > 0:
            raise ValueError(f"grown_level must be > 0, got {grown_level}")
        self.space, self.lr, self.every, self.log_points = space, lr, every, int(log_points)
        self.window, self.grown_level, self.rank_tol = int(window), grown_level, float(rank_tol)
        self.min_z, self.z, self.min_rise_decades = float(min_z), float(z), float(min_rise_decades)
        self.step_params = dict(STEP_DEFAULTS, **(step_params or {}))
        self.event_fraction = float(self.step_params["event_fraction"])
        self.detect_every = max(int(detect_every), 1)
        self.log_to_mlflow, self.verbose = log_to_mlflow, verbose
        self.stream = stream if stream is not None else sys.stdout
        self.records: list[dict[str, Any]] = []
        self._steps: dict[str, Any] | None = None
        self._forecast: list[dict[str, Any]] = []
        self._due_cache: tuple[int, set[int]] | None = None
        self._buf: tuple[np.ndarray, np.ndarray] | None = None
        self._buf_n = 0
        self._steps_n = 0
        self._level: float | None = grown_level

    # ---- cadence -------------------------------------------------------------------------------
    def due(self, step: int, total: int) -> bool:
        """Whether ``step`` of a ``total``-step run is on the monitor's cadence (:func:`log_spaced_steps`)."""
        if self._due_cache is None or self._due_cache[0] != total:
            self._due_cache = (total, set(log_spaced_steps(total, self.log_points, self.every)))
        return step in self._due_cache[1]

    # ---- recording -----------------------------------------------------------------------------
    def update(self, step: int, z1, z2=None, *, t: float | None = None) -> dict[str, Any]:
        """Record the embeddings of the evaluation batch at ``step``: ``z1`` (N x d) and its paired view
        ``z2`` (needed for C; with only ``z1`` the space must be "cov"). Returns the record."""
        z = z1 if z2 is None else np.vstack([_np(z1, "z1"), _np(z2, "z2")])
        z = _np(z, "z1")
        eig_c = eigvals_desc(cross_correlation(z1, z2)) if z2 is not None else None
        eig_cov = eigvals_desc(covariance(z))
        rm = rankme_from_gram(z.T @ z)
        return self.observe(step, eig_c=eig_c, eig_cov=eig_cov, rankme=rm, t=t)

    def observe(self, step: int, *, eig_c: Sequence[float] | None = None, eig_cov: Sequence[float] | None = None,
                rankme: float | None = None, t: float | None = None) -> dict[str, Any]:
        """Record spectra computed elsewhere (e.g. the training engine's); the space's one is required."""
        eigs = {"C": eig_c, "cov": eig_cov}
        if eigs[self.space] is None:
            raise ValueError(f"the monitor's space is {self.space!r}: pass eig_{self.space.lower()} "
                             f"(or z2 to update(), for C)")
        if t is None:
            t = self.lr * step if self.lr is not None else float(step)
        if self.records and t <= self.records[-1]["t"]:
            raise ValueError(f"records must advance in time: t = {t} after t = {self.records[-1]['t']} "
                             f"(step {step}); a resumed run replays its history first")
        main = np.sort(np.asarray(eigs[self.space], np.float64))[::-1]
        top = float(main[0]) if main.size else 0.0
        rec: dict[str, Any] = {
            "step": int(step), "t": float(t), "eigs": main,
            "eig_C": None if eig_c is None else np.sort(np.asarray(eig_c, np.float64))[::-1],
            "eig_cov": None if eig_cov is None else np.sort(np.asarray(eig_cov, np.float64))[::-1],
            "rankme": None if rankme is None else float(rankme),
            "rank": int(np.sum(main > self.rank_tol * top)) if top > 0 else 0,
        }
        self.records.append(rec)
        n = len(self.records)
        if n >= self.window:  # (a detector run on a handful of records only sees noise)
            self._refresh(detect=(n - self.window) % self.detect_every == 0)
        rec["n_steps"] = self._steps["n_steps"] if self._steps else 0
        nxt = self.next_forecast()
        rec["next_mode"] = None if nxt is None else nxt["mode"]
        rec["next_t"] = None if nxt is None else nxt["t"]
        self._log(rec, nxt)
        prev = self.records[-2] if len(self.records) > 1 else None
        if self.verbose and (self.verbose == "all" or prev is None or rec["n_steps"] != prev["n_steps"]):
            print(self.line(rec), file=self.stream)
        return rec

    # ---- analysis ------------------------------------------------------------------------------
    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Times (T,) and spectra (T x k, k = the smallest number of eigenvalues recorded), kept in
        buffers that grow with the records, so a record costs O(k) to add."""
        n = len(self.records)
        if self._buf is None or self._buf_n > n or self._buf[1].shape[0] < n:
            k = min(r["eigs"].size for r in self.records)
            cap = max(64, 2 * n)
            t, e = np.empty(cap), np.empty((cap, k))
            for i, r in enumerate(self.records):
                t[i], e[i] = r["t"], r["eigs"][:k]
            self._buf, self._buf_n = (t, e), n
        t, e = self._buf
        k = e.shape[1]
        for i in range(self._buf_n, n):
            r = self.records[i]["eigs"]
            if r.size < k:  # fewer eigenvalues than before: rebuild at the smaller width
                self._buf = None
                return self._arrays()
            t[i], e[i] = self.records[i]["t"], r[:k]
        self._buf_n = n
        return t[:n], e[:n]

    def _refresh(self, detect: bool) -> None:
        t, eigs = self._arrays()
        if detect:
            self._steps = detect_steps(t, eigs, self.step_params, detector="bands")
            self._steps_n = t.size
            self._level = self.level(eigs)
        self._forecast = self._fit_forecasts(t, eigs)

    def steps_so_far(self) -> dict[str, Any] | None:
        """``detect_steps`` on the history so far (None before ``window`` records). The status line
        refreshes it every ``detect_every`` records; this call brings it up to date."""
        if self._steps_n != len(self.records) and len(self.records) >= self.window:
            self._refresh(detect=True)
        return self._steps

    def level(self, eigs: np.ndarray | None = None) -> float | None:
        """The grown level L of the forecast: ``grown_level``, else the grown band so far (None if none)."""
        if self.grown_level is not None:
            return float(self.grown_level)
        if eigs is None:
            eigs = self._arrays()[1]
        p = self.step_params
        bands = estimate_bands(eigs, p["floor_rel"], p["band_margin"], p["min_gap_decades"])
        if not bands["separated"]:
            return None
        # the latest values of the modes now in the grown band (above its lower edge): their median
        latest = eigs[-1]
        grown = latest[latest >= bands["upper"]]
        return float(np.median(grown)) if grown.size else None

    def _fit_forecasts(self, t: np.ndarray, eigs: np.ndarray) -> list[dict[str, Any]]:
        L = self._level
        if L is None or t.size < self.window:
            return []
        w = slice(t.size - self.window, t.size)
        target = float(_logit(np.array([self.event_fraction]))[0])
        lowest_all = eigs.min(axis=0)
        out = []
        for j in range(eigs.shape[1]):
            lam = eigs[w, j]
            if lam[-1] >= self.event_fraction * L or np.any(lam <= 0):
                continue  # grown already (or not a positive eigenvalue: nothing to extrapolate)
            lowest = float(lowest_all[j])
            if lowest <= 0 or math.log10(lam[-1] / lowest) < self.min_rise_decades:
                continue  # no visible growth yet: not min_rise_decades above its lowest value so far
            y = _logit(lam / L)
            fit = fit_logit_growth(t[w], y)
            if fit is None or fit["slope"] <= self.min_z * fit["slope_se"]:
                continue
            t_star, lo, hi = forecast_crossing(fit, target, self.z)
            # the fit's standard errors ignore that the rate is still settling (Prop. 4.1 holds once the
            # mode is aligned): widen the interval to the forecast of the recent half window
            half = max(self.window // 2, 3)
            recent = fit_logit_growth(t[w][-half:], y[-half:])
            if recent is not None and recent["slope"] > 0:
                t_half, lo_h, hi_h = forecast_crossing(recent, target, self.z)
                lo, hi = min(lo, t_half), max(hi, t_half)
            out.append({"mode": j, "t": t_star, "interval": [lo, hi], "rate": fit["slope"],
                        "rate_se": fit["slope_se"], "made_at": float(t[-1]), "level": L,
                        "step": t_star / self.lr if self.lr else None})
        out.sort(key=lambda f: f["t"])
        return out

    def forecast(self) -> list[dict[str, Any]]:
        """Forecasts of the ungrown modes with visible growth, soonest first: ``mode`` (index in the
        sorted spectrum), ``t`` (forecast step time), ``interval``, ``rate`` (fitted d logit / dt,
        ~ 8 gamma_j), ``made_at`` (t of the last record), ``level`` (L) and ``step`` (t / lr)."""
        return list(self._forecast)

    def next_forecast(self) -> dict[str, Any] | None:
        return self._forecast[0] if self._forecast else None

    # ---- output --------------------------------------------------------------------------------
    def line(self, rec: Mapping[str, Any] | None = None) -> str:
        """One status line: step, t, rank, RankMe, steps so far, the next forecast."""
        rec = rec or self.records[-1]
        parts = [f"step {rec['step']:>6}", f"t {rec['t']:.4g}", f"rank {rec['rank']}"]
        if rec.get("rankme") is not None:
            parts.append(f"RankMe {rec['rankme']:.2f}")
        parts.append(f"steps so far {rec.get('n_steps', 0)}")
        nxt = self.next_forecast()
        if nxt is not None:
            lo, hi = nxt["interval"]
            parts.append(f"next: mode {nxt['mode']} at t {nxt['t']:.4g} [{lo:.4g}, {hi:.4g}]")
        return " | ".join(parts)

    def report(self) -> str:
        """A few lines: the steps detected so far (times and modes) and the pending forecasts."""
        s = self.steps_so_far() or {}
        lines = [f"{len(self.records)} records, {s.get('n_steps', 0)} steps detected"
                 + (f" (sequential fraction {s['sequential_fraction']:.2f})" if s.get("sequential_fraction") else "")]
        for i, (tt, modes) in enumerate(zip(s.get("step_times", []), s.get("step_modes", []), strict=True)):
            lines.append(f"  step {i + 1}: t = {tt:.4g}, modes {modes}")
        for f in self._forecast:
            lo, hi = f["interval"]
            lines.append(f"  forecast: mode {f['mode']} at t = {f['t']:.4g} [{lo:.4g}, {hi:.4g}]")
        return "\n".join(lines)

    def _log(self, rec: Mapping[str, Any], nxt: Mapping[str, Any] | None) -> None:
        if self.log_to_mlflow is False:
            return
        if "mlflow" not in sys.modules and self.log_to_mlflow == "auto":
            return  # nobody started a run in this process
        import mlflow

        if mlflow.active_run() is None:
            return
        metrics = {"monitor/rank": rec["rank"], "monitor/n_steps": rec["n_steps"]}
        if rec["rankme"] is not None:
            metrics["monitor/rankme"] = rec["rankme"]
        if nxt is not None and math.isfinite(nxt["t"]):
            metrics.update({"monitor/next_t": nxt["t"], "monitor/next_mode": nxt["mode"],
                            "monitor/next_t_lower": nxt["interval"][0]})
            if math.isfinite(nxt["interval"][1]):
                metrics["monitor/next_t_upper"] = nxt["interval"][1]
        mlflow.log_metrics(metrics, step=rec["step"])


def _np(a, name: str) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().to("cpu").double().numpy()
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be N x d embeddings, got shape {a.shape}")
    return a


def replay(t: Sequence[float], eigs: np.ndarray, **monitor_kwargs) -> tuple[StepwiseMonitor, list[dict[str, Any]]]:
    """Feed a recorded trajectory (T times, T x k spectra of the monitor's space) to a fresh monitor, record
    by record, as it would have seen them live. Returns the monitor and every forecast it made
    (each with ``made_at``)."""
    kwargs = {"log_to_mlflow": False, **monitor_kwargs}
    mon = StepwiseMonitor(**kwargs)
    key = "eig_c" if mon.space == "C" else "eig_cov"
    made: list[dict[str, Any]] = []
    for i, (ti, row) in enumerate(zip(t, np.asarray(eigs, np.float64), strict=True)):
        mon.observe(i, t=float(ti), **{key: row})
        made.extend(mon.forecast())
    return mon, made


def forecast_errors(forecasts: Sequence[Mapping[str, Any]], step_times: Mapping[int, float],
                    lead: Mapping[int, float] | float = 0.0) -> dict[str, Any]:
    """Relative errors |t_forecast - tau_j| / tau_j of the forecasts of mode j made at least ``lead``
    (per mode or one value, in t) before its actual step time tau_j (``step_times``: mode -> tau_j).

    Returns ``n``, ``median``, ``worst``, ``per_mode`` ({mode: [errors]}) and ``coverage`` (fraction of
    forecasts whose interval holds tau_j).
    """
    per_mode: dict[int, list[float]] = {}
    covered = 0
    for f in forecasts:
        j = int(f["mode"])
        tau = step_times.get(j)
        if tau is None or not math.isfinite(tau) or tau <= 0:
            continue
        ahead = lead.get(j, 0.0) if isinstance(lead, Mapping) else float(lead)
        if f["made_at"] > tau - ahead:
            continue
        per_mode.setdefault(j, []).append(abs(f["t"] - tau) / tau)
        covered += f["interval"][0] <= tau <= f["interval"][1]
    errs = [e for v in per_mode.values() for e in v]
    return {"n": len(errs), "median": float(np.median(errs)) if errs else None,
            "worst": float(np.max(errs)) if errs else None, "per_mode": per_mode,
            "coverage": covered / len(errs) if errs else None}
