"""Production summaries: ``exposures-{specprod}`` (one row per science exposure) and
``tiles-{specprod}`` (one row per tile), as DESI's, from the night QA records (EXPTIME, MJD,
EFFTIME, QA status), the cframes' fibermaps (good fibers) and the cumulative tile catalogs
(redshift success).
"""

from __future__ import annotations

import numpy as np

from ..bitmasks import bad_fiberstatus, desi_target

#: target classes of the tile summary and their DESI_TARGET bits
CLASS_BITS = {"LRG": ("LRG",), "ELG": ("ELG",), "QSO": ("QSO",), "STD": ("STD_FAINT", "STD_BRIGHT")}

EXPOSURE_DTYPE = [("NIGHT", "i4"), ("EXPID", "i4"), ("TILEID", "i4"), ("SURVEY", "U16"), ("PROGRAM", "U16"),
                  ("MJD", "f8"), ("EXPTIME", "f4"), ("EFFTIME_SPEC", "f4"), ("QA_STATUS", "U8"),
                  ("NCAMERA", "i2"), ("NTARGET", "i4"), ("GOODFIBERS", "i4"), ("NZ", "i4"), ("NZGOOD", "i4")]

TILE_DTYPE = [("TILEID", "i4"), ("SURVEY", "U16"), ("PROGRAM", "U16"), ("NEXP", "i2"), ("NNIGHT", "i2"),
              ("FIRSTNIGHT", "i4"), ("LASTNIGHT", "i4"), ("EXPTIME", "f4"), ("EFFTIME_SPEC", "f4"),
              ("NTARGET", "i4"), ("GOODFIBERS", "i4"), ("NZ", "i4"), ("NZGOOD", "i4"),
              ("NZGOOD_LRG", "i4"), ("NZGOOD_ELG", "i4"), ("NZGOOD_QSO", "i4"), ("NZGOOD_STD", "i4"),
              ("GOALTIME", "f4"), ("MINTFRAC", "f4"), ("TSNR2_TRACER", "U4"), ("NVALID", "i4"), ("VALIDFRAC", "f4"),
              ("DONE", "i2")]

#: DESI's tile completeness (the configuration's ``completeness`` section)
COMPLETENESS = {"goaltime": {"dark": 1000.0, "bright": 180.0, "backup": 60.0}, "mintfrac": 0.9,
                "fiber_rel_mintfrac": 0.85, "min_valid_fraction": 0.8}


def good_targets(fibermaps):
    """TARGETIDs of an exposure's target fibers, and those good in every camera that saw them.

    Parameters
    ----------
    fibermaps : list of structured arrays
        The cframes' FIBERMAPs (one per camera).

    Returns
    -------
    (set of all target TARGETIDs, set of good ones)
    """
    seen, bad = set(), set()
    for fm in fibermaps:
        tgt = np.char.strip(fm["OBJTYPE"].astype(str)) == "TGT"
        seen.update(fm["TARGETID"][tgt].tolist())
        bad.update(fm["TARGETID"][tgt & bad_fiberstatus(fm, len(fm))].tolist())
    return seen, seen - bad


def _z_counts(ztile, tileid, targets=None):
    """(rows, rows with ZWARN 0) of a tile's catalog rows, optionally of some TARGETIDs only."""
    if ztile is None:
        return -1, -1
    sel = ztile["TILEID"] == tileid
    if targets is not None:
        sel &= np.isin(ztile["TARGETID"], list(targets))
    good = sel & (ztile["ZWARN"] == 0)
    return int(sel.sum()), int(good.sum())


def exposures_table(exposures, ztile=None):
    """One row per science exposure.

    Parameters
    ----------
    exposures : list of dict
        Per exposure: the night QA record's exposure entry (NIGHT, EXPID, TILEID, EXPTIME, MJD,
        EFFTIME, STATUS), plus SURVEY, PROGRAM and ``fibermaps`` (list of the cframes' FIBERMAPs).
    ztile : structured array, optional
        The cumulative tile catalogs (TILEID, TARGETID, ZWARN, SPECTYPE); without it NZ and
        NZGOOD are -1.

    Returns
    -------
    structured ndarray (nexp,) of :data:`EXPOSURE_DTYPE`
    """
    out = np.zeros(len(exposures), dtype=EXPOSURE_DTYPE)
    for k, e in enumerate(sorted(exposures, key=lambda e: (e["NIGHT"], e["EXPID"]))):
        seen, good = good_targets(e["fibermaps"])
        nz, nzgood = _z_counts(ztile, e["TILEID"], good)
        eff = e.get("EFFTIME")
        out[k] = (e["NIGHT"], e["EXPID"], e["TILEID"], e["SURVEY"], e["PROGRAM"], e.get("MJD") or np.nan,
                  e.get("EXPTIME") or np.nan, np.nan if eff is None else eff, e.get("STATUS") or "",
                  len(e["fibermaps"]), len(seen), len(good), nz, nzgood)
    return out


def target_efftime(ztile, tileid, targets, tracer, snr2time):
    """EFFTIME [s] of a tile's targets from their cumulative coadds' ``TSNR2_{tracer}``.

    Parameters
    ----------
    ztile : structured array or None
        Catalog rows (TILEID, TARGETID, TSNR2_* columns).
    tileid : int
    targets : set of int
        TARGETIDs to evaluate.
    tracer : str
    snr2time : float
        EFFTIME per unit TSNR2 [s] (0: not calibrated).

    Returns
    -------
    (ntarget,) float or None
        None when the catalog has no such column or the calibration is missing; a target
        without a catalog row has EFFTIME 0.
    """
    col = f"TSNR2_{tracer}"
    if ztile is None or col not in (ztile.dtype.names or ()) or not snr2time:
        return None
    sel = ztile["TILEID"] == tileid
    eff = dict(zip(ztile["TARGETID"][sel].tolist(), (snr2time * np.asarray(ztile[col][sel], float)).tolist()))
    return np.array([eff.get(t, 0.0) for t in sorted(targets)], float)


def tiles_table(exposures, ztile=None, completeness=None, snr2time=None):
    """One row per tile from the exposures' rows (:func:`exposures_table` input).

    EXPTIME and EFFTIME_SPEC sum over the tile's exposures (EFFTIME of exposures without one
    counts 0); GOODFIBERS counts targets good in at least one exposure; NZ / NZGOOD the tile's
    rows of the cumulative catalog and those with ZWARN 0 (per target class too).

    Completeness (DESI's, settings of :data:`COMPLETENESS` overridden by ``completeness``):
    GOALTIME of the tile's program, TSNR2_TRACER (LRG for dark, BGS for bright/backup), NVALID
    good targets whose EFFTIME (:func:`target_efftime`, ``snr2time``: tracer -> SNR2TIME) reaches
    ``fiber_rel_mintfrac x mintfrac x goaltime`` (-1 without TSNR2), VALIDFRAC = NVALID /
    GOODFIBERS, DONE = 1 when EFFTIME_SPEC >= mintfrac x goaltime and VALIDFRAC >=
    min_valid_fraction.
    """
    comp = dict(COMPLETENESS, **(completeness or {}))
    goal = dict(COMPLETENESS["goaltime"], **(comp.get("goaltime") or {}))
    tiles = sorted({e["TILEID"] for e in exposures})
    out = np.zeros(len(tiles), dtype=TILE_DTYPE)
    for k, t in enumerate(tiles):
        es = [e for e in exposures if e["TILEID"] == t]
        nights = sorted({e["NIGHT"] for e in es})
        seen, good = set(), set()
        for e in es:
            s, g = good_targets(e["fibermaps"])
            seen |= s
            good |= g
        nz, nzgood = _z_counts(ztile, t)
        eff = sum(e["EFFTIME"] for e in es if e.get("EFFTIME") is not None)
        out[k] = (t, es[0]["SURVEY"], es[0]["PROGRAM"], len(es), len(nights), nights[0], nights[-1],
                  sum(e.get("EXPTIME") or 0.0 for e in es), eff, len(seen), len(good), nz, nzgood,
                  -1, -1, -1, -1, 0.0, comp["mintfrac"], "", -1, np.nan, 0)
        program = str(es[0]["PROGRAM"]).strip().lower()
        tracer = "BGS" if program in ("bright", "backup") else "LRG"
        goaltime = float(goal.get(program, goal["dark"]))
        out["GOALTIME"][k], out["TSNR2_TRACER"][k] = goaltime, tracer
        teff = target_efftime(ztile, t, good, tracer, (snr2time or {}).get(tracer, 0.0))
        if teff is not None and len(good):
            nvalid = int(np.sum(teff >= comp["fiber_rel_mintfrac"] * comp["mintfrac"] * goaltime))
            out["NVALID"][k], out["VALIDFRAC"][k] = nvalid, nvalid / len(good)
            out["DONE"][k] = int(eff >= comp["mintfrac"] * goaltime and nvalid / len(good) >= comp["min_valid_fraction"])
        if ztile is not None and "DESI_TARGET" in ztile.dtype.names:
            sel = (ztile["TILEID"] == t) & (ztile["ZWARN"] == 0)
            for name, bits in CLASS_BITS.items():
                out[f"NZGOOD_{name}"][k] = int((sel & ((ztile["DESI_TARGET"] & desi_target.mask(*bits)) != 0)).sum())
    return out
