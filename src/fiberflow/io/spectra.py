"""HEALPix-grouped spectra and coadds (``spectra-*`` / ``coadd-*``), DESI layout.

HDU 0 is empty and carries HPXPIXEL/HPXNSIDE/HPXNEST; then FIBERMAP, optional
EXP_FIBERMAP (coadds), SCORES, and per band ``{B}_WAVELENGTH``, ``{B}_FLUX``,
``{B}_IVAR``, ``{B}_MASK``, ``{B}_RESOLUTION``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from ..provenance import with_base_provenance
from . import fitsutil
from .datamodel import HDU, Product, check_shape
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
    wave: dict
    flux: dict
    ivar: dict
    mask: dict
    resolution: dict
    fibermap: np.ndarray
    exp_fibermap: np.ndarray | None = None
    scores: np.ndarray | None = None
    header: dict = field(default_factory=dict)
    units: str = FLUX_UNITS

    NAME = "spectra"
    VERSION = "1"
    PRIMARY_IMAGE = False
    DATAMODEL = {
        "fibermap": HDU("FIBERMAP", kind="table", descr="one row per spectrum (target x exposure, or target for coadds)"),
        "exp_fibermap": HDU("EXP_FIBERMAP", kind="table", required=False, descr="per-exposure rows (coadds)"),
        "scores": HDU("SCORES", kind="table", required=False, descr="per-spectrum scores"),
        "<band>_wave": HDU("{B}_WAVELENGTH", dtype="f8", ndim=1, units="Angstrom", descr="wavelength (nwave,)"),
        "<band>_flux": HDU("{B}_FLUX", dtype="f4", ndim=2, units=FLUX_UNITS, descr="flux (nspec, nwave)"),
        "<band>_ivar": HDU("{B}_IVAR", dtype="f4", ndim=2, descr="inverse variance (nspec, nwave)"),
        "<band>_mask": HDU("{B}_MASK", dtype="i4", ndim=2, descr="specmask bits (nspec, nwave)"),
        "<band>_resolution": HDU("{B}_RESOLUTION", dtype="f4", ndim=3, descr="resolution diagonals (nspec, ndiag, nwave)"),
    }

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
        with fitsutil.open_fits(path) as fx:
            names = fitsutil.hdu_names(fx)
            header = fitsutil.header_dict(fx[0].read_header())
            fibermap, _ = fitsutil.read_table(fx, "FIBERMAP", path)
            exp_fm = fitsutil.read_table(fx, "EXP_FIBERMAP", path)[0] if "EXP_FIBERMAP" in names else None
            scores = fitsutil.read_table(fx, "SCORES", path)[0] if "SCORES" in names else None
            bands = [n[: -len("_WAVELENGTH")].lower() for n in names if n.endswith("_WAVELENGTH")]
            if not bands:
                raise DataError(path, "no {BAND}_WAVELENGTH HDU: not a spectra file")
            wave, flux, ivar, mask, res = {}, {}, {}, {}, {}
            units = FLUX_UNITS
            for b in bands:
                B = b.upper()
                wave[b] = fitsutil.read_image(fx, f"{B}_WAVELENGTH", path, dtype="f8", ndim=1)[0]
                flux[b], fh = fitsutil.read_image(fx, f"{B}_FLUX", path, dtype="f4", ndim=2)
                units = fh.get("BUNIT", units)
                ivar[b] = fitsutil.read_image(fx, f"{B}_IVAR", path, dtype="f4", ndim=2)[0]
                mask[b] = fitsutil.read_image(fx, f"{B}_MASK", path, dtype="i4", ndim=2)[0]
                res[b] = (
                    fitsutil.read_image(fx, f"{B}_RESOLUTION", path, dtype="f4", ndim=3)[0]
                    if f"{B}_RESOLUTION" in names else None
                )
        obj = cls(bands, wave, flux, ivar, mask, res, fibermap, exp_fm, scores, header, units)
        obj.validate(path)
        return obj


def read_spectra(path):
    """Read a spectra or coadd file."""
    return Spectra.read(path)


def write_spectra(path, spectra):
    """Write a spectra or coadd file atomically."""
    return spectra.write(path)
