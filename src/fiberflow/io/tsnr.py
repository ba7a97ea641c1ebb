"""The template signal-to-noise ensembles (:mod:`fiberflow.models.tsnr`): one file that ships with
fiberflow (``data/reference/tsnr/tsnr-ensemble.fits``, built by ``fiberflow tsnr-ensemble``)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from .datamodel import Product, check_shape, hdu

FILENAME = "tsnr-ensemble.fits"

TRACER_DTYPE = [("TRACER", "U8"), ("SNR2TIME", "f8"), ("ZMIN", "f4"), ("ZMAX", "f4"), ("NZ", "i4"),
                ("BAND", "U1"), ("MAG", "f4"), ("TEMPLATES", "U48")]


@dataclass
class TsnrEnsemble(Product):
    """Squared delta flux of each tracer's template ensemble.

    Attributes
    ----------
    wave : (nwave,) uniform observed grid [Angstrom]
    dflux2 : (ntracer, nwave)
        Mean squared delta flux, (1e-17 erg/s/cm^2/A)^2.
    tracers : structured (ntracer,)
        TRACER (BGS, ELG, LRG, QSO), SNR2TIME (EFFTIME per unit TSNR2 [s]; 0 = not calibrated),
        ZMIN/ZMAX/NZ (redshift grid), BAND/MAG (normalisation), TEMPLATES (what was used).
    header : dict
    """

    wave: np.ndarray = hdu("WAVELENGTH", dtype="f8", ndim=1, units="Angstrom", descr="observed grid (nwave,)", pos=1)
    dflux2: np.ndarray = hdu("DFLUX2", dtype="f4", ndim=2, units="10**-34 erg2/(s2 cm4 Angstrom2)",
                             descr="mean squared delta flux (ntracer, nwave)", pos=0)
    tracers: np.ndarray = hdu("TRACERS", kind="table", descr="tracer, SNR2TIME, redshifts, normalisation", pos=2)
    header: dict = field(default_factory=dict)

    NAME = "tsnr-ensemble"
    VERSION = "1"

    def validate(self, path=None):
        check_shape(path, "DFLUX2", self.dflux2, (len(self.tracers), len(self.wave)))
        if not np.all(np.isfinite(self.dflux2)) or np.any(self.dflux2 < 0):
            raise DataError(path, "DFLUX2 has negative or non-finite values")

    def dflux2_of(self, tracer, wave):
        """The tracer's DFLUX2 interpolated onto ``wave`` (0 outside the ensemble's grid)."""
        names = [str(t).strip() for t in self.tracers["TRACER"]]
        if tracer not in names:
            raise KeyError(tracer)
        return np.interp(wave, self.wave, self.dflux2[names.index(tracer)], left=0.0, right=0.0)

    def snr2time(self, tracer):
        names = [str(t).strip() for t in self.tracers["TRACER"]]
        return float(self.tracers["SNR2TIME"][names.index(tracer)])

    @property
    def names(self):
        return [str(t).strip() for t in self.tracers["TRACER"]]


@functools.lru_cache(maxsize=4)
def read_ensemble(path=None):
    """The shipped ensembles (or the file ``path``)."""
    if path is None:
        from ..reference import reference_file

        path = reference_file("tsnr", FILENAME)
    return TsnrEnsemble.read(path)
