"""Template signal-to-noise (TSNR2) and effective exposure time, as DESI defines them
(``desispec.tsnr``): the depth an exposure reached at each fiber for a target class,
independent of what the fiber actually observed.

**Ensembles.** For a tracer, template spectra at the tracer's nominal brightness are placed at
redshifts spread uniformly over the tracer's range; each observed spectrum's *delta flux* is the
spectrum minus its running median over 100 Angstrom (DESI's ``smooth=100``): the lines, breaks
and bands a redshift fitter uses, without the continuum. The ensemble is the mean of the squared
delta flux over the templates and redshifts, smoothed over 20 Angstrom (the redshift average of a
finite grid leaves ripples at the line widths), ``DFLUX2(lambda)`` in (1e-17 erg/s/cm^2/A)^2.
``fiberflow tsnr-ensemble`` builds them from the shipped templates (see that command for the
tracers' templates, redshift ranges and magnitudes) into ``data/reference/tsnr``.

**TSNR2** of one fiber in one camera: ``sum_j DFLUX2_j x IVAR_BG_ij`` over the bins j the
fiber's cframe has data in (ivar > 0, mask 0), where ``IVAR_BG`` is a *noise model* without the
target's own photon noise (DESI's ``var_model``, read noise + sky): in the sframe (fiberflat-
corrected electron/Angstrom) the variance of the camera's sky fibers, median over the good sky
fibers per bin (the fiber's own variance where no sky fiber has data), converted to calibrated
units with the fiber's calibration, ``IVAR_BG = calib^2 / VAR_SKY``. So a bright star and a faint
galaxy in the same fiber position get the same depth, as in DESI. The coadd's TSNR2 of a target is
the sum over its exposures and (``TSNR2_{TRACER}``) its cameras.

**EFFTIME** = ``SNR2TIME x TSNR2``: the exposure time that reaches the same TSNR2 in the
simulator's nominal conditions (airmass 1.0, seeing 1.1 arcsec, dark sky level 1.0, transparency
1), where ``SNR2TIME = EXPTIME / median TSNR2`` of a nominal exposure (``benchmarks/
calibrate_tsnr.py`` measures it and writes it into the ensemble file's header).
"""

from __future__ import annotations

import numpy as np

from .photometry import ab_nanomaggies
from .templates import emission_lines, lya_forest_transmission

#: tracers, as DESI names the TSNR2 columns
TRACERS = ("BGS", "ELG", "LRG", "QSO")
#: running-median width [Angstrom] that defines the continuum removed from a template
SMOOTH = 100.0
#: running-mean width [Angstrom] of the ensemble's squared delta flux
ENSEMBLE_SMOOTH = 20.0


def _running(values, width, kind):
    from scipy import ndimage

    width = max(1, int(round(width)))
    if kind == "median":
        return ndimage.median_filter(values, size=(1, width) if values.ndim == 2 else width, mode="nearest")
    return ndimage.uniform_filter1d(values, width, axis=-1, mode="nearest")


def delta_flux(wave, flux, smooth=SMOOTH):
    """Spectra minus their running median over ``smooth`` Angstrom.

    Parameters
    ----------
    wave : (nwave,)
        Uniform grid [Angstrom].
    flux : (n, nwave)

    Returns
    -------
    (n, nwave)
    """
    flux = np.atleast_2d(np.asarray(flux, float))
    step = float(wave[1] - wave[0])
    return flux - _running(flux, smooth / step, "median")


def ensemble_dflux2(wave, dflux, smooth=ENSEMBLE_SMOOTH):
    """Mean squared delta flux of an ensemble, smoothed over ``smooth`` Angstrom.

    Parameters
    ----------
    wave : (nwave,) uniform grid
    dflux : (n, nwave)

    Returns
    -------
    (nwave,)
    """
    step = float(wave[1] - wave[0])
    return _running(np.mean(np.asarray(dflux, float) ** 2, axis=0), smooth / step, "mean")


def normalise(wave, flux, band, mag):
    """Scale spectra (n, nwave) so that their AB magnitude in band ``band`` (0 g, 1 r, 2 z) is ``mag``."""
    phot = ab_nanomaggies(wave, flux)[:, band]
    target = 10.0 ** (-0.4 * (mag - 22.5))
    return flux * (target / np.where(phot > 0, phot, np.inf))[:, None]


def template_ensemble(wave, rest_wave, rest_flux, zs, band, mag, forest=False):
    """Ensemble of rest-frame templates placed at redshifts ``zs`` (template ``i % ntemplate`` at
    ``zs[i]``) and scaled to ``mag`` in ``band``.

    Parameters
    ----------
    wave : (nwave,)
        Uniform observed grid [Angstrom] covering the g, r, z filters.
    rest_wave : (nrest,)
    rest_flux : (ntemplate, nrest)
    zs : (nz,)
    band : int
    mag : float
    forest : bool
        Apply the mean Lyman-alpha forest transmission (quasars).

    Returns
    -------
    (nwave,)
        DFLUX2, (1e-17 erg/s/cm^2/A)^2.
    """
    rest_flux = np.atleast_2d(rest_flux)
    obs = np.empty((len(zs), len(wave)))
    for i, z in enumerate(zs):
        obs[i] = np.interp(wave / (1 + z), rest_wave, rest_flux[i % len(rest_flux)], left=0.0, right=0.0)
        if forest:
            obs[i] *= lya_forest_transmission(wave, z)
    obs = normalise(wave, np.clip(obs, 0, None), band, mag) / 1e-17
    return ensemble_dflux2(wave, delta_flux(wave, obs))


def elg_ensemble(wave, zs, oii, sigv, gmag):
    """Ensemble of ELGs: a continuum flat in f_nu at g = ``gmag`` plus the emission lines of
    :data:`fiberflow.models.templates.ELG_LINES` with total [OII] ``oii`` (erg/s/cm^2) and
    velocity dispersion ``sigv`` (km/s), at redshifts ``zs``.

    Returns
    -------
    (nwave,)
        DFLUX2, (1e-17 erg/s/cm^2/A)^2.
    """
    cont = normalise(wave, (wave / 5000.0)[None, :] ** -2.0, 0, gmag)[0]
    obs = np.stack([cont + emission_lines(wave, z, oii, sigv) for z in zs]) / 1e-17
    return ensemble_dflux2(wave, delta_flux(wave, obs))


def background_variance(ivar, good, sky):
    """Noise model of a camera without the targets' own photon noise: per bin, the median
    variance of the good sky fibers.

    Parameters
    ----------
    ivar : (nspec, nwave)
        sframe inverse variance (fiberflat-corrected electron/Angstrom).
    good : bool (nspec, nwave)
        Bins with data (ivar > 0, mask 0).
    sky : bool (nspec,)
        Sky fibers (OBJTYPE SKY, FIBERSTATUS good).

    Returns
    -------
    (nspec, nwave)
        Variance: the sky fibers' median where one has data in that bin, else the fiber's own
        ``1/ivar`` (inf where the fiber has none).
    """
    own = np.where(good, 1.0 / np.where(good, ivar, 1.0), np.inf)
    sel = own[np.asarray(sky, bool)]
    if sel.size:
        med = _nanmedian(sel)
        return np.where(np.isfinite(med)[None, :], med[None, :], own)
    return own


def _nanmedian(var):
    finite = np.isfinite(var)
    out = np.full(var.shape[1], np.inf)
    cols = finite.any(axis=0)
    if cols.any():
        out[cols] = np.nanmedian(np.where(finite[:, cols], var[:, cols], np.nan), axis=0)
    return out


def tsnr2(dflux2, calib, good, var_bg):
    """Template signal-to-noise squared of each fiber in one camera.

    Parameters
    ----------
    dflux2 : (nwave,)
        The tracer's ensemble on the frame's grid, (1e-17 erg/s/cm^2/A)^2.
    calib : (nspec, nwave)
        Calibration, electron/A per 1e-17 erg/s/cm^2/A (sframe = calib x cframe).
    good : bool (nspec, nwave)
        Bins the fiber's cframe has data in.
    var_bg : (nspec, nwave)
        Noise model in sframe units (:func:`background_variance`).

    Returns
    -------
    (nspec,)
    """
    ivar_bg = np.where(good & np.isfinite(var_bg) & (var_bg > 0), np.asarray(calib, float) ** 2 / var_bg, 0.0)
    return (ivar_bg * np.asarray(dflux2, float)[None, :]).sum(axis=1)


def efftime(tsnr2_value, snr2time):
    """Effective exposure time [s]: ``SNR2TIME x TSNR2`` (see the module's documentation)."""
    return float(snr2time) * np.asarray(tsnr2_value, float)
