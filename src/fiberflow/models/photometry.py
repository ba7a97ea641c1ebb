"""Synthetic AB photometry through the DECam g, r, z filter curves (``speclite``).

Used by the standard-star fit (models normalised to the stars' photometry) and by the
simulator (targets' FLUX_G/R/Z).
"""

from __future__ import annotations

import functools

import numpy as np

BANDS = ("G", "R", "Z")


@functools.lru_cache(maxsize=None)
def filters():
    """DECam g, r, z response curves (speclite ``decam2014``), the Legacy Surveys' south photometry."""
    import speclite.filters

    return speclite.filters.load_filters("decam2014-g", "decam2014-r", "decam2014-z")


def ab_nanomaggies(wave, flux):
    """Synthetic g, r, z photometry.

    Parameters
    ----------
    wave : (nwave,)
        Angstrom, covering 3600-10500.
    flux : (n, nwave)
        erg/s/cm^2/Angstrom.

    Returns
    -------
    (n, 3)
        Fluxes in nanomaggies (AB magnitude 22.5 = 1 nanomaggy).
    """
    flux = np.atleast_2d(flux)
    out = np.empty((flux.shape[0], 3))
    fs = filters()
    for k, filt in enumerate(fs):
        resp = filt(wave)  # dimensionless response
        # AB: f_nu = int f_lambda lambda R dlambda / int c/lambda R dlambda
        num = np.trapezoid(flux * (wave * resp)[None, :], wave, axis=1)
        den = np.trapezoid(2.99792458e18 / wave * resp, wave)
        fnu = num / den
        out[:, k] = fnu / 3.631e-29  # 1 nanomaggy = 3.631e-29 erg/s/cm^2/Hz
    return out


def nanomaggies_to_mag(f):
    """AB magnitude of a flux in nanomaggies (nan where not positive)."""
    f = np.asarray(f, float)
    return np.where(f > 0, 22.5 - 2.5 * np.log10(np.where(f > 0, f, 1.0)), np.nan)
