"""Redshift products: redrock files (written by DESI's redrock) and fiberflow's catalogs.

``read_redrock`` reads one ``redrock-*.fits`` with the checks every fiberflow reader makes
(HDUs present, checksums, one FIBERMAP row per REDSHIFTS row, same TARGETIDs). ``ZCatalog``
is DESI's ``ztile-*``/``zpix-*`` catalog (HDU ZCATALOG, one row per target per coadd, and
EXP_FIBERMAP); ``Summary`` the production's tiles/exposures table (FITS, with a CSV twin).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..errors import DataError
from . import fitsutil
from .datamodel import Product, hdu


class Redrock(NamedTuple):
    """One redrock file: REDSHIFTS, FIBERMAP (same rows), EXP_FIBERMAP and TSNR2 (or None)."""

    redshifts: np.ndarray
    fibermap: np.ndarray
    exp_fibermap: np.ndarray | None
    tsnr2: np.ndarray | None
    header: dict


REDSHIFT_COLUMNS = ("TARGETID", "Z", "ZERR", "ZWARN", "CHI2", "SPECTYPE", "DELTACHI2")


def read_redrock(path):
    """Read a ``redrock-*.fits``; DataError naming the file when it is not a sound one.

    Returns
    -------
    Redrock
    """
    path = str(path)
    with fitsutil.open_fits(path) as fx:
        names = fitsutil.hdu_names(fx)
        header = fitsutil.header_dict(fx[0].read_header())
        if "RRVER" not in header:
            raise DataError(path, "is not a redrock file (no RRVER in its primary header)")
        z, _ = fitsutil.read_table(fx, "REDSHIFTS", path, required=REDSHIFT_COLUMNS)
        fm, _ = fitsutil.read_table(fx, "FIBERMAP", path, required=("TARGETID",))
        efm = fitsutil.read_table(fx, "EXP_FIBERMAP", path)[0] if "EXP_FIBERMAP" in names else None
        tsnr2 = fitsutil.read_table(fx, "TSNR2", path)[0] if "TSNR2" in names else None
    if len(fm) != len(z) or not np.array_equal(fm["TARGETID"], z["TARGETID"]):
        raise DataError(path, f"FIBERMAP ({len(fm)} rows) does not list the TARGETIDs of REDSHIFTS ({len(z)} rows) "
                              "in the same order")
    if tsnr2 is not None and (len(tsnr2) != len(z) or not np.array_equal(tsnr2["TARGETID"], z["TARGETID"])):
        raise DataError(path, "TSNR2 does not list the TARGETIDs of REDSHIFTS in the same order")
    if not np.isfinite(z["Z"]).all():
        raise DataError(path, "REDSHIFTS has non-finite Z")
    return Redrock(z, fm, efm, tsnr2, header)


@dataclass
class ZCatalog(Product):
    """A redshift catalog (``ztile-{survey}-{program}-cumulative.fits``, ``zpix-{survey}-{program}.fits``).

    ZCATALOG has one row per target per coadd: redrock's REDSHIFTS columns, the coadd FIBERMAP's
    and TSNR2's, the coadd's identity (TILEID + PETAL_LOC for tiles, HEALPIX for pixels, SURVEY,
    PROGRAM), ZCAT_NSPEC (rows of the target in the catalog) and ZCAT_PRIMARY (its best one:
    ZWARN 0 first, then the largest ZCATSORT column, as desispec.zcatalog).
    """

    zcatalog: np.ndarray = hdu("ZCATALOG", kind="table", descr="one row per target per coadd", pos=0)
    exp_fibermap: np.ndarray | None = hdu("EXP_FIBERMAP", kind="table", required=False,
                                          descr="the coadds' EXP_FIBERMAP rows", pos=1)
    header: dict = field(default_factory=dict)

    NAME = "zcatalog"
    VERSION = "1"
    PRIMARY_IMAGE = False


class _Summary(Product):
    """Rows of a production summary; :meth:`write_csv` writes the same rows as CSV."""

    PRIMARY_IMAGE = False
    VERSION = "1"

    def write_csv(self, path):
        """The rows as CSV (header line of column names), atomically."""
        with fitsutil.atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(self.table.dtype.names)
            for row in self.table.tolist():
                w.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
        return path


@dataclass
class TilesSummary(_Summary):
    """``tiles-{specprod}.fits``: one row per tile (HDU TILE_COMPLETENESS, as DESI's)."""

    table: np.ndarray = hdu("TILE_COMPLETENESS", kind="table", descr="one row per tile", pos=0)
    header: dict = field(default_factory=dict)

    NAME = "tiles_summary"
    VERSION = "2"  # 2: completeness columns (GOALTIME ... DONE)


@dataclass
class ExposuresSummary(_Summary):
    """``exposures-{specprod}.fits``: one row per science exposure (HDU EXPOSURES, as DESI's)."""

    table: np.ndarray = hdu("EXPOSURES", kind="table", descr="one row per science exposure", pos=0)
    header: dict = field(default_factory=dict)

    NAME = "exposures_summary"
