"""Certification of the nightly calibrations (ESO's QC certification, Handbook section 1.5).

A nightly calibration of a camera is judged by the scores of the exposures it is made from, in
the night QA record (``qa-night-{night}.json``):

======================  ==========  ===========
calibration             exposures   step scored
======================  ==========  ===========
biasnight-{cam}-{night}  ZERO        BIAS
psfnight-{cam}-{night}   ARC         PSF
fiberflatnight-...      FLAT        FIBERFLAT
======================  ==========  ===========

Automatic decision: **REJECTED** when any of those frames has an ALARM in the step (the metrics
are the reason), **REVIEW** on a WARNING, and for a configurable random share of the green ones
(drawn reproducibly from the calibration's name), else **AUTO** (certified). A calibration none of
whose exposures was scored is **NA**.

A human-editable ledger (YAML: a list of entries ``{calibration, night, camera, decision:
CERTIFIED | REJECTED, who, when, reason}``) overrides any automatic decision; the last entry of a
calibration wins. A calibration is *usable* unless its final state is REJECTED.
"""

from __future__ import annotations

import datetime
import hashlib

from ..errors import ConfigError

#: calibration -> (OBSTYPE of its exposures, step whose scores judge it)
CALIBRATIONS = {"biasnight": ("ZERO", "BIAS"), "psfnight": ("ARC", "PSF"), "fiberflatnight": ("FLAT", "FIBERFLAT")}
DECISIONS = ("CERTIFIED", "REJECTED")
#: the average flux calibration (``fiberflow fluxcalib-average``, per camera; its night is the
#: latest night of its inputs): QC1 parameters and their default ranges (the thresholds file's
#: ``certification: fluxcalib-average:`` section overrides them)
AVERAGE = "fluxcalib-average"
AVERAGE_RANGES = {"NAVERAGE": {"normal": [5, None], "warning": [3, None]},
                  "SCATTER": {"normal": [0.0, 0.05], "warning": [0.0, 0.10]}}
#: what the ledger can decide on
LEDGER_CALIBRATIONS = (*CALIBRATIONS, AVERAGE)
LEDGER_KEYS = {"calibration", "night", "camera", "decision", "who", "when", "reason"}


def drawn_for_review(calibration, night, camera, fraction):
    """Whether a green calibration is among the random ``fraction`` reviewed by hand (the draw is
    a hash of its name, so the same calibration is always drawn the same way)."""
    if fraction <= 0:
        return False
    h = hashlib.sha256(f"{calibration}-{camera}-{night}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


def automatic(rec, review_fraction=0.2):
    """Automatic decisions for the nightly calibrations of one night.

    Parameters
    ----------
    rec : dict
        The night QA record.
    review_fraction : float
        Share of the green calibrations also sent to review.

    Returns
    -------
    list of dict
        CALIBRATION, NIGHT, CAMERA, STATUS (AUTO / REVIEW / REJECTED / NA), REASON, EXPIDS (the
        exposures judged), METRICS (the metrics at WARNING or ALARM, "EXPID:METRIC=STATUS"),
        SOURCE ("auto").
    """
    night = int(rec["NIGHT"])
    out = []
    for calib, (obstype, step) in CALIBRATIONS.items():
        cams = {}
        for exp in rec.get("EXPOSURES", []):
            if exp.get("OBSTYPE") != obstype:
                continue
            for cam, frame in (exp.get("FRAMES") or {}).items():
                st = (frame.get("STEP_STATUS") or {}).get(step)
                if st is None:
                    continue
                c = cams.setdefault(cam, {"EXPIDS": [], "STATUS": [], "METRICS": []})
                c["EXPIDS"].append(int(exp["EXPID"]))
                c["STATUS"].append(st)
                for name, score in sorted(((frame.get("SCORES") or {}).get(step) or {}).items()):
                    if isinstance(score, dict) and score.get("STATUS") in ("WARNING", "ALARM"):
                        c["METRICS"].append(f"{exp['EXPID']}:{name}={score['STATUS']}")
        for cam, c in sorted(cams.items()):
            if "ALARM" in c["STATUS"]:
                status, reason = "REJECTED", f"{step} ALARM: " + ", ".join(m for m in c["METRICS"] if m.endswith("ALARM"))
            elif "WARNING" in c["STATUS"]:
                status, reason = "REVIEW", f"{step} WARNING: " + ", ".join(c["METRICS"])
            elif all(s == "NA" for s in c["STATUS"]):
                status, reason = "NA", f"no {step} score"
            elif drawn_for_review(calib, night, cam, review_fraction):
                status, reason = "REVIEW", f"green, drawn for review ({100 * review_fraction:.0f}% of green ones)"
            else:
                status, reason = "AUTO", f"every {step} score NORMAL"
            out.append({"CALIBRATION": calib, "NIGHT": night, "CAMERA": cam, "STATUS": status, "REASON": reason,
                        "EXPIDS": c["EXPIDS"], "METRICS": c["METRICS"], "SOURCE": "auto"})
    return out


def parse_ledger(entries, where="certification ledger"):
    """Check the entries of a certification ledger.

    Returns
    -------
    list of dict (the entries, night as int, decision upper case)

    Raises
    ------
    ConfigError
        Naming the entry and the problem.
    """
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: must be a list of entries")
    out = []
    for k, e in enumerate(entries):
        at = f"{where}: entry {k + 1}"
        if not isinstance(e, dict):
            raise ConfigError(f"{at}: must be a mapping with {', '.join(sorted(LEDGER_KEYS))}")
        missing, unknown = LEDGER_KEYS - set(e), set(e) - LEDGER_KEYS
        if missing or unknown:
            raise ConfigError(f"{at}: " + "; ".join(p for p in (
                f"missing {', '.join(sorted(missing))}" if missing else "",
                f"unknown {', '.join(sorted(unknown))}" if unknown else "") if p))
        if e["calibration"] not in LEDGER_CALIBRATIONS:
            raise ConfigError(f"{at}: calibration {e['calibration']!r} is not one of {', '.join(LEDGER_CALIBRATIONS)}")
        decision = str(e["decision"]).upper()
        if decision not in DECISIONS:
            raise ConfigError(f"{at}: decision {e['decision']!r} is not CERTIFIED or REJECTED")
        try:
            night = int(e["night"])
        except (TypeError, ValueError):
            raise ConfigError(f"{at}: night {e['night']!r} is not a night (YYYYMMDD)") from None
        if not str(e["who"]).strip() or not str(e["reason"]).strip():
            raise ConfigError(f"{at}: who and reason must not be empty")
        when = e["when"]
        if not isinstance(when, (datetime.date, datetime.datetime)):
            try:
                datetime.datetime.fromisoformat(str(when))
            except ValueError:
                raise ConfigError(f"{at}: when {when!r} is not an ISO date or time") from None
        out.append(dict(e, night=night, decision=decision, camera=str(e["camera"]).strip().lower(), when=str(when)))
    return out


def decide(auto, ledger):
    """Final states: the automatic decisions with the ledger's overrides (the last entry of a
    calibration wins; its SOURCE is the reviewer).

    Returns
    -------
    list of dict (as :func:`automatic`, plus USABLE: not REJECTED)
    """
    last = {}
    for e in ledger:
        last[(e["calibration"], e["night"], e["camera"])] = e
    out = []
    for a in auto:
        d = dict(a)
        e = last.get((a["CALIBRATION"], a["NIGHT"], a["CAMERA"]))
        if e is not None:
            d.update({"STATUS": e["decision"], "REASON": f"{e['who']} {e['when']}: {e['reason']}",
                      "SOURCE": f"ledger:{e['who']}", "AUTO_STATUS": a["STATUS"]})
        d["USABLE"] = d["STATUS"] != "REJECTED"
        out.append(d)
    return out


def load_ledger(path):
    """The checked entries of a certification ledger file (an absent file is an empty ledger).

    Raises
    ------
    ConfigError
        Naming the file and the entry: unreadable YAML, a missing or unknown key, a bad value.
    """
    import os

    if not path or not os.path.exists(path):
        return []
    import yaml

    try:
        with open(path) as fh:
            entries = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not a readable YAML certification ledger ({str(exc).splitlines()[0]})") from None
    return parse_ledger(entries, where=path)


def ledger_path(cfg):
    """The certification ledger of a validated configuration: ``qa.ledger``, else the
    production's ``calibnight/certification.yaml``."""
    from .. import paths
    from ..config import resolve_roots

    if cfg["qa"].get("ledger"):
        return cfg["qa"]["ledger"]
    return paths.findfile("certification_ledger", prod=resolve_roots(cfg)["prod"])


def ledger_entries(ledger, calibration, night, camera=None):
    """The ledger's entries of one calibration and night (and camera), in ledger order."""
    return [e for e in ledger if e["calibration"] == calibration and e["night"] == int(night)
            and (camera is None or e["camera"] == camera)]


def ledger_digest(entries):
    """A short digest of ledger entries: the workflow's rerun trigger of a certification (an edit
    of one night's entries reruns that night's certification and nothing else)."""
    text = "\n".join(f"{e['calibration']}|{e['night']}|{e['camera']}|{e['decision']}|{e['who']}|{e['when']}|{e['reason']}"
                     for e in entries)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def ledger_decision(ledger, calibration, night, camera):
    """The ledger's last decision (CERTIFIED / REJECTED) of one calibration, or "auto"."""
    entries = ledger_entries(ledger, calibration, night, camera)
    return entries[-1]["decision"] if entries else "auto"


def certify_night(night, calibration, frames, thresholds, history=None, ledger=(), review_fraction=0.2):
    """Certify one nightly calibration of every camera from its exposures' frame QA.

    Parameters
    ----------
    night : int
    calibration : str
        A key of :data:`CALIBRATIONS`.
    frames : list of dict
        Frame QA records of the night's exposures of that calibration's OBSTYPE.
    thresholds : dict
        Validated QA thresholds.
    history : dict, optional
        Earlier values (:func:`fiberflow.qa.tables.history_from_nights` of earlier certification
        records, which hold their scored exposures as night QA records do).
    ledger : list of dict
        Checked ledger entries (:func:`parse_ledger`).
    review_fraction : float

    Returns
    -------
    dict
        NIGHT, CALIBRATION, DECISIONS (:func:`decide` of that calibration), EXPOSURES (the scored
        exposures, as in a night QA record).
    """
    from .tables import score_night

    obstype, _step = CALIBRATIONS[calibration]
    bad = [f for f in frames if f.get("OBSTYPE") != obstype or int(f.get("NIGHT", -1)) != int(night)]
    if bad:
        f = bad[0]
        raise ValueError(f"frame QA of {f.get('OBSTYPE')} {f.get('EXPID')} night {f.get('NIGHT')} given to the "
                         f"certification of {calibration} {night} ({obstype} frames of that night)")
    rec = score_night(night, frames, thresholds, history)
    auto = [d for d in automatic(rec, review_fraction) if d["CALIBRATION"] == calibration]
    return {"NIGHT": int(night), "CALIBRATION": calibration, "REVIEW_FRACTION": review_fraction,
            "DECISIONS": decide(auto, [e for e in ledger if e["calibration"] == calibration]),
            "EXPOSURES": rec["EXPOSURES"]}


def decision_of(record, camera):
    """The final decision of one camera in a certification record, or None when the camera's
    exposures were not scored."""
    for d in record.get("DECISIONS", []):
        if d["CAMERA"] == camera:
            return d
    return None


def certify_average(values, camera, night, thresholds=None, ledger=()):
    """Certify an average flux calibration from its QC1 parameters.

    Parameters
    ----------
    values : dict
        NAVERAGE (exposures averaged), SCATTER (median fractional scatter between them).
    camera : str
    night : int
        The latest night of its inputs (the ledger's key).
    thresholds : dict, optional
        A thresholds mapping; its ``certification: fluxcalib-average:`` ranges replace the
        defaults (:data:`AVERAGE_RANGES`).
    ledger : list of dict

    Returns
    -------
    dict
        A decision as :func:`decide` makes them (CALIBRATION fluxcalib-average, STATUS, REASON,
        METRICS, SOURCE, USABLE).
    """
    from .scoring import _range, status_of, worst

    ranges = dict(AVERAGE_RANGES)
    ranges.update(((thresholds or {}).get("certification") or {}).get(AVERAGE) or {})
    statuses, metrics = [], []
    for name, spec in ranges.items():
        normal = _range(spec["normal"], f"certification.{AVERAGE}.{name}.normal")
        warning = _range(spec.get("warning", spec["normal"]), f"certification.{AVERAGE}.{name}.warning")
        st = status_of(values.get(name), normal, warning)
        statuses.append(st)
        if st in ("WARNING", "ALARM"):
            metrics.append(f"{name}={values.get(name):.3g}:{st}")
    st = worst(statuses)
    if st == "ALARM":
        status, reason = "REJECTED", "ALARM: " + ", ".join(m for m in metrics if m.endswith("ALARM"))
    elif st == "WARNING":
        status, reason = "REVIEW", "WARNING: " + ", ".join(metrics)
    else:
        status, reason = "AUTO", "every QC1 parameter NORMAL"
    auto = {"CALIBRATION": AVERAGE, "NIGHT": int(night), "CAMERA": camera, "STATUS": status, "REASON": reason,
            "EXPIDS": [], "METRICS": metrics, "SOURCE": "auto"}
    return decide([auto], ledger)[0]
