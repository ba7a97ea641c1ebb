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


def stack_tables(arrays, what="tables"):
    """Rows of structured arrays with the same columns, one after the other.

    Columns may differ in string width or in the length of a vector column (redrock sizes
    SUBTYPE and COEFF by the targets it fitted): the result takes the widest, vectors padded
    with zeros.

    Parameters
    ----------
    arrays : list of structured (n_k,)

    Returns
    -------
    structured (sum n_k,)
    """
    names = arrays[0].dtype.names
    for a in arrays[1:]:
        if a.dtype.names != names:
            raise DataError(None, f"{what} do not have the same columns: {a.dtype.names} vs {names}")
    descr = []
    for n in names:
        dts = [a.dtype.fields[n][0] for a in arrays]
        bases = [d.base for d in dts]
        shape = tuple(int(x) for x in np.max([d.shape or (1,) for d in dts], axis=0)) if dts[0].shape else ()
        if bases[0].kind in "SU":
            base = np.dtype(f"{bases[0].kind}{max(b.itemsize // (4 if b.kind == 'U' else 1) for b in bases)}")
        else:
            base = np.result_type(*bases)
        descr.append((n, base, shape) if shape else (n, base))
    out = np.zeros(sum(len(a) for a in arrays), dtype=descr)
    i = 0
    for a in arrays:
        for n in names:
            v = a[n]
            if v.ndim > 1:
                out[n][i:i + len(a), :v.shape[1]] = v
            else:
                out[n][i:i + len(a)] = v
        i += len(a)
    return out


def _table_units(header):
    """TUNITn of a fitsio table header by column name."""
    cols = {int(k[5:]): header[k] for k in header.keys() if k.startswith("TTYPE") and k[5:].isdigit()}
    return {name: str(header.get(f"TUNIT{i}", "")).strip() for i, name in cols.items()}


def _input_order(tids, exp_targetids):
    """Order of rows ``tids`` (TARGETIDs) that puts them in the order of ``exp_targetids`` (the
    k-th row of a target in ``tids`` is its k-th row there)."""
    def keys(t):
        seen = {}
        out = []
        for x in t.tolist():
            k = seen.get(x, 0)
            seen[x] = k + 1
            out.append((x, k))
        return out

    pos = {key: i for i, key in enumerate(keys(np.asarray(exp_targetids)))}
    rank = np.array([pos.get(key, len(pos)) for key in keys(np.asarray(tids))])
    return np.argsort(rank, kind="stable")


def merge_redrock(parts, outfile, exp_targetids=None):
    """One redrock file from redrock files of consecutive slices of the same coadd's targets.

    The primary header and each HDU's keywords are those of the first part; the tables'
    rows are stacked in the parts' order (:func:`stack_tables`), with their units; DATASUM on
    every table. redrock writes the EXP_FIBERMAP rows of its targets in the coadd's order
    (exposure by exposure): with ``exp_targetids`` the merged rows follow it too.

    Parameters
    ----------
    parts : list of str, ``redrock-*.fits`` of target slices, in target order
    outfile : str, written in place (the caller makes it atomic)
    exp_targetids : (n,) int, optional, TARGETID of the coadd's EXP_FIBERMAP rows
    """
    import fitsio

    with fitsutil.open_fits(parts[0]) as fx:
        primary = fx[0].read_header()
        names = fitsutil.hdu_names(fx)[1:]
        headers = {n: fx[n].read_header() for n in names}
    with fitsio.FITS(outfile, "rw", clobber=True) as out:
        out.write(None, header=[r for r in primary.records() if not fitsutil._is_structural(r["name"])])
        for name in names:
            rows = []
            for p in parts:
                with fitsutil.open_fits(p) as fx:
                    fitsutil.require_hdu(fx, name, p)
                    rows.append(fx[name].read())
            table = stack_tables(rows, f"the {name} HDUs of {parts[0]} and the other parts")
            if name == "EXP_FIBERMAP" and exp_targetids is not None:
                table = table[_input_order(table["TARGETID"], exp_targetids)]
            units = _table_units(headers[name])
            keys = [r for r in headers[name].records() if not fitsutil._is_structural(r["name"])
                    and r["name"] not in ("CHECKSUM", "DATASUM")]
            out.write(table, extname=name, header=keys, units=[units.get(n, "") for n in table.dtype.names])
            fitsutil._write_datasum(out[-1])


def merge_rrdetails(parts, outfile):
    """One redrock details file (``rrdetails-*.h5``) from those of consecutive target slices.

    redrock's layout (``redrock.results.write_zscan``): ``targetids[nt]``, ``zbest[nt]``,
    ``zscan/{spectype}/{zchi2,penalty,zcoeff}[nt, ...]`` and ``zscan/{spectype}/redshifts[nz]``
    (the same in every part), ``zfit/{targetid}/zfit``.
    """
    import h5py

    files = [h5py.File(p, "r") for p in parts]
    try:
        with h5py.File(outfile, "w") as out:
            out["targetids"] = np.concatenate([f["targetids"][()] for f in files])
            out["zbest"] = stack_tables([f["zbest"][()] for f in files], f"the zbest tables of {parts[0]} and others")
            for spectype in files[0]["zscan"]:
                grp = f"zscan/{spectype}"
                z0 = files[0][grp]["redshifts"][()]
                for f, p in zip(files, parts):
                    if spectype not in f["zscan"] or not np.array_equal(f[grp]["redshifts"][()], z0):
                        raise DataError(p, f"{grp} does not have the redshift grid of {parts[0]}")
                out[f"{grp}/redshifts"] = z0
                for key in files[0][grp]:
                    if key != "redshifts":
                        out[f"{grp}/{key}"] = np.concatenate([f[grp][key][()] for f in files])
            for f in files:
                for tid in f["zfit"]:
                    f.copy(f["zfit"][tid], out, name=f"zfit/{tid}")
    finally:
        for f in files:
            f.close()


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
