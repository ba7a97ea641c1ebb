"""Truth products of the simulator (read by tests and validation tools, never by the pipeline).

Stable contract (see the simulator issue): ``truth-{camera}-{expid}.fits`` has WAVELENGTH,
ELECTRONS, SKY, FIBERFLAT, CALIB, FLUX and FIBERMAP for exposures with light; every exposure
also has the detector truth (CRMASK, BADPIX, and per-amplifier ``TBIASx`` [ADU], ``TRDNOIx``
[electron], ``TGAINx`` in the header) and the trace offsets (``TDX``, ``TDY``, ``TDYSLOPE``:
this exposure relative to the night's PSF, pixels; ``NDX``, ``NDY``: the night relative to
the nominal PSF).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..io.datamodel import Product, check_shape, hdu


@dataclass
class TruthFrame(Product):
    """Truth of one exposure x camera.

    Attributes
    ----------
    wave : (nwave,) or None
        The camera's extraction grid.
    electrons : (nfiber, nwave)
        What a perfect extraction returns: electron/Angstrom at the PSF resolution, object + sky.
    sky : (nfiber, nwave)
        Sky part of ``electrons``.
    fiberflat : (nfiber, nwave)
        True relative fiber throughput (median 1 over fibers at each wavelength).
    calib : (nfiber, nwave)
        Electron/Angstrom per 1e-17 erg/s/cm^2/Angstrom of a point source (exposure time,
        atmosphere, aperture loss, instrument; not the fiberflat).
    flux : (nfiber, nwave)
        True object flux at the instrument resolution, 1e-17 erg/s/cm^2/Angstrom, scaled to the
        point-source aperture (what a calibrated spectrum of the fiber should show).
    fine_center : (nbin,)
        Fine-bin centres of the projected photons.
    fine_dwave : (nfiber, nbin)
        Electron-weighted wavelength of each fine bin minus its centre.
    photons : (nfiber, nbin)
        Detected electrons per fine bin (before Poisson noise): the projection input.
    crmask : uint8 (ny, nx)
        1 where cosmic rays deposited more than twice the read noise.
    badpix : uint8 (ny, nx)
        1 hot pixel, 2 hot column.
    fibermap : table or None
    header : dict
    """

    crmask: np.ndarray = hdu("CRMASK", dtype="u1", ndim=2, descr="cosmic-ray pixels (ny, nx)", compress="RICE",
        pos=10)
    badpix: np.ndarray = hdu("BADPIX", dtype="u1", ndim=2, descr="1 hot pixel, 2 hot column (ny, nx)",
        compress="RICE", pos=11)
    wave: np.ndarray | None = hdu("WAVELENGTH", dtype="f8", ndim=1, required=False, units="Angstrom",
        descr="frame grid (nwave,)", pos=0)
    electrons: np.ndarray | None = hdu("ELECTRONS", dtype="f4", ndim=2, required=False,
        units="electron/Angstrom", descr="perfect extraction, object + sky (nfiber, nwave)", pos=1)
    sky: np.ndarray | None = hdu("SKY", dtype="f4", ndim=2, required=False, units="electron/Angstrom",
        descr="sky part (nfiber, nwave)", pos=2)
    fiberflat: np.ndarray | None = hdu("FIBERFLAT", dtype="f4", ndim=2, required=False,
        descr="true fiber throughput (nfiber, nwave)", pos=3)
    calib: np.ndarray | None = hdu("CALIB", dtype="f4", ndim=2, required=False,
        units="electron/Angstrom per 1e-17 erg/(s cm2 Angstrom)", descr="calibration vector (nfiber, nwave)",
        pos=4)
    flux: np.ndarray | None = hdu("FLUX", dtype="f4", ndim=2, required=False,
        units="1e-17 erg/(s cm2 Angstrom)", descr="true object flux at resolution (nfiber, nwave)", pos=5)
    fine_center: np.ndarray | None = hdu("FINEWAVE", dtype="f8", ndim=1, required=False, units="Angstrom",
        descr="fine-bin centres (nbin,)", pos=7)
    fine_dwave: np.ndarray | None = hdu("FINEDWAVE", dtype="f4", ndim=2, required=False, units="Angstrom",
        descr="electron-weighted bin wavelength minus centre (nfiber, nbin)", pos=8)
    photons: np.ndarray | None = hdu("PHOTONS", dtype="f4", ndim=2, required=False, units="electron",
        descr="electrons per fine bin, before noise (nfiber, nbin)", pos=9)
    fibermap: np.ndarray | None = hdu("FIBERMAP", kind="table", required=False,
        descr="fibermap rows of the camera", pos=6)
    header: dict = field(default_factory=dict)

    NAME = "truth"
    ALLOW_NONFINITE = True  # truth is what it is; the reduction products are checked
    VERSION = "1"
    PRIMARY_IMAGE = False

    def validate(self, path=None):
        check_shape(path, "BADPIX", self.badpix, self.crmask.shape)
        if self.electrons is not None:
            nfib, nwave = self.electrons.shape
            check_shape(path, "WAVELENGTH", self.wave, (nwave,))
            for name in ("sky", "fiberflat", "calib", "flux"):
                check_shape(path, name.upper(), getattr(self, name), (nfib, nwave))
        if self.photons is not None:
            check_shape(path, "FINEDWAVE", self.fine_dwave, self.photons.shape)
            check_shape(path, "FINEWAVE", self.fine_center, (self.photons.shape[1],))

    @property
    def fine_wave(self):
        """(nfiber, nbin) electron-weighted wavelength of each fine bin."""
        return self.fine_center[None, :] + self.fine_dwave

    def amp_truth(self):
        """dict amp -> (bias ADU, read noise electron, gain e/ADU)."""
        return {a: tuple(self.value(f"{k}{a}") for k in ("TBIAS", "TRDNOI", "TGAIN"))
                for a in "ABCD" if f"TBIAS{a}" in self.header}

    def value(self, key):
        """Header value (in-memory headers may hold (value, comment) pairs)."""
        v = self.header[key]
        return v[0] if isinstance(v, tuple) else v


@dataclass
class TruthStdStars(Product):
    """True parameters of the standard stars of one exposure (table STDSTARS)."""

    table: np.ndarray = hdu("STDSTARS", kind="table",
        descr="TARGETID, PETAL_LOC, FIBER, TEFF, LOGG, FEH, RV, MAG_R, FLAGGED", pos=0)
    header: dict = field(default_factory=dict)

    NAME = "truth_stdstars"
    ALLOW_NONFINITE = True  # truth is what it is; the reduction products are checked
    VERSION = "1"
    PRIMARY_IMAGE = False


#: redrock's SPECTYPE of each simulated class (SKY fibers have no object)
SPECTYPE = {"LRG": "GALAXY", "ELG": "GALAXY", "QSO": "QSO", "STD": "STAR", "SKY": "SKY"}

TRUTH_TARGET_DTYPE = [("TARGETID", "i8"), ("TILEID", "i4"), ("PETAL_LOC", "i2"), ("FIBER", "i4"),
                      ("CLASS", "U4"), ("SPECTYPE", "U6"), ("Z", "f8"), ("MAG_G", "f4"), ("MAG_R", "f4"),
                      ("MAG_Z", "f4"), ("OII_FLUX", "f4"), ("TEMPLATEID", "i4"), ("TEFF", "f4"),
                      ("LOGG", "f4"), ("FEH", "f4")]


@dataclass
class TruthTargets(Product):
    """Every target of a simulated tile (table TARGETS, one row per fiber of the simulated petals).

    CLASS is the simulator's class (LRG, ELG, QSO, STD, SKY), SPECTYPE redrock's (GALAXY, QSO,
    STAR), Z the true redshift (stars: radial velocity / c), MAG_G/R/Z AB magnitudes of the total
    flux, OII_FLUX the total [OII] flux of ELGs [1e-17 erg/s/cm^2] (NaN otherwise), TEFF / LOGG /
    FEH the standard stars' parameters (NaN otherwise).
    """

    table: np.ndarray = hdu("TARGETS", kind="table", descr=", ".join(n for n, _ in TRUTH_TARGET_DTYPE), pos=0)
    header: dict = field(default_factory=dict)

    NAME = "truth_targets"
    ALLOW_NONFINITE = True
    VERSION = "1"
    PRIMARY_IMAGE = False

    @staticmethod
    def rows(fibermap, info, tileid):
        """Table rows of one petal from its fibermap (nfiber,) and the simulator's per-fiber info."""
        tab = np.zeros(len(fibermap), dtype=TRUTH_TARGET_DTYPE)
        tab["TARGETID"], tab["FIBER"], tab["PETAL_LOC"] = fibermap["TARGETID"], fibermap["FIBER"], fibermap["PETAL_LOC"]
        tab["TILEID"] = tileid
        for band in "GRZ":
            f = np.asarray(fibermap[f"FLUX_{band}"], float)
            tab[f"MAG_{band}"] = np.where(f > 0, 22.5 - 2.5 * np.log10(np.maximum(f, 1e-30)), np.nan)
        for k, m in enumerate(info):
            tab["CLASS"][k] = m["CLASS"]
            tab["SPECTYPE"][k] = SPECTYPE[m["CLASS"]]
            tab["Z"][k] = m.get("Z", 0.0)
            tab["TEMPLATEID"][k] = m.get("TEMPLATEID", -1)
            for key in ("OII_FLUX", "TEFF", "LOGG", "FEH"):
                tab[key][k] = m.get(key, np.nan)
        return tab
