"""Learning events ("steps") in eigenvalue trajectories (paper Sec. 6, Figs. 1-5; ``theory.md`` §1, §4).

Input: checkpoint times t (T,) and a T x k array of spectra, column j = the j-th largest eigenvalue
at each checkpoint (``sslkit.spectrum.trajectories``). Sorting mixes eigenmodes whose values cross,
so -- as in the paper's plots -- the j-th step is the rise of the j-th largest eigenvalue.

Definitions (all in log10 eigenvalue, parameters in ``DEFAULTS`` / config ``analysis.steps``):

1. Floor. Eigenvalues below ``floor_rel`` x (largest eigenvalue anywhere) -- zeros, negative
   eigenvalues of C, rounding noise -- are clipped to that floor and ignored when estimating bands.
2. Bands. All remaining log-eigenvalues (every checkpoint, every mode) are pooled and split into two
   clusters by exact 1-D 2-means (the Otsu split: it maximises the between-cluster variance). The
   cluster means are the ungrown level c_lo and the grown level c_hi, gap = c_hi - c_lo decades.
   Fig. 3's dashed line is the midpoint theta_mid = (c_lo + c_hi) / 2; the hysteresis edges are
   theta_lo = c_lo + q gap (top of the ungrown band) and theta_hi = c_hi - q gap (bottom of the grown
   band), q = ``band_margin``. If gap < ``min_gap_decades`` the spectrum has no two bands and no
   step is reported (a flat or smoothly drifting spectrum).
3. Learned modes. Mode j is learned during training when it is in the ungrown band (<= theta_lo) at
   some checkpoint and its final level F_j (median of its last ``final_window`` values) is in the
   grown band (>= theta_hi). Modes above theta_lo at every checkpoint count as grown initially
   (standard init: part of the spectrum is large from the start).
4. Plateau. Let i0 be the last checkpoint at which mode j is in the ungrown band. Its plateau P_j is
   the level it reaches when its rise has saturated: the first checkpoint i after it crosses
   theta_mid at which it grows by less than ``plateau_tolerance`` decades over the next
   ``plateau_log_window`` in log t (to the first checkpoint at >= t_i e^window, at least the next
   one); P_j is the median of its values over that window (F_j if it never saturates). A per-mode
   plateau rather than a common grown level matters for sorted spectra: the j-th largest
   eigenvalue jumps to the current smallest grown level when the j-th mode is learned and only
   creeps up later, as modes with larger grown levels arrive (SimCLR/VICReg covariances).
5. Event time. The first time after i0 at which mode j reaches ``event_fraction`` x P_j (but at
   least theta_mid), interpolated linearly in (log t, log lambda) between checkpoints (linearly in t
   on a segment that starts at t = 0). With event_fraction = 1/2 this is the theory's step time:
   lambda_j(tau_j) = 1/2 of the grown level 1 (Eq. 16). Rise interval: the times it reaches
   r_lo P_j and r_hi P_j, (r_lo, r_hi) = ``rise_fractions`` (default 1/4 and 3/4: the middle half
   of the rise, the part where the loss visibly drops).
6. Steps. Events sorted by time; consecutive events belong to the same step when their rise
   intervals overlap by more than ``max_overlap`` x the shorter interval (lengths in log t) or when
   their event times are closer than ``min_log_separation`` in log t. Each step's time is the
   geometric mean of its events' times. ``sequential`` is True when every step holds exactly one
   mode (the modes are learned one at a time), False otherwise, and None when nothing was learned.
7. Hidden vs embedding (Fig. 5). ``hidden_coincidence`` = the fraction of embedding steps that have
   a hidden-space step within ``coincidence_log_tol`` in log t (|log t_h - log t_e| <= tol); None
   without hidden spectra or without embedding steps.

Everything returned is JSON serialisable (floats, ints, lists, None).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

__all__ = [
    "DEFAULTS",
    "Bands",
    "estimate_bands",
    "crossing_time",
    "detect_steps",
    "group_events",
    "coincidence_fraction",
    "analyze_run",
]

DEFAULTS: dict[str, Any] = {
    "floor_rel": 1e-12,           # eigenvalues below this x the largest are numerically zero
    "min_gap_decades": 1.0,       # the two bands must be at least this far apart (log10)
    "band_margin": 1.0 / 3.0,     # hysteresis: band edges at this fraction of the gap from each centre
    "event_fraction": 0.5,        # event = first time lambda_j >= event_fraction * final level
    "rise_fractions": (0.25, 0.75),  # rise interval from/to these fractions of the final level
    "final_window": 3,            # final level = median of the last this many checkpoints
    "plateau_log_window": 0.1,    # saturation test window, in log t
    "plateau_tolerance": 0.1,     # saturated: grows by less than this (decades) over the window
    "max_overlap": 0.25,          # rise intervals overlapping more than this x the shorter -> one step
    "min_log_separation": 0.02,   # events closer than this in log t -> one step
    "coincidence_log_tol": 0.1,   # hidden step within this in log t of an embedding step
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
    """Ungrown and grown bands of a T x k spectrum (definition 2 of the module docstring)."""
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


def _plateau(t: np.ndarray, y: np.ndarray, i0: int, mid: float, final: float, window: float,
             tol: float) -> float:
    """Saturation level of a rise that starts after index ``i0`` (definition 4); log10 units."""
    T = t.size
    above = np.nonzero(y[i0 + 1:] >= mid)[0]
    if above.size == 0:
        return final
    for i in range(i0 + 1 + int(above[0]), T - 1):
        k = int(np.searchsorted(t, t[i] * math.exp(window), side="left"))
        k = min(max(k, i + 1), T - 1)
        if y[k] - y[i] < tol:
            return float(np.median(y[i:k + 1]))
    return final


def group_events(times, intervals, max_overlap: float = DEFAULTS["max_overlap"],
                 min_log_separation: float = DEFAULTS["min_log_separation"]) -> list[list[int]]:
    """Group events into steps (definition 6). ``times``: event times (> 0); ``intervals``: their
    rise intervals [a, b]. Returns lists of event positions, ordered by time."""
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


def detect_steps(t, eigs, params: Mapping[str, Any] | None = None, n_modes: int | None = None) -> dict[str, Any]:
    """Learning events of one space's spectrum trajectories (definitions in the module docstring).

    ``t``: T checkpoint times (>= 0, distinct; sorted here); ``eigs``: T x k, column j = j-th
    largest eigenvalue; ``n_modes`` keeps the top k columns. Returns a JSON-serialisable dict:
    ``step_times`` (ordered), ``n_steps``, ``sequential`` (bool, None without steps),
    ``step_sizes`` (modes per step), ``step_modes`` (mode indices per step), ``n_events``,
    ``event_times`` / ``rise_intervals`` (per mode, None where not learned), ``sequential_fraction``
    (events alone in their step), ``n_modes``, ``n_grown_initially``, ``n_grown_final``, ``bands``,
    ``reason`` (why nothing was detected, else None) and the ``params`` used.
    """
    p = _params(params)
    t, eigs = _check_inputs(t, eigs)
    if n_modes is not None:
        eigs = eigs[:, :n_modes]
    T, k = eigs.shape
    out: dict[str, Any] = {"step_times": [], "n_steps": 0, "sequential": None, "step_sizes": [],
                           "step_modes": [], "n_events": 0, "event_times": [None] * k,
                           "rise_intervals": [None] * k, "sequential_fraction": None, "n_modes": k,
                           "n_grown_initially": 0, "n_grown_final": 0, "bands": None, "reason": None,
                           "params": p}
    bands = estimate_bands(eigs, p["floor_rel"], p["band_margin"], p["min_gap_decades"])
    out["bands"] = dict(bands)
    if bands["grown"] is None:
        out["reason"] = "no positive eigenvalue"
        return out
    y = np.log10(np.maximum(eigs, bands["floor"]))
    lo, mid, hi = (math.log10(bands[b]) for b in ("lower", "threshold", "upper"))
    w = min(int(p["final_window"]), T)
    final = np.median(y[-w:], axis=0)
    out["n_grown_final"] = int((final >= hi).sum()) if bands["separated"] else 0
    out["n_grown_initially"] = int(np.all(y > lo, axis=0).sum()) if bands["separated"] else 0
    if not bands["separated"]:
        out["reason"] = f"no band gap: grown and ungrown levels {bands['gap_decades']:.2f} decades apart " \
                        f"(< min_gap_decades = {p['min_gap_decades']})"
        return out
    if T < 2:
        out["reason"] = "fewer than two checkpoints"
        return out
    r_lo, r_hi = p["rise_fractions"]
    ev_t, ev_iv, ev_mode = [], [], []
    for j in range(k):
        low = np.nonzero(y[:, j] <= lo)[0]
        if low.size == 0 or final[j] < hi:
            continue
        i0 = int(low[-1])
        if i0 >= T - 1:
            continue
        P = _plateau(t, y[:, j], i0, mid, final[j], p["plateau_log_window"], p["plateau_tolerance"])
        levels = [max(P + math.log10(f), mid) for f in (r_lo, p["event_fraction"], r_hi)]
        a, e, b = (crossing_time(t, y[:, j], lev, i0) for lev in levels)
        if e is None or a is None:
            continue
        if b is None:  # never reaches the upper rise level after i0 (noisy tail): close at the end
            b = float(t[-1])
        out["event_times"][j] = e
        out["rise_intervals"][j] = [a, b]
        ev_t.append(e), ev_iv.append([a, b]), ev_mode.append(j)
    out["n_events"] = len(ev_t)
    if not ev_t:
        out["reason"] = "no eigenvalue rose from the ungrown to the grown band"
        return out
    groups = group_events(ev_t, ev_iv, p["max_overlap"], p["min_log_separation"])
    out["step_times"] = [float(np.exp(np.mean(np.log([ev_t[i] for i in g])))) for g in groups]
    out["step_modes"] = [sorted(ev_mode[i] for i in g) for g in groups]
    out["step_sizes"] = [len(g) for g in groups]
    out["n_steps"] = len(groups)
    out["sequential"] = all(s == 1 for s in out["step_sizes"])
    out["sequential_fraction"] = sum(s == 1 for s in out["step_sizes"]) / len(ev_t)
    return out


def coincidence_fraction(reference_times, other_times, log_tol: float = DEFAULTS["coincidence_log_tol"]) -> float | None:
    """Fraction of ``reference_times`` with some ``other_times`` entry within ``log_tol`` in log t.

    None when there is no reference time; 0.0 when there is no other time.
    """
    ref = np.asarray(reference_times, dtype=np.float64)
    oth = np.asarray(other_times, dtype=np.float64)
    if ref.size == 0:
        return None
    if oth.size == 0:
        return 0.0
    d = np.abs(np.log(ref)[:, None] - np.log(oth)[None, :])
    return float((d.min(axis=1) <= log_tol + 1e-12).mean())


def analyze_run(t, embedding_eigs, hidden_eigs=None, *, t_hidden=None, params: Mapping[str, Any] | None = None,
                n_modes: int | None = None, hidden_modes: int | None = None) -> dict[str, Any]:
    """Per-run step summary: the embedding steps and, with hidden spectra, the Fig. 5 coincidence.

    ``embedding_eigs``: T x d (the space the paper shows for the method: C for Barlow Twins, the
    covariance otherwise); ``hidden_eigs``: T' x D at ``t_hidden`` (default ``t``), restricted to
    its top ``hidden_modes`` (default: as many as the embedding has modes). Returns the keys
    ``step_times``, ``n_steps``, ``sequential``, ``hidden_coincidence`` (None without hidden
    data), ``hidden_coincidence_reverse`` (fraction of hidden steps near an embedding step), and
    the full ``embedding`` / ``hidden`` results of ``detect_steps``.
    """
    emb = detect_steps(t, embedding_eigs, params, n_modes=n_modes)
    res = {"step_times": emb["step_times"], "n_steps": emb["n_steps"], "sequential": emb["sequential"],
           "hidden_coincidence": None, "hidden_coincidence_reverse": None, "embedding": emb, "hidden": None}
    if hidden_eigs is not None:
        hm = hidden_modes if hidden_modes is not None else emb["n_modes"]
        hid = detect_steps(t if t_hidden is None else t_hidden, hidden_eigs, params, n_modes=hm)
        tol = emb["params"]["coincidence_log_tol"]
        res["hidden"] = hid
        res["hidden_coincidence"] = coincidence_fraction(emb["step_times"], hid["step_times"], tol)
        res["hidden_coincidence_reverse"] = coincidence_fraction(hid["step_times"], emb["step_times"], tol)
    return res
