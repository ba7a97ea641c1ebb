"""Nominal GAUSS-HERMITE PSFs of every camera, derived from the real DESI r0 PSF.

r: the real r0 PSF (fibers 0..nfiber-1 of it).
b, z: analogues with the same trace geometry expressed in reduced wavelength, mapped onto the
arm's range: the r PSF's margins around its extraction grid (5760-7620 A inside 5543-7826 A)
are scaled by the ratio of the arms' spans, so each arm's extraction grid falls on the same CCD
rows as r's does. The dispersion therefore scales with the span: about 0.63 A/px (b) and
0.66 A/px (z) against 0.53 A/px (r). Spot sizes in pixels are scaled by per-arm factors
(b 1.04: bluer optics have slightly larger spots on DESI's STA CCDs; z 1.08: charge diffusion in
the thick red CCDs), so the line-spread function in Angstrom follows DESI's resolution trend
(R ~ 2500-3000 in b, ~4000-5000 in r and z).

Small presets (fewer fibers) keep the first ``nfiber`` fibers and shift x so the first trace
sits ``XMARGIN`` pixels from the CCD edge; NPIX_X/NPIX_Y become the preset's CCD size.
"""

from __future__ import annotations

import numpy as np

from ..models import psf as psfmodel

#: the real r0 PSF's extraction grid (DESI r camera), used to place other arms on the same rows
R_GRID = (5760.0, 7620.0)
#: spot-size factors per arm (GHSIGX, GHSIGY multiplied)
SIGMA_SCALE = {"b": 1.04, "r": 1.0, "z": 1.08}
#: distance in pixels from the CCD's left edge to the first trace (small presets)
XMARGIN = 24.0


def arm_wave_range(r_psf, grid):
    """Trace wavelength range [wmin, wmax] of an arm whose extraction grid is ``grid``.

    Parameters
    ----------
    r_psf : GaussHermitePSF
        The real r PSF.
    grid : (float, float)
        The arm's extraction wavelength range.
    """
    scale = (grid[1] - grid[0]) / (R_GRID[1] - R_GRID[0])
    lo = grid[0] - (R_GRID[0] - r_psf.trace_wavemin) * scale
    hi = grid[1] + (r_psf.trace_wavemax - R_GRID[1]) * scale
    return lo, hi


def nominal_psf(r_psf, instrument, arm):
    """Nominal PSF of one arm for ``instrument``.

    Parameters
    ----------
    r_psf : GaussHermitePSF
        The real DESI r0 PSF (500 fibers).
    instrument : fiberflow.instrument.Instrument
    arm : str
        ``b``, ``r`` or ``z``.

    Returns
    -------
    GaussHermitePSF
        ``instrument.nfiber`` fibers, NPIX_X/NPIX_Y of the instrument's CCD.
    """
    nfiber = instrument.nfiber
    if nfiber > r_psf.nfiber:
        raise ValueError(f"the r PSF has {r_psf.nfiber} fibers; instrument {instrument.name} needs {nfiber}")
    psf = r_psf.select_fibers(0, nfiber)
    psf.meta["FIBERMIN"] = 0
    psf.meta["FIBERMAX"] = nfiber - 1
    cam = instrument.camera(arm)
    grid = (cam.wavemin, cam.wavemax)
    if arm != "r":
        scale = (grid[1] - grid[0]) / (R_GRID[1] - R_GRID[0])
        psf.trace_wavemin, psf.trace_wavemax = arm_wave_range(r_psf, grid)
        # shape parameters: their own Legendre domain mapped the same way
        lo = grid[0] - (R_GRID[0] - r_psf.psf_wavemin) * scale
        hi = grid[1] + (r_psf.psf_wavemax - R_GRID[1]) * scale
        psf.psf_wavemin, psf.psf_wavemax = lo, hi
    for name in ("GHSIGX", "GHSIGY"):
        psf.params[name] = psf.params[name] * SIGMA_SCALE[arm]
    nx, ny = int(instrument.ccd["nx"]), int(instrument.ccd["ny"])
    if nx < r_psf.npix_x:
        wave = np.linspace(psf.trace_wavemin, psf.trace_wavemax, 200)
        xmin = psfmodel.trace_x(psf, wave, [0]).min()
        psf.xtrace[:, 0] -= xmin - XMARGIN
        xmax = psfmodel.trace_x(psf, wave, [nfiber - 1]).max()
        if xmax > nx - 1 - XMARGIN:
            raise ValueError(f"instrument {instrument.name}: {nfiber} fibers need a CCD wider than nx={nx} "
                             f"(last trace reaches x={xmax:.0f})")
    psf.meta["NPIX_X"] = nx
    psf.meta["NPIX_Y"] = ny
    psf.meta["CAMERA"] = f"{arm}0"
    psf.header["CAMERA"] = f"{arm}0"
    psf.header["NOMINAL"] = (True, "nominal PSF made by fiberflow.sim.optics")
    return psf


def nominal_psfs(r_psf, instrument):
    """Nominal PSFs of every arm: dict arm -> GaussHermitePSF."""
    return {arm: nominal_psf(r_psf, instrument, arm) for arm in instrument.arms}
