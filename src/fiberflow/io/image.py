"""Preprocessed CCD image of one camera (``preproc-{camera}-{expid}.fits``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .datamodel import Product, check_shape, hdu


@dataclass
class PreprocImage(Product):
    """Bias/overscan-subtracted, gain-corrected CCD image in electrons.

    Attributes
    ----------
    image : float32 (ny, nx)
        Electrons.
    ivar : float32 (ny, nx)
        Inverse variance from the variance model (read noise + Poisson of the model).
    mask : int16 (ny, nx)
        ccdmask bits, 0 = good.
    readnoise : float32 (ny, nx)
        Read noise per pixel [electron].
    fibermap : structured (nfiber,), optional
        Fibermap rows of this petal.
    header : dict
        Camera + exposure keywords, per-amplifier OVERSCNx, OBSRDNx, GAINx, OSTEPx ...
    """

    image: np.ndarray = hdu("IMAGE", dtype="f4", ndim=2, units="electron", descr="image (ny, nx)", pos=0)
    ivar: np.ndarray = hdu("IVAR", dtype="f4", ndim=2, units="electron**-2", descr="inverse variance (ny, nx)",
        pos=1)
    mask: np.ndarray = hdu("MASK", dtype="i2", ndim=2, compress="RICE", descr="ccdmask bits (ny, nx)", pos=2)
    readnoise: np.ndarray = hdu("READNOISE", dtype="f4", ndim=2, units="electron",
        descr="read noise per pixel (ny, nx)", pos=3)
    fibermap: np.ndarray | None = hdu("FIBERMAP", kind="table", required=False,
        descr="fibermap rows of the petal", pos=4)
    header: dict = field(default_factory=dict)

    NAME = "preproc"
    VERSION = "1"

    def validate(self, path=None):
        shape = np.shape(self.image)
        for name in ("ivar", "mask", "readnoise"):
            check_shape(path, name.upper(), getattr(self, name), shape)

    @property
    def camera(self):
        return str(self.header.get("CAMERA", "")).lower()


def read_preproc(path):
    return PreprocImage.read(path)


def write_preproc(path, image):
    return image.write(path)


@dataclass
class BiasNight(Product):
    """Nightly master bias of one camera (``biasnight-{camera}-{night}.fits``).

    Attributes
    ----------
    image : float32 (ny, nx)
        Overscan-subtracted bias structure [ADU] (subtract before applying the gain).
    mask : int16 (ny, nx)
        ccdmask bits of pixels that stand out in the bias (hot columns, hot pixels).
    header : dict
        CAMERA, NIGHT, NZERO, input EXPIDs.
    """

    image: np.ndarray = hdu("IMAGE", dtype="f4", ndim=2, units="adu", descr="master bias (ny, nx)", pos=0)
    mask: np.ndarray = hdu("MASK", dtype="i2", ndim=2, compress="RICE", descr="ccdmask bits (ny, nx)", pos=1)
    header: dict = field(default_factory=dict)

    NAME = "biasnight"
    VERSION = "1"

    def validate(self, path=None):
        check_shape(path, "MASK", self.mask, np.shape(self.image))


@dataclass
class PixFlat(Product):
    """Pixel flat of one camera (``pixflat-{camera}.fits`` in ``calibration.pixflat``): the
    relative response of every pixel, median 1, by which preproc divides the image.

    Attributes
    ----------
    image : float32 (ny, nx)
        Relative pixel response (0 or non-finite: no response; below 0.1: too low to trust).
    header : dict
        CAMERA and how it was made.
    """

    image: np.ndarray = hdu("IMAGE", dtype="f4", ndim=2, descr="relative pixel response, median 1 (ny, nx)",
        pos=0)
    header: dict = field(default_factory=dict)

    NAME = "pixflat"
    VERSION = "1"


@dataclass
class ModelImage(Product):
    """Model of the extracted light of one camera (``model-{camera}-{expid}.fits``, optional QA output).

    Attributes
    ----------
    image : float32 (ny, nx)
        Sum over fibers and flux bins of the deconvolved flux times the pixel-integrated PSF
        spot [electron]; ``preproc - model`` shows what the extraction did not describe.
    header : dict
        CAMERA, EXPID, NIGHT, IN_PSF, IN_IMG.
    """

    image: np.ndarray = hdu("MODEL", dtype="f4", ndim=2, units="electron",
        descr="extraction model image (ny, nx)", pos=0)
    header: dict = field(default_factory=dict)

    NAME = "model"
    VERSION = "1"
