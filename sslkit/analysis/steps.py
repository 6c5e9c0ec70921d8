"""Learning events ("steps") in eigenvalue trajectories (paper Sec. 6, Figs. 1-5; ``docs/theory.md`` §2, §11).

Input: checkpoint times t (T,) and a T x k array of spectra, column j = the j-th largest eigenvalue
at each checkpoint (``sslkit.analysis.spectra.trajectories``). Sorting mixes eigenmodes whose values cross,
so -- as in the paper's plots -- the j-th step is the rise of the j-th largest eigenvalue.
All levels are log10 eigenvalues; parameters are ``DEFAULTS`` (config ``analysis.steps``).

Two detectors find events; both then group events into steps the same way.

**Band detector** (``detector="bands"``; embeddings: their eigenvalues grow by decades, from small
init and, per Figs. 3-4, also from standard init):

1. Floor. Eigenvalues below ``floor_rel`` x (largest eigenvalue anywhere) -- zeros, negative
   eigenvalues of C, rounding noise -- are clipped to that floor and ignored when estimating bands.
2. Bands. All remaining log-eigenvalues (every checkpoint, every mode) are pooled and split into two
   clusters by exact 1-D 2-means (the Otsu split: it maximises the between-cluster variance). The
   cluster means are the ungrown level c_lo and the grown level c_hi, gap = c_hi - c_lo decades.
   Fig. 3's dashed line is the midpoint theta_mid = (c_lo + c_hi) / 2; the band edges are
   theta_lo = c_lo + q gap (top of the ungrown band) and theta_hi = c_hi - q gap (bottom of the grown
   band), q = ``band_margin``. If gap < ``min_gap_decades`` there are no two bands and no step is
   reported (a flat or smoothly drifting spectrum).
3. Learned modes. Mode j is learned during training when its final level F_j (median of its last
   ``final_window`` values) is in the grown band (>= theta_hi) and at some checkpoint it was at
   least rho below F_j, rho = min(``min_rise_decades``, gap / 2); i0 is the last such checkpoint.
   (Not "in the ungrown band": from small init the top eigenvalue often starts between the bands
   or even in the grown one -- the paper tunes it to ~1e-3 -- and is still learned in a clear step;
   rho keeps slow drifts and noise within the grown band from counting.) Modes at or above
   theta_hi at the first checkpoint without an event count as grown initially.
4. Plateau. P_j is the level mode j reaches when its rise has saturated. Its growth over the next
   ``plateau_log_window`` in log t (to the first checkpoint at >= t_i e^window, at least the next
   one) is computed at every checkpoint i >= i0; from the checkpoint of fastest growth on, the
   first one where it grows by less than ``plateau_tolerance`` x that fastest growth (or by less
   than the noise level, ``jump_noise_factor`` x sigma x sqrt 2 with sigma as in the jump
   detector) is saturated, and P_j is the median of the mode's values over that window (F_j if it
   never saturates). A per-mode plateau rather than one grown level matters for sorted spectra:
   the j-th largest eigenvalue jumps to the current smallest grown level when the j-th mode is
   learned and only creeps up later, as modes with larger grown levels arrive (SimCLR/VICReg
   covariances).
5. Event. The first time after i0 at which mode j reaches ``event_fraction`` x P_j (at least
   theta_mid), interpolated linearly in (log t, log lambda) between checkpoints (linearly in t on a
   segment that starts at t = 0). With event_fraction = 1/2 this is the theory's step time:
   lambda_j(tau_j) = 1/2 of the grown level 1 (Eq. 16). Rise interval: the times it reaches
   r_lo P_j and r_hi P_j, (r_lo, r_hi) = ``rise_fractions`` (default 1/4 and 3/4: the middle of
   the rise, where the loss visibly drops).

**Jump detector** (``detector="jumps"``; hidden representations, whose covariance eigenvalues
change by factors rather than decades -- BatchNorm keeps ResNet features O(1) even from small
init -- so there are no two bands):

1. Noise. sigma = robust standard deviation of the log-eigenvalues' second differences over time
   (1.4826 x median |d2| / sqrt(6), pooled over modes): the checkpoint-to-checkpoint jitter.
2. Jumps. For each mode and checkpoint i (t_i > 0), its growth G(i) over the next
   ``jump_log_window`` in log t (to the first checkpoint at >= t_i e^window). A jump is a maximal run
   of checkpoints with G >= g_min, g_min = max(``min_jump_decades``, ``jump_noise_factor`` x sigma
   x sqrt 2); it spans from the run's first checkpoint to the window end of its last one, and its
   total rise must be >= g_min too. A mode may jump several times.
3. Event = the time the mode crosses the log-midpoint of the jump's start and end levels
   (interpolated as above); its interval runs from the crossing of r_lo to that of r_hi of the way
   up, in log lambda ((r_lo, r_hi) = ``rise_fractions``).

**Steps** (both detectors). Events sorted by time; consecutive events belong to the same step when
their intervals overlap by more than ``max_overlap`` x the shorter one (lengths in log t) or when
their times are closer than ``min_log_separation`` in log t. A step's time is the geometric mean of
its events' times, its interval the union of theirs. ``sequential`` is True when every step holds
exactly one event (one mode at a time), False otherwise, None when nothing was found.

**Hidden vs embedding** (Fig. 5). An embedding step at t_e has a hidden step "within tolerance"
when t_e lies in some hidden step's interval widened by ``coincidence_log_tol`` in log t on each
side. ``hidden_coincidence`` = the fraction of embedding steps that do; ``hidden_coverage`` = the
fraction of the run's log-time axis (from the first t > 0) covered by those widened intervals,
i.e. the coincidence expected by chance for randomly placed embedding steps.

Everything returned is JSON serialisable (floats, ints, lists, None).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "DEFAULTS",
    "DETECTORS",
    "Bands",
    "estimate_bands",
    "crossing_time",
    "detect_steps",
    "group_events",
    "coincidence_fraction",
    "interval_coverage",
    "analyze_run",
    "dip_statistic",
    "dip_null",
    "dip_test",
    "bimodality",
]

DETECTORS = ("bands", "jumps")

DEFAULTS: dict[str, Any] = {
    "embedding_detector": "bands",  # detector for embedding spectra: bands | jumps
    "hidden_detector": "jumps",     # detector for hidden-representation spectra: bands | jumps
    "floor_rel": 1e-12,           # eigenvalues below this x the largest are numerically zero
    "min_gap_decades": 1.0,       # bands: the two bands must be at least this far apart (log10)
    "band_margin": 1.0 / 3.0,     # bands: band edges at this fraction of the gap from each centre
    "min_rise_decades": 2.0,      # bands: a learned mode rises at least this much (or gap / 2) to its final level
    "event_fraction": 0.5,        # bands: event = first time lambda_j >= event_fraction * plateau
    "rise_fractions": (0.25, 0.75),  # bands: rise interval from/to these fractions of the plateau
    "final_window": 3,            # bands: final level = median of the last this many checkpoints
    "plateau_log_window": 0.1,    # bands: saturation test window, in log t
    "plateau_tolerance": 0.1,     # bands: saturated = grows by less than this x the fastest growth
    "jump_log_window": 0.25,      # jumps: growth measured over this window in log t
    "min_jump_decades": 0.1,      # jumps: minimal growth (decades) over the window
    "jump_noise_factor": 4.0,     # jumps: ... and at least this many noise standard deviations
    "max_overlap": 0.25,          # intervals overlapping more than this x the shorter -> one step
    "min_log_separation": 0.02,   # events closer than this in log t -> one step
    "coincidence_log_tol": 0.1,   # hidden step interval widened by this in log t (Fig. 5)
    "dip_times": 8,               # bimodality: pool the spectra of this many rows spread over log t
    "dip_trials": 200,            # bimodality: uniform samples of the dip test's Monte-Carlo null
    "dip_seed": 0,                # bimodality: their seed
    "dip_alpha": 0.05,            # bimodality: bimodal when the dip test's p-value is below this
}


class Bands(dict):
    """Ungrown/grown bands of a spectrum in eigenvalue units (a plain dict, JSON serialisable):
    ``ungrown`` (10**c_lo), ``grown`` (10**c_hi), ``threshold`` (midpoint), ``lower`` (theta_lo),
    ``upper`` (theta_hi), ``gap_decades``, ``floor`` and ``separated`` (gap >= min_gap_decades)."""


def _params(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    p = dict(DEFAULTS)
    for k, v in (overrides or {}).items():
        if k not in DEFAULTS:
            raise KeyError(f"unknown step-detection parameter {k!r} (known: {', '.join(DEFAULTS)})")
        p[k] = v
    lo, hi = p["rise_fractions"]
    if not (0 < lo < p["event_fraction"] < hi <= 1):
        raise ValueError(f"need 0 < rise_fractions[0] < event_fraction < rise_fractions[1] <= 1, got "
                         f"rise_fractions={p['rise_fractions']}, event_fraction={p['event_fraction']}")
    if not 0 <= p["band_margin"] < 0.5:
        raise ValueError(f"band_margin must be in [0, 0.5), got {p['band_margin']}")
    if int(p["final_window"]) < 1:
        raise ValueError(f"final_window must be >= 1, got {p['final_window']}")
    if int(p["dip_times"]) < 1 or int(p["dip_trials"]) < 1:
        raise ValueError(f"dip_times and dip_trials must be >= 1, got {p['dip_times']} and {p['dip_trials']}")
    if not 0 < p["dip_alpha"] < 1:
        raise ValueError(f"dip_alpha must be in (0, 1), got {p['dip_alpha']}")
    for key in ("embedding_detector", "hidden_detector"):
        if p[key] not in DETECTORS:
            raise ValueError(f"{key} must be one of {DETECTORS}, got {p[key]!r}")
    p["rise_fractions"] = [float(lo), float(hi)]
    return p


def _check_inputs(t, eigs) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(t, dtype=np.float64).ravel()
    eigs = np.asarray(eigs, dtype=np.float64)
    if eigs.ndim == 1:
        eigs = eigs[:, None]
    if eigs.ndim != 2 or eigs.shape[0] != t.size:
        raise ValueError(f"eigs must be T x k with T = len(t) = {t.size}, got shape {eigs.shape}")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError("times t must be finite and >= 0")
    order = np.argsort(t, kind="stable")
    t, eigs = t[order], eigs[order]
    if np.any(np.diff(t) <= 0):
        raise ValueError("times t must be distinct (two checkpoints share a time)")
    eigs = np.where(np.isfinite(eigs), eigs, -np.inf)  # NaN/inf (diverged) -> treated as floor
    return t, eigs


def _two_means_1d(x: np.ndarray) -> tuple[float, float]:
    """Exact 1-D 2-means (Otsu): the split of sorted ``x`` maximising between-cluster variance."""
    x = np.sort(x)
    n = x.size
    if n < 2:
        return (float(x[0]), float(x[0])) if n else (0.0, 0.0)
    c = np.cumsum(x)
    k = np.arange(1, n)                       # left cluster = x[:k]
    m_lo = c[:-1] / k
    m_hi = (c[-1] - c[:-1]) / (n - k)
    between = k * (n - k) * (m_hi - m_lo) ** 2
    valid = x[1:] > x[:-1]                    # split only between distinct values
    if not valid.any():
        return float(x[0]), float(x[0])
    between = np.where(valid, between, -np.inf)
    i = int(np.argmax(between))
    return float(m_lo[i]), float(m_hi[i])


def estimate_bands(eigs, floor_rel: float = DEFAULTS["floor_rel"], band_margin: float = DEFAULTS["band_margin"],
                   min_gap_decades: float = DEFAULTS["min_gap_decades"]) -> Bands:
    """Ungrown and grown bands of a T x k spectrum (band detector, definitions 1-2)."""
    eigs = np.asarray(eigs, dtype=np.float64)
    top = np.max(eigs[np.isfinite(eigs)]) if np.isfinite(eigs).any() else 0.0
    if not top > 0:
        return Bands(ungrown=None, grown=None, threshold=None, lower=None, upper=None,
                     gap_decades=0.0, floor=None, separated=False)
    floor = floor_rel * top
    y = np.log10(eigs[np.isfinite(eigs) & (eigs > floor)])
    c_lo, c_hi = _two_means_1d(y)
    gap = c_hi - c_lo
    return Bands(ungrown=10 ** c_lo, grown=10 ** c_hi, threshold=10 ** ((c_lo + c_hi) / 2),
                 lower=10 ** (c_lo + band_margin * gap), upper=10 ** (c_hi - band_margin * gap),
                 gap_decades=float(gap), floor=float(floor), separated=bool(gap >= min_gap_decades))


def crossing_time(t: np.ndarray, y: np.ndarray, level: float, start: int = 0) -> float | None:
    """First time after index ``start`` at which ``y`` (log10 lambda) reaches ``level`` from below.

    Interpolates linearly in (log t, y) between the two checkpoints around the crossing, or in
    (t, y) when the earlier one is at t = 0. None if ``y`` never reaches ``level`` after ``start``;
    ``t[start]`` if it is already there.
    """
    if y[start] >= level:
        return float(t[start])
    above = np.nonzero(y[start + 1:] >= level)[0]
    if above.size == 0:
        return None
    i = start + 1 + int(above[0])
    y0, y1 = y[i - 1], y[i]
    frac = 1.0 if not np.isfinite(y0) else (level - y0) / (y1 - y0)
    if t[i - 1] > 0:
        return float(math.exp(math.log(t[i - 1]) + frac * (math.log(t[i]) - math.log(t[i - 1]))))
    return float(t[i - 1] + frac * (t[i] - t[i - 1]))


def _window_end(t: np.ndarray, i: int, window: float) -> int:
    """Index of the first checkpoint at >= t_i e^window (at least i + 1, at most the last)."""
    k = int(np.searchsorted(t, t[i] * math.exp(window), side="left"))
    return min(max(k, i + 1), t.size - 1)


def _plateau(t: np.ndarray, y: np.ndarray, i0: int, final: float, window: float, rel_tol: float,
             noise_floor: float) -> float:
    """Saturation level of a rise that starts after index ``i0`` (band detector, definition 4)."""
    T = t.size
    if i0 >= T - 2:
        return final
    idx = np.arange(i0, T - 1)
    ends = np.array([_window_end(t, i, window) for i in idx])
    growth = y[ends] - y[idx]
    i_fast = int(np.argmax(growth))
    slow = np.nonzero(growth[i_fast:] < max(rel_tol * growth[i_fast], noise_floor))[0]
    if slow.size == 0:
        return final
    i = i_fast + int(slow[0])
    return float(np.median(y[idx[i]:ends[i] + 1]))


def _band_events(t, y, bands, p, out) -> list[dict[str, Any]]:
    T, k = y.shape
    lo, mid, hi = (math.log10(bands[b]) for b in ("lower", "threshold", "upper"))
    w = min(int(p["final_window"]), T)
    final = np.median(y[-w:], axis=0)
    out["n_grown_final"] = int((final >= hi).sum())
    rho = min(p["min_rise_decades"], bands["gap_decades"] / 2)
    noise_floor = p["jump_noise_factor"] * _noise_sigma(y) * math.sqrt(2)
    r_lo, r_hi = p["rise_fractions"]
    events = []
    for j in range(k):
        if final[j] < hi:
            continue
        below = np.nonzero(y[:, j] <= final[j] - rho)[0]
        if below.size == 0 or below[-1] >= T - 1:
            continue
        i0 = int(below[-1])
        P = _plateau(t, y[:, j], i0, final[j], p["plateau_log_window"], p["plateau_tolerance"], noise_floor)
        levels = [max(P + math.log10(f), mid) for f in (r_lo, p["event_fraction"], r_hi)]
        a, e, b = (crossing_time(t, y[:, j], lev, i0) for lev in levels)
        if e is None or a is None:
            continue
        if b is None:  # never reaches the upper rise level after i0 (noisy tail): close at the end
            b = float(t[-1])
        events.append({"mode": j, "time": e, "interval": [a, b]})
    learned = {ev["mode"] for ev in events}
    out["n_grown_initially"] = int(sum(1 for j in range(k) if y[0, j] >= hi and j not in learned))
    return events


def _noise_sigma(y: np.ndarray) -> float:
    """Robust std of the checkpoint-to-checkpoint jitter of log-eigenvalues (jump detector, 1)."""
    if y.shape[0] < 3:
        return 0.0
    d2 = y[2:] - 2 * y[1:-1] + y[:-2]
    d2 = d2[np.isfinite(d2)]
    return float(1.4826 * np.median(np.abs(d2)) / math.sqrt(6)) if d2.size else 0.0


def _jump_events(t, y, p, out) -> list[dict[str, Any]]:
    T, k = y.shape
    sigma = _noise_sigma(y)
    g_min = max(p["min_jump_decades"], p["jump_noise_factor"] * sigma * math.sqrt(2))
    out["noise_decades"] = sigma
    out["min_jump"] = g_min
    pos = np.nonzero(t > 0)[0]
    if pos.size < 2:
        return []
    first = int(pos[0])
    r_lo, r_hi = p["rise_fractions"]
    ends = np.array([_window_end(t, i, p["jump_log_window"]) for i in range(first, T - 1)], dtype=int)
    events = []
    for j in range(k):
        yj = y[:, j]
        growth = yj[ends] - yj[first:T - 1]
        mask = growth >= g_min
        i = 0
        while i < mask.size:
            if not mask[i]:
                i += 1
                continue
            s = i
            while i + 1 < mask.size and mask[i + 1]:
                i += 1
            i_start, i_end = first + s, int(ends[i])
            y0, y1 = yj[i_start], yj[i_end]
            if y1 - y0 >= g_min:
                a, e, b = (crossing_time(t, yj, y0 + f * (y1 - y0), i_start) for f in (r_lo, 0.5, r_hi))
                if a is not None and e is not None and b is not None:
                    events.append({"mode": j, "time": e, "interval": [a, b]})
            i += 1
    return events


def group_events(times, intervals, max_overlap: float = DEFAULTS["max_overlap"],
                 min_log_separation: float = DEFAULTS["min_log_separation"]) -> list[list[int]]:
    """Group events into steps (see "Steps"). ``times``: event times (> 0); ``intervals``: their
    intervals [a, b] (a > 0). Returns lists of event positions, ordered by time."""
    times = np.asarray(times, dtype=np.float64)
    order = np.argsort(times, kind="stable")
    groups: list[list[int]] = []
    for pos in order:
        if groups:
            prev = groups[-1][-1]
            la, lb = np.log(intervals[prev])
            ma, mb = np.log(intervals[pos])
            overlap = max(0.0, min(lb, mb) - max(la, ma))
            shorter = min(lb - la, mb - ma)
            close = np.log(times[pos]) - np.log(times[prev]) < min_log_separation
            if close or (shorter > 0 and overlap > max_overlap * shorter):
                groups[-1].append(int(pos))
                continue
        groups.append([int(pos)])
    return groups


def detect_steps(t, eigs, params: Mapping[str, Any] | None = None, n_modes: int | None = None,
                 detector: str = "bands") -> dict[str, Any]:
    """Learning steps of one space's spectrum trajectories (definitions in the module docstring).

    ``t``: T checkpoint times (>= 0, distinct; sorted here); ``eigs``: T x k, column j = j-th
    largest eigenvalue; ``n_modes`` keeps the top k columns; ``detector``: "bands" or "jumps".
    Returns a JSON-serialisable dict: ``step_times`` (ordered), ``n_steps``, ``sequential`` (bool,
    None without steps), ``step_sizes`` (events per step), ``step_modes`` (mode indices per step),
    ``step_intervals``, ``events`` ([{mode, time, interval}]), ``n_events``, ``event_times`` (per
    mode: its first event or None), ``sequential_fraction`` (events alone in their step),
    ``n_modes``, ``n_grown_initially`` / ``n_grown_final`` (bands), ``bands`` (bands; the Fig. 3
    lines), ``noise_decades`` / ``min_jump`` (jumps), ``reason`` (why nothing was found, else None),
    ``detector`` and the ``params`` used.
    """
    p = _params(params)
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
    t, eigs = _check_inputs(t, eigs)
    if n_modes is not None:
        eigs = eigs[:, :n_modes]
    T, k = eigs.shape
    out: dict[str, Any] = {"step_times": [], "n_steps": 0, "sequential": None, "step_sizes": [],
                           "step_modes": [], "step_intervals": [], "events": [], "n_events": 0,
                           "event_times": [None] * k, "sequential_fraction": None, "n_modes": k,
                           "n_grown_initially": None, "n_grown_final": None, "bands": None,
                           "noise_decades": None, "min_jump": None, "reason": None, "detector": detector,
                           "params": p}
    bands = estimate_bands(eigs, p["floor_rel"], p["band_margin"], p["min_gap_decades"])
    out["bands"] = dict(bands)
    if bands["grown"] is None:
        out["reason"] = "no positive eigenvalue"
        return out
    if T < 2:
        out["reason"] = "fewer than two checkpoints"
        return out
    y = np.log10(np.maximum(eigs, bands["floor"]))
    if detector == "bands":
        if not bands["separated"]:
            out["reason"] = (f"no band gap: grown and ungrown levels {bands['gap_decades']:.2f} decades apart "
                             f"(< min_gap_decades = {p['min_gap_decades']})")
            return out
        events = _band_events(t, y, bands, p, out)
    else:
        events = _jump_events(t, y, p, out)
    events.sort(key=lambda ev: (ev["time"], ev["mode"]))
    out["events"] = events
    out["n_events"] = len(events)
    for ev in events:
        if out["event_times"][ev["mode"]] is None:
            out["event_times"][ev["mode"]] = ev["time"]
    if not events:
        out["reason"] = ("no eigenvalue rose from below the grown band into it" if detector == "bands"
                         else "no eigenvalue jumped")
        return out
    times = [ev["time"] for ev in events]
    groups = group_events(times, [ev["interval"] for ev in events], p["max_overlap"], p["min_log_separation"])
    out["step_times"] = [float(np.exp(np.mean(np.log([times[i] for i in g])))) for g in groups]
    out["step_modes"] = [sorted(events[i]["mode"] for i in g) for g in groups]
    out["step_intervals"] = [[min(events[i]["interval"][0] for i in g), max(events[i]["interval"][1] for i in g)]
                             for g in groups]
    out["step_sizes"] = [len(g) for g in groups]
    out["n_steps"] = len(groups)
    out["sequential"] = all(s == 1 for s in out["step_sizes"])
    out["sequential_fraction"] = sum(s == 1 for s in out["step_sizes"]) / len(events)
    return out


# ---------------------------------------------------------------------------------------------
# Bimodality: Hartigan's dip test on the pooled log-eigenvalues (Figs. 3-4)
# ---------------------------------------------------------------------------------------------

def _hull(xs: np.ndarray, ys: np.ndarray, lower: bool) -> np.ndarray:
    """Indices of the vertices of the greatest convex minorant (``lower``) or least concave majorant of
    the points (xs, ys), xs strictly increasing (Andrew's monotone chain)."""
    sign = 1.0 if lower else -1.0
    hull: list[int] = []
    for i in range(xs.size):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = (xs[b] - xs[a]) * (ys[i] - ys[a]) - (ys[b] - ys[a]) * (xs[i] - xs[a])
            if sign * cross <= 0:
                hull.pop()
            else:
                break
        hull.append(i)
    return np.asarray(hull, dtype=int)


def _interp_hull(xs: np.ndarray, ys: np.ndarray, verts: np.ndarray) -> np.ndarray:
    return np.interp(xs, xs[verts], ys[verts])


def dip_statistic(x) -> float:
    """Hartigan's dip of the empirical distribution of ``x``: the sup distance to the closest
    unimodal distribution function (Hartigan & Hartigan 1985; algorithm AS 217, Hartigan 1985).

    It lies in [1/(2n), 1/4]: 1/(2n) for evenly spaced values, 1/4 for two equal point masses (1/5 for
    two equal, well separated uniform blocks). Ties are merged into one point carrying their mass.
    Invariant under increasing affine maps of ``x``.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    n = x.size
    if n < 2:
        return 0.0 if n == 0 else 0.5
    xs, counts = np.unique(x, return_counts=True)
    if xs.size < 2:
        return 0.5 / n
    hi_cdf = np.cumsum(counts) / n          # F at x_i (after its jump)
    lo_cdf = hi_cdf - counts / n            # F just before x_i
    lo, hi = 0, xs.size - 1
    D = 1.0 / n                             # 2 x the smallest possible dip of n points
    while True:
        sl = slice(lo, hi + 1)
        X, Fl, Fh = xs[sl], lo_cdf[sl], hi_cdf[sl]
        g_idx = _hull(X, Fl, lower=True)    # GCM of the lower cdf
        l_idx = _hull(X, Fh, lower=False)   # LCM of the upper cdf
        G = _interp_hull(X, Fl, g_idx)
        L = _interp_hull(X, Fh, l_idx)
        # largest vertical distance between GCM and LCM, at a vertex of either
        dg = L[g_idx] - G[g_idx]
        dl = L[l_idx] - G[l_idx]
        if dl.max() > dg.max():
            d = float(dl.max())
            xr = int(l_idx[np.nonzero(dl == dl.max())[0][-1]])
            xl = int(g_idx[g_idx <= xr][-1])
        else:
            d = float(dg.max())
            xl = int(g_idx[np.nonzero(dg == dg.max())[0][0]])
            xr = int(l_idx[l_idx >= xl][0])
        if d <= D or (xl == 0 and xr == X.size - 1):
            return D / 2
        # deviations of the cdf from the unimodal fit outside the new modal interval [xl, xr]
        left = float(np.max(Fh[:xl + 1] - G[:xl + 1]))
        right = float(np.max(L[xr:] - Fl[xr:]))
        D = max(D, left, right)
        lo, hi = lo + xl, lo + xr


@functools.lru_cache(maxsize=32)
def dip_null(n: int, trials: int, seed: int) -> np.ndarray:
    """Dips of ``trials`` samples of n uniform values (the least favourable unimodal null; cached, read-only)."""
    rng = np.random.default_rng(seed)
    out = np.array([dip_statistic(rng.random(n)) for _ in range(int(trials))])
    out.flags.writeable = False
    return out


def dip_test(x, trials: int = DEFAULTS["dip_trials"], seed: int = DEFAULTS["dip_seed"]) -> dict[str, Any]:
    """Hartigan's dip test of unimodality: ``dip``, ``p_value`` = (1 + #{null dips >= dip}) / (1 + trials)
    against ``dip_null`` of the same size, and ``n``. A small p rejects unimodality."""
    x = np.asarray(x, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    d = dip_statistic(x)
    null = dip_null(int(x.size), int(trials), int(seed)) if x.size >= 2 else np.zeros(0)
    p = float((1 + np.sum(null >= d)) / (1 + null.size))
    return {"dip": float(d), "p_value": p, "n": int(x.size), "trials": int(trials)}


def _spread_rows(t: np.ndarray, n_rows: int) -> np.ndarray:
    """Indices of up to ``n_rows`` rows spread log-uniformly over t > 0 (the last row always among them)."""
    pos = np.nonzero(t > 0)[0]
    if pos.size <= n_rows:
        return pos
    targets = np.exp(np.linspace(np.log(t[pos[0]]), np.log(t[pos[-1]]), n_rows))
    idx = {int(pos[np.argmin(np.abs(np.log(t[pos]) - math.log(v)))]) for v in targets}
    return np.array(sorted(idx), dtype=int)


def bimodality(t, eigs, params: Mapping[str, Any] | None = None, n_modes: int | None = None) -> dict[str, Any]:
    """Dip test of the "two bands" picture (Figs. 3-4): are the log10 eigenvalues bimodal?

    Sample: the log10 eigenvalues above the floor (``floor_rel`` x the largest, as ``estimate_bands``) of
    every mode at ``dip_times`` rows spread log-uniformly over t > 0 (rows, not the whole dense
    history: neighbouring rows repeat nearly the same values, which would inflate the sample size
    the p-value assumes). Returns ``dip_test``'s ``dip``, ``p_value``, ``n`` plus ``rows`` (the times
    used), ``alpha`` and ``bimodal`` (p_value < alpha: unimodality rejected). Unlike the 2-means
    split with its 1-decade gap (``estimate_bands``), this rejects a unimodal spread however wide.
    """
    p = _params(params)
    t, eigs = _check_inputs(t, eigs)
    if n_modes is not None:
        eigs = eigs[:, :n_modes]
    rows = _spread_rows(t, int(p["dip_times"]))
    vals = eigs[rows]
    finite = vals[np.isfinite(vals)]
    top = float(finite.max()) if finite.size else 0.0
    if not top > 0:
        return {"dip": None, "p_value": None, "n": 0, "trials": int(p["dip_trials"]), "rows": [],
                "alpha": p["dip_alpha"], "bimodal": None}
    y = np.log10(vals[np.isfinite(vals) & (vals > p["floor_rel"] * top)])
    res = dip_test(y, int(p["dip_trials"]), int(p["dip_seed"]))
    res.update(rows=[float(v) for v in t[rows]], alpha=float(p["dip_alpha"]),
               bimodal=bool(res["p_value"] < p["dip_alpha"]))
    return res


def coincidence_fraction(times, intervals, log_tol: float = DEFAULTS["coincidence_log_tol"]) -> float | None:
    """Fraction of ``times`` lying in some interval [a e^-tol, b e^tol] of ``intervals``.

    None when there is no time; 0.0 when there is no interval.
    """
    times = np.asarray(times, dtype=np.float64)
    if times.size == 0:
        return None
    if len(intervals) == 0:
        return 0.0
    iv = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
    lo, hi = iv[:, 0] * math.exp(-log_tol), iv[:, 1] * math.exp(log_tol)
    hit = (times[:, None] >= lo[None, :] * (1 - 1e-12)) & (times[:, None] <= hi[None, :] * (1 + 1e-12))
    return float(hit.any(axis=1).mean())


def interval_coverage(intervals, t_min: float, t_max: float, log_tol: float = DEFAULTS["coincidence_log_tol"]) -> float:
    """Fraction of [log t_min, log t_max] covered by the intervals widened by ``log_tol`` (chance level)."""
    if t_min <= 0 or t_max <= t_min or len(intervals) == 0:
        return 0.0
    lo_all, hi_all = math.log(t_min), math.log(t_max)
    segs = sorted((max(math.log(a) - log_tol, lo_all), min(math.log(b) + log_tol, hi_all))
                  for a, b in intervals if a > 0)
    covered, cur_a, cur_b = 0.0, None, None
    for a, b in segs:
        if b <= a:
            continue
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                covered += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None:
        covered += cur_b - cur_a
    return covered / (hi_all - lo_all)


def analyze_run(t, embedding_eigs, hidden_eigs=None, *, t_hidden=None, params: Mapping[str, Any] | None = None,
                n_modes: int | None = None, hidden_modes: int | None = None) -> dict[str, Any]:
    """Per-run step summary: the embedding steps and, with hidden spectra, the Fig. 5 coincidence.

    ``embedding_eigs``: T x d (the space the paper shows for the method: C for Barlow Twins, the
    covariance otherwise), analysed with ``params["embedding_detector"]``; ``hidden_eigs``: T' x D at
    ``t_hidden`` (default ``t``), top ``hidden_modes`` columns (default: as many as the embedding
    has modes), analysed with ``params["hidden_detector"]``. Returns ``step_times``, ``n_steps``,
    ``sequential``, ``hidden_coincidence`` (None without hidden data or without embedding steps),
    ``hidden_coincidence_reverse`` (fraction of hidden steps whose time lies in a widened embedding
    step interval), ``hidden_coverage`` (the chance level of ``hidden_coincidence``), ``bimodality``
    (the dip test of the embedding spectra, ``bimodality``) and the full ``embedding`` / ``hidden``
    results of ``detect_steps``.
    """
    p = _params(params)
    emb = detect_steps(t, embedding_eigs, p, n_modes=n_modes, detector=p["embedding_detector"])
    res = {"step_times": emb["step_times"], "n_steps": emb["n_steps"], "sequential": emb["sequential"],
           "hidden_coincidence": None, "hidden_coincidence_reverse": None, "hidden_coverage": None,
           "bimodality": bimodality(t, embedding_eigs, p, n_modes=n_modes), "embedding": emb, "hidden": None}
    if hidden_eigs is not None:
        th = np.asarray(t if t_hidden is None else t_hidden, dtype=np.float64)
        hm = hidden_modes if hidden_modes is not None else emb["n_modes"]
        hid = detect_steps(th, hidden_eigs, p, n_modes=hm, detector=p["hidden_detector"])
        tol = p["coincidence_log_tol"]
        res["hidden"] = hid
        res["hidden_coincidence"] = coincidence_fraction(emb["step_times"], hid["step_intervals"], tol)
        res["hidden_coincidence_reverse"] = coincidence_fraction(hid["step_times"], emb["step_intervals"], tol)
        tpos = th[th > 0]
        if tpos.size >= 2:
            res["hidden_coverage"] = interval_coverage(hid["step_intervals"], float(tpos.min()), float(tpos.max()), tol)
    return res
