"""Boxcar extraction: the fast quick-look mode (in the spirit of DESI's qproc).

Per fiber and CCD row the pixels within ``halfwidth`` of the trace centre are summed (edge
pixels by their fractional overlap with the aperture), divided by the fraction of the PSF's
light the aperture holds (from the PSF spots, so fluxes are comparable with the 2-D
extraction's), and the row counts are redistributed onto the output wavelength bins by the
exact overlap of each row's wavelength interval with each bin. Its resolution estimate is a
Gaussian of the PSF's measured spot width along the dispersion (second moment of the
pixel-integrated spots), integrated over the output bins.

Rows with a masked pixel inside the aperture are not used: bins they touch get ivar 0 and
specmask ALLBADPIX.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

from ..bitmasks import specmask
from ..models import psf as psfmodel
from ..models.resolution import rows_to_diags

SOMEBADPIX = specmask.mask("SOMEBADPIX")
ALLBADPIX = specmask.mask("ALLBADPIX")


def aperture_weights(xc, halfwidth, ncol):
    """Fractional overlap of pixel columns with the aperture ``[xc - hw, xc + hw]``.

    Parameters
    ----------
    xc : (...,) trace centres [pixel]
    halfwidth : float
    ncol : int
        Window width in columns.

    Returns
    -------
    col0 : (...,) int
        First column of each window.
    w : (..., ncol)
        Weights in [0, 1] of columns ``col0 .. col0 + ncol - 1``.
    """
    xc = np.asarray(xc, float)
    col0 = np.floor(xc - halfwidth + 0.5).astype(int)
    cols = col0[..., None] + np.arange(ncol)
    lo = np.maximum(cols - 0.5, (xc - halfwidth)[..., None])
    hi = np.minimum(cols + 0.5, (xc + halfwidth)[..., None])
    return col0, np.clip(hi - lo, 0.0, 1.0)


def spot_properties(psf, wave, fibers, halfwidth):
    """Aperture fraction and dispersion-direction width of the PSF spots.

    Parameters
    ----------
    psf : GaussHermitePSF
    wave : (nw,)
    fibers : (nf,) absolute fiber numbers
    halfwidth : float

    Returns
    -------
    frac : (nf, nw)
        Fraction of each spot's light inside the boxcar aperture centred on the trace.
    sigy : (nf, nw)
        RMS width of the spot's row profile [pixel] (includes the pixel integration).
    """
    st, x0, y0 = psfmodel.spots(psf, wave, fibers)
    sy, sx = st.shape[-2:]
    xc = psfmodel.trace_x(psf, wave, fibers)
    yc = psfmodel.trace_y(psf, wave, fibers)
    prof_x = st.sum(axis=2)  # (nf, nw, sx)
    cols = x0[..., None] + np.arange(sx)
    lo = np.maximum(cols - 0.5, (xc - halfwidth)[..., None])
    hi = np.minimum(cols + 0.5, (xc + halfwidth)[..., None])
    frac = np.sum(prof_x * np.clip(hi - lo, 0.0, 1.0), axis=-1)
    prof_y = st.sum(axis=3)  # (nf, nw, sy)
    dy = y0[..., None] + np.arange(sy) - yc[..., None]
    tot = prof_y.sum(axis=-1)
    mean = np.sum(prof_y * dy, axis=-1) / tot
    sigy = np.sqrt(np.maximum(np.sum(prof_y * (dy - mean[..., None]) ** 2, axis=-1) / tot, 1e-6))
    return frac, sigy


def rebin_rows(edges, counts, var, bad, wedges):
    """Row counts onto wavelength bins by exact interval overlap (counts uniform within a row).

    Parameters
    ----------
    edges : (nrow + 1,) increasing wavelengths of the row boundaries
    counts, var : (nrow,) electrons and their variance per row
    bad : (nrow,) bool, rows not to use
    wedges : (nbin + 1,) output bin edges

    Returns
    -------
    counts_bin, var_bin : (nbin,)
    touched_bad : (nbin,) bool
        A bad row, or wavelengths outside the rows, overlaps the bin.
    """
    nrow = counts.size
    cum = np.concatenate([[0.0], np.cumsum(np.where(bad, 0.0, counts))])
    cumv = np.concatenate([[0.0], np.cumsum(np.where(bad, 0.0, var))])
    cumb = np.concatenate([[0], np.cumsum(bad.astype(int))])
    # position of each bin edge: row j and fraction t within it
    j = np.clip(np.searchsorted(edges, wedges, side="right") - 1, 0, nrow - 1)
    t = np.clip((wedges - edges[j]) / (edges[j + 1] - edges[j]), 0.0, 1.0)
    c_at = cum[j] + t * np.where(bad[j], 0.0, counts[j])
    out = np.diff(c_at)
    j0, j1, t0, t1 = j[:-1], j[1:], t[:-1], t[1:]
    same = j0 == j1
    vrow = np.where(bad, 0.0, var)
    v_inner = cumv[j1] - cumv[np.minimum(j0 + 1, j1)]
    v_sep = (1 - t0) ** 2 * vrow[j0] + t1**2 * vrow[j1] + np.where(j1 > j0 + 1, v_inner, 0.0)
    v_same = (t1 - t0) ** 2 * vrow[j0]
    vout = np.where(same, v_same, v_sep)
    nbad = cumb[j1 + 1] - cumb[j0]
    outside = (wedges[:-1] < edges[0]) | (wedges[1:] > edges[-1])
    return out, vout, (nbad > 0) | outside


def gaussian_resolution(sigma, dw, ndiag):
    """Resolution diagonals of Gaussian line spread functions integrated over the bins.

    Parameters
    ----------
    sigma : (nf, nw) Gaussian sigma [Angstrom] at each output bin
    dw : float bin width [Angstrom]
    ndiag : int

    Returns
    -------
    (nf, ndiag, nw) diagonals in the scipy dia convention, rows summing to 1.
    """
    nf, nw = sigma.shape
    h = ndiag // 2
    d = np.arange(-h, h + 1)  # column offset j - i
    s = np.sqrt(2.0) * np.maximum(sigma, 1e-3)[..., None]
    rows = 0.5 * (erf((d + 0.5) * dw / s) - erf((d - 0.5) * dw / s))  # (nf, nw, ndiag)
    i = np.arange(nw)[:, None] + d[None, :]
    rows = np.where((i >= 0) & (i < nw), rows, 0.0)
    rows /= rows.sum(axis=-1, keepdims=True)
    return rows_to_diags(rows)


def boxcar_frame(image, ivar, psf, wave, halfwidth=3.0, nsample=40):
    """Boxcar-extract every fiber of a camera on the wavelength grid ``wave``.

    Parameters
    ----------
    image, ivar : (ny, nx)
    psf : GaussHermitePSF
    wave : (nwave,) uniform grid [Angstrom]
    halfwidth : float
        Aperture half width [pixel].
    nsample : int
        Wavelengths per fiber at which the spots' aperture fraction and width are evaluated
        (interpolated in between).

    Returns
    -------
    dict as :func:`fiberflow.steps.extract.extract_frame`: (nfiber, nwave) ``flux``
    [electron/Angstrom], ``ivar``, ``mask``, ``chi2pix`` (zeros: a boxcar has no model),
    ``masked`` and ``resolution`` (nfiber, ndiag, nwave).
    """
    image = np.asarray(image, float)
    ivar = np.asarray(ivar, float)
    good = (ivar > 0) & np.isfinite(image) & np.isfinite(ivar)
    ny, nx = image.shape
    wave = np.asarray(wave, float)
    nw = wave.size
    dw = float(np.median(np.diff(wave))) if nw > 1 else 1.0
    wedges = np.concatenate([wave - dw / 2, [wave[-1] + dw / 2]])
    nfib = psf.nfiber
    fibers = psf.fibermin + np.arange(nfib)
    ndiag = 2 * psf.hsizey + 1
    ncol = int(2 * np.ceil(halfwidth)) + 2
    out = {"flux": np.zeros((nfib, nw)), "ivar": np.zeros((nfib, nw)), "chi2pix": np.zeros((nfib, nw)),
           "masked": np.zeros((nfib, nw)), "mask": np.zeros((nfib, nw), np.int32)}
    yedge = np.arange(ny + 1) - 0.5
    wedge_rows = psfmodel.wavelength(psf, yedge, fibers)  # (nfib, ny + 1)
    wrow = psfmodel.wavelength(psf, np.arange(ny, dtype=float), fibers)
    xrow = psfmodel.trace_x(psf, wrow, fibers)  # (nfib, ny)
    ws = np.linspace(max(wave[0], wedge_rows.min()), min(wave[-1], wedge_rows.max()), nsample)
    frac, sigy = spot_properties(psf, ws, fibers, halfwidth)
    data = np.where(good, image, 0.0)
    var = np.where(good, 1.0 / np.where(good, ivar, 1.0), 0.0)
    rows = np.arange(ny)
    sig_w = np.zeros((nfib, nw))
    for k in range(nfib):
        col0, w = aperture_weights(xrow[k], halfwidth, ncol)  # (ny,), (ny, ncol)
        cols = col0[:, None] + np.arange(ncol)
        inside = (cols >= 0) & (cols < nx)
        cc = np.clip(cols, 0, nx - 1)
        w = np.where(inside, w, 0.0)
        e = np.sum(w * data[rows[:, None], cc], axis=1)
        v = np.sum(w**2 * var[rows[:, None], cc], axis=1)
        use = w > 1e-3
        bad = np.any(use & (~good[rows[:, None], cc] | ~inside), axis=1)
        f_row = np.interp(wrow[k], ws, frac[k])
        e, v = e / f_row, v / f_row**2
        edges = wedge_rows[k]
        if edges[-1] < edges[0]:  # wavelength decreasing with y
            edges, e, v, bad = edges[::-1], e[::-1], v[::-1], bad[::-1]
        cb, vb, touched = rebin_rows(edges, e, v, bad, wedges)
        out["flux"][k] = cb / dw
        ok = ~touched & (vb > 0)
        out["ivar"][k] = np.where(ok, dw**2 / np.where(ok, vb, 1.0), 0.0)
        out["masked"][k] = touched.astype(float)
        dldy = np.abs(np.gradient(wrow[k]))
        sig_w[k] = np.interp(wave, ws, sigy[k]) * np.interp(wave, wrow[k][np.argsort(wrow[k])],
                                                              dldy[np.argsort(wrow[k])])
    out["resolution"] = gaussian_resolution(sig_w, dw, ndiag)
    out["mask"][out["masked"] > 0] |= SOMEBADPIX
    out["mask"][out["ivar"] == 0] |= ALLBADPIX
    return out
