"""CCD preprocessing: raw ADU -> electrons with inverse variance and masks; nightly master bias.

Per amplifier (:func:`overscan_correct`): the overscan level is a sigma-clipped mean, per row
(median-smoothed over 7 rows) when the overscan shows a step larger than ``ostep_threshold``
ADU, else one value; the read noise is the clipped RMS of the overscan around its level,
times the gain. Then (:func:`preproc_camera`): master-bias subtraction (ADU; its own noise, read noise^2 / NZERO, enters the variance), gain, dark
current scaled by DARKTIME, masks (pre-determined bad pixels from the master bias, saturation,
bad amplifiers, cosmic rays), per-pixel read noise and inverse variance
``1 / (readnoise^2 + max(S, 0))`` where the signal model ``S`` is the median of the 8 neighbours,
not the pixel itself (a pixel's own noise would otherwise bias its weight).

Cosmic rays (:func:`cosmic_candidates`, numba kernel with the numpy reference
:func:`cosmic_candidates_numpy`): in the spirit of SDSS's PSF test, a pixel is a cosmic-ray
candidate when, along at least one of four directions, it exceeds the mean of its two
neighbours by ``nsig`` sigma **and** is sharper than the sharpest PSF allows
(``(p - c sigma) * r > mean + c sigma_mean``, ``r = exp(-d^2 / (2 sigma_psf^2))`` with
``sigma_psf = 0.75`` px, ``d`` = 1 or sqrt(2)). The test runs twice, the second time with the
first pass's pixels replaced by the median of their neighbourhood. On a bright trace the test
finds only a track's brightest pixels (3% of the charge on sky-level z traces stayed unmasked, 40%
on a bright star's), so the mask is then grown along the track (:func:`grow_cosmics`: a
neighbour joins when it stands more than 3 sigma above what its row neighbour predicts, scaled by
the two columns' ratio - so a spectral line is expected and not masked - or, without light beside
it, above its column's median; repeated until none joins) and finally by one pixel into
neighbours more than 2 sigma above zero (the charge diffusion's wings).
"""

from __future__ import annotations

import functools
import os

import numpy as np
from scipy import ndimage

from ..bitmasks import ccdmask
from ..errors import DataError
from ..linalg import clipped_stats

#: narrowest PSF core (pixels) a real spot can have; anything sharper is a cosmic ray
SIGMA_PSF_MIN = 0.75
COSMIC_CFAC = 1.5
#: growth of the cosmic-ray mask along tracks (:func:`grow_cosmics`): threshold [sigma] above a
#: pixel's expected value, and the rows (+-) over which column ratios and medians are taken
COSMIC_GROW_NSIG = 3.0
COSMIC_GROW_HALF = 5
AMPS = ("A", "B", "C", "D")


# ---------------------------------------------------------------------------- statistics


def overscan_correct(data, overscan, per_row=True, ostep_threshold=2.0):
    """Overscan level of one amplifier.

    Parameters
    ----------
    data : (nrow, ncol) ADU
        The amplifier's data section (not modified).
    overscan : (nrow, nover) ADU
    per_row : bool
        Allow a per-row level when the overscan has a step.
    ostep_threshold : float
        ADU; a step (max - min of the 7-row-median level) above it selects per-row levels.

    Returns
    -------
    level : (nrow,) ADU
    rdnoise_adu : float
        Clipped RMS of the overscan around its per-row level.
    ostep : float
        ADU.
    """
    ov = np.asarray(overscan, float)
    m, s = clipped_stats(ov)
    rows = np.empty(ov.shape[0])
    for i in range(ov.shape[0]):
        r = ov[i]
        ok = np.abs(r - m) < 5 * max(s, 0.5) + 50.0
        rows[i] = r[ok].mean() if ok.any() else m
    smooth = ndimage.median_filter(rows, size=7, mode="nearest")
    ostep = float(smooth.max() - smooth.min())
    if per_row and ostep > ostep_threshold:
        level = smooth
    else:
        level = np.full(ov.shape[0], m)
    # read noise: scatter around the level, corrected for the level's own noise when per row
    _, rd = clipped_stats(ov - level[:, None])
    if per_row and ostep > ostep_threshold:
        rd *= np.sqrt(ov.shape[1] / max(ov.shape[1] - 1, 1))
    return level, float(rd), ostep


# ---------------------------------------------------------------------------- cosmics
def _ratios():
    d2 = np.array([1.0, 1.0, 2.0, 2.0])
    return np.exp(-d2 / (2 * SIGMA_PSF_MIN**2))


def cosmic_candidates_numpy(image, var, valid, nsig, cfac, ratios):
    """Numpy reference of the cosmic-ray test.

    Parameters
    ----------
    image, var : (ny, nx) float
    valid : (ny, nx) bool
        Pixels that can be tested or used as neighbours.
    nsig, cfac : float
    ratios : (4,)
        Minimum neighbour/peak ratio of a real PSF per direction (x, y, +diagonal, -diagonal).

    Returns
    -------
    (ny, nx) bool
    """
    ny, nx = image.shape
    out = np.zeros((ny, nx), bool)
    p = image[1:-1, 1:-1]
    sp = np.sqrt(np.maximum(var[1:-1, 1:-1], 1e-12))
    ok_p = valid[1:-1, 1:-1]
    for d, (dy, dx) in enumerate([(0, 1), (1, 0), (1, 1), (1, -1)]):
        a = (slice(1 - dy, ny - 1 - dy), slice(1 - dx, nx - 1 - dx))
        b = (slice(1 + dy, ny - 1 + dy), slice(1 + dx, nx - 1 + dx))
        mean = 0.5 * (image[a] + image[b])
        smean = 0.5 * np.sqrt(np.maximum(var[a] + var[b], 1e-12))
        cond = ok_p & valid[a] & valid[b]
        cond &= p - mean > nsig * np.sqrt(sp**2 + smean**2)
        cond &= (p - cfac * sp) * ratios[d] > mean + cfac * smean
        out[1:-1, 1:-1] |= cond
    return out


def cosmic_candidates(image, var, valid, nsig=6.0, cfac=COSMIC_CFAC, use_numba=True):
    """Pixels sharper than any PSF (see module docstring); (ny, nx) bool."""
    args = (np.ascontiguousarray(image, float), np.ascontiguousarray(var, float), np.ascontiguousarray(valid, bool),
            float(nsig), float(cfac), _ratios())
    if use_numba:
        from .._kernels.cosmics import cosmic_candidates_numba

        return cosmic_candidates_numba(*args)
    return cosmic_candidates_numpy(*args)


def ring_median_numpy(image):
    """Upper median (rank 4 of 8) of each pixel's 8 neighbours, edges repeated: (ny, nx)."""
    ring = np.ones((3, 3), bool)
    ring[1, 1] = False
    return ndimage.median_filter(np.asarray(image, np.float64), footprint=ring, mode="nearest")


def ring_median(image, use_numba=True):
    """8-neighbour median of every pixel (the pixel's own value excluded): (ny, nx) float64.

    The numba kernel and :func:`ring_median_numpy` give identical results.
    """
    if not use_numba:
        return ring_median_numpy(image)
    from .._kernels.median8 import ring_median_numba

    return ring_median_numba(np.pad(np.asarray(image, np.float64), 1, mode="edge"))


def local_median(image, ys, xs, half=2):
    """Median of the (2 half + 1)^2 box around each listed pixel (edges repeated): (n,)."""
    ny, nx = image.shape
    off = np.arange(-half, half + 1)
    rr = np.clip(ys[:, None, None] + off[None, :, None], 0, ny - 1)
    cc = np.clip(xs[:, None, None] + off[None, None, :], 0, nx - 1)
    return np.median(image[rr, cc].reshape(len(ys), -1), axis=1)


def column_median(image, ys, xs, excluded, half=COSMIC_GROW_HALF):
    """Median of each listed pixel's column within +-``half`` rows, ``excluded`` pixels left out.

    Parameters
    ----------
    image : (ny, nx) float
    ys, xs : (n,) int
    excluded : (ny, nx) bool
    half : int

    Returns
    -------
    (n,) float; -inf where every pixel of the window is excluded
    """
    ny = image.shape[0]
    rows = np.clip(ys[:, None] + np.arange(-half, half + 1)[None, :], 0, ny - 1)
    cols = np.broadcast_to(xs[:, None], rows.shape)
    vals = np.where(excluded[rows, cols], np.nan, image[rows, cols])
    ok = np.isfinite(vals).any(axis=1)
    out = np.full(len(ys), -np.inf)
    if ok.any():
        out[ok] = np.nanmedian(vals[ok], axis=1)
    return out


def neighbour_predictions(image, var, excluded, ys, xs, half=COSMIC_GROW_HALF, nsig_light=3.0):
    """Each listed pixel predicted from its left and right neighbours in the same row.

    For a neighbour column ``x'`` (pixel not excluded), the prediction is ``image[y, x'] * ratio``
    with ``ratio`` the sum of ``image[., x]`` over the sum of ``image[., x']`` on the rows within
    +-``half`` (the row itself left out) where neither pixel is excluded; it is used only where that
    neighbour's sum is light (> ``nsig_light`` sigma). Of the two, the larger prediction is kept.

    Returns
    -------
    pred : (n,) float, NaN where no neighbour qualifies
    pvar : (n,) float, the prediction's variance (``ratio^2 var[y, x']``)
    """
    ny, nx = image.shape
    off = np.concatenate([np.arange(-half, 0), np.arange(1, half + 1)])
    rows = ys[:, None] + off[None, :]
    rin = (rows >= 0) & (rows < ny)
    rows = np.clip(rows, 0, ny - 1)
    cols = np.broadcast_to(xs[:, None], rows.shape)
    own_ok = rin & ~excluded[rows, cols]
    pred = np.full(len(ys), np.nan)
    pvar = np.zeros(len(ys))
    for dx in (-1, 1):
        xn = xs + dx
        inb = (xn >= 0) & (xn < nx)
        xn = np.clip(xn, 0, nx - 1)
        ok = inb & ~excluded[ys, xn]
        ncols = np.broadcast_to(xn[:, None], rows.shape)
        both = own_ok & ~excluded[rows, ncols]
        sx = np.where(both, image[rows, cols], 0.0).sum(axis=1)
        sn = np.where(both, image[rows, ncols], 0.0).sum(axis=1)
        vn = np.where(both, var[rows, ncols], 0.0).sum(axis=1)
        ok &= (sn > nsig_light * np.sqrt(np.maximum(vn, 1e-12))) & (sx > 0)
        ratio = np.where(ok, sx / np.where(ok, sn, 1.0), 0.0)
        p = image[ys, xn] * ratio
        better = ok & ~(pred >= p)  # the larger of the two predictions (NaN: none yet)
        pred[better] = p[better]
        pvar[better] = ratio[better] ** 2 * var[ys[better], xn[better]]
    return pred, pvar


def grow_cosmics(image, var, valid, crs, nsig=COSMIC_GROW_NSIG, half=COSMIC_GROW_HALF, maxiter=200):
    """Grow a cosmic-ray mask along the charge the sharpness test missed (hysteresis).

    The sharpness test of :func:`cosmic_candidates` compares a pixel with its neighbours without
    subtracting the light under it, so on a bright trace it finds only the brightest pixels of a
    track (a pixel of charge ``A`` on light ``L`` passes only when ``A r > L (1 - r)``, i.e.
    ``A > 1.4 L``): the rest of the track stays in the spectrum. A pixel next to the mask joins it
    when it exceeds the median of the unmasked pixels of its own column within +-``half`` rows
    (the light along the dispersion direction, which changes slowly on a spectrum's continuum) by
    more than ``nsig`` sigma; repeated from every newly added pixel until none joins.

    Parameters
    ----------
    image, var : (ny, nx) float
    valid : (ny, nx) bool
        Pixels that may join (and that count in the medians).
    crs : (ny, nx) bool
        The mask to grow.

    Returns
    -------
    (ny, nx) bool, the grown mask (``crs`` included)
    """
    ny, nx = image.shape
    mask = np.asarray(crs, bool).copy()
    sig = np.sqrt(np.maximum(var, 1e-12))
    excluded = mask | ~np.asarray(valid, bool)
    ys, xs = np.nonzero(mask)
    offs = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    for _ in range(maxiter):
        if ys.size == 0:
            break
        cy = np.concatenate([ys + dy for dy, _ in offs])
        cx = np.concatenate([xs + dx for _, dx in offs])
        inside = (cy >= 0) & (cy < ny) & (cx >= 0) & (cx < nx)
        flat = np.unique(cy[inside] * nx + cx[inside])
        cy, cx = flat // nx, flat % nx
        keep = ~excluded[cy, cx]
        cy, cx = cy[keep], cx[keep]
        # where a neighbouring column (same row) holds light, the pixel is expected at that
        # neighbour's value times the two columns' ratio over the rows around (a spectral line
        # across the trace is then expected, cosmic-ray charge is not); of two such predictions
        # the larger one counts; elsewhere its column's median
        expect, evar = neighbour_predictions(image, var, excluded, cy, cx, half)
        dark = ~np.isfinite(expect)
        expect[dark] = column_median(image, cy[dark], cx[dark], excluded, half)
        add = image[cy, cx] - expect > nsig * np.sqrt(sig[cy, cx] ** 2 + evar)
        ys, xs = cy[add], cx[add]
        mask[ys, xs] = True
        excluded[ys, xs] = True
    return mask


def reject_cosmics(image, var, valid, nsig=6.0, use_numba=True, grow_nsig=COSMIC_GROW_NSIG):
    """Cosmic-ray mask: two passes of :func:`cosmic_candidates`, grown along the tracks by
    :func:`grow_cosmics` (``grow_nsig`` sigma; 0 = off), then by one pixel into neighbours more
    than 2 sigma above zero.

    Returns
    -------
    (ny, nx) bool
    """
    crs = cosmic_candidates(image, var, valid, nsig, use_numba=use_numba)
    if crs.any():
        fill = image.copy()
        ys, xs = np.nonzero(crs)
        fill[ys, xs] = local_median(image, ys, xs, 2)
        crs |= cosmic_candidates(fill, var, valid & ~crs, nsig, use_numba=use_numba)
        if grow_nsig > 0:
            crs = grow_cosmics(image, var, valid, crs, grow_nsig)
    grown = ndimage.binary_dilation(crs, structure=np.ones((3, 3), bool))
    grown &= image > 2.0 * np.sqrt(np.maximum(var, 1e-12))
    return crs | grown


# ---------------------------------------------------------------------------- camera
def subtract_overscan(rawcam, per_row=True, ostep_threshold=2.0, path=None):
    """Trimmed overscan-subtracted image (ADU) and per-amplifier statistics.

    Returns
    -------
    image : (ny, nx) float64, ADU
    stats : dict amp -> dict(level, rdnoise_adu, ostep, ccd=(slice_y, slice_x))
    """
    from ..io.raw import ccd_shape

    amps = rawcam.amps(path)
    ny, nx = ccd_shape(amps)
    image = np.zeros((ny, nx))
    stats = {}
    data = rawcam.data.astype(float)
    for amp, g in amps.items():
        level, rd, ostep = overscan_correct(data[g.data], data[g.bias], per_row, ostep_threshold)
        image[g.ccd] = data[g.data] - level[:, None]
        stats[amp] = {"level": float(np.mean(level)), "rdnoise_adu": rd, "ostep": ostep, "ccd": g.ccd,
                      "saturated": rawcam.data[g.data] >= int(rawcam.header.get(f"SATURLEV{amp}", 65535))}
    return image, stats


def master_bias(images):
    """Clipped mean of overscan-subtracted ZERO images and a mask of pixels that stand out.

    Parameters
    ----------
    images : list of (ny, nx) ADU

    Returns
    -------
    bias : (ny, nx) float32, ADU
    mask : (ny, nx) int16, ccdmask bits (HOT where the bias sits > 8 robust sigma off its
        column/row structure, i.e. hot columns and hot pixels)
    """
    if not images:
        raise ValueError("master_bias: no images")
    stack = np.stack(images)
    if stack.shape[0] >= 3:
        med = np.median(stack, axis=0)
        mad = 1.4826 * np.median(np.abs(stack - med[None]), axis=0) + 1e-3
        keep = np.abs(stack - med[None]) < 4 * np.maximum(mad, np.median(mad))[None]
        bias = np.where(keep, stack, 0).sum(axis=0) / np.maximum(keep.sum(axis=0), 1)
    else:
        bias = stack.mean(axis=0)
    smooth = ndimage.median_filter(bias, size=(1, 9), mode="nearest")
    resid = bias - smooth
    sig = 1.4826 * np.median(np.abs(resid - np.median(resid)))
    mask = np.where(np.abs(resid) > 8 * max(sig, 0.2) + 3.0, ccdmask.mask("HOT"), 0).astype(np.int16)
    return bias.astype(np.float32), mask


@functools.lru_cache(maxsize=64)
def master_noise_factors(nzero, npix=200, seed=20250101):
    """Noise of :func:`master_bias` and of frames against it, in units of read noise^2.

    The clipped mean of three or more ZEROs is not a plain mean: its variance is somewhat
    above 1/N and an input frame's residual from it is less correlated with the frame than
    1 - 1/N says. The factors are measured once per N by running :func:`master_bias` itself on
    Gaussian frames (exact for N <= 2, where it is a plain mean).

    Parameters
    ----------
    nzero : int
        ZEROs in the master (>= 1).

    Returns
    -------
    (master, included, excluded) : floats
        var(master), var(frame - master) for one of its ZEROs, and for any other frame.
    """
    nzero = int(nzero)
    if nzero < 1:
        raise ValueError(f"nzero must be >= 1, not {nzero}")
    if nzero <= 2:
        return 1.0 / nzero, 1.0 - 1.0 / nzero, 1.0 + 1.0 / nzero
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((nzero + 1, npix, npix))
    m = master_bias(list(z[:nzero]))[0].astype(float)
    vm = float(np.var(m))
    vin = float(np.mean([np.var(z[i] - m) for i in range(nzero)]))
    return vm, vin, float(np.var(z[nzero] - m))


def variance_floor(readnoise, bias_nzero=0, dark_electrons=0.0):
    """Signal-independent pixel variance [electron^2]: read noise^2, the master bias's own noise
    (:func:`master_noise_factors`: read noise^2 / NZERO for a plain mean, when one was
    subtracted) and the dark current's shot noise.

    Parameters
    ----------
    readnoise : (ny, nx) electron
    bias_nzero : int
        ZEROs averaged into the subtracted master bias (0: none subtracted).
    dark_electrons : float
        Dark electrons per pixel subtracted (rate x DARKTIME).

    Returns
    -------
    (ny, nx) float64
    """
    master = master_noise_factors(int(bias_nzero))[0] if bias_nzero > 0 else 0.0
    out = np.square(readnoise, dtype=np.float64)  # in place from here: full-size frames
    out *= 1.0 + master
    out += max(float(dark_electrons), 0.0)
    return out


def image_variance_floor(image):
    """:func:`variance_floor` of a preprocessed image from its READNOISE plane and header
    (BIASNZ, DARKRATE, DARKTIME): the variance a model of the signal is added to. (ny, nx)."""
    hdr = image.header
    dark = float(hdr.get("DARKRATE", 0.0)) * float(hdr.get("DARKTIME", 0.0)) / 3600.0
    return variance_floor(image.readnoise, int(hdr.get("BIASNZ", 0)), dark)


def apply_pixflat(image, ivar, readnoise, mask, pixflat, path=None):
    """Divide a preprocessed image by a pixel flat.

    Parameters
    ----------
    image, ivar, readnoise : (ny, nx) electrons, 1/electrons^2, electrons
    mask : (ny, nx) int16 ccdmask bits, updated in place
    pixflat : (ny, nx) relative pixel response
    path : str, optional
        Pixel-flat file name for error messages.

    Returns
    -------
    image, ivar, readnoise : (ny, nx)
        In units of a pixel of response 1: ``image / p``, ``ivar p^2``, ``readnoise / p``.
        Pixels whose response is 0 or not finite are masked PIXFLATZERO, below 0.1 PIXFLATLOW,
        both with ivar 0 and left undivided.
    """
    pf = np.asarray(pixflat, float)
    if pf.shape != np.shape(image):
        raise DataError(path, f"pixel flat shape {pf.shape} differs from the camera's {np.shape(image)}")
    zero = ~np.isfinite(pf) | (pf <= 0)
    low = ~zero & (pf < 0.1)
    if zero.all():
        raise DataError(path, "pixel flat has no positive finite pixel")
    mask[zero] |= ccdmask.mask("PIXFLATZERO")
    mask[low] |= ccdmask.mask("PIXFLATLOW")
    ok = ~(zero | low)
    p = np.where(ok, pf, 1.0)
    return image / p, np.where(ok, ivar * p**2, 0.0), readnoise / p


def preproc_camera(rawcam, gains=None, dark_rate=0.0, bias=None, bias_mask=None, bias_nzero=0, badamps=(), nsig_cosmics=6.0,
                   per_row=True, ostep_threshold=2.0, path=None, use_numba=True, pixflat=None, pixflat_path=None):
    """Preprocess one camera.

    Parameters
    ----------
    rawcam : fiberflow.io.raw.RawCamera
    gains : dict amp -> e/ADU, optional
        Default: GAINx header keywords.
    dark_rate : float
        Electron per hour per pixel.
    bias : (ny, nx) ADU, optional
        Master bias (overscan-subtracted).
    bias_mask : (ny, nx) int16, optional
        Pre-determined bad pixels (from the master bias).
    bias_nzero : int
        Number of ZEROs averaged into the master bias: its noise (read noise^2 / nzero)
        is added to the variance.
    badamps : sequence of amp letters
        Amplifiers marked bad by operators: masked BADAMP, ivar 0.
    nsig_cosmics : float
    path : str, optional
        Raw file name for error messages.
    pixflat : (ny, nx), optional
        Relative pixel response: the image is divided by it after the variance model and the
        cosmic-ray rejection (done on the detected electrons), see :func:`apply_pixflat`.
    pixflat_path : str, optional
        Its file name, for error messages and the PIXFLAT keyword.

    Returns
    -------
    image, ivar, readnoise : (ny, nx) float32
    mask : (ny, nx) int16
    header : dict
        OVERSCNx (ADU), OBSRDNx (electron), OSTEPx (ADU), GAINx, SATURLEVx, NCOSMIC, CRFRAC, ...
    """
    img_adu, stats = subtract_overscan(rawcam, per_row, ostep_threshold, path)
    ny, nx = img_adu.shape
    if pixflat is not None and np.shape(pixflat) != (ny, nx):
        raise DataError(pixflat_path, f"pixel flat shape {np.shape(pixflat)} differs from the camera's {(ny, nx)}")
    if bias is not None:
        if bias.shape != img_adu.shape:
            raise DataError(path, f"master bias shape {bias.shape} differs from the camera's {img_adu.shape}")
        img_adu = img_adu - bias
    image = np.zeros((ny, nx))
    readnoise = np.zeros((ny, nx))
    mask = np.zeros((ny, nx), np.int16)
    hdr = {}
    for amp, st in stats.items():
        key = f"GAIN{amp}"
        gain = (gains or {}).get(amp, rawcam.header.get(key))
        if gain is None:
            raise DataError(path, f"camera {rawcam.camera.upper()}: no gain for amplifier {amp} (no {key} keyword "
                                  "and none in the instrument preset)")
        gain = float(gain)
        sl = st["ccd"]
        image[sl] = img_adu[sl] * gain
        readnoise[sl] = st["rdnoise_adu"] * gain
        mask[sl][st["saturated"]] |= ccdmask.mask("SATURATED")
        if amp in badamps:
            mask[sl] |= ccdmask.mask("BADAMP")
        hdr[f"OVERSCN{amp}"] = (st["level"], "overscan level [ADU]")
        hdr[f"OBSRDN{amp}"] = (st["rdnoise_adu"] * gain, "read noise from overscan [electron]")
        hdr[f"OSTEP{amp}"] = (st["ostep"], "overscan step max-min [ADU]")
        hdr[f"GAIN{amp}"] = (gain, "gain applied [e/ADU]")
        if st["rdnoise_adu"] * gain > 10.0:
            mask[sl] |= ccdmask.mask("BADREADNOISE")
    darktime = float(rawcam.header.get("DARKTIME", rawcam.header.get("EXPTIME", 0.0)))
    if dark_rate:
        image -= dark_rate * darktime / 3600.0
    if bias_mask is not None:
        mask |= bias_mask.astype(np.int16)
    signal = ring_median(image, use_numba)  # the pixel's own noise must not set its weight
    nzero = bias_nzero if bias is not None else 0
    floor = variance_floor(readnoise, nzero, dark_rate * darktime / 3600.0)
    # the neighbours' median is noisy: clipped at 0 it would add ~0.2 read noise of signal to
    # every dark pixel (variance ~10% high); negative values are kept down to -floor / 2
    var = floor + np.maximum(signal, -0.5 * floor)
    valid = (mask & ccdmask.mask("SATURATED|BADAMP|HOT")) == 0
    crs = reject_cosmics(image, var, valid, nsig_cosmics, use_numba=use_numba) if nsig_cosmics > 0 else np.zeros_like(valid)
    mask[crs] |= ccdmask.mask("COSMIC")
    ivar = np.where((mask & ccdmask.mask("BAD|HOT|DEAD|SATURATED|COSMIC|BADAMP")) == 0, 1.0 / var, 0.0)
    if pixflat is not None:
        image, ivar, readnoise = apply_pixflat(image, ivar, readnoise, mask, pixflat, pixflat_path)
        hdr["PIXFLAT"] = (os.path.basename(pixflat_path) if pixflat_path else "yes", "pixel flat divided out")
    hdr["NCOSMIC"] = (int(ndimage.label(crs)[1]), "cosmic-ray clusters masked")
    hdr["CRFRAC"] = (float(crs.mean()), "fraction of pixels masked as cosmic rays")
    hdr["SATFRAC"] = (float(((mask & ccdmask.mask("SATURATED")) != 0).mean()), "fraction of saturated pixels")
    hdr["DARKTIME"] = darktime
    hdr["BIASNZ"] = (int(nzero), "ZEROs in the master bias (its noise is in the variance)")
    hdr["DARKRATE"] = (float(dark_rate), "dark current subtracted [electron/hour]")
    hdr["BUNIT"] = "electron"
    return (image.astype(np.float32), ivar.astype(np.float32), readnoise.astype(np.float32), mask, hdr)
