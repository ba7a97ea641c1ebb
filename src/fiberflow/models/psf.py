"""Evaluate a GAUSS-HERMITE PSF: traces, inverse wavelength solution, pixel-integrated spots.

Conventions (those of specex/specter, so DESI PSF files evaluate as DESI evaluates them):

- pixel (0, 0) is centred on coordinates (0, 0); ``x`` runs along CCD columns (across
  fibers), ``y`` along rows (wavelength);
- Legendre polynomials of the reduced wavelength ``u = 2 (w - wmin)/(wmax - wmin) - 1``, with
  the trace HDUs' range for x/y and the PSF HDU's range for the shape parameters; every stored
  coefficient is used;
- a spot is a stamp of ``(2 HSIZEY + 1) x (2 HSIZEX + 1)`` pixels whose centre pixel is the one
  containing the trace position; the core ``sum_ij GH-i-j He_i(dx/sx) He_j(dy/sy) G(dx/sx) G(dy/sy)``
  is integrated over each pixel (in units of sigma), the tail
  ``TAILAMP r^2/(TAILCORE^2 + r^2)^(1 + TAILINDE/2)``, ``r^2 = (dx TAILXSCA)^2 + (dy TAILYSCA)^2``
  is evaluated at pixel centres; negative values are clipped and the stamp is normalised to 1.

The numba kernel (:mod:`fiberflow._kernels.psfspot`) and the numpy reference here
(:func:`spot_stamps_numpy`) implement the same arithmetic; tests compare them.
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial import legendre
from scipy.special import erf

SQRT2 = np.sqrt(2.0)
INV_SQRT2PI = 1.0 / np.sqrt(2.0 * np.pi)


# ---------------------------------------------------------------------------- Legendre helpers
def reduced_wave(wave, wmin, wmax):
    """Map wavelength to the Legendre domain [-1, 1] over [wmin, wmax]."""
    return 2.0 * (np.asarray(wave, dtype=np.float64) - wmin) / (wmax - wmin) - 1.0


def legendre_eval(coeff, wave, wmin, wmax):
    """Evaluate per-fiber Legendre series.

    Parameters
    ----------
    coeff : (nfiber, ncoef)
    wave : (nwave,) or (nfiber, nwave)
        Wavelengths, common to all fibers or per fiber.
    wmin, wmax : float

    Returns
    -------
    (nfiber, nwave)
    """
    coeff = np.atleast_2d(coeff)
    u = reduced_wave(wave, wmin, wmax)
    if u.ndim == 1:
        vander = legendre.legvander(u, coeff.shape[1] - 1)  # (nwave, ncoef)
        return coeff @ vander.T
    vander = legendre.legvander(u, coeff.shape[1] - 1)  # (nfiber, nwave, ncoef)
    return np.einsum("fwc,fc->fw", vander, coeff)


def _fiber_index(psf, fibers):
    if fibers is None:
        return np.arange(psf.nfiber)
    idx = np.atleast_1d(np.asarray(fibers, dtype=int)) - psf.fibermin
    if np.any(idx < 0) or np.any(idx >= psf.nfiber):
        raise IndexError(f"fibers {fibers} outside the PSF's {psf.fibermin}..{psf.fibermin + psf.nfiber - 1}")
    return idx


# ---------------------------------------------------------------------------- traces
def trace_x(psf, wave, fibers=None):
    """CCD x of the trace centre.

    Parameters
    ----------
    psf : GaussHermitePSF
    wave : (nwave,) or (nfiber, nwave)
    fibers : array of int, optional
        Absolute fiber numbers (default all fibers of the PSF).

    Returns
    -------
    (nfiber, nwave)
    """
    idx = _fiber_index(psf, fibers)
    return legendre_eval(psf.xtrace[idx], wave, psf.trace_wavemin, psf.trace_wavemax)


def trace_y(psf, wave, fibers=None):
    """CCD y of the trace centre, (nfiber, nwave). See :func:`trace_x`."""
    idx = _fiber_index(psf, fibers)
    return legendre_eval(psf.ytrace[idx], wave, psf.trace_wavemin, psf.trace_wavemax)


def wavelength(psf, y, fibers=None, tol=1e-9, maxiter=20):
    """Inverse of :func:`trace_y`: the wavelength at CCD row coordinate ``y``.

    Newton iterations from a dense-table interpolation; converges to ``tol`` in pixels.

    Parameters
    ----------
    psf : GaussHermitePSF
    y : (ny,) or (nfiber, ny)
    fibers : array of int, optional

    Returns
    -------
    (nfiber, ny)
    """
    idx = _fiber_index(psf, fibers)
    wmin, wmax = psf.trace_wavemin, psf.trace_wavemax
    span = wmax - wmin
    grid = np.linspace(wmin - 0.2 * span, wmax + 0.2 * span, 2001)
    coeff = psf.ytrace[idx]
    ygrid = legendre_eval(coeff, grid, wmin, wmax)  # (nfib, ngrid)
    y = np.asarray(y, dtype=np.float64)
    yy = np.broadcast_to(y, (len(idx),) + y.shape[-1:]) if y.ndim == 1 else y
    w = np.empty(yy.shape)
    for k in range(len(idx)):
        order = np.argsort(ygrid[k])
        w[k] = np.interp(yy[k], ygrid[k][order], grid[order])
    dcoeff = legendre.legder(coeff, axis=1) * (2.0 / span)  # dy/dw coefficients
    for _ in range(maxiter):
        u = reduced_wave(w, wmin, wmax)
        yv = np.einsum("fwc,fc->fw", legendre.legvander(u, coeff.shape[1] - 1), coeff)
        dy = np.einsum("fwc,fc->fw", legendre.legvander(u, dcoeff.shape[1] - 1), dcoeff)
        step = (yv - yy) / dy
        w = w - step
        if np.max(np.abs(yv - yy)) < tol:
            break
    return w


def wavelength_range(psf, fibers=None):
    """Wavelengths at the bottom (-0.5) and top (NPIX_Y - 0.5) pixel edges, per fiber.

    Returns
    -------
    (wmin, wmax) each (nfiber,)
    """
    w = wavelength(psf, np.array([-0.5, psf.npix_y - 0.5]), fibers)
    return w[:, 0], w[:, 1]


# ---------------------------------------------------------------------------- shape parameters
def param_values(psf, wave, fibers=None, names=None):
    """Evaluate PSF shape parameters.

    Returns
    -------
    dict[str, (nfiber, nwave)]
    """
    idx = _fiber_index(psf, fibers)
    names = list(psf.params) if names is None else names
    u = reduced_wave(wave, psf.psf_wavemin, psf.psf_wavemax)
    out = {}
    groups = {}
    for n in names:  # one Legendre basis per polynomial degree, shared by all its parameters
        groups.setdefault(psf.params[n].shape[-1], []).append(n)
    for ncoef, group in groups.items():
        vander = legendre.legvander(u, ncoef - 1)  # (nwave, ncoef) or (nfiber, nwave, ncoef)
        coeff = np.stack([np.atleast_2d(psf.params[n])[idx] for n in group])  # (nname, nfiber, ncoef)
        if u.ndim == 1:
            vals = coeff @ vander.T
        else:
            vals = np.einsum("fwc,nfc->nfw", vander, coeff)
        out.update(zip(group, vals))
    return out


def spot_inputs(psf, wave, fibers=None):
    """Per-spot parameters for :func:`spot_stamps`, flattened over (fiber, wave).

    Returns
    -------
    dict with ``xc, yc, sigx, sigy`` (n,), ``gh`` (n, ghdegx+1, ghdegy+1) indexed [i(x), j(y)],
    ``tail`` (n, 5) = TAILAMP, TAILCORE, TAILXSCA, TAILYSCA, TAILINDE, and ``shape`` (nfiber, nwave).
    """
    idx = _fiber_index(psf, fibers)
    wave = np.asarray(wave, dtype=np.float64)
    xc = trace_x(psf, wave, psf.fibermin + idx)
    yc = trace_y(psf, wave, psf.fibermin + idx)
    shape = xc.shape
    degx, degy = psf.ghdegx, psf.ghdegy
    names = ["GHSIGX", "GHSIGY"] + [f"GH-{i}-{j}" for i in range(degx + 1) for j in range(degy + 1)]
    names = [n for n in names if n in psf.params]
    vals = param_values(psf, wave, psf.fibermin + idx, names)
    n = xc.size
    gh = np.zeros((n, degx + 1, degy + 1))
    for i in range(degx + 1):
        for j in range(degy + 1):
            key = f"GH-{i}-{j}"
            if key in vals:
                gh[:, i, j] = vals[key].ravel()
            elif i == 0 and j == 0:
                gh[:, 0, 0] = 1.0
    tail = np.zeros((n, 5))
    defaults = {"TAILAMP": 0.0, "TAILCORE": 1.0, "TAILXSCA": 1.0, "TAILYSCA": 1.0, "TAILINDE": 2.0}
    tvals = param_values(psf, wave, psf.fibermin + idx, [t for t in defaults if t in psf.params])
    for k, tname in enumerate(defaults):
        tail[:, k] = tvals[tname].ravel() if tname in tvals else defaults[tname]
    return {
        "xc": xc.ravel(), "yc": yc.ravel(),
        "sigx": vals["GHSIGX"].ravel(), "sigy": vals["GHSIGY"].ravel(),
        "gh": gh, "tail": tail, "shape": shape,
    }


def slice_inputs(p, lo, hi, fibers=slice(None)):
    """The spot inputs (:func:`spot_inputs`) of wavelengths ``lo:hi`` of the fibers ``fibers`` (a slice
    of those of ``p``; default all), flattened the same way: a patch's inputs cut from those of its
    bundle over a whole wavelength grid."""
    nf, nw = p["shape"]
    out = {"shape": (len(range(nf)[fibers]), hi - lo)}
    for key in ("xc", "yc", "sigx", "sigy", "gh", "tail"):
        a = p[key]
        a = a.reshape((nf, nw) + a.shape[1:])[fibers, lo:hi]
        out[key] = np.ascontiguousarray(a.reshape((-1,) + a.shape[2:]))
    return out


def stamps_from_inputs(psf, p, use_numba=True, hsize=None, parallel=True):
    """Spots (see :func:`spots`) of the spot inputs ``p`` (:func:`spot_inputs`)."""
    func = _numba_stamps(parallel) if use_numba else spot_stamps_numpy
    hx, hy = (psf.hsizex, psf.hsizey) if hsize is None else hsize
    stamps, x0, y0 = func(p["xc"], p["yc"], p["sigx"], p["sigy"], p["gh"], p["tail"], int(hx), int(hy))
    shape = tuple(p["shape"])
    return stamps.reshape(shape + stamps.shape[1:]), x0.reshape(shape), y0.reshape(shape)


def spots(psf, wave, fibers=None, use_numba=True, hsize=None, parallel=True):
    """Pixel-integrated, unit-sum spots of every (fiber, wavelength).

    Parameters
    ----------
    psf : GaussHermitePSF
    wave : (nwave,) or (nfiber, nwave)
    fibers : array of int, optional
    use_numba : bool
        numba kernel (default) or the numpy reference.
    hsize : (int, int), optional
        Stamp half sizes (x, y) instead of the file's HSIZEX/HSIZEY. The file's stamp cuts the
        wings asymmetrically when a spot centre sits near a pixel edge (up to ~0.002 px of
        centroid shift in y on the real r0 PSF); a larger stamp shows the untruncated model.
    parallel : bool
        numba-parallel kernel (default); False uses the serial GIL-free twin, for callers
        running their own threads.

    Returns
    -------
    stamps : (nfiber, nwave, 2*HSIZEY+1, 2*HSIZEX+1)
    x0, y0 : int (nfiber, nwave)
        CCD column/row of each stamp's pixel [0, 0].
    """
    return stamps_from_inputs(psf, spot_inputs(psf, wave, fibers), use_numba, hsize, parallel)


def _numba_stamps(parallel=True):
    from .._kernels.psfspot import spot_stamps_numba, spot_stamps_serial

    return spot_stamps_numba if parallel else spot_stamps_serial


def spot_stamps(xc, yc, sigx, sigy, gh, tail, hsizex, hsizey, use_numba=True):
    """Spots from explicit per-spot parameters (see :func:`spot_inputs` for shapes)."""
    func = _numba_stamps() if use_numba else spot_stamps_numpy
    return func(np.ascontiguousarray(xc, float), np.ascontiguousarray(yc, float),
                np.ascontiguousarray(sigx, float), np.ascontiguousarray(sigy, float),
                np.ascontiguousarray(gh, float), np.ascontiguousarray(tail, float), int(hsizex), int(hsizey))


# ---------------------------------------------------------------------------- numpy reference
def _hermite_e(nmax, u):
    """Probabilists' Hermite polynomials He_0..He_nmax at ``u``: (nmax+1,) + u.shape."""
    out = np.empty((nmax + 1,) + np.shape(u))
    out[0] = 1.0
    if nmax >= 1:
        out[1] = u
    for n in range(1, nmax):
        out[n + 1] = u * out[n] - n * out[n - 1]
    return out


def pixel_integrated_gh(edges, deg):
    """Integrals of He_m(u) phi(u) over pixels with edges ``edges`` (in units of sigma).

    Parameters
    ----------
    edges : (..., npix+1)
    deg : int

    Returns
    -------
    (deg+1, ..., npix)
    """
    out = np.empty((deg + 1,) + edges.shape[:-1] + (edges.shape[-1] - 1,))
    cdf = 0.5 * erf(edges / SQRT2)
    out[0] = np.diff(cdf, axis=-1)
    if deg >= 1:
        he = _hermite_e(deg - 1, edges)
        phi = np.exp(-0.5 * edges**2) * INV_SQRT2PI
        for m in range(1, deg + 1):
            prim = -he[m - 1] * phi
            out[m] = np.diff(prim, axis=-1)
    return out


def spot_stamps_numpy(xc, yc, sigx, sigy, gh, tail, hsizex, hsizey):
    """Numpy reference of the spot kernel.

    Parameters
    ----------
    xc, yc, sigx, sigy : (n,)
    gh : (n, degx+1, degy+1)
    tail : (n, 5)
    hsizex, hsizey : int

    Returns
    -------
    stamps : (n, 2*hsizey+1, 2*hsizex+1)
    x0, y0 : int64 (n,)
    """
    xc = np.asarray(xc, float)
    yc = np.asarray(yc, float)
    nx, ny = 2 * hsizex + 1, 2 * hsizey + 1
    x0 = np.floor(xc + 0.5).astype(np.int64) - hsizex
    y0 = np.floor(yc + 0.5).astype(np.int64) - hsizey
    px = x0[:, None] + np.arange(nx)[None, :]  # pixel centres (n, nx)
    py = y0[:, None] + np.arange(ny)[None, :]
    ex = (np.concatenate([px - 0.5, px[:, -1:] + 0.5], axis=1) - xc[:, None]) / sigx[:, None]
    ey = (np.concatenate([py - 0.5, py[:, -1:] + 0.5], axis=1) - yc[:, None]) / sigy[:, None]
    degx, degy = gh.shape[1] - 1, gh.shape[2] - 1
    fx = pixel_integrated_gh(ex, degx)  # (degx+1, n, nx)
    fy = pixel_integrated_gh(ey, degy)  # (degy+1, n, ny)
    core = np.einsum("nij,ink,jnl->nlk", gh, fx, fy)
    dx = px - xc[:, None]
    dy = py - yc[:, None]
    amp, tcore, txs, tys, tinde = (tail[:, k][:, None, None] for k in range(5))
    r2 = (dx[:, None, :] * txs) ** 2 + (dy[:, :, None] * tys) ** 2
    tails = amp * r2 / (tcore**2 + r2) ** (1.0 + 0.5 * tinde)
    img = np.clip(core + tails, 0.0, None)
    norm = img.sum(axis=(1, 2))
    norm[norm <= 0] = 1.0
    img /= norm[:, None, None]
    return img, x0, y0


def spot_centroid(stamps, x0, y0):
    """Centroid (x, y) in CCD coordinates of stamps from :func:`spots`."""
    ny, nx = stamps.shape[-2:]
    tot = stamps.sum(axis=(-1, -2))
    cx = (stamps.sum(axis=-2) * np.arange(nx)).sum(axis=-1) / tot + x0
    cy = (stamps.sum(axis=-1) * np.arange(ny)).sum(axis=-1) / tot + y0
    return cx, cy
