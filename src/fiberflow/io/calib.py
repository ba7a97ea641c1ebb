"""Calibration products of one camera: fiberflat, sky model, flux calibration."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .datamodel import Product, check_shape, hdu


def _check_2d_products(obj, path, names):
    nspec, nwave = np.shape(getattr(obj, names[0]))
    check_shape(path, "WAVELENGTH", np.asarray(obj.wave), (nwave,))
    for name in names[1:]:
        check_shape(path, name.upper(), getattr(obj, name), (nspec, nwave))
    if getattr(obj, "fibermap", None) is not None:
        check_shape(path, "FIBERMAP", obj.fibermap, (nspec,))
    return nspec, nwave


@dataclass
class FiberFlat(Product):
    """Relative fiber throughput at native resolution, median 1 per wavelength.

    Attributes
    ----------
    wave : (nwave,)
    fiberflat, ivar : (nspec, nwave)
    mask : int32 (nspec, nwave)
        specmask bits (LOWFLAT, BADFIBERFLAT).
    meanspec : (nwave,)
        Deconvolved mean lamp spectrum [electron/Angstrom].
    fibermap : optional
    header : dict
    """

    wave: np.ndarray = hdu("WAVELENGTH", dtype="f8", ndim=1, units="Angstrom",
        descr="vacuum wavelength (nwave,)", pos=4)
    fiberflat: np.ndarray = hdu("FIBERFLAT", dtype="f4", ndim=2, descr="relative throughput (nspec, nwave)",
        pos=0)
    ivar: np.ndarray = hdu("IVAR", dtype="f4", ndim=2, descr="inverse variance (nspec, nwave)", pos=1)
    mask: np.ndarray = hdu("MASK", dtype="i4", ndim=2, descr="specmask bits (nspec, nwave)", pos=2)
    meanspec: np.ndarray = hdu("MEANSPEC", dtype="f4", ndim=1, units="electron/Angstrom",
        descr="mean lamp spectrum (nwave,)", pos=3)
    fibermap: np.ndarray | None = hdu("FIBERMAP", kind="table", required=False, descr="fibermap rows", pos=5)
    header: dict = field(default_factory=dict)

    NAME = "fiberflat"
    VERSION = "1"

    def validate(self, path=None):
        _, nwave = _check_2d_products(self, path, ("fiberflat", "ivar", "mask"))
        check_shape(path, "MEANSPEC", np.asarray(self.meanspec), (nwave,))


@dataclass
class SkyModel(Product):
    """Sky model per fiber (resolution-convolved), electron/Angstrom.

    Attributes
    ----------
    wave : (nwave,)
    flux, ivar : (nspec, nwave)
    mask : int32 (nspec, nwave)
    stat_ivar : (nspec, nwave), optional
        Statistical-only inverse variance (no model-error term).
    throughput_corr : (nspec,), optional
        Per-fiber throughput corrections applied.
    header : dict
    """

    wave: np.ndarray = hdu("WAVELENGTH", dtype="f8", ndim=1, units="Angstrom",
        descr="vacuum wavelength (nwave,)", pos=3)
    flux: np.ndarray = hdu("SKY", dtype="f4", ndim=2, units="electron/Angstrom",
        descr="sky per fiber (nspec, nwave)", pos=0)
    ivar: np.ndarray = hdu("IVAR", dtype="f4", ndim=2, descr="inverse variance (nspec, nwave)", pos=1)
    mask: np.ndarray = hdu("MASK", dtype="i4", ndim=2, descr="specmask bits (nspec, nwave)", pos=2)
    stat_ivar: np.ndarray | None = hdu("STATIVAR", dtype="f4", ndim=2, required=False,
        descr="statistical ivar (nspec, nwave)", pos=4)
    throughput_corr: np.ndarray | None = hdu("THRPUTCORR", dtype="f4", ndim=1, required=False,
        descr="throughput correction (nspec,)", pos=5)
    header: dict = field(default_factory=dict)

    NAME = "sky"
    VERSION = "1"

    def validate(self, path=None):
        nspec, _ = _check_2d_products(self, path, ("flux", "ivar", "mask", "stat_ivar"))
        if self.throughput_corr is not None:
            check_shape(path, "THRPUTCORR", np.asarray(self.throughput_corr), (nspec,))


@dataclass
class FluxCalib(Product):
    """Flux calibration: electron/Angstrom per 1e-17 erg/s/cm2/Angstrom, per fiber.

    Attributes
    ----------
    wave : (nwave,)
    calib, ivar : (nspec, nwave)
    mask : int32 (nspec, nwave)
    fibercorr : structured (nspec,), optional
    stdstar_fibermap : structured, optional
    header : dict
    """

    wave: np.ndarray = hdu("WAVELENGTH", dtype="f8", ndim=1, units="Angstrom",
        descr="vacuum wavelength (nwave,)", pos=3)
    calib: np.ndarray = hdu("FLUXCALIB", dtype="f4", ndim=2, units="10**+17 cm2 count s / erg",
        descr="calibration (nspec, nwave)", pos=0)
    ivar: np.ndarray = hdu("IVAR", dtype="f4", ndim=2, descr="inverse variance (nspec, nwave)", pos=1)
    mask: np.ndarray = hdu("MASK", dtype="i4", ndim=2, descr="specmask bits (nspec, nwave)", pos=2)
    fibercorr: np.ndarray | None = hdu("FIBERCORR", kind="table", required=False, descr="per-fiber corrections",
        pos=4)
    stdstar_fibermap: np.ndarray | None = hdu("STDSTAR_FIBERMAP", kind="table", required=False,
        descr="standards used", pos=5)
    header: dict = field(default_factory=dict)

    NAME = "fluxcalib"
    VERSION = "1"

    def validate(self, path=None):
        _check_2d_products(self, path, ("calib", "ivar", "mask"))


@dataclass
class StdStars(Product):
    """Best-fit standard-star models of one spectrograph (all its cameras).

    FITS images cannot be empty: a spectrograph without a fitted standard has header
    NSTARS = 0 and one row with FIBER -1 and zero flux.

    Attributes
    ----------
    wave : (nwave_model,)
    flux : (nstd, nwave_model)
        Models normalised to the photometry [1e-17 erg/s/cm2/Angstrom].
    fibers : int32 (nstd,)
    metadata : structured (nstd,)
        TEFF, LOGG, FEH, REDSHIFT, CHI2DOF, DATA_G-R, MODEL_G-R ...
    fibermap : structured (nstd,), optional
    input_frames : structured, optional
        NIGHT, EXPID, CAMERA of the input frames.
    header : dict
    """

    wave: np.ndarray = hdu("WAVELENGTH", dtype="f8", ndim=1, units="Angstrom",
        descr="model wavelength (nwave,)", pos=1)
    flux: np.ndarray = hdu("FLUX", dtype="f4", ndim=2, units="10**-17 erg/(s cm2 Angstrom)",
        descr="model spectra (nstd, nwave)", pos=0)
    fibers: np.ndarray = hdu("FIBERS", dtype="i4", ndim=1, descr="FIBER of each standard (nstd,)", pos=2)
    metadata: np.ndarray = hdu("METADATA", kind="table", descr="fit results per standard", pos=3)
    fibermap: np.ndarray | None = hdu("FIBERMAP", kind="table", required=False,
        descr="fibermap rows of the standards", pos=4)
    input_frames: np.ndarray | None = hdu("INPUT_FRAMES", kind="table", required=False, descr="frames used",
        pos=5)
    header: dict = field(default_factory=dict)

    NAME = "stdstars"
    VERSION = "1"

    def validate(self, path=None):
        nstd, nwave = np.shape(self.flux)
        check_shape(path, "WAVELENGTH", np.asarray(self.wave), (nwave,))
        check_shape(path, "FIBERS", np.asarray(self.fibers), (nstd,))
        check_shape(path, "METADATA", self.metadata, (nstd,))


def read_fiberflat(path):
    return FiberFlat.read(path)


def write_fiberflat(path, fiberflat):
    return fiberflat.write(path)


def read_sky(path):
    return SkyModel.read(path)


def write_sky(path, sky):
    return sky.write(path)


def read_fluxcalib(path):
    return FluxCalib.read(path)


def write_fluxcalib(path, fluxcalib):
    return fluxcalib.write(path)


def read_stdstars(path):
    return StdStars.read(path)


def write_stdstars(path, stdstars):
    return stdstars.write(path)
