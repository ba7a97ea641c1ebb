"""QC1 parameters (ESO's word for the measured quality numbers of every product) out of fiberflow's
QA records, as rows for the QC1 database (:mod:`fiberflow.io.qcdb`).

A row is one scored metric of one product: where (KIND frame / exposure / tile, NIGHT, EXPID,
TILEID, CAMERA, OBSTYPE, MJD), what (STEP, METRIC, VALUE, UNIT), and how it was judged (STATUS,
SCORE, SOURCE static or history, the NORMAL and WARNING ranges, THRESHOLDS: the version of the
thresholds that scored it). Only numbers are QC1 parameters: lists and texts stay in the QA files.
"""

from __future__ import annotations

import math

from ..io.qcdb import COLUMNS  # noqa: F401  (the columns of a QC1 row, in database order)

#: units of the metrics that have one (the rest are counts, fractions or ratios)
UNITS = {"EFFTIME": "s", "EXPTIME": "s", "SKY_MEDIAN": "electron/Angstrom", "MED_RESID": "electron/Angstrom",
         "READNOISE": "electron", "READNOISE_AMP": "electron", "BIAS": "adu", "DARK_RATE_AMP": "electron/s",
         "ZP": "mag", "SKY_WINDOW_WAVE": "Angstrom", "SKYLINE_WAVE": "Angstrom", "RMS_WAVE": "Angstrom"}


def _number(v):
    """A finite float of a scalar value, else None (booleans count as 0/1)."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        v = float(v)
        return v if math.isfinite(v) else None
    return None


def _range(r):
    if not isinstance(r, (list, tuple)) or len(r) != 2:
        return None, None
    return _number(r[0]), _number(r[1])


def _row(kind, where, step, metric, value, score=None, thresholds=""):
    score = score or {}
    nlo, nhi = _range(score.get("NORMAL"))
    wlo, whi = _range(score.get("WARNING"))
    return {"KIND": kind, "NIGHT": where.get("NIGHT"), "EXPID": where.get("EXPID"), "TILEID": where.get("TILEID"),
            "CAMERA": where.get("CAMERA"), "OBSTYPE": where.get("OBSTYPE"), "MJD": _number(where.get("MJD")),
            "STEP": step, "METRIC": metric, "VALUE": value, "UNIT": UNITS.get(metric, ""),
            "STATUS": score.get("STATUS", "NA"), "SCORE": score.get("SCORE"), "SOURCE": score.get("SOURCE", ""),
            "NORMAL_LO": nlo, "NORMAL_HI": nhi, "WARNING_LO": wlo, "WARNING_HI": whi, "THRESHOLDS": thresholds}


def night_rows(rec):
    """QC1 rows of a night QA record (``qa-night-{night}.json``): every scored metric of every
    frame (KIND frame, STEP the pipeline step) and each exposure's EFFTIME (KIND exposure).

    Parameters
    ----------
    rec : dict
        The night QA JSON.

    Returns
    -------
    list of dict (:data:`COLUMNS`)
    """
    version = str(rec.get("THRESHOLDS_VERSION") or "")
    rows = []
    for exp in rec.get("EXPOSURES", []):
        where = {k: exp.get(k) for k in ("NIGHT", "EXPID", "TILEID", "OBSTYPE", "MJD")}
        where["NIGHT"] = where["NIGHT"] or rec.get("NIGHT")
        eff = _number(exp.get("EFFTIME"))
        if eff is not None:
            rows.append(_row("exposure", where, "EXPOSURE", "EFFTIME", eff, thresholds=version))
        for cam, frame in sorted((exp.get("FRAMES") or {}).items()):
            at = dict(where, CAMERA=cam)
            for step, metrics in sorted((frame.get("SCORES") or {}).items()):
                for metric, score in sorted(metrics.items()):
                    value = _number(score.get("VALUE")) if isinstance(score, dict) else None
                    if value is not None:
                        rows.append(_row("frame", at, step, metric, value, score, version))
    return rows


def tile_rows(qa, version=""):
    """QC1 rows of a tile QA (:class:`fiberflow.io.tileqa.TileQA`): its scored METRICS and EFFTIME
    (KIND tile, STEP TILE_QA; NIGHT the last night of the cumulative coadd)."""
    h = qa.header
    where = {"NIGHT": int(h["LASTNIGHT"]), "TILEID": int(h["TILEID"])}
    rows = []
    eff = _number(float(h.get("EFFTIME", -1)))
    if eff is not None and eff >= 0:
        rows.append(_row("tile", where, "TILE_QA", "EFFTIME", eff, thresholds=version))
    for r in qa.metrics:
        value = _number(float(r["VALUE"]))
        if value is None:
            continue
        score = {"STATUS": str(r["STATUS"]).strip(), "NORMAL": [float(r["NORMAL_LO"]), float(r["NORMAL_HI"])],
                 "WARNING": [float(r["WARNING_LO"]), float(r["WARNING_HI"])], "SOURCE": "static"}
        rows.append(_row("tile", where, "TILE_QA", str(r["NAME"]).strip(), value, score, version))
    return rows
