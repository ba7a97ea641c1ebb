"""The Health Check (ESO's QC practice): every QC1 parameter of the latest night, per metric and
camera, against its own history in the QC1 database.

The history of a (kind, step, metric, camera) is every value of the ``window`` production nights
before the checked night that have one, never before the latest breakpoint (an instrument change
starts a new history). Its dynamic ranges are those of the night QA
(:func:`fiberflow.qa.scoring.dynamic_ranges`: median +- warning_nsig / alarm_nsig robust sigma,
``history`` of the thresholds file); with fewer than ``min_values`` earlier values the status is
NA. The night's values (one per exposure, or per tile) are each judged; the worst decides.

Examples
--------
>>> rows = health_check(values, 20250110, {"min_values": 5, "warning_nsig": 4, "alarm_nsig": 6},
...                     window=30)                                             # doctest: +SKIP
"""

from __future__ import annotations

import math

import numpy as np

from ..linalg import robust_sigma
from .scoring import dynamic_ranges, status_of, worst

#: columns of a health-check row
COLUMNS = ("KIND", "STEP", "METRIC", "CAMERA", "NIGHT", "STATUS", "N", "VALUE", "WORST_VALUE", "PULL",
           "HIST_N", "HIST_NIGHTS", "HIST_FIRST", "HIST_MEDIAN", "HIST_SIGMA", "NORMAL_LO", "NORMAL_HI",
           "WARNING_LO", "WARNING_HI")


def history_nights(nights, night, window, since=0):
    """The nights of the history of ``night``: the last ``window`` of ``nights`` before it, not
    before ``since`` (the latest breakpoint)."""
    earlier = sorted({int(n) for n in nights if since <= int(n) < int(night)})
    return earlier[-int(window):] if window else earlier


def health_check(values, night, hist_cfg, window=30, since=0):
    """Judge every QC1 parameter of one night against its history.

    Parameters
    ----------
    values : iterable of (kind, step, metric, camera, night, value)
        QC1 values (:func:`fiberflow.io.qcdb.values`), any order; camera None for exposure- and
        tile-level parameters.
    night : int
        The night checked.
    hist_cfg : dict
        ``min_values``, ``warning_nsig``, ``alarm_nsig`` (the thresholds' ``history``).
    window : int
        How many earlier nights with values form the history (0: all).
    since : int
        No history before this night (the latest breakpoint on or before ``night``).

    Returns
    -------
    list of dict
        One row per parameter measured on ``night`` (:data:`COLUMNS`), ALARM first.
    """
    night = int(night)
    series = {}
    for kind, step, metric, camera, n, v in values:
        if v is None or not math.isfinite(float(v)):
            continue
        series.setdefault((kind, step, metric, camera), {}).setdefault(int(n), []).append(float(v))
    out = []
    for key, by_night in series.items():
        today = by_night.get(night)
        if not today:
            continue
        hn = history_nights(by_night, night, window, since)
        hist = [v for n in hn for v in by_night[n]]
        ranges = dynamic_ranges(hist, hist_cfg)
        med = float(np.median(hist)) if hist else None
        sig = max(robust_sigma(np.asarray(hist)), 1e-3 * abs(med), 1e-12) if len(hist) > 1 else None
        if ranges is None:
            statuses, normal, warning = ["NA"], (None, None), (None, None)
        else:
            normal, warning = ranges
            statuses = [status_of(v, normal, warning) for v in today]
        worst_v = max(today, key=lambda v: abs(v - med)) if med is not None else today[0]
        out.append(dict(zip(COLUMNS, (
            key[0], key[1], key[2], key[3], night, worst(statuses), len(today), float(np.median(today)), worst_v,
            (worst_v - med) / sig if sig else None, len(hist), len(hn), hn[0] if hn else None, med, sig,
            normal[0], normal[1], warning[0], warning[1]))))
    order = {"ALARM": 0, "WARNING": 1, "NORMAL": 2, "NA": 3}
    out.sort(key=lambda r: (order[r["STATUS"]], r["STEP"], r["METRIC"], r["CAMERA"] or ""))
    return out


def series_of(values, step, metric):
    """{camera: (nights, values)} of one parameter, for its trend plot."""
    out = {}
    for _kind, s, m, camera, n, v in values:
        if s == step and m == metric and v is not None and math.isfinite(float(v)):
            out.setdefault(camera or "all", ([], []))
            out[camera or "all"][0].append(int(n))
            out[camera or "all"][1].append(float(v))
    return out
