"""Readers of the real instrument data the simulator is built on (shipped in ``fiberflow/data/reference``).

Every function returns plain numpy arrays and caches its result; a missing file raises
:class:`~fiberflow.errors.DataError` naming it. Wavelengths are vacuum Angstrom.
"""

from __future__ import annotations

import functools

import numpy as np

from ..errors import DataError
from ..io import fitsutil
from ..io.refdata import ARC_LAMPS, read_line_list, read_nist, read_uves_sky
from ..reference import reference_file

#: lamps DESI's arc exposures use (HgAr, Cd, Ne, Kr)


def data_path(*parts):
    """Absolute path of a reference data file; DataError when it is missing."""
    return reference_file(*parts)


@functools.lru_cache(maxsize=None)
def sky_spectrum():
    """UVES night-sky spectrum (continuum + lines).

    Returns
    -------
    wave, flux : (n,)
        Angstrom; 1e-17 erg/s/cm^2/Angstrom/arcsec^2 (dark sky at zenith).
    """
    return read_uves_sky(data_path("spectra", "sky-uves.fits"))


@functools.lru_cache(maxsize=None)
def extinction_curve():
    """Kitt Peak zenith extinction (mag per airmass), including telluric bands.

    Returns
    -------
    wave, ext : (n,)
    """
    path = data_path("spectra", "ZenExtinct-KPNO.fits")
    with fitsutil.open_fits(path) as fx:
        tab, _ = fitsutil.read_table(fx, 1, path, required=("WAVELENGTH", "EXTINCTION"))
    return np.asarray(tab["WAVELENGTH"], float), np.asarray(tab["EXTINCTION"], float)


@functools.lru_cache(maxsize=None)
def quartz_lamp():
    """Quartz-iodine flat-field lamp SED (3100 K), relative surface brightness.

    Returns
    -------
    wave, flux : (n,)
    """
    path = data_path("spectra", "flat-3100K-quartz-iodine.fits")
    with fitsutil.open_fits(path) as fx:
        data, hdr = fitsutil.read_image(fx, 0, path, ndim=1)
    for key in ("CRVAL1", "CDELT1"):
        if key not in hdr:
            raise DataError(path, f"missing keyword {key}")
    wave = float(hdr["CRVAL1"]) + float(hdr["CDELT1"]) * np.arange(data.size)
    return wave, np.asarray(data, float)


def _nist_wavelengths(path):
    """Observed vacuum wavelengths of a NIST line list (``*_vacuum.ascii``)."""
    return read_nist(path)[0]


@functools.lru_cache(maxsize=None)
def arc_lines():
    """Arc lines with DESI's measured intensities, each tagged with its lamp.

    The measured table (``arc-lines-average-in-vacuum.fits``) gives electrons per second in a
    typical BOSS/DESI arc; each line is attributed to the NIST list (Hg, Cd, Ne, Kr, Ar) with
    the nearest wavelength within 0.2 Angstrom.

    Returns
    -------
    ndarray, structured (nline,)
        WAVE (Angstrom), ELECTRONS_PER_S, LAMP (str, '' when unattributed), GOOD (bool: in
        DESI's good-lines list).
    """
    path = data_path("spectra", "arc-lines-average-in-vacuum.fits")
    with fitsutil.open_fits(path) as fx:
        tab, _ = fitsutil.read_table(fx, 1, path, required=("VACUUM_WAVE", "ELECTRONS"))
    wave = np.asarray(tab["VACUUM_WAVE"], float)
    out = np.zeros(wave.size, dtype=[("WAVE", "f8"), ("ELECTRONS_PER_S", "f8"), ("LAMP", "U4"), ("GOOD", "?")])
    out["WAVE"] = wave
    out["ELECTRONS_PER_S"] = np.clip(np.asarray(tab["ELECTRONS"], float), 0.0, None)
    best = np.full(wave.size, 0.2)
    for lamp in ARC_LAMPS:
        nist = _nist_wavelengths(data_path("arc_lines", f"{lamp}_vacuum.ascii"))
        if nist.size == 0:
            continue
        idx = np.clip(np.searchsorted(nist, wave), 1, nist.size - 1)
        near = np.where(np.abs(nist[idx] - wave) < np.abs(nist[idx - 1] - wave), nist[idx], nist[idx - 1])
        d = np.abs(near - wave)
        take = d < best
        out["LAMP"][take] = lamp
        best[take] = d[take]
    good = good_lines()["WAVE"]
    out["GOOD"] = np.min(np.abs(wave[:, None] - good[None, :]), axis=1) < 0.05 if good.size else False
    return out


def good_lines():
    """DESI's bright isolated arc lines used to start a wavelength solution.

    Returns
    -------
    ndarray, structured (n,): WAVE, ION, CAMERAS (e.g. 'B,R')
    """
    return read_line_list(data_path("arc_lines", "goodlines_vacuum.ascii"))


@functools.lru_cache(maxsize=None)
def lrg_templates():
    """LRG basis templates (rest frame).

    Returns
    -------
    wave : (nwave,)
    flux : (ntemplate, nwave)
        erg/s/cm^2/Angstrom, arbitrary normalisation.
    """
    path = data_path("templates", "lrg_templates_v2.0-lite.fits")
    with fitsutil.open_fits(path) as fx:
        flux, _ = fitsutil.read_image(fx, 0, path, ndim=2)
        wave, _ = fitsutil.read_image(fx, 2, path, ndim=1)
    return np.asarray(wave, float), np.asarray(flux, float)


@functools.lru_cache(maxsize=None)
def qso_eigenspectra():
    """SDSS quasar eigenspectra with the coefficients and redshifts of real SDSS quasars.

    Returns
    -------
    wave : (nwave,)
        Rest frame.
    eigen : (4, nwave)
    coeff : (nqso, 4)
    z : (nqso,)
    """
    path = data_path("templates", "qso_templates_v2.0-lite.fits")
    with fitsutil.open_fits(path) as fx:
        eigen, _ = fitsutil.read_image(fx, "SDSS_EIGEN", path, ndim=2)
        wave, _ = fitsutil.read_image(fx, "SDSS_EIGEN_WAVE", path, ndim=1)
        pca, _ = fitsutil.read_table(fx, "SDSS_PCA", path)
        z, _ = fitsutil.read_image(fx, "SDSS_Z", path, ndim=1)
    coeff = np.stack([np.asarray(pca[f"PCA{k}"], float) for k in range(eigen.shape[0])], axis=1)
    return np.asarray(wave, float), np.asarray(eigen, float), coeff, np.asarray(z, float)


# synthetic photometry lives in the pipeline library (the standard-star fit uses it too)
from ..models.photometry import ab_nanomaggies, filters  # noqa: E402,F401
