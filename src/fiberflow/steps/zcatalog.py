"""Redshift catalogs (ztile, zpix) from redrock files, and the production summaries.

A catalog has one row per target per coadd: redrock's REDSHIFTS joined with the coadd's
FIBERMAP and TSNR2 and the coadd's identity. A target observed in several coadds (several
tiles, or a pixel and ... ) has several rows; ``ZCAT_NSPEC`` counts them and ``ZCAT_PRIMARY``
marks the best one as DESI defines it (desispec.zcatalog.find_primary_spectra): a row with
ZWARN 0 before any with ZWARN set, then the largest sort column (DESI: TSNR2_LRG).
"""

from __future__ import annotations

import os

import numpy as np

from .. import paths
from ..errors import DataError
from ..io.zcatalog import ZCatalog, read_redrock

#: DESI's sort column for the primary spectrum; catalogs without it use the next one
SORT_COLUMNS = ("TSNR2_LRG", "COADD_EXPTIME")


def find_primary(targetid, zwarn, sortval):
    """Number of rows of each target and the target's primary row.

    Parameters
    ----------
    targetid : (n,) int
    zwarn : (n,) int
    sortval : (n,) float
        Larger is better; NaN is worst.

    Returns
    -------
    nspec : (n,) int
        Rows of the same TARGETID.
    primary : (n,) bool
        One True per TARGETID: ZWARN == 0 preferred, then the largest ``sortval`` (the first
        row wins a tie).
    """
    targetid = np.asarray(targetid)
    n = targetid.size
    key = np.where(np.isfinite(sortval), -np.asarray(sortval, float), np.inf)
    order = np.lexsort((np.arange(n), key, np.asarray(zwarn) != 0, targetid))
    ts = targetid[order]
    first = np.ones(n, bool)
    first[1:] = ts[1:] != ts[:-1]
    primary = np.zeros(n, bool)
    primary[order[first]] = True
    _, inv, counts = np.unique(targetid, return_inverse=True, return_counts=True)
    return counts[inv].astype(np.int16), primary


def _columns(arr, skip):
    return [(n, arr[n]) for n in arr.dtype.names if n not in skip]


def catalog_rows(rr, ids):
    """One redrock file's rows: REDSHIFTS, then FIBERMAP and TSNR2 columns, then ``ids``.

    Parameters
    ----------
    rr : fiberflow.io.zcatalog.Redrock
    ids : dict
        Constant columns (name -> scalar), e.g. TILEID and PETAL_LOC, or HEALPIX.

    Returns
    -------
    structured ndarray (ntarget,)
    """
    cols = _columns(rr.redshifts, ())
    seen = {n for n, _ in cols}
    for tab in (rr.fibermap, rr.tsnr2):
        if tab is not None:
            more = _columns(tab, seen | set(ids))
            cols += more
            seen |= {n for n, _ in more}
    n = len(rr.redshifts)
    cols += [(k, np.full(n, v)) for k, v in ids.items() if k not in seen]
    out = np.zeros(n, dtype=[(k, a.dtype, a.shape[1:]) for k, a in cols])
    for k, a in cols:
        out[k] = a
    return out


def stack(tables):
    """Concatenate structured arrays over the columns they all have (strings widened, numbers
    promoted), in the first table's column order."""
    names = [n for n in tables[0].dtype.names if all(n in t.dtype.names for t in tables[1:])]
    dtype = []
    for n in names:
        dts = [t.dtype[n] for t in tables]
        base = [d.base for d in dts]
        shape = dts[0].shape
        if any(d.shape != shape for d in dts):
            continue  # e.g. COEFF of templates with another number of coefficients
        if base[0].kind in "US":
            dt = np.dtype(f"{base[0].kind}{max(b.itemsize // (4 if b.kind == 'U' else 1) for b in base)}")
        else:
            dt = np.result_type(*base)
        dtype.append((n, dt, shape))
    out = np.zeros(sum(len(t) for t in tables), dtype=dtype)
    k = 0
    for t in tables:
        for n, _, _ in dtype:
            out[n][k : k + len(t)] = t[n]
        k += len(t)
    return out


def coadd_ids(path, group):
    """Identity columns of a redrock file from its name: ztile (TILEID, PETAL_LOC, LASTNIGHT)
    or zpix (HEALPIX, SURVEY, PROGRAM)."""
    try:
        ftype, ids = paths.parse_path(path)
    except ValueError:
        ftype, ids = None, {}
    if group == "ztile" and ftype == "redrock_cumulative":
        return {"TILEID": np.int32(ids["tileid"]), "PETAL_LOC": np.int16(ids["spectrograph"]),
                "LASTNIGHT": np.int32(ids["night"])}
    if group == "zpix" and ftype == "redrock":
        return {"HEALPIX": np.int32(ids["pix"]), "SURVEY": ids["survey"], "PROGRAM": ids["program"]}
    want = "redrock-{spectrograph}-{tileid}-thru{night}.fits" if group == "ztile" else \
        "redrock-{survey}-{program}-{pix}.fits"
    raise DataError(path, f"is not named as a {group} input ({want})")


def zcatalog(files, group, survey, program, header=None):
    """The catalog of a set of redrock files.

    Parameters
    ----------
    files : list of str
        redrock files (cumulative tile files for ``ztile``, HEALPix files for ``zpix``).
    group : {"ztile", "zpix"}
    survey, program : str
        The catalog's survey and program; a file whose header names others is refused.
    header : dict, optional
        Primary header (provenance) of the catalog.

    Returns
    -------
    ZCatalog
    """
    if len(set(map(os.path.abspath, files))) != len(files):
        raise DataError(files[0], "is given twice")
    tables, exp, rrver = [], [], set()
    for f in files:
        ids = coadd_ids(f, group)
        rr = read_redrock(f)
        for key, want in (("SURVEY", survey), ("PROGRAM", program)):
            have = rr.header.get(key)
            if have not in (None, "") and str(have).strip() != want:
                raise DataError(f, f"is a redrock file of {key} {have}, not of the {group} catalog's {want}")
        rrver.add(str(rr.header["RRVER"]))
        if np.unique(rr.redshifts["TARGETID"]).size != len(rr.redshifts):
            raise DataError(f, "lists a TARGETID twice")
        ids.setdefault("SURVEY", survey)
        ids.setdefault("PROGRAM", program)
        tables.append(catalog_rows(rr, ids))
        if rr.exp_fibermap is not None:
            exp.append(rr.exp_fibermap)
    cat = stack(tables)
    sort = next((c for c in SORT_COLUMNS if c in cat.dtype.names), None)
    sortval = cat[sort].astype(float) if sort else np.zeros(len(cat))
    nspec, primary = find_primary(cat["TARGETID"], cat["ZWARN"], sortval)
    full = np.zeros(len(cat), dtype=cat.dtype.descr + [("ZCAT_NSPEC", "i2"), ("ZCAT_PRIMARY", "?")])
    for n in cat.dtype.names:
        full[n] = cat[n]
    full["ZCAT_NSPEC"], full["ZCAT_PRIMARY"] = nspec, primary
    hdr = dict(header or {})
    hdr.update({"SURVEY": survey, "PROGRAM": program, "ZCATGRP": (group, "ztile or zpix"),
                "ZCATSORT": (sort or "", "ZCAT_PRIMARY sort column after ZWARN == 0"),
                "NFILES": (len(files), "redrock files in this catalog"),
                "RRVER": (",".join(sorted(rrver)), "redrock version(s) of the files")})
    return ZCatalog(full, stack(exp) if exp else None, hdr)
