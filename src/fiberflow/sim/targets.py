"""Targets of a simulated tile: fibermap rows and true object spectra.

A tile's targets depend only on (seed, tileid, petal), so repeat exposures of a tile observe
the same objects in the same fibers (their coadds have several inputs).

Per petal: about 9% sky fibers and 3% standard stars (at least 3 of each, spread evenly over
the bundles), the rest LRGs (real DESI lite templates), ELGs (continuum + [OII], H-beta,
[OIII], H-alpha, [NII], [SII] emission lines) and quasars (SDSS eigenspectra with the
coefficients of real SDSS quasars). Standard stars come from :mod:`fiberflow.models.stellar`.
Photometry (FLUX_G/R/Z, nanomaggies) is synthetic through the DECam filter curves.

Fibers sit in the petal's 36-degree sector of a 1.6-degree-radius field (14.05 arcsec/mm plate
scale), so one petal covers about 0.8 deg^2 and several nside-64 HEALPix pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..bitmasks import desi_target
from ..io.fibermap import empty_fibermap
from ..models import stellar
from ..models.templates import C_KMS, emission_lines, lya_forest_transmission
from . import library

PLATE_SCALE = 14.05  # arcsec per mm
FIELD_RADIUS_MM = 410.0
#: model wavelength grid for object spectra (covers the three arms and the filter curves)
MODEL_WAVE = np.arange(3500.0, 10600.0, 0.1)


@dataclass
class Tile:
    """A simulated tile: centre, program, per-petal targets (see :func:`tile_targets`)."""

    tileid: int
    ra: float
    dec: float
    program: str = "dark"
    survey: str = "main"


def tile_center(tileid):
    """Deterministic centre (RA, Dec) of a tile id, in a Dec 0-30 stripe near RA 150-210."""
    rng = np.random.default_rng([9127, int(tileid)])
    return float(150.0 + 60.0 * rng.random()), float(30.0 * rng.random())


def fiber_positions(rng, nfiber, petal):
    """Random focal-plane positions inside a petal's sector.

    Returns
    -------
    x, y : (nfiber,) mm
    """
    r = np.sqrt(rng.uniform((30.0 / FIELD_RADIUS_MM) ** 2, 1.0, nfiber)) * FIELD_RADIUS_MM
    theta = np.deg2rad(36.0 * petal + rng.uniform(2.0, 34.0, nfiber))
    return r * np.cos(theta), r * np.sin(theta)


def focal_to_radec(x, y, ra0, dec0):
    """Gnomonic projection of focal-plane mm to sky (x towards +RA, y towards +Dec)."""
    xi = np.deg2rad(x * PLATE_SCALE / 3600.0)
    eta = np.deg2rad(y * PLATE_SCALE / 3600.0)
    a0, d0 = np.deg2rad(ra0), np.deg2rad(dec0)
    denom = np.cos(d0) - eta * np.sin(d0)
    ra = a0 + np.arctan2(xi, denom)
    dec = np.arctan2(np.sin(d0) + eta * np.cos(d0), np.hypot(xi, denom))
    return np.rad2deg(ra) % 360.0, np.rad2deg(dec)


def _special_fibers(nfiber, frac, nmin, offset):
    n = max(nmin, int(round(frac * nfiber)))
    return (np.linspace(0, nfiber - 1, n, endpoint=True) + offset).round().astype(int) % nfiber


def nanomaggies_to_mag(f):
    return 22.5 - 2.5 * np.log10(np.maximum(f, 1e-12))


def _scale_to_mag(flux, band_index, mag):
    """Scale spectra (n, nwave) on MODEL_WAVE so their AB mag in a band equals ``mag``."""
    phot = library.ab_nanomaggies(MODEL_WAVE, flux)
    target = 10.0 ** (-0.4 * (np.asarray(mag) - 22.5))
    return flux * (target / phot[:, band_index])[:, None]


def lrg_spectrum(rng):
    wave, flux = library.lrg_templates()
    k = rng.integers(flux.shape[0])
    z = rng.uniform(0.4, 1.0)
    spec = np.interp(MODEL_WAVE / (1 + z), wave, flux[k])
    return spec, {"Z": z, "TEMPLATEID": int(k), "MAG": rng.uniform(19.6, 20.8), "BAND": 2, "SHAPE_R": rng.uniform(0.6, 1.5)}


def elg_spectrum(rng):
    z = rng.uniform(0.75, 1.45)
    # continuum flat in f_nu with a mild red slope
    cont = (MODEL_WAVE / 5000.0) ** (-2.0 + 0.4 * rng.random())
    g = rng.uniform(22.4, 23.4)
    cont = _scale_to_mag(cont[None, :], 0, g)[0]
    oii = rng.uniform(6.0, 30.0) * 1e-17  # erg/s/cm^2 total [OII]
    sigv = rng.uniform(40.0, 90.0)
    spec = cont + emission_lines(MODEL_WAVE, z, oii, sigv)
    return spec, {"Z": z, "TEMPLATEID": -1, "MAG": None, "BAND": 0, "OII_FLUX": oii / 1e-17, "SHAPE_R": rng.uniform(0.3, 0.8)}


def qso_spectrum(rng):
    wave, eigen, coeff, zs = library.qso_eigenspectra()
    good = np.flatnonzero((zs > 0.5) & (zs < 3.0))
    k = int(good[rng.integers(good.size)])
    z = float(zs[k])
    rest = coeff[k] @ eigen
    spec = np.interp(MODEL_WAVE / (1 + z), wave, rest, left=0.0, right=0.0)
    forest = lya_forest_transmission(MODEL_WAVE, z)
    spec = np.clip(spec * forest, 0.0, None)
    return spec, {"Z": z, "TEMPLATEID": k, "MAG": rng.uniform(20.0, 21.6), "BAND": 1, "SHAPE_R": 0.0}


def std_spectrum(rng):
    teff = rng.uniform(5800.0, 6800.0)
    logg = rng.uniform(3.8, 4.6)
    feh = rng.uniform(-1.5, 0.2)
    rv = rng.uniform(-150.0, 150.0)
    spec = stellar.stellar_spectrum(MODEL_WAVE, teff, logg, feh, rv)
    return spec, {"Z": rv / C_KMS, "TEMPLATEID": -1, "MAG": rng.uniform(16.5, 18.8), "BAND": 1,
                  "TEFF": teff, "LOGG": logg, "FEH": feh, "SHAPE_R": 0.0}


def tile_targets(seed, tile, petal, nfiber, nstd_max=None):
    """Fibermap rows and true spectra of one petal of a tile.

    Parameters
    ----------
    seed : int
    tile : Tile
    petal : int
    nfiber : int
    nstd_max : int, optional
        Keep at most this many standard stars (fault injection "too few standards"): the others
        are observed but not flagged as standards.

    Returns
    -------
    fibermap : structured (nfiber,)
    flux : (nfiber, len(MODEL_WAVE))
        True total object flux, erg/s/cm^2/Angstrom (0 for sky fibers).
    info : list of dict
        Per-fiber truth (class, redshift, magnitude, stellar parameters).
    """
    rng = np.random.default_rng([int(seed), 77, int(tile.tileid), int(petal)])
    fm = empty_fibermap(nfiber, petal)
    x, y = fiber_positions(rng, nfiber, petal)
    ra, dec = focal_to_radec(x, y, tile.ra, tile.dec)
    sky = set(_special_fibers(nfiber, 0.09, 3, 1).tolist())
    std = [f for f in _special_fibers(nfiber, 0.03, 3, 4).tolist() if f not in sky]
    kinds = []
    for f in range(nfiber):
        if f in sky:
            kinds.append("SKY")
        elif f in std:
            kinds.append("STD")
        else:
            kinds.append(rng.choice(["LRG", "ELG", "ELG", "QSO"]))
    flux = np.zeros((nfiber, MODEL_WAVE.size))
    info = []
    makers = {"LRG": lrg_spectrum, "ELG": elg_spectrum, "QSO": qso_spectrum, "STD": std_spectrum}
    for f, kind in enumerate(kinds):
        if kind == "SKY":
            info.append({"CLASS": "SKY", "Z": 0.0, "SHAPE_R": 0.0})
            continue
        spec, meta = makers[kind](rng)
        if meta["MAG"] is not None:
            spec = _scale_to_mag(spec[None, :], meta["BAND"], meta["MAG"])[0]
        flux[f] = spec
        meta["CLASS"] = kind
        info.append(meta)
    phot = library.ab_nanomaggies(MODEL_WAVE, flux)
    nstd_kept = 0
    fm["TARGETID"] = 39627000000000000 + int(tile.tileid) * 10000 + 1000 * petal + np.arange(nfiber)
    fm["FIBERSTATUS"] = 0
    fm["TARGET_RA"], fm["TARGET_DEC"] = ra, dec
    fm["FIBER_RA"], fm["FIBER_DEC"] = ra, dec
    fm["PLATE_RA"], fm["PLATE_DEC"] = ra, dec
    fm["FIBERASSIGN_X"], fm["FIBERASSIGN_Y"] = x, y
    fm["FIBER_X"], fm["FIBER_Y"] = x, y
    fm["OBSCONDITIONS"] = 1
    fm["PHOTSYS"] = "S"
    fm["NUM_ITER"] = 2
    for f, meta in enumerate(info):
        kind = meta["CLASS"]
        if kind == "SKY":
            fm["OBJTYPE"][f] = "SKY"
            fm["DESI_TARGET"][f] = desi_target.mask("SKY")
            fm["MORPHTYPE"][f] = ""
            continue
        fm["OBJTYPE"][f] = "TGT"
        fm["FLUX_G"][f], fm["FLUX_R"][f], fm["FLUX_Z"][f] = phot[f]
        fm["FLUX_IVAR_G"][f], fm["FLUX_IVAR_R"][f], fm["FLUX_IVAR_Z"][f] = 1.0 / (0.02 * np.maximum(phot[f], 0.05)) ** 2
        ext = kind in ("LRG", "ELG")
        frac = 0.6 if ext else 0.78
        fm["FIBERFLUX_G"][f], fm["FIBERFLUX_R"][f], fm["FIBERFLUX_Z"][f] = frac * phot[f]
        fm["FIBERTOTFLUX_G"][f], fm["FIBERTOTFLUX_R"][f], fm["FIBERTOTFLUX_Z"][f] = frac * phot[f]
        fm["MORPHTYPE"][f] = "EXP" if ext else "PSF"
        fm["SHAPE_R"][f] = meta["SHAPE_R"]
        fm["PRIORITY"][f] = 3000
        fm["SUBPRIORITY"][f] = rng.random()
        if kind == "STD":
            if nstd_max is None or nstd_kept < nstd_max:
                fm["DESI_TARGET"][f] = desi_target.mask("STD_FAINT")
                nstd_kept += 1
            else:
                fm["DESI_TARGET"][f] = desi_target.mask("MWS_ANY")
            fm["GAIA_PHOT_G_MEAN_MAG"][f] = nanomaggies_to_mag(phot[f, 1])
        else:
            fm["DESI_TARGET"][f] = desi_target.mask(kind)
    fm["FA_TARGET"] = fm["DESI_TARGET"]
    return fm, flux, info
