"""CCD model: electrons on the trimmed CCD -> raw ADU with prescan/overscan for 4 amplifiers.

Layout (DESI's, without the row prescan/overscan): amplifiers A (bottom left), B (bottom
right), C (top left), D (top right); raw columns are
``[prescan A | data A | overscan A | overscan B | data B | prescan B]``, rows
``[A/B half | C/D half]``.

Per camera and fixed across nights (seeded by the camera name): a bias pattern (a smooth
gradient, fixed column-to-column offsets and a ramp near each amplifier's readout corner,
a few ADU), hot pixels and hot columns. Per exposure: each amplifier's bias level drifts by
~1.5 ADU around the preset's, read noise is Gaussian, dark current and signal are Poisson,
cosmic rays are tracks whose length follows the incidence angle and the CCD thickness and
whose rate scales with the dark time. Values are rounded and clipped to 0..65535 (saturation).

About DESI's real cosmic-ray cutouts (desisim-testdata ``cosmics-{bias,dark}-{b,r,z}.fits``): they are 20x20-pixel
preprocessed bias/dark stamps whose brightest pixel is 21 electrons and whose masks are
empty, i.e. they hold no cosmic-ray hit to paste; the simulator therefore models tracks
physically (rates and deposits below) and its tests use the cutouts' noise level as a check
of the read-noise scale.
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy import ndimage

from ..io.raw import format_sec

AMPS = ("A", "B", "C", "D")
#: cosmic-ray flux at the CCDs (per cm^2 per minute; sea level ~1, KPNO altitude and CCD radioactivity add)
CR_RATE = 2.5
PIXEL_CM = 15e-4
#: CCD thickness in microns (b: thin STA; r, z: thick LBNL), charge per micron of track
THICKNESS_UM = {"b": 40.0, "r": 250.0, "z": 250.0}
CHARGE_PER_UM = 75.0
DIFFUSION_PIX = {"b": 0.35, "r": 0.5, "z": 0.5}
#: seconds of readout added to EXPTIME for dark current and cosmics (DESI's DARKTIME)
READOUT_S = 30.0
HOT_PIXEL_FRACTION = 2e-5


def camera_seed(camera):
    """Stable integer seed of a camera name (fixed detector features)."""
    return zlib.crc32(camera.lower().encode()) & 0x7FFFFFFF


def amp_layout(ny, nx, nprescan, noverscan):
    """Raw shape and per-amplifier sections.

    Returns
    -------
    raw_shape : (ny_raw, nx_raw)
    sections : dict amp -> dict(prescan, data, bias, ccd) of numpy (slice_y, slice_x)
    """
    hx, hy = nx // 2, ny // 2
    width = 2 * (nprescan + hx + noverscan)
    out = {}
    for amp in AMPS:
        rows = slice(0, hy) if amp in "AB" else slice(hy, ny)
        if amp in "AC":
            pre = slice(0, nprescan)
            data = slice(nprescan, nprescan + hx)
            bias = slice(nprescan + hx, nprescan + hx + noverscan)
            ccdx = slice(0, hx)
        else:
            bias = slice(nprescan + hx + noverscan, nprescan + hx + 2 * noverscan)
            data = slice(width - nprescan - (nx - hx), width - nprescan)
            pre = slice(width - nprescan, width)
            ccdx = slice(hx, nx)
        out[amp] = {"prescan": (rows, pre), "data": (rows, data), "bias": (rows, bias), "ccd": (rows, ccdx)}
    return (ny, width), out


def section_keywords(sections):
    """Header keywords PRESECx, DATASECx, BIASSECx, CCDSECx (FITS convention)."""
    hdr = {}
    for amp, s in sections.items():
        hdr[f"PRESEC{amp}"] = format_sec(*s["prescan"])
        hdr[f"DATASEC{amp}"] = format_sec(*s["data"])
        hdr[f"BIASSEC{amp}"] = format_sec(*s["bias"])
        hdr[f"CCDSEC{amp}"] = format_sec(*s["ccd"])
    return hdr


def bias_pattern(camera, ny, nx):
    """Fixed bias structure of a camera's data region, ADU (ny, nx), mean ~0 per amplifier."""
    rng = np.random.default_rng([camera_seed(camera), 1])
    y = np.linspace(-1, 1, ny)[:, None]
    x = np.linspace(-1, 1, nx)[None, :]
    pat = 1.2 * y * rng.normal() + 0.8 * x * rng.normal() + 0.6 * x * y
    pat = pat + 0.6 * rng.standard_normal(nx)[None, :]  # fixed column offsets
    hx, hy = nx // 2, ny // 2
    col = np.arange(nx)
    dist = np.where(col < hx, col, nx - 1 - col)  # columns from the readout edge
    row = np.arange(ny)
    rdist = np.where(row < hy, row, ny - 1 - row)
    pat = pat + 4.0 * np.exp(-dist / 25.0)[None, :] * (1.0 + 0.5 * np.exp(-rdist / 200.0))[:, None]
    return pat - pat.mean()


def defects(camera, ny, nx):
    """Fixed hot pixels and hot columns of a camera.

    Returns
    -------
    hot : dict with ``y, x`` (int arrays) and ``rate`` (electron/hour)
    columns : list of (x, y_start, y_stop, electrons_per_readout)
    badpix : uint8 (ny, nx)
        1 hot pixel, 2 hot column.
    """
    rng = np.random.default_rng([camera_seed(camera), 2])
    nhot = max(3, int(HOT_PIXEL_FRACTION * ny * nx))
    hy, hx = rng.integers(0, ny, nhot), rng.integers(0, nx, nhot)
    rate = np.exp(rng.normal(np.log(3000.0), 1.0, nhot))
    ncol = 1 if nx < 1000 else 3
    columns = []
    for _ in range(ncol):
        x = int(rng.integers(20, nx - 20))
        y0 = int(rng.integers(0, ny // 2))
        columns.append((x, y0, ny if y0 >= ny // 2 else ny // 2, float(rng.uniform(30.0, 80.0))))
    badpix = np.zeros((ny, nx), np.uint8)
    badpix[hy, hx] |= 1
    for x, a, b, _ in columns:
        badpix[a:b, x] |= 2
    return {"y": hy, "x": hx, "rate": rate}, columns, badpix


def pixel_response(camera, ny, nx, rms):
    """Fixed relative response of every pixel of a camera (the true pixel flat), median ~1.

    Pixel-to-pixel QE scatter of ``rms`` (Gaussian), a gentle large-scale pattern of the
    same amplitude, and a few pixels (1e-5 of them) that barely respond (2%), as dust spots do.

    Returns
    -------
    (ny, nx) float64
    """
    rng = np.random.default_rng([camera_seed(camera), 3])
    y, x = np.mgrid[0:ny, 0:nx]
    large = rms * np.cos(2 * np.pi * x / nx + rng.uniform(0, 2 * np.pi)) * np.cos(np.pi * y / ny)
    pf = (1.0 + large) * (1.0 + rms * rng.standard_normal((ny, nx)))
    nlow = max(2, int(1e-5 * ny * nx))
    pf[rng.integers(0, ny, nlow), rng.integers(0, nx, nlow)] = 0.02
    return pf


def cosmic_rays(rng, shape, darktime, arm):
    """Cosmic-ray charge on the CCD.

    Parameters
    ----------
    rng : numpy Generator
    shape : (ny, nx)
    darktime : float
        Seconds.
    arm : str

    Returns
    -------
    charge : (ny, nx) float, electrons
    nhit : int
    """
    ny, nx = shape
    area = ny * nx * PIXEL_CM**2
    nhit = rng.poisson(CR_RATE * area * darktime / 60.0)
    charge = np.zeros(shape)
    if nhit == 0:
        return charge, 0
    t = THICKNESS_UM[arm]
    # zenith-angle distribution ~cos^2: sample cos(theta) = u^(1/3)
    cos_t = np.clip(rng.random(nhit) ** (1.0 / 3.0), 0.05, 1.0)
    tan_t = np.sqrt(1.0 - cos_t**2) / cos_t
    length = np.minimum(t * tan_t / (PIXEL_CM * 1e4), 300.0)  # pixels
    phi = rng.uniform(0, 2 * np.pi, nhit)
    q = CHARGE_PER_UM * t / cos_t * np.exp(0.35 * rng.standard_normal(nhit))  # Landau-like spread
    x0 = rng.uniform(0, nx, nhit)
    y0 = rng.uniform(0, ny, nhit)
    for k in range(nhit):
        nstep = max(1, int(np.ceil(length[k] * 4)))
        s = (np.arange(nstep) + 0.5) / nstep * length[k]
        xs = x0[k] + s * np.cos(phi[k])
        ys = y0[k] + s * np.sin(phi[k])
        ix = np.floor(xs + 0.5).astype(int)
        iy = np.floor(ys + 0.5).astype(int)
        ok = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
        np.add.at(charge, (iy[ok], ix[ok]), q[k] / nstep)
    charge = ndimage.gaussian_filter(charge, DIFFUSION_PIX[arm], mode="constant", truncate=3.0)
    return charge, int(nhit)


def digitize(rng, electrons, sections, gains, readnoise, bias_levels, pattern, saturation=65535,
             dead_amps=(), noisy_amps=()):
    """Convert an electron image to a raw uint16 image.

    Parameters
    ----------
    rng : numpy Generator
    electrons : (ny, nx)
        Electrons in the trimmed CCD frame (signal, dark, cosmics, defects).
    sections : dict from :func:`amp_layout`
    gains, readnoise, bias_levels : dict amp -> float
        e/ADU, electrons, ADU.
    pattern : (ny, nx)
        Fixed bias pattern, ADU.
    saturation : int
    dead_amps, noisy_amps : sequences of amp letters (fault injection)

    Returns
    -------
    raw : uint16 (ny_raw, nx_raw)
    """
    ny_raw = max(s["data"][0].stop for s in sections.values())
    nx_raw = max(s["prescan"][1].stop for s in sections.values())
    raw = np.zeros((ny_raw, nx_raw))
    for amp, s in sections.items():
        rows = s["data"][0]
        nrow = rows.stop - rows.start
        rn_adu = readnoise[amp] / gains[amp]
        level = bias_levels[amp]
        if amp in noisy_amps:
            rn_adu *= 4.0
        for key in ("prescan", "bias"):
            sy, sx = s[key]
            n = sx.stop - sx.start
            raw[sy, sx] = level + rn_adu * rng.standard_normal((nrow, n))
        sy, sx = s["data"]
        cy, cx = s["ccd"]
        sig = electrons[cy, cx] / gains[amp] + pattern[cy, cx]
        if amp in dead_amps:
            sig = np.zeros_like(sig)
            rn_amp = 0.3
        else:
            rn_amp = rn_adu
        block = level + sig + rn_amp * rng.standard_normal(sig.shape)
        if amp in noisy_amps:  # pickup noise along the readout
            t = np.arange(sig.size).reshape(sig.shape)
            block += 3.0 * np.sin(2 * np.pi * t / 1377.0)
        # DESI amplifiers B and D read right to left: same pixels, keep CCD orientation
        raw[sy, sx] = block
    return np.clip(np.floor(raw + 0.5), 0, saturation).astype(np.uint16)
