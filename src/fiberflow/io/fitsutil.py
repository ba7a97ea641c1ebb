"""Low-level FITS helpers: atomic writes, checked reads, header conversion.

Every product reader goes through :func:`open_fits`, :func:`read_image` and
:func:`read_table`, so a truncated file, a missing HDU, a missing keyword or a wrong
shape always raises :class:`fiberflow.errors.DataError` naming the file and the problem.
Every writer goes through :func:`atomic_fits`: a temporary file in the destination folder,
renamed into place only when complete, so no half-written product is ever visible.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile

import fitsio
import numpy as np

from ..errors import DataError

# keywords fitsio/cfitsio manage itself; never copied from a dict header
_STRUCTURAL = {
    "SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "NAXIS4", "EXTEND", "XTENSION",
    "PCOUNT", "GCOUNT", "TFIELDS", "EXTNAME", "CHECKSUM", "DATASUM", "ZIMAGE", "ZBITPIX",
    "ZNAXIS", "ZNAXIS1", "ZNAXIS2", "ZNAXIS3", "ZTILE1", "ZTILE2", "ZTILE3", "ZCMPTYPE", "ZNAME1",
    "ZVAL1", "ZNAME2", "ZVAL2", "ZQUANTIZ", "ZDITHER0", "ZSIMPLE", "ZEXTEND", "ZPCOUNT", "ZGCOUNT",
    "ZTENSION", "BZERO", "BSCALE", "END", "COMMENT", "HISTORY", "",
}


def _is_structural(key):
    key = key.upper()
    if key in _STRUCTURAL:
        return True
    for prefix in ("TTYPE", "TFORM", "TDIM", "TUNIT", "TNULL", "TSCAL", "TZERO", "TDISP", "NAXIS", "ZNAXIS", "ZTILE"):
        if key.startswith(prefix) and key[len(prefix):].isdigit():
            return True
    return False


#: renames deferred by an open :func:`all_or_none` block: list of (temporary, final) paths
_PENDING = None


@contextlib.contextmanager
def all_or_none():
    """Within this block, every :func:`atomic_path` write is kept at its temporary path and
    renamed into place only when the whole block succeeds; on any exception every temporary
    file is removed, so a step with several outputs (sky + sframe, frame + model image, QA
    JSON + pages) leaves all of them or none. Blocks do not nest (an inner one joins the outer).
    """
    global _PENDING
    if _PENDING is not None:
        yield
        return
    _PENDING = []
    try:
        yield
        pending, _PENDING = _PENDING, None
        for tmp, path in pending:
            os.replace(tmp, path)
    except BaseException:
        pending, _PENDING = _PENDING or [], None
        for tmp, _ in pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched
    (an older complete version stays, a missing one stays missing). Temporary files of
    ``path`` left by a writer that was killed (SIGKILL, node failure) are removed first: one
    job owns one output, so none of them can still be in use.

    Parameters
    ----------
    path : str or os.PathLike
        Final destination.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(base)}.*.tmp")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=folder)
    os.close(fd)
    os.unlink(tmp)  # fitsio refuses to clobber silently; let writers create it
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        if _PENDING is not None:
            _PENDING.append((tmp, path))
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_fits(path):
    """Open a new FITS file for writing at a temporary path, atomically renamed to ``path``.

    Yields
    ------
    fitsio.FITS
    """
    with atomic_path(path) as tmp:
        fx = fitsio.FITS(tmp, "rw", clobber=True)
        try:
            yield fx
        finally:
            fx.close()


def header_records(header):
    """Convert a header given as dict (value or (value, comment)) to fitsio records.

    Structural keywords are dropped; COMMENT/HISTORY given as lists are kept.

    Parameters
    ----------
    header : dict or None

    Returns
    -------
    list of dict
    """
    records = []
    if not header:
        return records
    for key, val in header.items():
        ukey = str(key).upper()
        if ukey in ("COMMENT", "HISTORY"):
            vals = val if isinstance(val, (list, tuple)) else [val]
            records.extend({"name": ukey, "value": str(v)} for v in vals)
            continue
        if _is_structural(ukey):
            continue
        comment = ""
        if isinstance(val, tuple):
            val, comment = val
        if isinstance(val, (np.integer,)):
            val = int(val)
        elif isinstance(val, (np.floating,)):
            val = float(val)
        elif isinstance(val, np.bool_):
            val = bool(val)
        if isinstance(val, float) and not np.isfinite(val):
            # a computed value that is not a number is a failed step, not a header card
            raise DataError(None, f"header keyword {ukey} would be {val}: the step produced no sound value")
        if isinstance(val, str) and len(val) > 68:
            val = val[:68]
        rec = {"name": ukey, "value": val}
        if comment:
            rec["comment"] = str(comment)[:72]
        records.append(rec)
    return records


def header_dict(hdr):
    """fitsio header -> plain dict of non-structural keywords (COMMENT/HISTORY as lists)."""
    out = {}
    for rec in hdr.records():
        name = rec.get("name", "")
        if name in ("COMMENT", "HISTORY"):
            out.setdefault(name, []).append(rec.get("value", ""))
            continue
        if _is_structural(name):
            continue
        val = rec.get("value")
        if isinstance(val, str):
            val = val.strip()
        out[name] = val
    return out


def _write_datasum(hdu):
    """Write DATASUM (the data-unit checksum) with a fixed comment.

    cfitsio's checksum cards carry the wall-clock time in their comment, which would make
    identical inputs give different bytes; CHECKSUM (which covers that comment) is therefore
    dropped and DATASUM kept: it is what detects truncated or corrupted data on read.
    """
    hdu.write_checksum()
    datasum = hdu.read_header()["DATASUM"]
    hdu.delete_key("CHECKSUM")
    hdu.write_key("DATASUM", str(datasum).strip(), comment="data unit checksum")


def write_image(fx, data, extname, header=None, compress=None):
    """Write one image HDU with checksum.

    Parameters
    ----------
    fx : fitsio.FITS
    data : ndarray
    extname : str
    header : dict, optional
    compress : str, optional
        fitsio compression ("RICE", "GZIP"), for integer images.
    """
    kwargs = {}
    if compress:
        kwargs["compress"] = compress
        if compress.upper() == "RICE" and data.ndim == 2:
            kwargs["tile_dims"] = [1, int(data.shape[-1])]  # row tiles, as fpack
    fx.write(np.ascontiguousarray(data), extname=extname, header=header_records(header), **kwargs)
    _write_datasum(fx[-1])


def refuse_nonfinite(path, what, arr):
    """DataError when a float array about to be written holds NaN or infinite values: a step that
    computed no sound value fails (bad bins are ivar 0 and mask bits, as in DESI's products)."""
    if arr is None:
        return
    arr = np.asarray(arr)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        nbad = int(np.count_nonzero(~np.isfinite(arr)))
        raise DataError(path, f"{what} would hold {nbad} NaN or infinite values: the step produced no sound "
                              "product (nothing written)")


def write_table(fx, table, extname, header=None):
    """Write one binary-table HDU with checksum.

    Parameters
    ----------
    fx : fitsio.FITS
    table : structured ndarray
    extname : str
    header : dict, optional
    """
    fx.write(np.asarray(table), extname=extname, header=header_records(header))
    _write_datasum(fx[-1])


def write_empty_primary(fx, header=None):
    """Write an empty primary HDU carrying ``header``."""
    fx.write(None, header=header_records(header))


def open_fits(path):
    """Open a FITS file for reading, with a clear error when it is missing or unreadable.

    Returns
    -------
    fitsio.FITS
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(path, "file does not exist")
    if os.path.getsize(path) < 2880:
        raise DataError(path, f"file is truncated ({os.path.getsize(path)} bytes, less than one FITS block)")
    try:
        return fitsio.FITS(path)
    except Exception as exc:  # cfitsio raises OSError with its own wording
        raise DataError(path, f"not a readable FITS file ({_short(exc)})") from exc


def _short(exc):
    text = " ".join(str(exc).split())
    return text[:300]


def hdu_names(fx):
    """Upper-case EXTNAMEs of an open file."""
    return [h.get_extname().upper() for h in fx]


def require_hdu(fx, extname, path):
    """Return the HDU ``extname`` (name or index) or raise DataError naming the file and the missing HDU."""
    names = hdu_names(fx)
    if isinstance(extname, (int, np.integer)):
        if 0 <= extname < len(names):
            return fx[int(extname)]
        extname = f"#{extname}"
    elif extname.upper() in names:
        return fx[extname]
    have = ", ".join(n or "<primary>" for n in names)
    size = os.path.getsize(path) if path and os.path.exists(path) else None
    if size is not None and size % 2880:
        raise DataError(path, f"file is truncated ({size} bytes, not a whole number of FITS blocks): "
                              f"HDU {extname} missing (file has {have})")
    raise DataError(path, f"missing HDU {extname} (file has {have})")


def verify_hdus(fx, path, names):
    """Verify the checksums of the HDUs ``names`` of an open file (streamed by cfitsio: the
    data are read block by block, not held in memory). For readers of partial rows, which
    cannot check what they did not read."""
    have = hdu_names(fx)
    for name in names:
        if name in have:
            _verify(fx[name], path, name)


def _verify(hdu, path, extname):
    """Check DATASUM/CHECKSUM when present (cfitsio: 1 correct, 0 absent, -1 wrong)."""
    try:
        res = hdu._FITS.verify_checksum(hdu._ext + 1)
    except Exception as exc:
        raise DataError(path, f"HDU {extname} cannot be verified, file truncated or corrupt ({_short(exc)})") from exc
    if res.get("dataok") == -1:
        raise DataError(path, f"HDU {extname}: data checksum mismatch (file corrupt or truncated)")
    if res.get("hduok") == -1:
        raise DataError(path, f"HDU {extname}: header checksum mismatch (file corrupt)")


def read_image(fx, extname, path, dtype=None, ndim=None, shape=None, verify=True):
    """Read an image HDU with checks.

    Parameters
    ----------
    fx : fitsio.FITS
    extname : str or int
    path : str
        For error messages.
    dtype : numpy dtype, optional
        Cast to this (native-endian) type.
    ndim : int, optional
        Required number of dimensions.
    shape : tuple, optional
        Required shape (None entries match anything).
    verify : bool
        Verify the HDU checksum when one is present.

    Returns
    -------
    (ndarray, dict)
        Data and header dict.
    """
    name = extname if isinstance(extname, str) else f"#{extname}"
    hdu = require_hdu(fx, extname, path)
    try:
        data = hdu.read()
        hdr = hdu.read_header()
    except Exception as exc:
        raise DataError(path, f"HDU {name} cannot be read, file truncated or corrupt ({_short(exc)})") from exc
    if data is None:
        raise DataError(path, f"HDU {name} has no data")
    if verify:
        _verify(hdu, path, name)
    if ndim is not None and data.ndim != ndim:
        raise DataError(path, f"HDU {name} has {data.ndim} dimensions, expected {ndim}")
    if shape is not None:
        if len(shape) != data.ndim or any(s is not None and s != d for s, d in zip(shape, data.shape)):
            raise DataError(path, f"HDU {name} has shape {data.shape}, expected {tuple(shape)}")
    if dtype is not None:
        data = data.astype(np.dtype(dtype).newbyteorder("="), copy=False)
    return data, header_dict(hdr)


def read_table(fx, extname, path, required=(), verify=True):
    """Read a binary-table HDU with checks.

    Parameters
    ----------
    fx : fitsio.FITS
    extname : str
    path : str
    required : sequence of str
        Columns that must be present.

    Returns
    -------
    (structured ndarray, dict)
    """
    hdu = require_hdu(fx, extname, path)
    try:
        data = hdu.read()
        hdr = hdu.read_header()
    except Exception as exc:
        raise DataError(path, f"HDU {extname} cannot be read, file truncated or corrupt ({_short(exc)})") from exc
    if verify:
        _verify(hdu, path, extname)
    missing = [c for c in required if c not in data.dtype.names]
    if missing:
        raise DataError(path, f"HDU {extname} lacks column(s) {', '.join(missing)}")
    return native(data), header_dict(hdr)


def native(arr):
    """Structured or plain array converted to native byte order (no copy if already native)."""
    arr = np.asarray(arr)
    if arr.dtype.names is None:
        return arr.astype(arr.dtype.newbyteorder("="), copy=False)
    descr = []
    for name in arr.dtype.names:
        sub = arr.dtype[name]
        base = sub.base
        if base.kind in "SU":
            nd = base
        else:
            nd = base.newbyteorder("=")
        descr.append((name, nd, sub.shape) if sub.shape else (name, nd))
    return arr.astype(np.dtype(descr), copy=False)


def require_keys(header, keys, path, where):
    """Raise DataError if any of ``keys`` is missing from ``header``."""
    missing = [k for k in keys if k not in header]
    if missing:
        raise DataError(path, f"{where}: missing keyword(s) {', '.join(missing)}")


def check_finite(arr, path, what):
    """Raise DataError if ``arr`` is entirely non-finite; return the count of non-finite values."""
    bad = ~np.isfinite(arr)
    nbad = int(bad.sum())
    if nbad == arr.size and arr.size > 0:
        raise DataError(path, f"{what} is entirely NaN/inf")
    return nbad
