"""Spectroperfectionism extraction (Bolton & Schlegel 2010) of a preprocessed image.

The frame is cut into bundles, sub-bundles of fibers (padded with neighbouring fibers of the
bundle) and wavelength patches (padded with extra wavelength bins, also beyond the output grid
so light from outside it is modelled). For each patch:

1. the model columns are the pixel-integrated PSF spots of every (fiber, wavelength) unknown,
   times the bin width, so fluxes are in electron/Angstrom;
2. the normal equations ``A^T W A f = A^T W d`` (W = pixel inverse variance, masked pixels 0;
   numba kernel with a numpy reference) get a tiny ridge prior so unconstrained bins (CCD
   edges, masked regions) stay solvable, then a Cholesky solve gives the deconvolved flux and
   its covariance C;
3. per fiber, the block of C is inverted and square-rooted (symmetric square root ``Q``);
   ``R = Q / rowsum(Q)`` is the fiber's resolution matrix, which never mixes fibers. Its rows
   are truncated to ``ndiag`` diagonals and renormalised; the reconvolved flux is ``R f`` and
   its variance ``diag(R C R^T)`` computed with that stored R, so pulls against ``R f_true``
   are exact;
4. CHI2PIX is the spot-weighted chi2 of the pixel residuals per flux bin divided by its
   expectation (the spot-weighted ``1 - leverage`` of the pixels), and the masked
   fraction is the share of each bin's light on masked pixels (specmask SOMEBADPIX,
   ALLBADPIX, BAD2DFIT).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

from . import psfmodel
from .bitmasks import specmask

SOMEBADPIX = specmask.mask("SOMEBADPIX")
ALLBADPIX = specmask.mask("ALLBADPIX")
BAD2DFIT = specmask.mask("BAD2DFIT")


@dataclass
class ExtractOptions:
    """Options of :func:`extract_frame` (config section ``extract``)."""

    wavesize: int = 50         #: output bins per patch
    nwavepad: int = 8          #: extra bins solved on each side of a patch
    nsubbundles: int = 5       #: sub-bundles per bundle
    nfiberpad: int = 1         #: neighbouring fibers solved on each side of a sub-bundle
    regularize: float = 0.0    #: ridge prior added to every unknown (relative to the median diagonal)
    psferr: float = 0.0        #: fractional PSF error added to the pixel variance (var += (psferr*model)^2)
    ndiag: int | None = None   #: resolution diagonals (default 2*HSIZEY+1: 11 for DESI PSFs)
    chi2_bad: float = 100.0    #: CHI2PIX above this sets BAD2DFIT
    use_numba: bool = True

    @classmethod
    def from_config(cls, section):
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in (section or {}).items() if k in known})


# ---------------------------------------------------------------------------- normal equations
def normal_equations_numpy(stamps, x0, y0, data, weight):
    """Numpy reference of :func:`fiberflow._kernels.normaleq.normal_equations_numba` (dense A)."""
    n, sy, sx = stamps.shape
    ny, nx = data.shape
    A = np.zeros((ny * nx, n))
    for k in range(n):
        for a in range(sy):
            yy = y0[k] + a
            if not 0 <= yy < ny:
                continue
            for b in range(sx):
                xx = x0[k] + b
                if 0 <= xx < nx:
                    A[yy * nx + xx, k] += stamps[k, a, b]
    w = weight.ravel()
    return A.T @ (w[:, None] * A), A.T @ (w * data.ravel())


def normal_equations(stamps, x0, y0, data, weight, use_numba=True):
    """A^T W A (n, n) and A^T W d (n,) for stamp columns (see the numba kernel)."""
    args = (np.ascontiguousarray(stamps, np.float64), np.ascontiguousarray(x0, np.int64),
            np.ascontiguousarray(y0, np.int64), np.ascontiguousarray(data, np.float64),
            np.ascontiguousarray(weight, np.float64))
    if use_numba:
        from ._kernels.normaleq import normal_equations_numba

        return normal_equations_numba(*args)
    return normal_equations_numpy(*args)


def leverage_numpy(stamps, x0, y0, weight, cov):
    """Numpy reference of the pixel leverages ``w * diag(A C A^T)`` (ny, nx)."""
    ny, nx = weight.shape
    A = np.zeros((ny * nx, stamps.shape[0]))
    n, sy, sx = stamps.shape
    for k in range(n):
        for a in range(sy):
            yy = y0[k] + a
            for b in range(sx):
                xx = x0[k] + b
                if 0 <= yy < ny and 0 <= xx < nx:
                    A[yy * nx + xx, k] += stamps[k, a, b]
    return (np.einsum("pi,ij,pj->p", A, cov, A) * weight.ravel()).reshape(ny, nx)


def leverage(stamps, x0, y0, weight, cov, use_numba=True):
    """Pixel leverages: the fraction of each pixel's noise the fit absorbs (ny, nx)."""
    if not use_numba:
        return leverage_numpy(stamps, x0, y0, weight, cov)
    from ._kernels.normaleq import leverage_numba

    return leverage_numba(np.ascontiguousarray(stamps, np.float64), np.ascontiguousarray(x0, np.int64),
                          np.ascontiguousarray(y0, np.int64), np.ascontiguousarray(weight, np.float64),
                          np.ascontiguousarray(cov, np.float64))


def model_image(stamps, x0, y0, flux, shape, use_numba=True):
    """Model of the patch pixels: sum of flux * stamps, (ny, nx)."""
    if use_numba:
        from ._kernels.normaleq import model_image_numba

        return model_image_numba(np.ascontiguousarray(stamps, np.float64), np.ascontiguousarray(x0, np.int64),
                                 np.ascontiguousarray(y0, np.int64), np.ascontiguousarray(flux, np.float64),
                                 int(shape[0]), int(shape[1]))
    out = np.zeros(shape)
    n, sy, sx = stamps.shape
    for k in range(n):
        ys = slice(max(y0[k], 0), min(y0[k] + sy, shape[0]))
        xs = slice(max(x0[k], 0), min(x0[k] + sx, shape[1]))
        out[ys, xs] += flux[k] * stamps[k, ys.start - y0[k]: ys.stop - y0[k], xs.start - x0[k]: xs.stop - x0[k]]
    return out


# ---------------------------------------------------------------------------- resolution
def fiber_resolution(cov_block, ndiag, rows, valid=None):
    """Resolution rows of one fiber from its covariance block.

    Parameters
    ----------
    cov_block : (m, m)
        Covariance of the fiber's deconvolved fluxes over the solved bins.
    ndiag : int
    rows : slice
        The output bins (indices into the m solved bins).
    valid : slice, optional
        Solved bins inside the output grid: R rows only reach those (the stored diagonals
        cannot hold columns beyond the grid), so every stored row sums to 1.

    Returns
    -------
    R : (m, m)
        Rows ``rows`` filled: truncated to ``ndiag`` diagonals and normalised to sum 1; other
        rows zero.
    """
    m = cov_block.shape[0]
    icov = np.linalg.inv(cov_block)
    icov = 0.5 * (icov + icov.T)
    vals, vecs = np.linalg.eigh(icov)
    vals = np.clip(vals, 0.0, None)
    Q = (vecs * np.sqrt(vals)) @ vecs.T
    h = ndiag // 2
    vlo, vhi = (0, m) if valid is None else (valid.start, valid.stop)
    R = np.zeros((m, m))
    for i in range(rows.start, rows.stop):
        lo, hi = max(vlo, i - h), min(vhi, i + h + 1)
        r = Q[i, lo:hi]
        s = r.sum()
        if s > 0:
            R[i, lo:hi] = r / s
        else:
            R[i, i] = 1.0
    return R


# ---------------------------------------------------------------------------- one patch
def extract_patch(image, ivar, psf, fibers, core_fibers, wave, core, dw, opts, valid=None):
    """Extract one patch.

    Parameters
    ----------
    image, ivar : (ny, nx)
    psf : GaussHermitePSF
    fibers : (nf,) int
        Fibers solved (indices into the PSF), sorted.
    core_fibers : (nc,) int
        Fibers whose results are kept (subset of ``fibers``).
    wave : (nw,)
        Solved wavelengths (patch + padding).
    core : slice
        Output bins within ``wave``.
    dw : (nw,)
        Bin widths [Angstrom].
    opts : ExtractOptions
    valid : slice, optional
        Solved bins that lie inside the output grid (see :func:`fiber_resolution`).

    Returns
    -------
    dict with (nc, ncore) arrays ``flux``, ``ivar``, ``chi2pix``, ``masked``, and
    ``R`` (nc, ncore, ndiag) resolution rows (offsets -h..+h from the diagonal).
    """
    nf, nw = len(fibers), len(wave)
    absf = psf.fibermin + np.asarray(fibers)
    stamps, sx0, sy0 = psfmodel.spots(psf, wave, absf, use_numba=opts.use_numba)  # (nf, nw, sy, sx)
    stamps = stamps * dw[None, :, None, None]
    sy, sx = stamps.shape[-2:]
    ny, nx = image.shape
    ylo, yhi = max(int(sy0.min()), 0), min(int(sy0.max()) + sy, ny)
    xlo, xhi = max(int(sx0.min()), 0), min(int(sx0.max()) + sx, nx)
    ndiag = opts.ndiag or 2 * psf.hsizey + 1
    nc, ncore = len(core_fibers), core.stop - core.start
    out = {"flux": np.zeros((nc, ncore)), "ivar": np.zeros((nc, ncore)), "chi2pix": np.zeros((nc, ncore)),
           "masked": np.ones((nc, ncore)), "R": np.zeros((nc, ncore, ndiag))}
    if yhi <= ylo or xhi <= xlo:
        return out
    data = np.asarray(image[ylo:yhi, xlo:xhi], np.float64)
    weight = np.asarray(ivar[ylo:yhi, xlo:xhi], np.float64)
    weight = np.where(np.isfinite(data) & np.isfinite(weight), weight, 0.0)
    data = np.where(weight > 0, data, 0.0)
    st = stamps.reshape(nf * nw, sy, sx)
    lx = (sx0 - xlo).ravel()
    ly = (sy0 - ylo).ravel()
    if opts.psferr > 0:
        # pixel variance + (psferr * model)^2 with the model from a first solve
        f0 = _solve(st, lx, ly, data, weight, opts)[0]
        mod = model_image(st, lx, ly, f0, data.shape, opts.use_numba)
        var = np.where(weight > 0, 1.0 / np.where(weight > 0, weight, 1.0), 0.0) + (opts.psferr * mod) ** 2
        weight = np.where(weight > 0, 1.0 / np.maximum(var, 1e-30), 0.0)
    f, cov, diag = _solve(st, lx, ly, data, weight, opts)
    mod = model_image(st, lx, ly, f, data.shape, opts.use_numba)
    resid2w = weight * (data - mod) ** 2
    good = weight > 0
    # expected chi2 of a pixel is 1 - leverage: CHI2PIX is normalised by it (median 1 when the
    # PSF and the variance are right)
    dof = np.where(good, np.clip(1.0 - leverage(st, lx, ly, weight, cov, opts.use_numba), 0.0, 1.0), 0.0)
    fidx = {int(fb): k for k, fb in enumerate(fibers)}
    h = ndiag // 2
    for c, fb in enumerate(core_fibers):
        k = fidx[int(fb)]
        sl = slice(k * nw, (k + 1) * nw)
        R = fiber_resolution(cov[sl, sl], ndiag, core, valid)
        Rc = R[core]
        out["flux"][c] = Rc @ f[sl]
        var = np.einsum("ij,jk,ik->i", Rc, cov[sl, sl], Rc)
        info = diag[sl][core] > 0
        out["ivar"][c] = np.where(info & (var > 0), 1.0 / np.maximum(var, 1e-300), 0.0)
        for i in range(ncore):
            row = core.start + i
            for d in range(-h, h + 1):
                j = row + d
                if 0 <= j < nw:
                    out["R"][c, i, d + h] = R[row, j]
        # chi2 and masked light per output bin
        for i in range(ncore):
            kk = k * nw + core.start + i
            s = st[kk]
            y0, x0 = ly[kk], lx[kk]
            ys = slice(max(y0, 0), min(y0 + sy, data.shape[0]))
            xs = slice(max(x0, 0), min(x0 + sx, data.shape[1]))
            sp = s[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]
            tot = s.sum()
            if tot <= 0:
                continue
            g = good[ys, xs]
            out["masked"][c, i] = 1.0 - np.sum(sp * g) / tot
            wsum = np.sum(sp * dof[ys, xs])
            out["chi2pix"][c, i] = np.sum(sp * resid2w[ys, xs]) / wsum if wsum > 0 else 0.0
    return out


def _solve(st, lx, ly, data, weight, opts):
    ata, atd = normal_equations(st, lx, ly, data, weight, opts.use_numba)
    diag = np.diag(ata).copy()
    scale = np.median(diag[diag > 0]) if np.any(diag > 0) else 1.0
    # tiny ridge keeps bins without data solvable; optional user regularisation on top
    ridge = scale * (1e-8 + opts.regularize)
    ata[np.diag_indices_from(ata)] += ridge
    try:
        cf = linalg.cho_factor(ata, lower=False, check_finite=False)
        f = linalg.cho_solve(cf, atd, check_finite=False)
        cov = linalg.cho_solve(cf, np.eye(len(atd)), check_finite=False)
    except linalg.LinAlgError:
        f = np.zeros(len(atd))
        cov = np.eye(len(atd)) / ridge
        diag[:] = 0.0
    # bins whose information is at the ridge level carry no data
    diag = np.where(diag > 1e-6 * scale, diag, 0.0)
    return f, 0.5 * (cov + cov.T), diag


# ---------------------------------------------------------------------------- frame
def patch_plan(nfiber, bundlesize, nwave, opts):
    """Work units: (bundle, core fibers, solved fibers, output bin range) for every patch.

    Returns
    -------
    list of (int, (nc,) int, (nf,) int, int, int)
    """
    plan = []
    for b0 in range(0, nfiber, bundlesize):
        bundle = np.arange(b0, min(b0 + bundlesize, nfiber))
        for sub in np.array_split(bundle, min(opts.nsubbundles, len(bundle))):
            lo = max(sub[0] - opts.nfiberpad, bundle[0])
            hi = min(sub[-1] + opts.nfiberpad, bundle[-1])
            solved = np.arange(lo, hi + 1)
            for w0 in range(0, nwave, opts.wavesize):
                plan.append((b0 // bundlesize, sub, solved, w0, min(w0 + opts.wavesize, nwave)))
    return plan


def extract_frame(image, ivar, psf, wave, bundlesize, opts=None, units=None):
    """Extract every fiber of a camera on the wavelength grid ``wave``.

    Parameters
    ----------
    image, ivar : (ny, nx)
    psf : GaussHermitePSF
    wave : (nwave,) uniform grid [Angstrom]
    bundlesize : int
    opts : ExtractOptions
    units : list of plan entries to do (default all; see :func:`patch_plan`)

    Returns
    -------
    dict with (nfiber, nwave) ``flux`` [electron/Angstrom], ``ivar``, ``mask`` (specmask),
    ``chi2pix``, ``masked`` (pixel-mask fraction), and ``resolution`` (nfiber, ndiag, nwave)
    diagonals in the scipy dia convention.
    """
    opts = opts or ExtractOptions()
    wave = np.asarray(wave, float)
    nwave = wave.size
    nfib = psf.nfiber
    step = float(np.median(np.diff(wave))) if nwave > 1 else 1.0
    ndiag = opts.ndiag or 2 * psf.hsizey + 1
    flux = np.zeros((nfib, nwave))
    fivar = np.zeros((nfib, nwave))
    chi2 = np.zeros((nfib, nwave))
    masked = np.ones((nfib, nwave))
    rows = np.zeros((nfib, nwave, ndiag))  # R rows: offsets -h..+h
    plan = patch_plan(nfib, bundlesize, nwave, opts) if units is None else units
    for _, core_f, solved_f, w0, w1 in plan:
        lo, hi = w0 - opts.nwavepad, w1 + opts.nwavepad
        pw = wave[0] + step * np.arange(lo, hi)
        res = extract_patch(image, ivar, psf, solved_f, core_f, pw, slice(w0 - lo, w1 - lo),
                            np.full(pw.size, step), opts, slice(max(0, -lo), nwave - lo))
        flux[core_f, w0:w1] = res["flux"]
        fivar[core_f, w0:w1] = res["ivar"]
        chi2[core_f, w0:w1] = res["chi2pix"]
        masked[core_f, w0:w1] = res["masked"]
        rows[core_f, w0:w1] = res["R"]
    resolution = rows_to_diags(rows)
    mask = np.zeros((nfib, nwave), np.int32)
    mask[masked > 0] |= SOMEBADPIX
    mask[(masked >= 0.99) | (fivar == 0)] |= ALLBADPIX
    mask[chi2 > opts.chi2_bad] |= BAD2DFIT
    fivar[(mask & ALLBADPIX) != 0] = 0.0
    flux[~np.isfinite(flux)] = 0.0
    return {"flux": flux, "ivar": fivar, "mask": mask, "chi2pix": chi2, "masked": masked,
            "resolution": resolution}


def rows_to_diags(rows):
    """Resolution rows (nfib, nwave, ndiag; offsets -h..+h) -> dia diagonals (nfib, ndiag, nwave).

    ``rdata[k, j] = R[j - off[k], j]`` with ``off = [+h .. -h]``: row ``i = j - off`` entry at
    column ``j = i + off``, i.e. ``rows[i, off + h]``.
    """
    nfib, nwave, ndiag = rows.shape
    h = ndiag // 2
    out = np.zeros((nfib, ndiag, nwave))
    for k, off in enumerate(range(h, -h - 1, -1)):
        j = np.arange(max(0, off), min(nwave, nwave + off))
        out[:, k, j] = rows[:, j - off, off + h]
    return out
