"""Fibermap: one row per fiber, DESI columns and dtypes (desispec.io.fibermap)."""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from ..provenance import with_base_provenance
from . import fitsutil

#: DESI fibermap columns written by fiberflow, in DESI order, with DESI dtypes
FIBERMAP_COLUMNS = [
    ("TARGETID", "i8"),
    ("PETAL_LOC", "i2"),
    ("DEVICE_LOC", "i4"),
    ("LOCATION", "i8"),
    ("FIBER", "i4"),
    ("FIBERSTATUS", "i4"),
    ("TARGET_RA", "f8"),
    ("TARGET_DEC", "f8"),
    ("PMRA", "f4"),
    ("PMDEC", "f4"),
    ("REF_EPOCH", "f4"),
    ("LAMBDA_REF", "f4"),
    ("FA_TARGET", "i8"),
    ("FA_TYPE", "u1"),
    ("OBJTYPE", "U3"),
    ("FIBERASSIGN_X", "f4"),
    ("FIBERASSIGN_Y", "f4"),
    ("PRIORITY", "i4"),
    ("SUBPRIORITY", "f8"),
    ("OBSCONDITIONS", "i4"),
    ("MORPHTYPE", "U4"),
    ("FLUX_G", "f4"),
    ("FLUX_R", "f4"),
    ("FLUX_Z", "f4"),
    ("FLUX_W1", "f4"),
    ("FLUX_W2", "f4"),
    ("FLUX_IVAR_G", "f4"),
    ("FLUX_IVAR_R", "f4"),
    ("FLUX_IVAR_Z", "f4"),
    ("FIBERFLUX_G", "f4"),
    ("FIBERFLUX_R", "f4"),
    ("FIBERFLUX_Z", "f4"),
    ("FIBERTOTFLUX_G", "f4"),
    ("FIBERTOTFLUX_R", "f4"),
    ("FIBERTOTFLUX_Z", "f4"),
    ("EBV", "f4"),
    ("PHOTSYS", "U1"),
    ("SHAPE_R", "f4"),
    ("GAIA_PHOT_G_MEAN_MAG", "f4"),
    ("GAIA_PHOT_BP_MEAN_MAG", "f4"),
    ("GAIA_PHOT_RP_MEAN_MAG", "f4"),
    ("DESI_TARGET", "i8"),
    ("BGS_TARGET", "i8"),
    ("MWS_TARGET", "i8"),
    ("SCND_TARGET", "i8"),
    ("PLATE_RA", "f8"),
    ("PLATE_DEC", "f8"),
    ("NUM_ITER", "i4"),
    ("FIBER_X", "f8"),
    ("FIBER_Y", "f8"),
    ("DELTA_X", "f8"),
    ("DELTA_Y", "f8"),
    ("FIBER_RA", "f8"),
    ("FIBER_DEC", "f8"),
    ("EXPTIME", "f8"),
]

#: columns a fibermap must have for fiberflow to use it
REQUIRED_COLUMNS = ("TARGETID", "PETAL_LOC", "FIBER", "FIBERSTATUS", "OBJTYPE", "TARGET_RA", "TARGET_DEC")

FIBERMAP_DTYPE = np.dtype(FIBERMAP_COLUMNS)


def empty_fibermap(nfiber, petal=0, fibermin=None):
    """A fibermap of ``nfiber`` rows with DESI defaults (unassigned, OBJTYPE 'NON').

    Parameters
    ----------
    nfiber : int
        Number of rows.
    petal : int
        Petal (spectrograph) number; FIBER starts at ``500*petal`` unless ``fibermin`` is given.
    fibermin : int, optional
        First FIBER value.

    Returns
    -------
    ndarray, structured, shape (nfiber,)
    """
    fm = np.zeros(nfiber, dtype=FIBERMAP_DTYPE)
    first = 500 * petal if fibermin is None else fibermin
    fm["FIBER"] = first + np.arange(nfiber)
    fm["PETAL_LOC"] = petal
    fm["DEVICE_LOC"] = fm["FIBER"] % 500
    fm["LOCATION"] = 1000 * petal + fm["DEVICE_LOC"]
    fm["TARGETID"] = -(fm["FIBER"].astype(np.int64) + 1)
    fm["OBJTYPE"] = "NON"
    fm["PHOTSYS"] = "S"
    fm["MORPHTYPE"] = "PSF"
    fm["REF_EPOCH"] = 2015.5
    fm["LAMBDA_REF"] = 5400.0
    fm["FIBERSTATUS"] = 1  # UNASSIGNED until a target is set
    return fm


def conform(table, path=None):
    """Check required columns and coerce DESI dtypes of the known columns.

    Unknown extra columns are kept (later stages append NIGHT, EXPID, ...).
    """
    table = fitsutil.native(table)
    names = table.dtype.names or ()
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise DataError(path, f"fibermap lacks column(s) {', '.join(missing)}")
    known = dict(FIBERMAP_COLUMNS)
    descr = []
    for name in names:
        sub = table.dtype[name]
        if name in known and not sub.shape:
            descr.append((name, known[name]))
        else:
            descr.append((name, sub.base, sub.shape) if sub.shape else (name, sub))
    out = np.zeros(len(table), dtype=descr)
    for name in names:
        col = table[name]
        if out.dtype[name].kind == "U" and col.dtype.kind == "S":
            col = np.char.decode(col, "ascii")
        out[name] = col
    if "OBJTYPE" in names:
        out["OBJTYPE"] = np.char.strip(out["OBJTYPE"].astype(str))
    return out


def read_fibermap(path, extname="FIBERMAP"):
    """Read a fibermap table.

    Returns
    -------
    (ndarray, dict)
        Table (DESI dtypes) and header.
    """
    with fitsutil.open_fits(path) as fx:
        table, hdr = fitsutil.read_table(fx, extname, str(path), required=REQUIRED_COLUMNS)
    return conform(table, path), hdr


def write_fibermap(path, table, header=None):
    """Write a fibermap file (empty primary + FIBERMAP table), atomically."""
    table = conform(table)
    with fitsutil.atomic_fits(path) as fx:
        fitsutil.write_empty_primary(fx, with_base_provenance(header))
        fitsutil.write_table(fx, table, "FIBERMAP", header)


def petal_rows(fibermap, petal):
    """Rows of ``fibermap`` for one petal, sorted by FIBER."""
    sel = fibermap[fibermap["PETAL_LOC"] == petal]
    return sel[np.argsort(sel["FIBER"], kind="stable")]
