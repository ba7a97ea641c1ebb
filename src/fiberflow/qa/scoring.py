"""Thresholds, scores and roll-ups (ESO QC1 style) and fault localisation.

A metric value is NORMAL, WARNING or ALARM against ranges from ``config/qa.yaml``; its ESO
score is 0 (ok) or 1 (ALARM). Ranges are static (the file) or dynamic: the rolling median
and scatter of the same metric and camera over the production's earlier nights. Statuses
roll up frame -> camera -> petal -> exposure -> night -> production as the worst below.

The thresholds file::

    history: {nights: 30, min_values: 5, warning_nsig: 3, alarm_nsig: 5}
    metrics:
      PREPROC:
        READNOISE_AMP: {normal: [1.5, 4.5], warning: [1.0, 6.0]}
        NOISE_RATIO_AMP: {normal: [0.7, null], warning: [0.5, null], dynamic: false}
      SKY:
        MED_RESID_FRAC: {normal: [-0.01, 0.01], warning: [-0.02, 0.02],
                         cameras: {z: {normal: [-0.02, 0.02], warning: [-0.04, 0.04]}}}

``null`` is an open end; ``cameras`` overrides per arm (``b``) or camera (``b3``);
``obstypes`` restricts a metric to some OBSTYPEs; ``dynamic: true`` lets history replace the
static ranges once ``history.min_values`` earlier values exist.
"""

from __future__ import annotations

import math

import numpy as np

from .. import yamlio
from ..errors import ConfigError, one_line
from ..linalg import robust_sigma
from .metrics import STEPS

STATUSES = ("NA", "NORMAL", "WARNING", "ALARM")
RANK = {s: i for i, s in enumerate(STATUSES)}
#: steps whose products later exposures use (arc -> PSF, flat -> FIBERFLAT)
INHERITED_STEPS = ("PSF", "FIBERFLAT")
DEFAULT_HISTORY = {"nights": 30, "min_values": 5, "warning_nsig": 3.0, "alarm_nsig": 5.0}


def worst(statuses):
    """The worst of some statuses (NA when empty)."""
    best = "NA"
    for s in statuses:
        if RANK[s] > RANK[best]:
            best = s
    return best


def _range(value, where):
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"{where}: a range is [low, high] (null for an open end), not {value!r}")
    lo, hi = (-math.inf if value[0] is None else float(value[0])), (math.inf if value[1] is None else float(value[1]))
    if lo > hi:
        raise ConfigError(f"{where}: low {lo} is above high {hi}")
    return lo, hi


def validate_thresholds(cfg, source="qa.yaml"):
    """Check a thresholds mapping; return it with defaults filled.

    Raises
    ------
    ConfigError
        Naming the step, metric and key at fault.
    """
    if not isinstance(cfg, dict) or not isinstance(cfg.get("metrics"), dict):
        raise ConfigError(f"{source}: needs a 'metrics' mapping of step -> metric -> ranges")
    hist = dict(DEFAULT_HISTORY)
    hist.update(cfg.get("history") or {})
    unknown = set(hist) - set(DEFAULT_HISTORY)
    if unknown:
        raise ConfigError(f"{source}: history: unknown key(s) {', '.join(sorted(unknown))}")
    for step, metrics in cfg["metrics"].items():
        if step not in STEPS:
            raise ConfigError(f"{source}: unknown step {step!r} (steps: {', '.join(STEPS)})")
        for name, spec in (metrics or {}).items():
            where = f"{source}: metrics.{step}.{name}"
            if not isinstance(spec, dict) or "normal" not in spec:
                raise ConfigError(f"{where}: needs at least 'normal: [low, high]'")
            bad = set(spec) - {"normal", "warning", "cameras", "obstypes", "dynamic", "description"}
            if bad:
                raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(bad))}")
            n = _range(spec["normal"], where + ".normal")
            w = _range(spec.get("warning", spec["normal"]), where + ".warning")
            if w[0] > n[0] or w[1] < n[1]:
                raise ConfigError(f"{where}: the warning range must contain the normal range")
            for cam, sub in (spec.get("cameras") or {}).items():
                _range(sub.get("normal", spec["normal"]), f"{where}.cameras.{cam}.normal")
                _range(sub.get("warning", sub.get("normal", spec.get("warning", spec["normal"]))),
                       f"{where}.cameras.{cam}.warning")
    out = dict(cfg)
    out["history"] = hist
    out["petal_bits"] = validate_petal_bits(cfg.get("petal_bits"), cfg["metrics"], source)
    from .tileqa import settings  # the tile QA section, checked with the rest

    settings(cfg)
    return out


#: DESI's petal-level QA bits of FIBERSTATUS and the metrics whose ALARM sets each by default
#: (DESI's exposure QA: too few / inconsistent standards, bad sky, flux calibration, S/N)
DEFAULT_PETAL_BITS = {
    "BADPETALSKY": ["SKY"],
    "BADPETALSTDSTAR": ["STDSTARS", "FLUXCALIB.FLUXFLAG"],
    "BADPETALFLUXCAL": ["FLUXCALIB.MAX_ZP_OFF", "FLUXCALIB.CALIB_RMS", "FLUXCALIB.ZP"],
    "BADPETALSNR": ["CFRAME"],
}
#: a petal whose median target S/N over the exposure's median petal is outside this range
#: gets BADPETALSNR (DESI: TSNR2 petal fraction 0.7 - 1.3)
DEFAULT_SNR_FRAC = (0.7, 1.3)


def validate_petal_bits(section, metrics, source="qa.yaml"):
    """The ``petal_bits`` section: {BIT: [STEP or STEP.METRIC, ...]}, ``snr_frac: [lo, hi]``.

    Returns
    -------
    dict
        ``bits`` {bit name: [(step, metric or None)]}, ``snr_frac`` (lo, hi).
    """
    from ..bitmasks import fibermask

    section = dict(section or {})
    frac = section.pop("snr_frac", list(DEFAULT_SNR_FRAC))
    lo, hi = _range(frac, f"{source}: petal_bits.snr_frac")
    given = bool(section)
    bits = {}
    for bit, entries in (section or DEFAULT_PETAL_BITS).items():
        where = f"{source}: petal_bits.{bit}"
        if not bit.startswith("BADPETAL") or bit not in fibermask:
            raise ConfigError(f"{where}: not a petal-level FIBERSTATUS bit (BADPETALPOS, BADPETALSKY, "
                              "BADPETALSTDSTAR, BADPETALFLUXCAL, BADPETALSNR)")
        if not isinstance(entries, list):
            raise ConfigError(f"{where}: a list of STEP or STEP.METRIC, not {entries!r}")
        out = []
        for e in entries:
            step, _, metric = str(e).partition(".")
            if step not in STEPS:
                raise ConfigError(f"{where}: unknown step {step!r} (steps: {', '.join(STEPS)})")
            if given and metric and metric not in (metrics.get(step) or {}):
                raise ConfigError(f"{where}: {step}.{metric} has no thresholds in metrics.{step}")
            out.append((step, metric or None))
        bits[bit] = out
    return {"bits": bits, "snr_frac": (lo, hi)}


def thresholds_version(path, overrides=None):
    """The version of a thresholds file (and its overrides): the first 12 hex digits of the
    sha256 of their bytes (what the QC1 database records with every score it made)."""
    import hashlib

    h = hashlib.sha256()
    for p in (path, overrides) if overrides else (path,):
        with open(p, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()[:12]


def _read_yaml(path, what):
    import yaml

    try:
        with open(path) as fh:
            return yamlio.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({one_line(exc)})") from None


def load_thresholds(path, overrides=None):
    """Read and validate a thresholds YAML file, with the metrics of an ``overrides`` file (only
    ``metrics: {STEP: {METRIC: ranges}}``, e.g. the quick-look's looser ranges) replacing its own."""
    cfg = _read_yaml(path, "QA thresholds file")
    if overrides:
        extra = _read_yaml(overrides, "QA threshold overrides file") or {}
        if not isinstance(extra, dict) or set(extra) - {"metrics"} or not isinstance(extra.get("metrics", {}), dict):
            raise ConfigError(f"{overrides}: threshold overrides hold only 'metrics: {{STEP: {{METRIC: ranges}}}}'")
        if isinstance(cfg, dict) and isinstance(cfg.get("metrics"), dict):
            cfg = dict(cfg, metrics={k: dict(v or {}) for k, v in cfg["metrics"].items()})
            for step, metrics in (extra.get("metrics") or {}).items():
                if step not in STEPS:
                    raise ConfigError(f"{overrides}: unknown step {step!r} (steps: {', '.join(STEPS)})")
                cfg["metrics"].setdefault(step, {}).update(metrics or {})
        return validate_thresholds(cfg, source=f"{path} + {overrides}")
    return validate_thresholds(cfg, source=str(path))


def ranges_for(spec, camera):
    """Static (normal, warning) ranges of a metric spec for a camera (camera, then arm override)."""
    normal, warning = spec["normal"], spec.get("warning", spec["normal"])
    cams = spec.get("cameras") or {}
    for key in (camera[:1], camera):
        if key in cams:
            normal = cams[key].get("normal", normal)
            warning = cams[key].get("warning", cams[key].get("normal", warning))
    return _range(normal, "normal"), _range(warning, "warning")


def dynamic_ranges(history, hist_cfg):
    """(normal, warning) ranges from earlier values: median +- warning_nsig / alarm_nsig x
    robust sigma; None when fewer than ``min_values`` values."""
    vals = np.asarray([v for v in history if v is not None], float)
    vals = vals[np.isfinite(vals)]
    if vals.size < int(hist_cfg["min_values"]):
        return None
    med, sig = float(np.median(vals)), robust_sigma(vals)
    sig = max(sig, 1e-3 * abs(med), 1e-12)
    nw, na = float(hist_cfg["warning_nsig"]), float(hist_cfg["alarm_nsig"])
    return (med - nw * sig, med + nw * sig), (med - na * sig, med + na * sig)


def status_of(value, normal, warning):
    """NORMAL, WARNING or ALARM of one number (NA for None / nan)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "NA"
    if normal[0] <= value <= normal[1]:
        return "NORMAL"
    if warning[0] <= value <= warning[1]:
        return "WARNING"
    return "ALARM"


def _json_range(r):
    return [None if math.isinf(r[0]) else r[0], None if math.isinf(r[1]) else r[1]]


def score_metric(value, spec, camera, history=None, hist_cfg=None):
    """Score one metric value.

    Parameters
    ----------
    value : number, None or {key: number}
        A mapping (per amplifier, per block) is scored element by element; the worst element
        decides and is named in WORST.
    spec : dict
        The metric's entry of the thresholds file.
    camera : str
    history : list of numbers, or {key: list} for a mapping, optional
        Earlier values of this metric and camera (for ``dynamic: true``); a mapping's elements
        are each scored against their own history.

    Returns
    -------
    dict
        VALUE, STATUS, SCORE (1 for ALARM, else 0), NORMAL, WARNING, SOURCE (static or
        history) and, for mappings, WORST (the key of the worst element).
    """
    static = ranges_for(spec, camera)
    normal, warning = static
    source = "static"

    def ranges(hist):
        if spec.get("dynamic") and hist is not None:
            dyn = dynamic_ranges(hist, hist_cfg or DEFAULT_HISTORY)
            if dyn is not None:
                return dyn, "history"
        return static, "static"

    if isinstance(value, dict):
        # each element (amplifier, block) against its own history
        per = {k: ranges(history.get(k) if isinstance(history, dict) else None) for k in value}
        if per and all(src == "history" for _, src in per.values()):
            source = "history"
        sts = {k: status_of(v, *per[k][0]) for k, v in value.items()}
        if per:
            (normal, warning), _ = per[sorted(per)[0]]
    else:
        (normal, warning), source = ranges(history if not isinstance(history, dict) else None)
    out = {"VALUE": value, "NORMAL": _json_range(normal), "WARNING": _json_range(warning), "SOURCE": source}
    if isinstance(value, dict):
        out["STATUS"] = worst(sts.values())
        bad = [k for k, s in sts.items() if s == out["STATUS"] and s not in ("NA", "NORMAL")]
        if bad:
            out["WORST"] = bad
    else:
        out["STATUS"] = status_of(value, normal, warning)
    out["SCORE"] = 1 if out["STATUS"] == "ALARM" else 0
    return out


def scalar_history_value(value):
    """The number a metric contributes to history: itself, or the median of a mapping."""
    if isinstance(value, dict):
        vals = [v for v in value.values() if v is not None]
        return float(np.median(vals)) if vals else None
    return value


def score_frame(frame_qa, thresholds, history=None):
    """Score every configured metric of one frame QA record.

    Parameters
    ----------
    frame_qa : dict
        Frame QA JSON: CAMERA, OBSTYPE, METRICS {step: {metric: value}}.
    thresholds : dict
        Validated thresholds.
    history : dict, optional
        (step, metric, camera) -> list of earlier values.

    Returns
    -------
    dict
        {step: {metric: score dict}}, STATUS per step, and the frame's STATUS, NSCORED,
        NALARM, NWARNING.
    """
    cam, obstype = frame_qa["CAMERA"], frame_qa.get("OBSTYPE", "")
    scores, step_status = {}, {}
    for step in STEPS:
        metrics = frame_qa.get("METRICS", {}).get(step)
        if metrics is None:
            continue
        specs = thresholds["metrics"].get(step) or {}
        scored = {}
        for name, spec in specs.items():
            if name not in metrics:
                continue
            if spec.get("obstypes") and obstype not in spec["obstypes"]:
                continue
            hist = (history or {}).get((step, name, cam))
            scored[name] = score_metric(metrics[name], spec, cam, hist, thresholds["history"])
        scores[step] = scored
        step_status[step] = worst(s["STATUS"] for s in scored.values()) if scored else "NA"
    allsc = [s for st in scores.values() for s in st.values()]
    return {"SCORES": scores, "STEP_STATUS": step_status,
            "STATUS": worst(s["STATUS"] for s in allsc),
            "NSCORED": sum(s["STATUS"] != "NA" for s in allsc),
            "NALARM": sum(s["STATUS"] == "ALARM" for s in allsc),
            "NWARNING": sum(s["STATUS"] == "WARNING" for s in allsc)}


def out_of_range(scored, step, level="ALARM"):
    """Names of the metrics of a step at ``level`` (or worse)."""
    return [n for n, s in scored["SCORES"].get(step, {}).items() if RANK[s["STATUS"]] >= RANK[level]]


def first_bad_step(frames, calib_frames=(), level="ALARM"):
    """Earliest step of the data flow whose metrics are out of range for an exposure.

    Parameters
    ----------
    frames : list of dict
        Scored frames of the exposure: CAMERA, STEP_STATUS, SCORES.
    calib_frames : list of (label, dict)
        Scored frames of the calibration exposures this exposure depends on (the night's arcs
        for PSF, its flats for FIBERFLAT), with a label such as "flat 1004"; their step
        statuses count for the steps that produced the calibration.
    level : str
        ALARM (default) or WARNING.

    Returns
    -------
    dict or None
        STEP, CAMERAS, METRICS, SOURCE ('this exposure' or the calibration's label); None when
        no step is at ``level``.
    """
    for step in STEPS:
        cams, names, sources = [], [], []
        for label, fr in list(calib_frames):
            if step not in INHERITED_STEPS:
                continue
            if RANK[fr["STEP_STATUS"].get(step, "NA")] >= RANK[level]:
                cams.append(fr["CAMERA"])
                names += out_of_range(fr, step, level)
                sources.append(label)
        for fr in frames:
            if RANK[fr["STEP_STATUS"].get(step, "NA")] >= RANK[level]:
                cams.append(fr["CAMERA"])
                names += out_of_range(fr, step, level)
                sources.append("this exposure")
        if cams:
            return {"STEP": step, "CAMERAS": sorted(set(cams)), "METRICS": sorted(set(names)),
                    "SOURCE": ", ".join(sorted(set(sources)))}
    return None


def petal_of(camera):
    return int(camera[1:])


def petal_qa_bits(frames, petal_bits, snr=None):
    """DESI's petal-level QA bits (QAFIBERSTATUS) of each petal of one exposure.

    Parameters
    ----------
    frames : list of dict
        Scored frames of the exposure (CAMERA, SCORES, STEP_STATUS).
    petal_bits : dict
        ``validate_thresholds(...)["petal_bits"]``.
    snr : dict, optional
        {camera: median target S/N} of science frames; a petal whose S/N over the median of
        the exposure's petals (per arm, with at least 3 petals) is outside ``snr_frac`` gets
        BADPETALSNR.

    Returns
    -------
    dict
        {petal (str): {"QAFIBERSTATUS": int, "BITS": [names], "WHY": {bit: ["camera STEP.METRIC"]}}}
        for every petal with a frame.
    """
    from ..bitmasks import fibermask

    out = {str(petal_of(fr["CAMERA"])): {"QAFIBERSTATUS": 0, "BITS": [], "WHY": {}} for fr in frames}

    def setbit(petal, bit, why):
        rec = out[str(petal)]
        if bit not in rec["BITS"]:
            rec["BITS"].append(bit)
            rec["QAFIBERSTATUS"] |= int(fibermask.mask(bit))
        rec["WHY"].setdefault(bit, []).append(why)

    for fr in frames:
        cam = fr["CAMERA"]
        for bit, entries in petal_bits["bits"].items():
            for step, metric in entries:
                scores = fr["SCORES"].get(step, {})
                names = [metric] if metric else list(scores)
                for n in names:
                    if n in scores and scores[n]["STATUS"] == "ALARM":
                        setbit(petal_of(cam), bit, f"{cam} {step}.{n}")
    lo, hi = petal_bits["snr_frac"]
    byarm = {}
    for cam, v in (snr or {}).items():
        if v is not None and np.isfinite(v) and v > 0:
            byarm.setdefault(cam[0], {})[cam] = float(v)
    for arm, vals in byarm.items():
        if len(vals) < 3:
            continue
        med = float(np.median(list(vals.values())))
        for cam, v in vals.items():
            if str(petal_of(cam)) in out and not lo <= v / med <= hi:
                setbit(petal_of(cam), "BADPETALSNR", f"{cam} S/N {v / med:.2f} x the petals' median")
    for rec in out.values():
        rec["BITS"].sort(key=fibermask.bitnum)
    return out


def rollup(frames):
    """Camera, petal and exposure statuses of one exposure's scored frames.

    Returns
    -------
    dict
        CAMERAS {camera: status}, PETALS {petal: status}, STATUS, NALARM, NSCORED.
    """
    cams = {fr["CAMERA"]: fr["STATUS"] for fr in frames}
    petals = {}
    for cam, st in cams.items():
        petals[str(petal_of(cam))] = worst([petals.get(str(petal_of(cam)), "NA"), st])
    return {"CAMERAS": cams, "PETALS": petals, "STATUS": worst(cams.values()),
            "NALARM": sum(fr["NALARM"] for fr in frames), "NSCORED": sum(fr["NSCORED"] for fr in frames)}
