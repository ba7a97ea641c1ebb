"""HEALPix-grouped spectra and coadds (``spectra-*`` / ``coadd-*``), DESI layout.

HDU 0 is empty and carries HPXPIXEL/HPXNSIDE/HPXNEST; then FIBERMAP, optional
EXP_FIBERMAP (coadds), SCORES, and per band ``{B}_WAVELENGTH``, ``{B}_FLUX``,
``{B}_IVAR``, ``{B}_MASK``, ``{B}_RESOLUTION``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from ..provenance import with_base_provenance
from . import fitsutil
from .datamodel import Product, check_product, check_shape, hdu
from .frame import FLUX_UNITS


@dataclass
class Spectra(Product):
    """Spectra of many targets in several bands.

    Attributes
    ----------
    bands : list of str
        e.g. ``["b", "r", "z"]`` (or ``["brz"]`` for merged coadds).
    wave : dict band -> (nwave_band,)
    flux, ivar : dict band -> (nspec, nwave_band)
    mask : dict band -> int32 (nspec, nwave_band)
    resolution : dict band -> (nspec, ndiag, nwave_band), optional per band
    fibermap : structured (nspec,)
    exp_fibermap : structured, optional (coadds)
    scores : structured (nspec,), optional
    header : dict
    units : str
    """

    bands: list
    wave: dict = hdu("{B}_WAVELENGTH", dtype="f8", ndim=1, units="Angstrom", descr="wavelength (nwave,)", pos=3)
    flux: dict = hdu("{B}_FLUX", dtype="f4", ndim=2, units=FLUX_UNITS, descr="flux (nspec, nwave)", pos=4)
    ivar: dict = hdu("{B}_IVAR", dtype="f4", ndim=2, descr="inverse variance (nspec, nwave)", pos=5)
    mask: dict = hdu("{B}_MASK", dtype="i4", ndim=2, descr="specmask bits (nspec, nwave)", pos=6)
    resolution: dict = hdu("{B}_RESOLUTION", dtype="f4", ndim=3,
        descr="resolution diagonals (nspec, ndiag, nwave)", pos=7)
    fibermap: np.ndarray = hdu("FIBERMAP", kind="table",
        descr="one row per spectrum (target x exposure, or target for coadds)", pos=0)
    exp_fibermap: np.ndarray | None = hdu("EXP_FIBERMAP", kind="table", required=False,
        descr="per-exposure rows (coadds)", pos=1)
    scores: np.ndarray | None = hdu("SCORES", kind="table", required=False, descr="per-spectrum scores", pos=2)
    header: dict = field(default_factory=dict)
    units: str = FLUX_UNITS

    NAME = "spectra"
    VERSION = "1"
    PRIMARY_IMAGE = False

    @property
    def nspec(self):
        return len(self.fibermap)

    def validate(self, path=None):
        nspec = len(self.fibermap)
        for b in self.bands:
            if b not in self.flux:
                raise DataError(path, f"band {b} has no FLUX")
            nwave = len(self.wave[b])
            for name, d in (("FLUX", self.flux), ("IVAR", self.ivar), ("MASK", self.mask)):
                check_shape(path, f"{b.upper()}_{name}", d.get(b), (nspec, nwave))
            if self.resolution.get(b) is not None:
                check_shape(path, f"{b.upper()}_RESOLUTION", self.resolution[b], (nspec, None, nwave))
        if self.scores is not None:
            check_shape(path, "SCORES", self.scores, (nspec,))

    def write(self, path):
        self.validate()
        for b in self.bands:
            for name, arrs in (("FLUX", self.flux), ("IVAR", self.ivar), ("RESOLUTION", self.resolution)):
                fitsutil.refuse_nonfinite(path, f"spectra HDU {b.upper()}_{name}", arrs.get(b))
        header = with_base_provenance(self.header)
        header["FFDMNAME"] = (self.NAME, "fiberflow data product")
        header["FFDMVER"] = (str(self.VERSION), "datamodel version")
        ivar_units = "10**+34 (s2 cm4 Angstrom2) / erg2" if self.units == FLUX_UNITS else f"1/({self.units})**2"
        with fitsutil.atomic_fits(path) as fx:
            fitsutil.write_empty_primary(fx, header)
            fitsutil.write_table(fx, self.fibermap, "FIBERMAP")
            if self.exp_fibermap is not None:
                fitsutil.write_table(fx, self.exp_fibermap, "EXP_FIBERMAP")
            if self.scores is not None:
                fitsutil.write_table(fx, self.scores, "SCORES")
            for b in self.bands:
                B = b.upper()
                fitsutil.write_image(fx, np.asarray(self.wave[b], "f8"), f"{B}_WAVELENGTH", {"BUNIT": "Angstrom"})
                fitsutil.write_image(fx, np.asarray(self.flux[b], "f4"), f"{B}_FLUX", {"BUNIT": self.units})
                fitsutil.write_image(fx, np.asarray(self.ivar[b], "f4"), f"{B}_IVAR", {"BUNIT": ivar_units})
                fitsutil.write_image(fx, np.asarray(self.mask[b], "i4"), f"{B}_MASK")
                if self.resolution.get(b) is not None:
                    fitsutil.write_image(fx, np.asarray(self.resolution[b], "f4"), f"{B}_RESOLUTION")
        return path

    @classmethod
    def read(cls, path):
        path = str(path)
        header, fibermap, exp_fm, scores, bands = read_spectra_meta(path)
        wave, flux, ivar, mask, res = {}, {}, {}, {}, {}
        units = FLUX_UNITS
        for b in bands:
            wave[b], flux[b], ivar[b], mask[b], res[b], units = read_spectra_band(path, b)
        obj = cls(bands, wave, flux, ivar, mask, res, fibermap, exp_fm, scores, header, units)
        obj.validate(path)
        return obj


def read_spectra_meta(path):
    """Everything of a spectra/coadd file but the per-band arrays.

    Returns
    -------
    (header, fibermap, exp_fibermap or None, scores or None, bands)
    """
    path = str(path)
    with fitsutil.open_fits(path) as fx:
        names = fitsutil.hdu_names(fx)
        header = fitsutil.header_dict(fx[0].read_header())
        check_product(header, path, Spectra.NAME, Spectra.VERSION)
        fibermap, _ = fitsutil.read_table(fx, "FIBERMAP", path)
        exp_fm = fitsutil.read_table(fx, "EXP_FIBERMAP", path)[0] if "EXP_FIBERMAP" in names else None
        scores = fitsutil.read_table(fx, "SCORES", path)[0] if "SCORES" in names else None
    bands = [n[: -len("_WAVELENGTH")].lower() for n in names if n.endswith("_WAVELENGTH")]
    if not bands:
        raise DataError(path, "no {BAND}_WAVELENGTH HDU: not a spectra file")
    return header, fibermap, exp_fm, scores, bands


def spectra_layout(path):
    """{band: (wave (nwave,), ndiag, BUNIT)} of a spectra/coadd file, without reading its arrays
    (ndiag 1 when a band has no RESOLUTION)."""
    path = str(path)
    out = {}
    with fitsutil.open_fits(path) as fx:
        names = fitsutil.hdu_names(fx)
        for n in names:
            if not n.endswith("_WAVELENGTH"):
                continue
            B = n[: -len("_WAVELENGTH")]
            wave = fitsutil.read_image(fx, n, path, dtype="f8", ndim=1)[0]
            ndiag = int(fx[f"{B}_RESOLUTION"].get_dims()[1]) if f"{B}_RESOLUTION" in names else 1
            units = fitsutil.require_hdu(fx, f"{B}_FLUX", path).read_header().get("BUNIT", FLUX_UNITS)
            out[B.lower()] = (wave, ndiag, str(units).strip())
    return out


def read_spectra_band(path, band, resolution=True):
    """One band of a spectra/coadd file (so a coadd can work band by band).

    ``resolution=False`` skips the resolution data (the largest HDU) for callers that do not
    use it.

    Returns
    -------
    (wave (nwave,), flux, ivar (nspec, nwave) f4, mask i4, resolution (nspec, ndiag, nwave) or None, units)
    """
    path = str(path)
    B = band.upper()
    with fitsutil.open_fits(path) as fx:
        names = fitsutil.hdu_names(fx)
        wave = fitsutil.read_image(fx, f"{B}_WAVELENGTH", path, dtype="f8", ndim=1)[0]
        flux, fh = fitsutil.read_image(fx, f"{B}_FLUX", path, dtype="f4", ndim=2)
        ivar = fitsutil.read_image(fx, f"{B}_IVAR", path, dtype="f4", ndim=2)[0]
        if f"{B}_MASK" in names or "FFDMNAME" in fx[0].read_header():
            mask = fitsutil.read_image(fx, f"{B}_MASK", path, dtype="i4", ndim=2)[0]
        else:  # DESI's datamodel makes MASK optional; fiberflow always writes it
            mask = np.zeros(flux.shape, "i4")
        res = (fitsutil.read_image(fx, f"{B}_RESOLUTION", path, dtype="f4", ndim=3)[0]
               if resolution and f"{B}_RESOLUTION" in names else None)
    for name, arr in (("IVAR", ivar), ("MASK", mask)):
        check_shape(path, f"{B}_{name}", arr, flux.shape)
    if res is not None:
        check_shape(path, f"{B}_RESOLUTION", res, (flux.shape[0], None, flux.shape[1]))
    return wave, flux, ivar, mask, res, fh.get("BUNIT", FLUX_UNITS)


def row_runs(rows):
    """Contiguous runs of sorted, unique row indices.

    Parameters
    ----------
    rows : (n,) int, increasing

    Returns
    -------
    list of (start, stop)
        ``rows == concatenate([arange(a, b) for a, b in runs])``.
    """
    rows = np.asarray(rows, np.int64)
    if rows.size == 0:
        return []
    if np.any(np.diff(rows) <= 0):
        raise ValueError("rows must be strictly increasing")
    cut = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], cut])
    stops = np.concatenate([cut, [rows.size]])
    return [(int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, stops)]


def verify_spectra_band(fx, path, band):
    """Verify the checksums of one band's HDUs (FLUX, IVAR, MASK, RESOLUTION) of an open spectra file."""
    B = band.upper()
    fitsutil.verify_hdus(fx, path, [f"{B}_{n}" for n in ("FLUX", "IVAR", "MASK", "RESOLUTION")])


def read_spectra_rows(path, band, rows, fx=None):
    """Some rows of one band of a spectra file, read as contiguous runs (memory bounded by the rows).

    The rows alone cannot be checked against the HDU checksums: without ``fx`` the HDUs read
    are verified whole (streamed); a caller that passes ``fx`` verifies them once itself
    (:func:`verify_spectra_band`).

    Parameters
    ----------
    path : str
    band : str
    rows : (n,) int, strictly increasing
    fx : fitsio.FITS, optional
        The file already open (a caller reading many chunks opens it once).

    Returns
    -------
    (flux, ivar (n, nwave) f4, mask (n, nwave) i4, resolution (n, ndiag, nwave) f4 or None)
    """
    path = str(path)
    B = band.upper()
    runs = row_runs(rows)
    own = fx is None
    with (contextlib.nullcontext(fx) if fx is not None else fitsutil.open_fits(path)) as fx:
        names = fitsutil.hdu_names(fx)
        if own:
            verify_spectra_band(fx, path, band)
        out = []
        for name, dt in (("FLUX", "f4"), ("IVAR", "f4"), ("MASK", "i4"), ("RESOLUTION", "f4")):
            ext = f"{B}_{name}"
            if ext not in names:
                if name == "RESOLUTION":
                    out.append(None)
                    continue
                if name == "MASK" and "FFDMNAME" not in fx[0].read_header():  # optional in DESI's datamodel
                    out.append(np.zeros((len(rows), out[0].shape[1]), dt))
                    continue
                raise DataError(path, f"HDU {ext} is missing")
            dims = fx[ext].get_dims()
            if dims[0] < (runs[-1][1] if runs else 0):
                raise DataError(path, f"HDU {ext} has {dims[0]} rows; row {runs[-1][1] - 1} was asked for")
            if name != "RESOLUTION" and len(dims) != 2 or name == "RESOLUTION" and len(dims) != 3:
                raise DataError(path, f"HDU {ext} has shape {tuple(dims)}")
            arr = np.empty((len(rows), *dims[1:]), dt)
            i = 0
            for a, b in runs:
                sl = (slice(a, b),) + (slice(None),) * (len(dims) - 1)
                try:
                    arr[i:i + b - a] = fx[ext][sl]
                except Exception as exc:
                    raise DataError(path, f"HDU {ext} rows {a}-{b - 1} cannot be read, file truncated or "
                                          f"corrupt ({fitsutil._short(exc)})") from exc
                i += b - a
            out.append(arr)
    flux, ivar, mask, res = out
    for name, arr in (("IVAR", ivar), ("MASK", mask)):
        check_shape(path, f"{B}_{name}", arr, flux.shape)
    if res is not None:
        check_shape(path, f"{B}_RESOLUTION", res, (flux.shape[0], None, flux.shape[1]))
    return flux, ivar, mask, res


class SpectraStreamWriter:
    """Write a spectra file a few rows at a time, so memory is bounded by one input frame.

    The FIBERMAP (hence the number of rows) is known first; every band's FLUX, IVAR, MASK and
    RESOLUTION images are created at full size, filled with :meth:`write_rows`, and
    :meth:`close` adds SCORES, the data checksums, and renames the file into place. On any
    error (or :meth:`abort`) nothing is left at ``path``.

    Parameters
    ----------
    path : str
    header : dict
        Primary header (HPXPIXEL, ...); provenance is added.
    fibermap : structured (nspec,)
    wave : dict band -> (nwave,)
    ndiag : dict band -> int
    units : str
    exp_fibermap : structured, optional
        Per-exposure rows (coadds).
    """

    def __init__(self, path, header, fibermap, wave, ndiag, units=FLUX_UNITS, exp_fibermap=None):
        import contextlib

        self.path = str(path)
        self.bands = list(wave)
        self.nspec = len(fibermap)
        self._stack = contextlib.ExitStack()
        try:
            self.fx = self._stack.enter_context(fitsutil.atomic_fits(self.path))
            hdr = with_base_provenance(header)
            hdr["FFDMNAME"] = (Spectra.NAME, "fiberflow data product")
            hdr["FFDMVER"] = (str(Spectra.VERSION), "datamodel version")
            fitsutil.write_empty_primary(self.fx, hdr)
            fitsutil.write_table(self.fx, fibermap, "FIBERMAP")
            if exp_fibermap is not None:
                fitsutil.write_table(self.fx, exp_fibermap, "EXP_FIBERMAP")
            ivar_units = "10**+34 (s2 cm4 Angstrom2) / erg2" if units == FLUX_UNITS else f"1/({units})**2"
            for b in self.bands:
                B = b.upper()
                nw = len(wave[b])
                fitsutil.write_image(self.fx, np.asarray(wave[b], "f8"), f"{B}_WAVELENGTH", {"BUNIT": "Angstrom"})
                for name, dims, dt, extra in (("FLUX", (self.nspec, nw), "f4", {"BUNIT": units}),
                                              ("IVAR", (self.nspec, nw), "f4", {"BUNIT": ivar_units}),
                                              ("MASK", (self.nspec, nw), "i4", {}),
                                              ("RESOLUTION", (self.nspec, int(ndiag[b]), nw), "f4", {})):
                    self.fx.create_image_hdu(dims=list(dims), dtype=dt, extname=f"{B}_{name}",
                                             header=fitsutil.header_records(extra))
        except BaseException:
            self._stack.__exit__(*__import__("sys").exc_info())
            raise

    def write_rows(self, band, start, flux, ivar, mask, resolution):
        """Rows ``start .. start + n`` of one band: flux, ivar (n, nwave), mask, resolution (n, ndiag, nwave)."""
        B = band.upper()
        for name, arr in (("FLUX", flux), ("IVAR", ivar), ("RESOLUTION", resolution)):
            fitsutil.refuse_nonfinite(self.path, f"spectra HDU {B}_{name}", arr)
        self.fx[f"{B}_FLUX"].write(np.ascontiguousarray(flux, "f4"), start=[int(start), 0])
        self.fx[f"{B}_IVAR"].write(np.ascontiguousarray(ivar, "f4"), start=[int(start), 0])
        self.fx[f"{B}_MASK"].write(np.ascontiguousarray(mask, "i4"), start=[int(start), 0])
        self.fx[f"{B}_RESOLUTION"].write(np.ascontiguousarray(resolution, "f4"), start=[int(start), 0, 0])

    def close(self, scores=None):
        """Write SCORES (structured (nspec,), optional) and the checksums; move the file into place."""
        try:
            if scores is not None:
                check_shape(self.path, "SCORES", scores, (self.nspec,))
                fitsutil.write_table(self.fx, scores, "SCORES")
            for b in self.bands:
                for name in ("FLUX", "IVAR", "MASK", "RESOLUTION"):
                    fitsutil._write_datasum(self.fx[f"{b.upper()}_{name}"])
        except BaseException:
            self.abort()
            raise
        self._stack.close()
        return self.path

    def abort(self):
        """Discard the partial file."""
        self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self._stack.__exit__(exc_type, exc, tb)
        return False


def read_spectra(path):
    """Read a spectra or coadd file."""
    return Spectra.read(path)


def write_spectra(path, spectra):
    """Write a spectra or coadd file atomically."""
    return spectra.write(path)
