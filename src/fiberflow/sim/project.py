"""Project photons through a GAUSS-HERMITE PSF onto the CCD, and the truth that goes with it.

Spectra arrive on a 0.1 Angstrom model grid (plus delta-function arc lines). They are summed
into *fine bins* of about half a pixel; each bin keeps its electrons **and their mean
wavelength** (centroid), and its electrons are deposited as one PSF spot centred at that
centroid. First moments are therefore exact for any spectrum (an unresolved line lands exactly
where the PSF puts its wavelength), and the image of a smooth continuum has no sampling ripple
(spots spaced by half a pixel with sigma ~1 pixel: ripple ~exp(-2 pi^2 sigma^2 / d^2) < 1e-30).

The numba accumulation kernel has a numpy reference (:func:`accumulate_numpy`).
"""

from __future__ import annotations

import numpy as np

from ..models import psf as psfmodel

#: model grid step (Angstrom) of the input spectra
MODEL_STEP = 0.1
#: fine-bin size target in pixels along the dispersion
FINE_BIN_PIX = 0.5
#: spots per projection chunk (bounds memory: stamps are chunk x (2hy+1) x (2hx+1) doubles)
CHUNK_SPOTS = 40000


def camera_model_grid(psf, pad=4.0):
    """0.1 A model grid covering every CCD row of every fiber of ``psf`` (plus ``pad`` A).

    Returns
    -------
    (nmodel,)
    """
    wmin, wmax = psfmodel.wavelength_range(psf)
    lo = np.floor((min(wmin.min(), wmax.min()) - pad) / MODEL_STEP) * MODEL_STEP
    hi = np.ceil((max(wmin.max(), wmax.max()) + pad) / MODEL_STEP) * MODEL_STEP
    return np.round(np.arange(lo, hi + MODEL_STEP / 2, MODEL_STEP), 6)


def fine_bin_factor(psf):
    """Model samples per fine bin: about :data:`FINE_BIN_PIX` pixels at the densest dispersion."""
    mid = 0.5 * (psf.trace_wavemin + psf.trace_wavemax)
    fibers = np.array([psf.fibermin, psf.fibermin + psf.nfiber - 1])
    dy = np.abs(np.diff(psfmodel.trace_y(psf, [mid - 1.0, mid + 1.0], fibers), axis=1)) / 2.0
    disp = 1.0 / dy.max()  # Angstrom per pixel
    return max(1, int(np.floor(FINE_BIN_PIX * disp / MODEL_STEP)))


def bin_model(model_wave, electrons, factor, lines=None):
    """Sum model-grid electrons (and optional delta lines) into fine bins with centroids.

    Parameters
    ----------
    model_wave : (nmodel,)
    electrons : (nfiber, nmodel)
        Electrons per model sample (already integrated over the sample width).
    factor : int
        Model samples per fine bin.
    lines : (wave (nline,), electrons (nfiber, nline)), optional
        Unresolved lines added at their exact wavelengths.

    Returns
    -------
    centers : (nbin,)
        Fine-bin centres.
    centroid : (nfiber, nbin)
        Electron-weighted mean wavelength of each bin (the centre where empty).
    photons : (nfiber, nbin)
        Electrons per bin.
    """
    nfib, nmodel = electrons.shape
    nbin = nmodel // factor
    n = nbin * factor
    w = model_wave[:n].reshape(nbin, factor)
    e = electrons[:, :n].reshape(nfib, nbin, factor)
    photons = e.sum(axis=2)
    moment = (e * w[None, :, :]).sum(axis=2)
    centers = w.mean(axis=1)
    if lines is not None:
        lw, le = lines
        step = MODEL_STEP * factor
        edge0 = model_wave[0] - 0.5 * MODEL_STEP
        idx = np.floor((np.asarray(lw) - edge0) / step).astype(int)
        ok = (idx >= 0) & (idx < nbin)
        for j, i in zip(np.flatnonzero(ok), idx[ok]):
            photons[:, i] += le[:, j]
            moment[:, i] += le[:, j] * lw[j]
    with np.errstate(invalid="ignore", divide="ignore"):
        centroid = np.where(photons > 0, moment / np.where(photons > 0, photons, 1.0), centers[None, :])
    return centers, centroid, photons


def bin_to_grid(model_wave, electrons, grid, lines=None):
    """Sum model-grid electrons (and delta lines) into bins *centred* on an extraction grid.

    The alternative to :func:`bin_model` for validating extraction: each bin's electrons are
    deposited as one spot at the bin centre, so the image is exactly the extraction's model
    (projection matrix x flux per Angstrom) and the truth is known without sub-bin structure.
    The grid is extended by whole steps to cover ``model_wave`` (light beyond the extraction
    range still lands on the CCD, as the extraction's padded patches expect).

    Parameters
    ----------
    model_wave : (nmodel,)
    electrons : (nfiber, nmodel)
    grid : (nwave,)
        Uniform extraction grid.
    lines : (wave (nline,), electrons (nfiber, nline)), optional

    Returns
    -------
    centers : (nbin,)
        Extended grid; ``centers[k0:k0 + nwave] == grid`` with ``k0`` the number of steps added
        below ``grid[0]``.
    centroid : (nfiber, nbin)
        Equal to ``centers`` (no sub-bin structure).
    photons : (nfiber, nbin)
    """
    step = float(grid[1] - grid[0])
    below = max(0, int(np.ceil((grid[0] - model_wave[0]) / step)))
    above = max(0, int(np.ceil((model_wave[-1] - grid[-1]) / step)))
    centers = grid[0] + step * np.arange(-below, len(grid) + above)
    nfib = electrons.shape[0]
    photons = np.zeros((nfib, centers.size))
    idx = np.clip(np.floor((model_wave - centers[0]) / step + 0.5).astype(int), 0, centers.size - 1)
    np.add.at(photons.T, idx, electrons.T)
    if lines is not None:
        lw, le = lines
        lidx = np.floor((np.asarray(lw) - centers[0]) / step + 0.5).astype(int)
        ok = (lidx >= 0) & (lidx < centers.size)
        np.add.at(photons.T, lidx[ok], np.asarray(le)[:, ok].T)
    return centers, np.broadcast_to(centers, photons.shape).copy(), photons


def accumulate_numpy(image, stamps, x0, y0, weights):
    """Numpy reference of the accumulation kernel (same arguments; returns ``image``)."""
    ny, nx = image.shape
    _, sy, sx = stamps.shape
    yy = y0[:, None, None] + np.arange(sy)[None, :, None]
    xx = x0[:, None, None] + np.arange(sx)[None, None, :]
    yy, xx = np.broadcast_arrays(yy, xx)
    vals = weights[:, None, None] * stamps
    ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
    np.add.at(image, (yy[ok], xx[ok]), vals[ok])
    return image


def accumulate(image, stamps, x0, y0, weights, use_numba=True):
    """Add ``weights[s] * stamps[s]`` at ``(y0[s], x0[s])`` into ``image`` (in place).

    Parameters
    ----------
    image : (ny, nx) float64
    stamps : (n, sy, sx)
    x0, y0 : int (n,)
    weights : (n,)
    """
    if use_numba:
        from .._kernels.accumulate import accumulate_numba

        return accumulate_numba(image, np.ascontiguousarray(stamps, float), np.ascontiguousarray(x0, np.int64),
                                np.ascontiguousarray(y0, np.int64), np.ascontiguousarray(weights, float))
    return accumulate_numpy(image, stamps, np.asarray(x0), np.asarray(y0), np.asarray(weights, float))


def project(psf, centers, centroid, photons, shape, use_numba=True):
    """Expected electron image of fibers' fine-binned photons.

    Parameters
    ----------
    psf : GaussHermitePSF
    centers : (nbin,)
    centroid, photons : (nfiber, nbin)
        Fibers are the PSF's fibers in order.
    shape : (ny, nx)

    Returns
    -------
    (ny, nx) float64, electrons
    """
    image = np.zeros(shape)
    nfib = photons.shape[0]
    fibers_all = psf.fibermin + np.arange(nfib)
    h = 0.05
    dxdw = (psfmodel.trace_x(psf, centers + h, fibers_all) - psfmodel.trace_x(psf, centers - h, fibers_all)) / (2 * h)
    dydw = (psfmodel.trace_y(psf, centers + h, fibers_all) - psfmodel.trace_y(psf, centers - h, fibers_all)) / (2 * h)
    live = np.flatnonzero(photons.max(axis=0) > 0)
    if live.size == 0:
        return image
    per_fiber = max(1, CHUNK_SPOTS // live.size)
    for f0 in range(0, nfib, per_fiber):
        fs = np.arange(f0, min(nfib, f0 + per_fiber))
        p = psfmodel.spot_inputs(psf, centers[live], psf.fibermin + fs)
        dlam = (centroid[fs][:, live] - centers[live][None, :]).ravel()
        xc = p["xc"] + dlam * dxdw[fs][:, live].ravel()
        yc = p["yc"] + dlam * dydw[fs][:, live].ravel()
        wgt = photons[fs][:, live].ravel()
        keep = wgt > 0
        if not np.any(keep):
            continue
        stamps, x0, y0 = psfmodel.spot_stamps(xc[keep], yc[keep], p["sigx"][keep], p["sigy"][keep], p["gh"][keep],
                                              p["tail"][keep], psf.hsizex, psf.hsizey, use_numba=use_numba)
        accumulate(image, stamps, x0, y0, wgt[keep], use_numba=use_numba)
    return image


def lsf_sigma(psf, wave, nsample=24):
    """Gaussian-equivalent line-spread sigma in Angstrom per fiber, from the PSF spots.

    The y-profile second moment of untruncated spots (pixel integration variance 1/12
    removed) times the local dispersion, sampled at ``nsample`` wavelengths and interpolated.

    Returns
    -------
    (nfiber, nwave)
    """
    fibers = psf.fibermin + np.arange(psf.nfiber)
    ws = np.linspace(wave[0], wave[-1], nsample)
    st, x0, y0 = psfmodel.spots(psf, ws, fibers, hsize=(psf.hsizex + 4, psf.hsizey + 6))
    prof = st.sum(axis=-1)  # (nfib, ns, ny)
    yy = np.arange(prof.shape[-1])
    m1 = (prof * yy).sum(-1)
    var = (prof * yy**2).sum(-1) - m1**2 - 1.0 / 12.0
    dydw = np.abs(psfmodel.trace_y(psf, ws + 0.05, fibers) - psfmodel.trace_y(psf, ws - 0.05, fibers)) / 0.1
    sig = np.sqrt(np.clip(var, 0.05, None)) / dydw
    return np.stack([np.interp(wave, ws, s) for s in sig])


def convolve_to_grid(centers, centroid, values, wave, sigma):
    """Gaussian-LSF convolution of fine-binned quantities, sampled on ``wave``.

    Parameters
    ----------
    centers : (nbin,)
    centroid, values : (nfiber, nbin)
        ``values`` per bin (e.g. electrons or flux x Angstrom).
    wave : (nwave,)
    sigma : (nfiber, nwave)
        LSF sigma in Angstrom.

    Returns
    -------
    (nfiber, nwave)
        Density per Angstrom at resolution.
    """
    step = centers[1] - centers[0]
    half = int(np.ceil(6.0 * sigma.max() / step)) + 1
    j0 = np.clip(np.round((wave - centers[0]) / step).astype(int), 0, centers.size - 1)
    out = np.zeros(sigma.shape)
    norm = 1.0 / (np.sqrt(2 * np.pi) * sigma)
    for off in range(-half, half + 1):
        j = j0 + off
        ok = (j >= 0) & (j < centers.size)
        jj = np.clip(j, 0, centers.size - 1)
        d = wave[None, :] - centroid[:, jj]
        g = norm * np.exp(-0.5 * (d / sigma) ** 2)
        out += np.where(ok[None, :], g * values[:, jj], 0.0)
    return out
