"""From photons on the sky to electrons per fiber: atmosphere, telescope, fibers, spectrograph.

Conversion of a flux density ``F`` [1e-17 erg/s/cm^2/Angstrom] into detected electrons per
Angstrom in one fiber::

    e(lambda) = F 1e-17 * AREA * T_arm(lambda) * 10**(-0.4 k(lambda) X) * f_ap(lambda) * t_f(lambda)
                * EXPTIME * lambda / (h c)

with the telescope's effective collecting area ``AREA`` (DESI: 8.659 m^2), the arm throughput
``T_arm`` (corrector, fiber run, spectrograph and CCD QE; a smooth model with the dichroic
cross-overs at 5800 and 7600 A), the Kitt Peak extinction ``k`` at airmass ``X``, the fraction
of light entering a 1.52-arcsec fiber ``f_ap`` (Gaussian seeing, FWHM scaling as
lambda^-0.2, convolved with the object's size), and the fiber's relative throughput ``t_f``
(the fiberflat truth: a few per cent, smooth in wavelength, median 1 over fibers).
Sky light (surface brightness times fiber area) is neither extincted nor aperture-limited.
"""

from __future__ import annotations

import numpy as np

from . import library

AREA_CM2 = 8.659e4
FIBER_DIAMETER_ARCSEC = 1.52
FIBER_AREA_ARCSEC2 = np.pi * (FIBER_DIAMETER_ARCSEC / 2) ** 2
HC_ERG_A = 1.98644586e-8  # h c in erg Angstrom


def _logistic(x, x0, width):
    return 1.0 / (1.0 + np.exp(-(x - x0) / width))


def arm_throughput(arm, wave):
    """Instrument throughput of one arm (everything but the atmosphere and fiber aperture).

    Parameters
    ----------
    arm : str
    wave : (n,)

    Returns
    -------
    (n,) in [0, 1)
    """
    w = np.asarray(wave, float)
    if arm == "b":
        t = 0.42 * _logistic(w, 3850.0, 120.0) * (1.0 - _logistic(w, 5790.0, 18.0))
    elif arm == "r":
        t = 0.50 * _logistic(w, 5790.0, 18.0) * (1.0 - _logistic(w, 7600.0, 18.0)) * (1.0 - 0.08 * (w - 5800) / 1800)
    elif arm == "z":
        qe = 1.0 - _logistic(w, 9500.0, 180.0)
        t = 0.48 * _logistic(w, 7600.0, 18.0) * (0.35 + 0.65 * qe)
    else:
        raise ValueError(f"unknown arm {arm!r}")
    return t


def atmosphere_transmission(wave, airmass):
    """10**(-0.4 k(lambda) X) with the Kitt Peak extinction curve; wave (n,) -> (n,)."""
    w, k = library.extinction_curve()
    return 10.0 ** (-0.4 * np.interp(wave, w, k) * airmass)


def aperture_fraction(wave, seeing_fwhm, size_arcsec=0.0):
    """Fraction of a source's light inside the fiber.

    Parameters
    ----------
    wave : (n,)
    seeing_fwhm : float
        Arcsec at 6000 A; scales as (lambda/6000)^-0.2.
    size_arcsec : float or (m,)
        Half-light radius of an extended source (0: point source); approximated as a
        Gaussian of the same half-light radius convolved with the seeing.

    Returns
    -------
    (n,) or (m, n)
    """
    wave = np.asarray(wave, float)
    fwhm = seeing_fwhm * (wave / 6000.0) ** -0.2
    sig2 = (fwhm / 2.3548) ** 2
    size = np.atleast_1d(np.asarray(size_arcsec, float))
    sig2 = sig2[None, :] + (size[:, None] / 1.1774) ** 2
    r = FIBER_DIAMETER_ARCSEC / 2
    frac = 1.0 - np.exp(-0.5 * r * r / sig2)
    return frac[0] if np.ndim(size_arcsec) == 0 else frac


def fiber_throughput(rng, nfiber, wave, wmin, wmax, scatter=0.03, broken=()):
    """True relative fiber throughput, smooth in wavelength, median 1 over fibers.

    Parameters
    ----------
    rng : numpy Generator
    nfiber : int
    wave : (n,)
    wmin, wmax : float
        Range over which the smooth variations are defined (the arm).
    scatter : float
        RMS of the per-fiber throughput.
    broken : sequence of int
        Fibers with (almost) no light (fault injection).

    Returns
    -------
    (nfiber, n)
    """
    u = 2 * (np.asarray(wave) - wmin) / (wmax - wmin) - 1
    a = 1.0 + scatter * rng.standard_normal(nfiber)
    b = 0.015 * rng.standard_normal(nfiber)
    c = 0.008 * rng.standard_normal(nfiber)
    t = a[:, None] * (1.0 + b[:, None] * u[None, :] + c[:, None] * (u[None, :] ** 2 - 1 / 3))
    t /= np.median(t, axis=0)[None, :]
    for f in broken:
        t[f] = 0.002
    return t


def photons_per_flux(wave, arm, exptime, airmass=None, aperture=None):
    """Electrons per Angstrom for a flux density of 1e-17 erg/s/cm^2/A (before the fiberflat).

    Parameters
    ----------
    wave : (n,)
    arm : str
    exptime : float
    airmass : float, optional
        None: no atmosphere (sky light, lamps).
    aperture : (n,) or (m, n), optional
        Aperture fraction; None means 1.

    Returns
    -------
    (n,) or (m, n)
    """
    wave = np.asarray(wave, float)
    conv = 1e-17 * AREA_CM2 * arm_throughput(arm, wave) * exptime * wave / HC_ERG_A
    if airmass is not None:
        conv = conv * atmosphere_transmission(wave, airmass)
    if aperture is not None:
        conv = conv * aperture
    return conv


def scattered_light(grid, x, y, sky_electrons, spec):
    """Electrons of a localized glow (the ``scattered_light`` fault) per model sample and fiber.

    Parameters
    ----------
    grid : (nmodel,) wavelengths [Angstrom]
    x, y : (nfiber,) focal-plane positions [mm]
    sky_electrons : (nmodel,)
        The camera's sky per sample (its median sets the glow's scale).
    spec : dict
        x, y, radius [mm], wave, sigma [Angstrom], level (see :mod:`fiberflow.sim.plan`).

    Returns
    -------
    (nfiber, nmodel)
    """
    r = float(spec.get("radius", 60.0))
    d2 = (np.asarray(x, float) - spec["x"]) ** 2 + (np.asarray(y, float) - spec["y"]) ** 2
    amp = np.where(d2 < 9 * r * r, np.exp(-0.5 * d2 / (r * r)), 0.0) * float(spec.get("level", 1.0))
    shape = np.exp(-0.5 * ((grid - float(spec.get("wave", 6600.0))) / float(spec.get("sigma", 60.0))) ** 2)
    return amp[:, None] * float(np.median(sky_electrons)) * shape[None, :]
