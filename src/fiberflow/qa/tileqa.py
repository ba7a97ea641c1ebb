"""Tile QA (DESI's ``desi_tile_qa``): per fiber and per petal quality of a cumulative tile, and the
anomalies a QA scientist looks for first.

Inputs are the tile's redrock files (one per petal: REDSHIFTS, the coadd FIBERMAP, TSNR2).

- **FIBERQA**, one row per fiber: identity and position (FIBER_X/Y, DELTA_X/Y), the target class
  (TRACER from DESI_TARGET), EFFTIME_SPEC (SNR2TIME x TSNR2 of the program's tracer), the
  TSNR2 per tracer, redrock's Z / ZWARN / DELTACHI2 / SPECTYPE, GOODZ (ZWARN 0 and DELTACHI2 >
  ``dchi2_min``) and QAFIBERSTATUS (COADD_FIBERSTATUS plus LOWEFFTIME when EFFTIME_SPEC is below
  ``fiber_rel_mintfrac x mintfrac x goaltime``); a target is *valid* when its QAFIBERSTATUS has
  no bad bit.
- **PETALQA**, one row per petal: counts, median EFFTIME, redshift success of the valid targets
  against the reference (``SUCCESS_DEFICIT``: observed minus expected good redshifts over the
  binomial sigma, the expectation from the reference success rate of each tracer) and status.
- **Anomalies** (scored with the ``tile_qa.metrics`` ranges of ``config/qa.yaml``):
  ``NZ_EXCESS`` the largest excess of good redshifts of any tracer in any redshift bin over the
  reference n(z), as the Gaussian significance of the Poisson tail probability (the red-LED
  walkthrough's "z ~ 4.3 QSOs" is such an excess); ``SUCCESS_DEFICIT`` the worst petal;
  ``VALID_FRAC`` the fraction of valid targets; ``EFFTIME_FRAC`` the tile's EFFTIME over the goal;
  ``SKY_RESID_FRAC`` the worst petal's fraction of sky fibers whose coadd still carries flux: in
  some 100 A window its weighted mean is more than ``sky_resid_sigma`` from zero
  (:func:`sky_residuals`; light entering sky fibers, a sky model wrong in one region; the red-LED
  walkthrough's sky fibers).

The reference (``tile-qa-reference.fits``: n(z) and success rate per tracer) is built by
``fiberflow tile-qa-reference`` from the catalogs of a production known to be good; one made from
a clean simulated production ships with fiberflow. With ``reference: history`` a tile is compared
with the production's own NORMAL tiles of earlier nights (:func:`history_reference`) once there
are enough of them, and with the reference file until then.
"""

from __future__ import annotations

import math

import numpy as np

from ..bitmasks import BAD_FIBERSTATUS, fibermask
from .metrics import target_class
from .scoring import score_metric, worst

TRACERS = ("LRG", "ELG", "QSO")
#: redshift bins of the n(z) comparison
ZBINS = np.round(np.arange(0.0, 6.01, 0.1), 2)

DEFAULTS = {
    "dchi2_min": 25.0,
    # reference "history": the n(z) and success of the production's own NORMAL tiles of earlier
    # nights (the latest QA of each, at most history_tiles of them) once there are history_min_tiles
    "history_min_tiles": 5,
    "history_tiles": 200,
    # a clean sky fiber of the validation production reaches 3 sigma in its worst window
    "sky_resid_sigma": 8.0,
    "metrics": {
        # ~180 tracer x redshift bins: 3.5 sigma warns ~4% of clean tiles, 5 sigma alarms ~1e-4
        "NZ_EXCESS": {"normal": [None, 3.5], "warning": [None, 5.0],
                      "description": "largest excess of good redshifts of a tracer in a z bin over the reference [sigma]"},
        "SUCCESS_DEFICIT": {"normal": [-3.0, None], "warning": [-5.0, None],
                            "description": "worst petal's good redshifts minus the reference expectation [sigma]"},
        "VALID_FRAC": {"normal": [0.8, None], "warning": [0.5, None],
                       "description": "fraction of targets without a bad QAFIBERSTATUS bit"},
        "EFFTIME_FRAC": {"normal": [0.9, None], "warning": [0.5, None],
                         "description": "tile EFFTIME_SPEC over the program's goal time"},
        "SKY_RESID_FRAC": {"normal": [None, 0.1], "warning": [None, 0.2],
                           "description": "worst petal's fraction of sky fibers with flux left in their coadd"},
    },
}

FIBERQA_DTYPE = [("TARGETID", "i8"), ("PETAL_LOC", "i2"), ("FIBER", "i4"), ("TARGET_RA", "f8"), ("TARGET_DEC", "f8"),
                 ("FIBER_X", "f4"), ("FIBER_Y", "f4"), ("DELTA_X", "f4"), ("DELTA_Y", "f4"), ("DESI_TARGET", "i8"),
                 ("OBJTYPE", "U3"), ("TRACER", "U5"), ("COADD_FIBERSTATUS", "i4"), ("EFFTIME_SPEC", "f4"),
                 ("TSNR2_BGS", "f4"), ("TSNR2_ELG", "f4"), ("TSNR2_LRG", "f4"), ("TSNR2_QSO", "f4"),
                 ("Z", "f8"), ("ZERR", "f8"), ("ZWARN", "i8"), ("DELTACHI2", "f8"), ("SPECTYPE", "U6"),
                 ("GOODZ", "i2"), ("QAFIBERSTATUS", "i4"), ("SKY_RESID_SIG", "f4"), ("SKY_RESID_WAVE", "f4")]

PETALQA_DTYPE = [("PETAL_LOC", "i2"), ("NFIBER", "i4"), ("NTARGET", "i4"), ("NVALID", "i4"), ("NGOODZ", "i4"),
                 ("NEXPECT", "f4"), ("SUCCESS_DEFICIT", "f4"), ("EFFTIME_MEDIAN", "f4"), ("TSNR2_LRG_MEDIAN", "f4"),
                 ("NLRG", "i4"), ("NGOODZ_LRG", "i4"), ("NELG", "i4"), ("NGOODZ_ELG", "i4"), ("NQSO", "i4"),
                 ("NGOODZ_QSO", "i4"), ("NSKY", "i4"), ("NSKY_RESID", "i4"), ("STATUS", "U8")]

REFERENCE_NZ_DTYPE = [("TRACER", "U5"), ("ZLO", "f4"), ("ZHI", "f4"), ("N", "i4"), ("FRAC", "f8")]
REFERENCE_SUCCESS_DTYPE = [("TRACER", "U5"), ("NVALID", "i4"), ("NGOODZ", "i4"), ("SUCCESS", "f8")]


def first_per_target(targetid, exp_fibermap, column):
    """``column`` of each target's first EXP_FIBERMAP row (-1 when the target has none)."""
    if exp_fibermap is None or column not in (exp_fibermap.dtype.names or ()):
        return np.full(len(targetid), -1)
    first = {}
    for t, v in zip(exp_fibermap["TARGETID"].tolist(), exp_fibermap[column].tolist()):
        first.setdefault(t, v)
    return np.array([first.get(t, -1) for t in np.asarray(targetid).tolist()])


def fiber_qa(redshifts, fibermap, tsnr2, snr2time, tracer, goaltime, mintfrac=0.9, fiber_rel_mintfrac=0.85,
             dchi2_min=25.0, exp_fibermap=None):
    """FIBERQA rows of one petal.

    Parameters
    ----------
    redshifts : structured (n,)
        redrock's REDSHIFTS (Z, ZERR, ZWARN, DELTACHI2, SPECTYPE).
    fibermap : structured (n,)
        The coadd FIBERMAP (same rows).
    tsnr2 : structured (n,) or None
        redrock's TSNR2 HDU.
    snr2time : float
        EFFTIME per unit TSNR2 of ``tracer`` (0: EFFTIME_SPEC unknown, NaN, and no LOWEFFTIME; so
        also without TSNR2 columns).
    tracer : str
        TSNR2 tracer of the program (LRG dark, BGS bright).
    goaltime, mintfrac, fiber_rel_mintfrac : float
    dchi2_min : float
    exp_fibermap : structured, optional
        The coadd's EXP_FIBERMAP: FIBER and PETAL_LOC of targets whose FIBERMAP lacks them (a
        coadd keeps only what is common to its exposures).

    Returns
    -------
    structured (n,) of :data:`FIBERQA_DTYPE`
    """
    n = len(redshifts)
    out = np.zeros(n, FIBERQA_DTYPE)
    names = fibermap.dtype.names or ()

    def col(name, *alts, default=0):
        for c in (name, *alts):
            if c in names:
                return fibermap[c]
        return default

    out["TARGETID"] = redshifts["TARGETID"]
    for c in ("PETAL_LOC", "FIBER", "TARGET_RA", "TARGET_DEC", "DESI_TARGET", "OBJTYPE"):
        out[c] = col(c) if c in names or c not in ("PETAL_LOC", "FIBER") else \
            first_per_target(redshifts["TARGETID"], exp_fibermap, c)
    out["FIBER_X"], out["FIBER_Y"] = col("MEAN_FIBER_X", "FIBER_X"), col("MEAN_FIBER_Y", "FIBER_Y")
    out["DELTA_X"], out["DELTA_Y"] = col("MEAN_DELTA_X", "DELTA_X"), col("MEAN_DELTA_Y", "DELTA_Y")
    out["COADD_FIBERSTATUS"] = col("COADD_FIBERSTATUS", "FIBERSTATUS")
    out["TRACER"] = target_class(fibermap, n)
    have = tsnr2.dtype.names or () if tsnr2 is not None else ()
    for t in ("BGS", "ELG", "LRG", "QSO"):
        c = f"TSNR2_{t}"
        out[c] = tsnr2[c] if c in have else np.nan
    # no TSNR2 (redrock files of an older fiberflow) or no calibration: EFFTIME unknown, not low
    out["EFFTIME_SPEC"] = snr2time * out[f"TSNR2_{tracer}"] if snr2time else np.nan
    for c in ("Z", "ZERR", "ZWARN", "DELTACHI2"):
        out[c] = redshifts[c]
    out["SPECTYPE"] = np.char.strip(np.asarray(redshifts["SPECTYPE"]).astype(str))
    out["GOODZ"] = (out["ZWARN"] == 0) & (out["DELTACHI2"] > dchi2_min)
    low = np.isfinite(out["EFFTIME_SPEC"]) & (out["EFFTIME_SPEC"] < fiber_rel_mintfrac * mintfrac * goaltime)
    out["QAFIBERSTATUS"] = out["COADD_FIBERSTATUS"] | np.where(low, fibermask.mask("LOWEFFTIME"), 0)
    out["SKY_RESID_SIG"] = out["SKY_RESID_WAVE"] = np.nan  # :func:`sky_residuals` fills the sky fibers
    return out


def sky_residuals(objtype, bands, width=100.0):
    """How far the coadd of each sky fiber is from zero: the largest significance of its
    weighted mean in ``width`` Angstrom windows over the bands (what the sky subtraction left).

    Parameters
    ----------
    objtype : (n,) OBJTYPE of the coadd's rows
    bands : dict band -> (wave (nwave,), flux, ivar, mask (n, nwave))
    width : window [Angstrom]

    Returns
    -------
    sig, wave : (n,) signed significance and window centre of the worst window (NaN for the rows
        that are not sky fibers, or have no good window)
    """
    from .metrics import window_residuals

    sky = np.char.strip(np.asarray(objtype).astype(str)) == "SKY"
    sig = np.full(len(sky), np.nan)
    wav = np.full(len(sky), np.nan)
    rows = np.flatnonzero(sky)
    if not rows.size:
        return sig, wav
    best = np.zeros(rows.size)
    for wave, flux, ivar, mask in bands.values():
        r = window_residuals(wave, np.asarray(flux)[rows], np.asarray(ivar)[rows], np.asarray(mask)[rows], None, width)
        up = np.isfinite(r["SIG_WAVE"]) & (np.abs(r["SIG"]) >= np.abs(best))
        best[up] = r["SIG"][up]
        sig[rows[up]], wav[rows[up]] = r["SIG"][up], r["SIG_WAVE"][up]
    return sig, wav


def valid(fqa):
    """(n,) bool: targets (OBJTYPE TGT) whose QAFIBERSTATUS has no bad bit (LOWEFFTIME included)."""
    bad = BAD_FIBERSTATUS | fibermask.mask("LOWEFFTIME")
    return (np.char.strip(fqa["OBJTYPE"].astype(str)) == "TGT") & ((fqa["QAFIBERSTATUS"] & bad) == 0)


def reference_tables(fqa, zbins=ZBINS):
    """The n(z) and success rate of each tracer in FIBERQA rows (a reference, or a tile's own).

    Returns
    -------
    nz : structured of :data:`REFERENCE_NZ_DTYPE` (tracer x bin)
    success : structured of :data:`REFERENCE_SUCCESS_DTYPE` (tracer)
    """
    ok = valid(fqa)
    nz, succ = [], []
    for t in TRACERS:
        sel = ok & (fqa["TRACER"] == t)
        good = sel & (fqa["GOODZ"] == 1)
        h, _ = np.histogram(fqa["Z"][good], bins=zbins)
        tot = max(int(h.sum()), 1)
        nz += [(t, zbins[i], zbins[i + 1], int(h[i]), h[i] / tot) for i in range(len(h))]
        succ.append((t, int(sel.sum()), int(good.sum()), good.sum() / max(int(sel.sum()), 1)))
    return np.array(nz, REFERENCE_NZ_DTYPE), np.array(succ, REFERENCE_SUCCESS_DTYPE)


def poisson_excess_sigma(n, mu):
    """Gaussian significance of observing ``n`` or more events when ``mu`` are expected
    (0 when ``n <= mu``)."""
    if n <= mu:
        return 0.0
    from scipy import stats

    p = float(stats.poisson.sf(n - 1, mu))
    return float(min(stats.norm.isf(max(p, 1e-300)), 38.0))


def nz_excess(fqa, ref_nz, ref_success):
    """Largest excess of good redshifts over the reference n(z), per tracer.

    The expected count in a bin is the tracer's good redshifts in the tile times the reference
    fraction, with a floor of half an event of the reference (a bin the reference never saw is
    not certain to be empty).

    Returns
    -------
    dict tracer -> {SIGMA, ZLO, ZHI, N, EXPECTED}
    """
    ok = valid(fqa) & (fqa["GOODZ"] == 1)
    out = {}
    for t in TRACERS:
        rows = ref_nz[np.char.strip(ref_nz["TRACER"].astype(str)) == t]
        if not len(rows):
            continue
        z = fqa["Z"][ok & (fqa["TRACER"] == t)]
        nref = max(int(rows["N"].sum()), 1)
        edges = np.append(rows["ZLO"], rows["ZHI"][-1]).astype(float)
        h, _ = np.histogram(z, bins=edges)
        best = {"SIGMA": 0.0, "ZLO": round(float(rows["ZLO"][0]), 3), "ZHI": round(float(rows["ZHI"][0]), 3), "N": 0,
                "EXPECTED": 0.0}
        for i, n in enumerate(h):
            mu = len(z) * max(float(rows["FRAC"][i]), 0.5 / nref)
            s = poisson_excess_sigma(int(n), mu)
            if s > best["SIGMA"]:
                best = {"SIGMA": round(s, 2), "ZLO": round(float(rows["ZLO"][i]), 3), "ZHI": round(float(rows["ZHI"][i]), 3),
                        "N": int(n), "EXPECTED": round(mu, 3)}
        out[t] = best
    return out


def petal_qa(fqa, ref_success, sky_resid_sigma=DEFAULTS["sky_resid_sigma"]):
    """PETALQA rows: counts, median depth and redshift success against the reference.

    SUCCESS_DEFICIT = (NGOODZ - NEXPECT) / sqrt(sum s (1 - s)) over the petal's valid LRG, ELG
    and QSO targets, with s each tracer's reference success rate (0 for a petal without any).
    NSKY: sky fibers with a measured SKY_RESID_SIG; NSKY_RESID: those beyond ``sky_resid_sigma``.
    """
    succ = {str(r["TRACER"]).strip(): float(r["SUCCESS"]) for r in ref_success}
    petals = sorted(set(fqa["PETAL_LOC"].tolist()))
    out = np.zeros(len(petals), PETALQA_DTYPE)
    ok = valid(fqa)
    for k, p in enumerate(petals):
        sel = fqa["PETAL_LOC"] == p
        tgt = sel & (np.char.strip(fqa["OBJTYPE"].astype(str)) == "TGT")
        row = out[k]
        row["PETAL_LOC"], row["NFIBER"], row["NTARGET"] = p, int(sel.sum()), int(tgt.sum())
        row["NVALID"] = int((sel & ok).sum())
        exp = var = 0.0
        ngood = 0
        for t in TRACERS:
            v = sel & ok & (fqa["TRACER"] == t)
            g = v & (fqa["GOODZ"] == 1)
            row[f"N{t}"], row[f"NGOODZ_{t}"] = int(v.sum()), int(g.sum())
            s = succ.get(t, 0.0)
            exp += v.sum() * s
            var += v.sum() * s * (1 - s)
            ngood += int(g.sum())
        row["NGOODZ"], row["NEXPECT"] = ngood, exp
        row["SUCCESS_DEFICIT"] = (ngood - exp) / math.sqrt(max(var, 1.0))
        eff = fqa["EFFTIME_SPEC"][tgt]
        row["EFFTIME_MEDIAN"] = float(np.median(eff)) if eff.size else 0.0
        row["TSNR2_LRG_MEDIAN"] = float(np.median(fqa["TSNR2_LRG"][tgt])) if tgt.any() else 0.0
        sky = sel & np.isfinite(fqa["SKY_RESID_SIG"])
        row["NSKY"] = int(sky.sum())
        row["NSKY_RESID"] = int((sky & (np.abs(np.nan_to_num(fqa["SKY_RESID_SIG"])) > sky_resid_sigma)).sum())
    return out


def petal_sky_frac(row):
    """A PETALQA row's fraction of sky fibers with flux left (None without measured sky fibers)."""
    return float(row["NSKY_RESID"]) / row["NSKY"] if row["NSKY"] > 0 else None


def tile_metrics(fqa, petals, ref_nz, ref_success, efftime, goaltime):
    """The tile's anomaly metrics (values only; :func:`score_tile` scores them).

    Returns
    -------
    dict
        NZ_EXCESS (max over tracers), NZ_EXCESS_TRACER / _ZLO / _ZHI / _N / _EXPECTED (where),
        NZ_EXCESS_BY_TRACER, SUCCESS_DEFICIT (worst petal) and SUCCESS_DEFICIT_PETAL,
        VALID_FRAC, EFFTIME_FRAC, EFFTIME_SPEC, GOALTIME; SKY_RESID_FRAC (worst petal, when some
        petal has measured sky fibers) with SKY_RESID_PETAL, SKY_RESID_NSKY / _NRESID and the worst
        sky fiber's SKY_RESID_FIBER, _SIG, _WAVE.
    """
    ex = nz_excess(fqa, ref_nz, ref_success)
    top = max(ex, key=lambda t: ex[t]["SIGMA"]) if ex else None
    tgt = np.char.strip(fqa["OBJTYPE"].astype(str)) == "TGT"
    m = {"NZ_EXCESS": ex[top]["SIGMA"] if top else 0.0,
         "NZ_EXCESS_TRACER": top or "",
         **({f"NZ_EXCESS_{k}": ex[top][k] for k in ("ZLO", "ZHI", "N", "EXPECTED")} if top else {}),
         "NZ_EXCESS_BY_TRACER": {t: v["SIGMA"] for t, v in ex.items()},
         "VALID_FRAC": round(float(valid(fqa).sum() / max(int(tgt.sum()), 1)), 4),
         "EFFTIME_SPEC": round(float(efftime), 1) if np.isfinite(efftime) else None, "GOALTIME": float(goaltime),
         "EFFTIME_FRAC": round(float(efftime) / goaltime, 4) if goaltime and np.isfinite(efftime) else None}
    if len(petals):
        k = int(np.argmin(petals["SUCCESS_DEFICIT"]))
        m["SUCCESS_DEFICIT"] = round(float(petals["SUCCESS_DEFICIT"][k]), 2)
        m["SUCCESS_DEFICIT_PETAL"] = int(petals["PETAL_LOC"][k])
    fracs = [(petal_sky_frac(r), r) for r in petals if petal_sky_frac(r) is not None]
    if fracs:
        frac, row = max(fracs, key=lambda x: x[0])
        m.update({"SKY_RESID_FRAC": round(frac, 4), "SKY_RESID_PETAL": int(row["PETAL_LOC"]),
                  "SKY_RESID_NSKY": int(row["NSKY"]), "SKY_RESID_NRESID": int(row["NSKY_RESID"])})
        sig = np.abs(np.nan_to_num(fqa["SKY_RESID_SIG"]))
        k = int(np.argmax(sig))
        m.update({"SKY_RESID_FIBER": int(fqa["FIBER"][k]), "SKY_RESID_SIG": round(float(fqa["SKY_RESID_SIG"][k]), 1),
                  "SKY_RESID_WAVE": round(float(fqa["SKY_RESID_WAVE"][k]), 1)})
    return m


def score_tile(metrics, petals, specs):
    """Score the tile's metrics and each petal's SUCCESS_DEFICIT.

    Parameters
    ----------
    metrics : dict from :func:`tile_metrics`
    petals : PETALQA rows (STATUS is filled in)
    specs : dict metric -> {normal, warning}

    Returns
    -------
    dict
        SCORES {metric: score dict}, STATUS (worst), NALARM.
    """
    scores = {name: score_metric(metrics.get(name), spec, "") for name, spec in specs.items() if name in metrics}
    for row in petals:
        st = []
        if "SUCCESS_DEFICIT" in specs:
            st.append(score_metric(float(row["SUCCESS_DEFICIT"]), specs["SUCCESS_DEFICIT"], "")["STATUS"])
        if "SKY_RESID_FRAC" in specs and petal_sky_frac(row) is not None:
            st.append(score_metric(petal_sky_frac(row), specs["SKY_RESID_FRAC"], "")["STATUS"])
        row["STATUS"] = worst(st)
    return {"SCORES": scores, "STATUS": worst(s["STATUS"] for s in scores.values()),
            "NALARM": sum(s["STATUS"] == "ALARM" for s in scores.values())}


def history_reference(tiles, tileid, night, min_tiles):
    """A reference from the production's own history: the n(z) and success of the tile QAs of
    other tiles, of earlier nights, whose status is NORMAL.

    Parameters
    ----------
    tiles : list of TileQA
    tileid, night : int
        The tile being checked (its own QA and later nights never count).
    min_tiles : int
        Fewest good tiles a reference needs (None is returned below it).

    Returns
    -------
    (nz, success, ntile) or None
    """
    good = [t.fiberqa for t in tiles if t.status == "NORMAL" and int(t.header["TILEID"]) != int(tileid)
            and int(t.header["LASTNIGHT"]) < int(night)]
    if len(good) < max(int(min_tiles), 1):
        return None
    nz, success = reference_tables(np.concatenate(good))
    return nz, success, len(good)


def settings(thresholds):
    """The ``tile_qa`` section of a thresholds mapping with defaults: dchi2_min, sky_resid_sigma,
    reference (a path, None for the shipped one, or ``history``: the production's own good tiles,
    with history_min_tiles / history_tiles), metrics (name -> ranges).

    Raises
    ------
    ConfigError
        Naming the key at fault.
    """
    from ..errors import ConfigError
    from .scoring import _range

    sec = dict((thresholds or {}).get("tile_qa") or {})
    bad = set(sec) - {"dchi2_min", "sky_resid_sigma", "reference", "history_min_tiles", "history_tiles", "metrics"}
    if bad:
        raise ConfigError(f"qa.yaml: tile_qa: unknown key(s) {', '.join(sorted(bad))}")
    out = {"dchi2_min": float(sec.get("dchi2_min", DEFAULTS["dchi2_min"])), "reference": sec.get("reference"),
           "sky_resid_sigma": float(sec.get("sky_resid_sigma", DEFAULTS["sky_resid_sigma"])),
           "history_min_tiles": sec.get("history_min_tiles", DEFAULTS["history_min_tiles"]),
           "history_tiles": sec.get("history_tiles", DEFAULTS["history_tiles"]),
           "metrics": {k: dict(v) for k, v in DEFAULTS["metrics"].items()}}
    for key in ("history_min_tiles", "history_tiles"):
        if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 1:
            raise ConfigError(f"qa.yaml: tile_qa.{key}: must be a whole number of tiles >= 1, not {out[key]!r}")
    for name, spec in (sec.get("metrics") or {}).items():
        where = f"qa.yaml: tile_qa.metrics.{name}"
        if name not in DEFAULTS["metrics"]:
            raise ConfigError(f"{where}: unknown tile metric (known: {', '.join(DEFAULTS['metrics'])})")
        if not isinstance(spec, dict) or "normal" not in spec:
            raise ConfigError(f"{where}: needs at least 'normal: [low, high]'")
        n = _range(spec["normal"], where + ".normal")
        w = _range(spec.get("warning", spec["normal"]), where + ".warning")
        if w[0] > n[0] or w[1] < n[1]:
            raise ConfigError(f"{where}: the warning range must contain the normal range")
        out["metrics"][name] = dict(spec)
    return out
