"""Trace shifts of a flat or science exposure relative to the nightly PSF.

- **dx** (cross-dispersion): every fiber's continuum trace is cut in blocks of rows; in each
  row the pixels within +-``hx`` columns of the trace are fitted with the PSF's own
  cross-dispersion profile (the Gauss-Hermite core marginalised over y, pixel-integrated, with
  a free amplitude per row), and the block's common offset is solved by Gauss-Newton. Rows on
  spectral lines are left out (:func:`continuum_rows`). On science frames dx is measured again
  once dy is known, on the y-shifted PSF, so that each row compares the traces at the same
  wavelength.
- **dy** (wavelength, science only): each fiber is boxcar-extracted along its shifted trace;
  in blocks of rows the high-pass filtered spectrum is fitted with a sky reference spectrum
  (the UVES night-sky atlas by default, convolved with the PSF's line-spread function and
  projected on the rows), ``s = a m + b m'``, giving ``dy = -b/a`` per block. The simulator
  draws its sky from the same atlas, so tests measure the method, not the atlas; DESI's
  ``spec-sky.dat`` (option ``desi``) gives ~0.03 px of blend systematics.
- Both sets of block measurements are fitted with smooth 2-D polynomials in fiber and
  wavelength (iterative clipping); the shifted PSF's trace coefficients are the nightly ones
  plus Legendre fits of those polynomials per fiber.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy.polynomial import legendre
from scipy import ndimage

from ..config import StepOptions
from ..errors import DataError
from ..io.refdata import read_uves_sky
from ..linalg import robust_lstsq
from ..models import psf as psfmodel
from ..reference import reference_file


@dataclass
class TraceShiftOptions(StepOptions):
    degxx: int = 2          #: dx polynomial degree in fiber
    degxy: int = 2          #: dx polynomial degree in wavelength
    degyx: int = 2          #: dy polynomial degree in fiber
    degyy: int = 2          #: dy polynomial degree in wavelength
    sky_lines: bool = True  #: measure dy on sky lines (science exposures)
    sky_reference: str = "uves"  #: sky reference spectrum: uves or desi (see sky_line_reference)
    hx: int = 3             #: half width of the cross-dispersion window [columns]
    block_rows: int = 40    #: rows per dx block
    dy_blocks: int = 8      #: wavelength blocks per fiber for dy
    nsig_clip: float = 4.0
    max_err: float = 0.1    #: block measurements with larger errors [pixel] are not used
    line_rows: float = 4.0  #: rows on spectral lines (amplitude off the running median by this many sigma) are not used for dx; 0 uses all


# ---------------------------------------------------------------------------- profiles
def _gh_density(u, gh):
    """sum_i gh_i He_i(u) phi(u); u (n, m), gh (n, deg+1) -> (n, m)."""
    he = psfmodel._hermite_e(gh.shape[1] - 1, u)  # (deg+1, n, m)
    phi = np.exp(-0.5 * u**2) * psfmodel.INV_SQRT2PI
    return np.einsum("ni,inm->nm", gh, he) * phi


def cross_profile(xc, sigx, gh, cols):
    """Pixel-integrated cross-dispersion profile of the PSF core and its derivative in ``xc``.

    Parameters
    ----------
    xc, sigx : (n,)
        Trace centre and core sigma per row.
    gh : (n, degx+1)
        GH-i-0 coefficients (the core marginalised over y keeps only the j=0 terms).
    cols : (n, ncol) int
        Pixel columns.

    Returns
    -------
    prof, dprof : (n, ncol)
    """
    lo = (cols - 0.5 - xc[:, None]) / sigx[:, None]
    hi = (cols + 0.5 - xc[:, None]) / sigx[:, None]
    edges = np.concatenate([lo, hi[:, -1:]], axis=1)
    integ = psfmodel.pixel_integrated_gh(edges, gh.shape[1] - 1)  # (deg+1, n, ncol)
    prof = np.einsum("ni,inm->nm", gh, integ)
    dens = _gh_density(edges, gh)
    dprof = -(dens[:, 1:] - dens[:, :-1]) / sigx[:, None]
    return prof, dprof


def row_fit_sums_numpy(xc, sigx, gh, cols, d, w):
    """Weighted sums of the one-row fit ``d = a p + b p'`` (numpy reference of the kernel).

    Parameters
    ----------
    xc, sigx : (n,)
    gh : (n, deg+1)
    cols : (n, ncol) int, consecutive columns of each row's window
    d, w : (n, ncol) data and weights

    Returns
    -------
    (n, 5): s_pp, s_pq, s_qq, s_pd, s_qd
    """
    p, q = cross_profile(xc, sigx, gh, cols)
    return np.stack([np.sum(w * p * p, -1), np.sum(w * p * q, -1), np.sum(w * q * q, -1),
                     np.sum(w * p * d, -1), np.sum(w * q * d, -1)], axis=-1)


def row_fit_sums(xc, sigx, gh, cols, d, w, use_numba=True):
    """:func:`row_fit_sums_numpy` by the numba kernel (same arguments and result)."""
    if not use_numba:
        return row_fit_sums_numpy(xc, sigx, gh, cols, d, w)
    from .._kernels.traceshift import row_fit_sums_numba

    return row_fit_sums_numba(np.ascontiguousarray(xc, float), np.ascontiguousarray(sigx, float),
                              np.ascontiguousarray(gh, float), np.ascontiguousarray(cols[:, 0], np.int64),
                              np.ascontiguousarray(d, float), np.ascontiguousarray(w, float))


def running_median(a, width=31, use_numba=True):
    """Median over ``width`` (odd) samples along the last axis, edge samples repeated:
    ``ndimage.median_filter(a, size=(1, width), mode="nearest")`` for (n, m) arrays (the
    reference, also used for non-finite input).

    Returns
    -------
    (n, m) float64
    """
    a = np.asarray(a, float)
    if not use_numba or width % 2 == 0 or a.ndim != 2 or not np.all(np.isfinite(a)):
        return ndimage.median_filter(a, size=(1, width), mode="nearest")
    from .._kernels.traceshift import running_median_numba

    return running_median_numba(np.ascontiguousarray(a), int(width))


def _row_geometry(psf, rows, fibers):
    """Wavelength and trace x of every (fiber, row): (nf, nrow) each."""
    wave = psfmodel.wavelength(psf, rows, fibers)
    x = psfmodel.trace_x(psf, wave, fibers)
    return wave, x


def continuum_rows(a, var_a, good, nsig, width=31, grow=4):
    """Rows of each trace that show its continuum, not a spectral line.

    A row crossing a sky or object line sees the spots of neighbouring wavelengths with very
    different weights; the PSF's odd-odd Gauss-Hermite terms (GH-1-1 shear, ...) then move the
    row's cross-dispersion centroid with the flux gradient along the trace, by up to a few
    tenths of a pixel on bright lines. Such rows (amplitude off its running median by more
    than ``nsig`` sigma and 5%) and ``grow`` rows on each side (the spots' extent) are left out.

    Parameters
    ----------
    a, var_a : (nf, ny) per-row amplitude and its variance
    good : (nf, ny) bool, rows with a measured amplitude

    Returns
    -------
    (nf, ny) bool
    """
    med = running_median(np.where(good, a, 0.0), width)
    dev = np.abs(a - med)
    line = good & (dev > nsig * np.sqrt(var_a)) & (dev > 0.05 * np.abs(med))
    line = ndimage.binary_dilation(line, structure=np.ones((1, 2 * grow + 1), bool))
    return ~line


def measure_dx(image, ivar, psf, opts, fibers=None, use_numba=True):
    """Cross-dispersion offsets per (fiber, block of rows).

    Returns
    -------
    structured (nmeas,): FIBER (index into the PSF), WAVE (block centre), DX, DX_ERR [pixel]
    """
    ny, nx = image.shape
    nfib = psf.nfiber
    fibers = np.arange(nfib) if fibers is None else np.asarray(fibers)
    rows = np.arange(ny)
    nb = ny // opts.block_rows
    out = []
    names = [f"GH-{i}-0" for i in range(psf.ghdegx + 1)]
    for chunk in np.array_split(fibers, max(1, len(fibers) // 25)):
        fabs = psf.fibermin + chunk
        wave, xc = _row_geometry(psf, rows, fabs)  # (nf, ny)
        pv = psfmodel.param_values(psf, wave, fabs, ["GHSIGX"] + [n for n in names if n in psf.params])
        sig = pv["GHSIGX"]
        gh = np.stack([pv[n] if n in pv else (np.ones_like(sig) if n == "GH-0-0" else np.zeros_like(sig))
                       for n in names], axis=-1)  # (nf, ny, deg+1)
        nf = len(chunk)
        cols = np.floor(xc + 0.5).astype(int)[:, :, None] + np.arange(-opts.hx, opts.hx + 1)[None, None, :]
        inside = (cols >= 0) & (cols < nx)
        cc = np.clip(cols, 0, nx - 1)
        rr = np.broadcast_to(rows[None, :, None], cols.shape)
        d = image[rr, cc].astype(float)
        w = np.where(inside, ivar[rr, cc], 0.0).astype(float)
        dx = np.zeros((nf, nb))
        derr = np.full((nf, nb), np.inf)
        blk = np.minimum(rows // opts.block_rows, nb - 1)
        continuum = np.ones((nf, ny), bool)
        for it in range(4):
            shift = dx[:, blk]  # (nf, ny)
            # per row: d = a p + b dp  (b = a * delta)
            sums = row_fit_sums((xc + shift).ravel(), sig.ravel(), gh.reshape(-1, gh.shape[-1]),
                                cols.reshape(-1, cols.shape[-1]), d.reshape(-1, cols.shape[-1]),
                                w.reshape(-1, cols.shape[-1]), use_numba=use_numba)
            s_pp, s_pq, s_qq, s_pd, s_qd = (sums[:, i].reshape(nf, ny) for i in range(5))
            det = s_pp * s_qq - s_pq**2
            ok = det > 1e-12 * np.maximum(s_pp * s_qq, 1e-300)
            a = np.where(ok, (s_qq * s_pd - s_pq * s_qd) / np.where(ok, det, 1), 0.0)
            b = np.where(ok, (s_pp * s_qd - s_pq * s_pd) / np.where(ok, det, 1), 0.0)
            var_b = np.where(ok, s_pp / np.where(ok, det, 1), np.inf)
            good = ok & (a > 0) & (a * a / np.maximum(var_b, 1e-300) > 0)
            if it == 0 and opts.line_rows > 0:
                continuum = continuum_rows(a, np.where(ok, s_qq / np.where(ok, det, 1), np.inf), good, opts.line_rows)
            delta = np.where(good, b / np.where(good, a, 1), 0.0)
            wd = np.where(good & continuum, a * a / var_b, 0.0)  # 1/var(delta)
            num = np.zeros((nf, nb))
            den = np.zeros((nf, nb))
            for k in range(nf):
                num[k] = np.bincount(blk, weights=wd[k] * delta[k], minlength=nb)
                den[k] = np.bincount(blk, weights=wd[k], minlength=nb)
            step = np.where(den > 0, num / np.maximum(den, 1e-300), 0.0)
            dx += np.clip(step, -0.5, 0.5)
            derr = np.where(den > 0, 1.0 / np.sqrt(np.maximum(den, 1e-300)), np.inf)
        bid = rows // opts.block_rows
        inb = bid < nb
        nper = np.bincount(bid[inb], minlength=nb)
        wc = np.stack([np.bincount(bid[inb], weights=wave[k, inb], minlength=nb) for k in range(nf)]) / nper
        for k in range(nf):
            for j in range(nb):
                if np.isfinite(derr[k, j]):
                    out.append((chunk[k], wc[k, j], dx[k, j], derr[k, j]))
    return np.array(out, dtype=[("FIBER", "i4"), ("WAVE", "f8"), ("DX", "f8"), ("DX_ERR", "f8")])


# ---------------------------------------------------------------------------- sky lines
@functools.lru_cache(maxsize=4)
def sky_line_reference(kind="uves"):
    """Sky reference spectrum for wavelength offsets (vacuum Angstrom, relative flux).

    ``uves``: the UVES high-resolution night-sky atlas (real, R ~ 40000, lines + continuum);
    ``desi``: DESI's measured line spectrum ``spec-sky.dat`` (coarser line ratios: blends
    shift the centroids by a few hundredths of a pixel). Both shipped with fiberflow.

    Returns
    -------
    wave, flux : (n,)
    """
    name = {"uves": "sky-uves.fits", "desi": "spec-sky.dat.gz"}[kind]
    path = reference_file("spectra", name)
    if kind == "uves":
        return read_uves_sky(path)
    try:
        data = np.loadtxt(path)
    except (OSError, ValueError) as exc:
        raise DataError(path, f"cannot read the sky-line reference ({exc})") from exc
    return data[:, 0], data[:, 1]


@functools.lru_cache(maxsize=64)
def _convolved_reference(kind, sigma):
    """The sky reference convolved with a Gaussian LSF of ``sigma`` Angstrom (cached: fibers
    and iterations share a handful of widths once rounded)."""
    ref_w, ref_f = sky_line_reference(kind)
    step = float(np.median(np.diff(ref_w)))
    return ref_w, ndimage.gaussian_filter1d(ref_f, sigma / step)


def _reference_on_rows(psf, fabs, rows, dy, kind):
    """Sky-line reference per row of each fiber, seen through the PSF's LSF, moved by ``dy``
    rows (scalar or (nf, nrow)): (nf, nrow)."""
    y = np.broadcast_to(rows[None, :] - np.asarray(dy, float), (len(fabs), len(rows)))
    wave = psfmodel.wavelength(psf, np.ascontiguousarray(y), fabs)
    # dispersion and LSF width in Angstrom
    dwdy = np.gradient(wave, axis=1)
    sigy = psfmodel.param_values(psf, wave, fabs, ["GHSIGY"])["GHSIGY"]
    sig_w = np.abs(sigy * dwdy)
    out = np.zeros_like(wave)
    for k in range(wave.shape[0]):
        # one LSF width per fiber (it varies slowly), rounded to 0.005 A for the cache
        ref_w, conv = _convolved_reference(kind, round(float(np.median(sig_w[k])) / 0.005) * 0.005)
        out[k] = np.interp(wave[k], ref_w, conv) * np.abs(dwdy[k])
    return out


def _highpass(s, width=31):
    return s - running_median(s, width)


def boxcar(image, ivar, xc, hx=3):
    """Sum of +-hx columns around ``xc`` (nf, ny) per row, masked pixels replaced by the row mean."""
    ny, nx = image.shape
    rows = np.arange(ny)
    cols = np.floor(xc + 0.5).astype(int)[:, :, None] + np.arange(-hx, hx + 1)[None, None, :]
    cc = np.clip(cols, 0, nx - 1)
    rr = np.broadcast_to(rows[None, :, None], cols.shape)
    d = image[rr, cc].astype(float)
    ok = (ivar[rr, cc] > 0) & (cols >= 0) & (cols < nx)
    n = ok.sum(-1)
    s = np.where(ok, d, 0.0).sum(-1) * np.where(n > 0, cols.shape[-1] / np.maximum(n, 1), 0.0)
    var = np.where(ok, 1.0 / np.where(ok, ivar[rr, cc], 1.0), 0.0).sum(-1)
    return s, np.where((n > 0) & (var > 0), 1.0 / np.maximum(var, 1e-30), 0.0)


def measure_dy_sky(image, ivar, psf, dxfun, opts):
    """Wavelength offsets (rows) per (fiber, wavelength block) from sky lines.

    Returns
    -------
    structured (nmeas,): FIBER, WAVE, DY, DY_ERR [pixel]
    """
    ny, _ = image.shape
    rows = np.arange(ny)
    out = []
    nfib = psf.nfiber
    edges = np.linspace(0, ny, opts.dy_blocks + 1).astype(int)
    for chunk in np.array_split(np.arange(nfib), max(1, nfib // 25)):
        fabs = psf.fibermin + chunk
        wave, xc = _row_geometry(psf, rows, fabs)
        xc = xc + dxfun(chunk, wave)
        s, sw = boxcar(image, ivar, xc, opts.hx)
        s = _highpass(s)
        dy = np.zeros((len(chunk), opts.dy_blocks))
        err = np.full((len(chunk), opts.dy_blocks), np.inf)
        for _ in range(3):
            shift = np.zeros((len(chunk), ny))
            for j in range(opts.dy_blocks):
                shift[:, edges[j]:edges[j + 1]] = dy[:, [j]]
            m = np.zeros((len(chunk), ny))
            for k in range(len(chunk)):
                m[k] = _reference_on_rows(psf, fabs[k:k + 1], rows, shift[k:k + 1], opts.sky_reference)[0]
            m = _highpass(m)
            mp = np.gradient(m, axis=1)
            for j in range(opts.dy_blocks):
                sl = slice(edges[j], edges[j + 1])
                w = sw[:, sl]
                p, q, d = m[:, sl], mp[:, sl], s[:, sl]
                s_pp, s_pq, s_qq = (w * p * p).sum(1), (w * p * q).sum(1), (w * q * q).sum(1)
                s_pd, s_qd = (w * p * d).sum(1), (w * q * d).sum(1)
                det = s_pp * s_qq - s_pq**2
                ok = det > 0
                a = np.where(ok, (s_qq * s_pd - s_pq * s_qd) / np.where(ok, det, 1), 0.0)
                b = np.where(ok, (s_pp * s_qd - s_pq * s_pd) / np.where(ok, det, 1), 0.0)
                var_b = np.where(ok, s_pp / np.where(ok, det, 1), np.inf)
                snr = a / np.sqrt(np.where(ok, s_qq / np.where(ok, det, 1), np.inf))
                good = ok & (a > 0) & (snr > 5)
                # m(y - dy) ~ m - dy m'  =>  b = -a dy
                step = np.where(good, -b / np.where(good, a, 1), 0.0)
                dy[:, j] += np.clip(step, -1.0, 1.0)
                err[:, j] = np.where(good, np.sqrt(var_b) / np.maximum(np.abs(a), 1e-30), np.inf)
        for k in range(len(chunk)):
            for j in range(opts.dy_blocks):
                if np.isfinite(err[k, j]):
                    out.append((chunk[k], wave[k, (edges[j] + edges[j + 1]) // 2], dy[k, j], err[k, j]))
    return np.array(out, dtype=[("FIBER", "i4"), ("WAVE", "f8"), ("DY", "f8"), ("DY_ERR", "f8")])


# ---------------------------------------------------------------------------- smooth fits
def _basis(f, u, degf, degu, nfib):
    tf = 2.0 * f / max(nfib - 1, 1) - 1.0
    Lf = legendre.legvander(tf, degf)
    Lu = legendre.legvander(u, degu)
    return np.einsum("na,nb->nab", Lf, Lu).reshape(len(f), -1)


def select_degrees(fib, u, val, err, keep, degf, degu, nfib, coef):
    """The lowest-BIC polynomial degrees up to (degf, degu) on the points the full fit kept.

    A shift surface with more freedom than the data need fits their noise, worst where the
    measurements are faint (the b camera's blue end on science frames); the Bayesian
    information criterion ``chi2 / s2 + k ln n`` (s2: the full model's reduced chi2 when above
    1) keeps a term only when the data ask for it.

    Returns
    -------
    (degf, degu, coef) of the chosen model
    """
    n = int(keep.sum())
    if n == 0:
        return degf, degu, coef
    w = 1.0 / err[keep]

    def chi2(df, du):
        A = _basis(fib[keep], u[keep], df, du, nfib) * w[:, None]
        cc = np.linalg.lstsq(A, val[keep] * w, rcond=None)[0]
        return float(np.sum((A @ cc - val[keep] * w) ** 2)), cc

    full, _ = chi2(degf, degu)
    kfull = (degf + 1) * (degu + 1)
    s2 = max(full / max(n - kfull, 1), 1.0)
    best = (full / s2 + kfull * np.log(n), degf, degu, coef)
    for df in range(degf + 1):
        for du in range(degu + 1):
            if (df, du) == (degf, degu):
                continue
            k = (df + 1) * (du + 1)
            x2, cc = chi2(df, du)
            bic = x2 / s2 + k * np.log(n)
            if bic < best[0]:
                best = (bic, df, du, cc)
    return best[1], best[2], best[3]


def fit_shift_surface(fib, u, val, err, degf, degu, nfib, nsig):
    """Robust 2-D polynomial fit; returns callable(fiber_idx (n,), u (n, m)) -> (n, m)."""
    # wavelength bins measured in few fibers (a lone noisy block) are not used: their leverage
    # on the polynomial would be large; the data must over-determine each direction
    u = np.asarray(u, float)
    ubin = np.clip(np.floor((u + 1.0) * 4.0), 0, 7)  # 8 wavelength bins
    counts = np.bincount(ubin.astype(int), minlength=8)
    dense = counts[ubin.astype(int)] >= max(3, nfib // 4)
    fib, u, val, err, ubin = fib[dense], u[dense], val[dense], err[dense], ubin[dense]
    degf = min(degf, max((len(np.unique(fib)) - 1) // 2, 0))
    degu = min(degu, max((len(np.unique(ubin)) - 1) // 2, 0))
    if ubin.size and (np.ptp(ubin) + 1) / 8.0 < 0.5:
        degu = 0  # measurements over less than half the range: a constant, no extrapolated slope
    if len(fib) == 0:
        return lambda f, uq: np.zeros(np.shape(uq))
    c, keep = robust_lstsq(_basis(fib, u, degf, degu, nfib), val, err, nsig)
    degf, degu, c = select_degrees(fib, u, val, err, keep, degf, degu, nfib, c)

    def fn(f, uq):
        f = np.asarray(f)
        uq = np.asarray(uq, float)
        ff = np.broadcast_to(f[:, None], uq.shape).ravel()
        return (_basis(ff, uq.ravel(), degf, degu, nfib) @ c).reshape(uq.shape)

    fn.nkeep = int(keep.sum())
    return fn


def shifted_psf(psf, dxfun, dyfun):
    """Copy of ``psf`` with traces moved by dx(fiber, wave), dy(fiber, wave) pixels."""
    out = psf.copy()
    nfib = psf.nfiber
    uq = np.linspace(-1, 1, 40)
    for attr, fn in (("xtrace", dxfun), ("ytrace", dyfun)):
        coeff = getattr(out, attr)
        vals = fn(np.arange(nfib), np.broadcast_to(uq, (nfib, uq.size)))
        corr = legendre.legfit(uq, vals.T, coeff.shape[1] - 1).T
        setattr(out, attr, coeff + corr)
    return out


def trace_shift(image, ivar, psf, continuum_only=False, opts=None, log=None):
    """Measure dx (and dy from sky lines unless ``continuum_only``) and return the shifted PSF.

    Parameters
    ----------
    image, ivar : (ny, nx)
    psf : GaussHermitePSF
        Nightly PSF.
    continuum_only : bool
        True for flats (no wavelength information): dy = 0.

    Returns
    -------
    psf : GaussHermitePSF
        Shifted; header keys MEANDX, MEANDY, DYMETHOD, NDXMEAS, NDYMEAS.
    meas : dict with the ``dx`` and ``dy`` measurement tables
    """
    opts = opts or TraceShiftOptions()
    log = log or (lambda m: None)
    if image.shape != (psf.npix_y, psf.npix_x):
        raise ValueError(f"image shape {image.shape} differs from the PSF's CCD ({psf.npix_y}, {psf.npix_x})")
    if not np.any(ivar > 0):
        raise ValueError("every pixel is masked")
    nfib = psf.nfiber
    tmin, tmax = psf.trace_wavemin, psf.trace_wavemax
    mdx = measure_dx(image, ivar, psf, opts)
    mdx = mdx[mdx["DX_ERR"] < opts.max_err]
    if mdx.size < 3:
        raise ValueError("no continuum trace found for the cross-dispersion offsets")
    fx = fit_shift_surface(mdx["FIBER"], psfmodel.reduced_wave(mdx["WAVE"], tmin, tmax), mdx["DX"], mdx["DX_ERR"],
                           opts.degxx, opts.degxy, nfib, opts.nsig_clip)
    dxfun = lambda f, w: fx(f, psfmodel.reduced_wave(w, tmin, tmax))  # noqa: E731
    log(f"dx: {mdx.size} block measurements, {fx.nkeep} kept, median {np.median(mdx['DX']):+.3f} px")
    mdy = np.zeros(0, dtype=[("FIBER", "i4"), ("WAVE", "f8"), ("DY", "f8"), ("DY_ERR", "f8")])
    method = "none"
    zero = lambda f, u: np.zeros(np.shape(u))  # noqa: E731
    fy = zero
    if not continuum_only and opts.sky_lines:
        mdy = measure_dy_sky(image, ivar, psf, dxfun, opts)
        mdy = mdy[mdy["DY_ERR"] < opts.max_err]
        if mdy.size >= 3:
            fy = fit_shift_surface(mdy["FIBER"], psfmodel.reduced_wave(mdy["WAVE"], tmin, tmax), mdy["DY"],
                                   mdy["DY_ERR"], opts.degyx, opts.degyy, nfib, opts.nsig_clip)
            method = "sky"
            log(f"dy: {mdy.size} sky-line block measurements, {fy.nkeep} kept, median {np.median(mdy['DY']):+.3f} px")
            # dx was measured row by row with the unshifted wavelengths: a row then compares the
            # traces at wavelengths dy apart, off by (dx/dwave) x dwave (~0.01 px per A at the
            # traces' steepest); measured again on the y-shifted PSF it is dx at fixed wavelength
            mdx2 = measure_dx(image, ivar, shifted_psf(psf, zero, fy), opts)
            mdx2 = mdx2[mdx2["DX_ERR"] < opts.max_err]
            if mdx2.size >= 3:
                mdx = mdx2
                fx = fit_shift_surface(mdx["FIBER"], psfmodel.reduced_wave(mdx["WAVE"], tmin, tmax), mdx["DX"],
                                       mdx["DX_ERR"], opts.degxx, opts.degxy, nfib, opts.nsig_clip)
                log(f"dx at the shifted wavelengths: {mdx.size} block measurements, {fx.nkeep} kept, "
                    f"median {np.median(mdx['DX']):+.3f} px")
        else:
            log("dy: too few sky-line measurements; wavelength offsets not measured")
    out = shifted_psf(psf, fx, fy)
    uq = np.linspace(-1, 1, 40)
    allf = np.arange(nfib)
    out.meta["MEANDX"] = (float(np.mean(fx(allf, np.broadcast_to(uq, (nfib, 40))))), "mean trace x shift [pixel]")
    out.meta["MEANDY"] = (float(np.mean(fy(allf, np.broadcast_to(uq, (nfib, 40))))), "mean trace y shift [pixel]")
    out.meta["DYMETHOD"] = (method, "how wavelength offsets were measured")
    out.meta["NDXMEAS"] = (int(mdx.size), "dx block measurements")
    out.meta["NDYMEAS"] = (int(mdy.size), "dy block measurements")
    return out, {"dx": mdx, "dy": mdy}
