"""Night records (scored QA of every frame of a night), history for dynamic thresholds and
the production-wide table (one row per frame)."""

from __future__ import annotations

import numpy as np

from .metrics import STEPS, efftime
from .scoring import (
    RANK,
    first_bad_step,
    petal_qa_bits,
    rollup,
    score_frame,
    validate_petal_bits,
    worst,
)

#: frame header fields copied into the night record and the production table
META_KEYS = ("NIGHT", "EXPID", "CAMERA", "PETAL", "OBSTYPE", "TILEID", "PROGRAM", "EXPTIME", "MJD", "AIRMASS")


def history_from_nights(records, window):
    """(step, metric, camera) -> earlier values (a list, or {key: list} for per-amplifier /
    per-block mappings), from night records (oldest first).

    Parameters
    ----------
    records : list of dict
        Night records of earlier nights.
    window : int
        Only the last ``window`` nights count.
    """
    hist = {}
    for rec in sorted(records, key=lambda r: r["NIGHT"])[-int(window):] if window else []:
        for exp in rec["EXPOSURES"]:
            for cam, fr in exp["FRAMES"].items():
                for step, scores in fr["SCORES"].items():
                    for name, sc in scores.items():
                        value = sc["VALUE"]
                        if isinstance(value, dict):
                            per = hist.setdefault((step, name, cam), {})
                            for k, v in value.items():
                                if v is not None:
                                    per.setdefault(k, []).append(v)
                        elif value is not None:
                            hist.setdefault((step, name, cam), []).append(value)
    return hist


def frame_values(frame_qa):
    """{step: {metric: value}} of a frame QA record without its list-valued entries (fiber
    lists), i.e. every number the night and production tables carry."""
    return {step: {k: v for k, v in m.items() if not isinstance(v, list)}
            for step, m in frame_qa.get("METRICS", {}).items()}


#: TSNR2 tracer whose EFFTIME is an exposure's EFFTIME_SPEC, per program (DESI: LRG for dark, BGS for bright)
EFFTIME_TRACER = {"dark": "LRG", "bright": "BGS", "backup": "BGS"}


def efftime_tracer(program):
    """The tracer of a program's EFFTIME_SPEC (LRG for dark and anything unknown)."""
    return EFFTIME_TRACER.get(str(program or "").strip().lower(), "LRG")


def exposure_efftime(frames, reference, snr2time=None):
    """Effective exposure time of an exposure.

    With template signal-to-noise (the cframes' TSNR2, :mod:`fiberflow.models.tsnr`): per petal
    ``SNR2TIME x sum over its cameras of the median TSNR2`` of the program's tracer (DESI's
    EFFTIME_SPEC), median over the petals. Without it (cframes of an older fiberflow): per camera
    :func:`fiberflow.qa.metrics.efftime` from the zero point and sky against the arm's reference,
    median over the cameras.

    Parameters
    ----------
    frames : list of frame QA dicts
    reference : dict arm -> {ZP, SKY_FLUX}
    snr2time : dict tracer -> seconds per unit TSNR2, optional

    Returns
    -------
    (efftime or None, {camera: efftime})
        With TSNR2, each camera carries its petal's EFFTIME.
    """
    tracer = efftime_tracer(frames[0].get("PROGRAM") if frames else None)
    key = f"TSNR2_{tracer}"
    have = [fr for fr in frames if ((fr.get("METRICS") or {}).get("CFRAME") or {}).get(key) is not None]
    if snr2time and snr2time.get(tracer) and have:
        petal = {}
        for fr in have:
            petal.setdefault(fr["CAMERA"][1:], []).append(fr)
        per = {}
        for frs in petal.values():
            eff = round(float(snr2time[tracer] * sum(fr["METRICS"]["CFRAME"][key] for fr in frs)), 2)
            per.update({fr["CAMERA"]: eff for fr in frs})
        vals = [per[frs[0]["CAMERA"]] for frs in petal.values()]
        return float(np.median(vals)), per
    per = {}
    for fr in frames:
        m = fr.get("METRICS", {})
        ref = (reference or {}).get(fr["CAMERA"][0])
        if not ref or "FLUXCALIB" not in m or "CFRAME" not in m or m["FLUXCALIB"].get("FLUXFLAG", 0) != 0:
            continue  # no calibration of its own: no zero point to judge the exposure by
        per[fr["CAMERA"]] = efftime(fr.get("EXPTIME"), m["FLUXCALIB"].get("ZP"), m["CFRAME"].get("SKY_FLUX"),
                                    ref.get("ZP"), ref.get("SKY_FLUX"))
    vals = [v for v in per.values() if v is not None]
    return (float(np.median(vals)) if vals else None), per


def shipped_snr2time():
    """{tracer: SNR2TIME} of the shipped TSNR2 ensembles (tracers not calibrated left out)."""
    from ..io.tsnr import read_ensemble

    ens = read_ensemble()
    return {t: ens.snr2time(t) for t in ens.names if ens.snr2time(t) > 0}


#: OBSTYPE of the exposures of each nightly calibration a REJECTED certification keeps from the
#: science (the master bias is not a first-bad-step source of the science in any case)
CALIB_OBSTYPE = {"psfnight": "ARC", "fiberflatnight": "FLAT"}


def score_night(night, frames, thresholds, history=None, certification=()):
    """Score every frame of a night and roll up.

    Parameters
    ----------
    night : int
    frames : list of dict
        Frame QA records of the night (any order).
    thresholds : dict
        Validated thresholds (:func:`fiberflow.qa.scoring.validate_thresholds`); its
        ``efftime.reference`` gives the reference zero point and sky of each arm.
    history : dict, optional
        From :func:`history_from_nights`.
    certification : list of dict, optional
        The night's certification decisions (:func:`fiberflow.qa.certify.decide`): the arcs and
        flats of a camera whose psfnight / fiberflatnight is REJECTED are not a science
        exposure's first bad step (its science took an earlier night's instead).

    Returns
    -------
    dict
        NIGHT, STATUS, NALARM, NSCORED, EXPOSURES (one record per exposure with its frames'
        scores, CAMERAS / PETALS statuses, EFFTIME, FIRST_BAD), FIRST_BAD (earliest bad step
        of the night in data-flow order, with the exposures where it shows), CERTIFICATION
        (the decisions given).
    """
    rejected = {(CALIB_OBSTYPE[d["CALIBRATION"]], d["CAMERA"]) for d in certification
                if not d.get("USABLE", True) and d["CALIBRATION"] in CALIB_OBSTYPE}
    byexp = {}
    for fr in frames:
        byexp.setdefault(int(fr["EXPID"]), []).append(fr)
    scored = {e: {fr["CAMERA"]: score_frame(fr, thresholds, history) for fr in frs} for e, frs in byexp.items()}
    obstype = {e: frs[0].get("OBSTYPE", "") for e, frs in byexp.items()}
    ref = (thresholds.get("efftime") or {}).get("reference")
    snr2time = shipped_snr2time() if any(o == "SCIENCE" for o in obstype.values()) else None
    petal_bits = thresholds.get("petal_bits") or validate_petal_bits(None, thresholds["metrics"])
    exposures = []
    for e in sorted(byexp, key=lambda k: (byexp[k][0].get("MJD") or 0, k)):
        frs = sorted(byexp[e], key=lambda f: f["CAMERA"])
        calib = []
        if obstype[e] in ("FLAT", "SCIENCE"):
            want = ("ARC", "FLAT") if obstype[e] == "SCIENCE" else ("ARC",)
            for c in sorted(byexp):
                if c != e and obstype[c] in want:
                    for cam, sc in scored[c].items():
                        if cam in scored[e] and (obstype[c], cam) not in rejected:
                            calib.append((f"{obstype[c].lower()} {c}", dict(sc, CAMERA=cam)))
        sframes = [dict(scored[e][fr["CAMERA"]], CAMERA=fr["CAMERA"]) for fr in frs]
        roll = rollup(sframes)
        eff, effcam = exposure_efftime(frs, ref, snr2time) if obstype[e] == "SCIENCE" else (None, {})
        snr = ({fr["CAMERA"]: (fr.get("METRICS", {}).get("CFRAME") or {}).get("MEDIAN_SNR") for fr in frs}
               if obstype[e] == "SCIENCE" else None)
        petal_qa = petal_qa_bits(sframes, petal_bits, snr)
        rec = {k: frs[0].get(k) for k in META_KEYS if k not in ("CAMERA", "PETAL")}
        rec.update({"STATUS": roll["STATUS"], "CAMERAS": roll["CAMERAS"], "PETALS": roll["PETALS"],
                    "NALARM": roll["NALARM"], "NSCORED": roll["NSCORED"], "EFFTIME": eff, "EFFTIME_CAMERA": effcam,
                    "QAFIBERSTATUS": {p: q["QAFIBERSTATUS"] for p, q in petal_qa.items()}, "PETAL_QA": petal_qa,
                    "FIRST_BAD": first_bad_step(sframes, calib, "ALARM"),
                    "FIRST_WARNING": first_bad_step(sframes, calib, "WARNING"),
                    "FRAMES": {fr["CAMERA"]: {"STATUS": scored[e][fr["CAMERA"]]["STATUS"],
                                              "STEP_STATUS": scored[e][fr["CAMERA"]]["STEP_STATUS"],
                                              "SCORES": scored[e][fr["CAMERA"]]["SCORES"],
                                              "NALARM": scored[e][fr["CAMERA"]]["NALARM"],
                                              "NSCORED": scored[e][fr["CAMERA"]]["NSCORED"],
                                              "VALUES": frame_values(fr),
                                              "QAFILE": fr.get("QAFILE"), "PLOT": fr.get("PLOT"),
                                              "BLINK": fr.get("BLINK"),
                                              "LOGS": fr.get("LOGS", {}), "FILES": fr.get("FILES", {})}
                               for fr in frs}})
        exposures.append(rec)
    night_first = None
    for step in STEPS:
        hits = [x for x in exposures if x["FIRST_BAD"] and x["FIRST_BAD"]["STEP"] == step]
        if hits:
            night_first = {"STEP": step, "EXPIDS": [x["EXPID"] for x in hits],
                           "CAMERAS": sorted({c for x in hits for c in x["FIRST_BAD"]["CAMERAS"]}),
                           "METRICS": sorted({m for x in hits for m in x["FIRST_BAD"]["METRICS"]})}
            break
    return {"NIGHT": int(night), "STATUS": worst(x["STATUS"] for x in exposures),
            "NALARM": sum(x["NALARM"] for x in exposures), "NSCORED": sum(x["NSCORED"] for x in exposures),
            "NEXP": len(exposures), "NEXP_ALARM": sum(x["STATUS"] == "ALARM" for x in exposures),
            "FIRST_BAD": night_first, "EXPOSURES": exposures, "CERTIFICATION": list(certification)}


def _flatten(prefix, value, row):
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}_{k}", v, row)
    elif isinstance(value, (list, tuple)):
        return
    else:
        row[prefix] = value


def production_rows(records):
    """One row per frame of every night record: metadata, statuses, every scalar metric as
    STEP_METRIC (mappings expanded: PREPROC_READNOISE_AMP_A ...) and its status."""
    rows = []
    for rec in sorted(records, key=lambda r: r["NIGHT"]):
        for exp in rec["EXPOSURES"]:
            for cam, fr in sorted(exp["FRAMES"].items()):
                row = {k: exp.get(k) for k in META_KEYS if k not in ("CAMERA", "PETAL")}
                row.update({"CAMERA": cam, "PETAL": int(cam[1:]), "STATUS": fr["STATUS"], "NALARM": fr["NALARM"],
                            "NSCORED": fr["NSCORED"], "EXP_STATUS": exp["STATUS"], "EFFTIME": exp.get("EFFTIME"),
                            "FIRST_BAD_STEP": (exp["FIRST_BAD"] or {}).get("STEP", ""),
                            "QAFIBERSTATUS": (exp.get("QAFIBERSTATUS") or {}).get(cam[1:], 0),
                            "QABITS": "|".join(((exp.get("PETAL_QA") or {}).get(cam[1:]) or {}).get("BITS", []))})
                for step, values in fr.get("VALUES", {}).items():
                    for name, value in values.items():
                        _flatten(f"{step}_{name}", value, row)
                for step, scores in fr["SCORES"].items():
                    for name, sc in scores.items():
                        row[f"{step}_{name}_STATUS"] = sc["STATUS"]
                rows.append(row)
    return rows


def write_csv(path, rows):
    """Write rows (list of dicts, union of keys as columns) as CSV, atomically."""
    import pandas as pd

    from ..io.fitsutil import atomic_path

    cols = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    df = pd.DataFrame(rows, columns=cols)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return df


def status_counts(records):
    """{status: number of frames} over night records."""
    out = {s: 0 for s in RANK}
    for rec in records:
        for exp in rec["EXPOSURES"]:
            for fr in exp["FRAMES"].values():
                out[fr["STATUS"]] += 1
    return out
