"""Extracted spectra of one camera: frame (electron/Angstrom), sframe, cframe (flux units)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .datamodel import Product, check_shape, hdu

ELECTRON_UNITS = "electron/Angstrom"
FLUX_UNITS = "10**-17 erg/(s cm2 Angstrom)"


@dataclass
class Frame(Product):
    """Spectra of one camera on a common wavelength grid.

    Attributes
    ----------
    wave : ndarray (nwave,)
        Vacuum wavelengths [Angstrom].
    flux, ivar : ndarray (nspec, nwave)
    mask : ndarray int32 (nspec, nwave)
        specmask bits.
    resolution : ndarray (nspec, ndiag, nwave)
        Resolution-matrix diagonals, scipy dia convention (offsets +ndiag//2 .. -ndiag//2).
    fibermap : structured ndarray (nspec,), optional
    chi2pix : ndarray (nspec, nwave), optional
    scores : structured ndarray (nspec,), optional
    header : dict
        CAMERA, NIGHT, EXPID, BUNIT ... and provenance.
    units : str
        BUNIT of FLUX: electron/Angstrom (frame, sframe) or 1e-17 erg/s/cm2/A (cframe).
    """

    wave: np.ndarray = hdu("WAVELENGTH", dtype="f8", ndim=1, units="Angstrom",
        descr="vacuum wavelength (nwave,)", pos=3)
    flux: np.ndarray = hdu("FLUX", dtype="f4", ndim=2, descr="flux (nspec, nwave)", pos=0)
    ivar: np.ndarray = hdu("IVAR", dtype="f4", ndim=2, descr="inverse variance of FLUX (nspec, nwave)", pos=1)
    mask: np.ndarray = hdu("MASK", dtype="i4", ndim=2, descr="specmask bits, 0 = good (nspec, nwave)", pos=2)
    resolution: np.ndarray = hdu("RESOLUTION", dtype="f4", ndim=3,
        descr="resolution diagonals (nspec, ndiag, nwave)", pos=4)
    fibermap: np.ndarray | None = hdu("FIBERMAP", kind="table", required=False,
        descr="fibermap rows of this camera", pos=5)
    chi2pix: np.ndarray | None = hdu("CHI2PIX", dtype="f4", ndim=2, required=False,
        descr="extraction chi2 per flux bin", pos=6)
    scores: np.ndarray | None = hdu("SCORES", kind="table", required=False, descr="per-fiber scores", pos=7)
    header: dict = field(default_factory=dict)
    units: str = ELECTRON_UNITS

    NAME = "frame"
    VERSION = "1"

    def hdu_header(self, attr):
        if attr == "flux":
            return {"BUNIT": self.units}
        if attr == "ivar":
            return {"BUNIT": _inverse_square(self.units)}
        return {}

    @classmethod
    def _from_hdus(cls, values, header, path):
        obj = super()._from_hdus(values, header, path)
        obj.units = header.get("BUNIT", ELECTRON_UNITS)
        return obj

    def validate(self, path=None):
        nspec, nwave = np.shape(self.flux)
        check_shape(path, "WAVELENGTH", np.asarray(self.wave), (nwave,))
        for name in ("ivar", "mask", "chi2pix"):
            check_shape(path, name.upper(), getattr(self, name), (nspec, nwave))
        check_shape(path, "RESOLUTION", self.resolution, (nspec, None, nwave))
        if self.fibermap is not None:
            check_shape(path, "FIBERMAP", self.fibermap, (nspec,))

    @property
    def nspec(self):
        return self.flux.shape[0]

    @property
    def nwave(self):
        return self.flux.shape[1]

    @property
    def ndiag(self):
        return self.resolution.shape[1]

    @property
    def camera(self):
        return str(self.header.get("CAMERA", "")).lower()


def _inverse_square(units):
    if units == ELECTRON_UNITS:
        return "Angstrom2/electron2"
    if units == FLUX_UNITS:
        return "10**+34 (s2 cm4 Angstrom2) / erg2"
    return f"1/({units})**2"


def read_frame(path):
    """Read a frame, sframe or cframe file."""
    return Frame.read(path)


def write_frame(path, frame):
    """Write a frame, sframe or cframe file atomically."""
    return frame.write(path)
