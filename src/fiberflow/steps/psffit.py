"""Fit a GAUSS-HERMITE PSF to an arc image: traces (the wavelength solution) and core widths.

The fit starts from a PSF that is nearly right (the nominal PSF or a previous night's):

1. **Coarse offset**: the starting PSF's predicted spots of DESI's good arc lines are slid
   over the image in y, then x, then y again; the lag that collects the most light wins.
2. **Spot fits**: every (fiber, line) spot is fitted in a fixed window (+-``window_hx`` columns,
   the PSF's +-HSIZEY rows) with the PSF model itself, free flux, position and x/y width
   scales (the widths have a weak prior at 1, so faint spots are position-only fits). The
   light of every other fitted spot (neighbouring fibers, nearby lines) is part of the model,
   so overlapping wings do not pull the centroids. Gauss-Newton on all spots at once, pixel
   weights from a variance model (read noise + model), masked pixels weight 0. Spots with
   masked cores (saturated lines, cosmics, dead amplifiers), low S/N or bad chi2 are dropped.
3. **Traces**: a smooth correction ``d(fiber, wave)`` of the starting traces is fitted to the
   measured minus predicted x and y with iterative clipping, at three levels: camera-wide
   (Legendre in fiber x wavelength), per bundle (linear in fiber, wavelength degree following
   the bundle's line coverage) and per fiber (``fiber_resid_deg``). Fibers with too few lines
   or lines over too short a span are flagged BADARC, fibers far off their bundle BADTRACE;
   both keep the camera + bundle model (the neighbours' interpolation). The new trace coefficients are the start's plus the correction, so the
   stored x(wave), y(wave) Legendre series are the wavelength solution.
4. **Widths**, per bundle: log width scales of well-measured spots, smooth in wavelength and
   fiber, multiply GHSIGX/GHSIGY; the Gauss-Hermite shape terms and tails are kept from the
   starting PSF (they describe the optics and change little between nights).

Steps 2-4 run twice (the second time from the updated PSF).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.polynomial import legendre
from scipy import ndimage

from .. import bitmasks
from ..config import StepOptions
from ..errors import DataError
from ..linalg import robust_lstsq
from ..models import psf as psfmodel

BADARC = bitmasks.fibermask.mask("BADARC")
BADTRACE = bitmasks.fibermask.mask("BADTRACE")


@dataclass
class PSFFitOptions(StepOptions):
    """Options of :func:`fit_psf` (config section ``psf``)."""

    trace_deg: int = 3          #: Legendre degree of the trace corrections in wavelength
    fiber_deg: int = 1          #: polynomial degree of the bundle model across fibers
    fiber_resid_deg: int = 1    #: Legendre degree of each fiber's own term on top of its bundle model
    width_deg: int = 1          #: Legendre degree of the width scales in wavelength
    fit_widths: bool = True
    window_hx: int = 3          #: half width in columns of the spot-fit window
    snr_min: float = 10.0       #: minimum spot flux S/N
    chi2_max: float = 10.0      #: maximum spot chi2 per degree of freedom
    masked_max: float = 0.05    #: maximum fraction of a spot's light on masked pixels
    min_lines: int = 5          #: fewer good lines flags the fiber BADARC
    nsig_clip: float = 4.0
    niter: int = 10             #: Gauss-Newton iterations per pass
    npass: int = 2
    search_x: float = 3.5       #: coarse search half range in columns
    search_y: float = 12.0      #: coarse search half range in rows
    pos_floor: float = 0.003    #: systematic floor added to spot position errors [pixel]
    width_prior: float = 0.15   #: prior sigma of the spot width scales
    badtrace_nsig: float = 6.0  #: fiber offset from its bundle model (in its own errors) flagged BADTRACE
    #: higher-order Gauss-Hermite terms (shear, coma-like, triangular) and optionally TAILAMP,
    #: fitted per bundle; the other shape terms keep the starting PSF's values
    shape_terms: tuple = ("GH-1-1", "GH-2-1", "GH-1-2", "GH-3-0", "GH-0-3")
    shape_deg: int = 1          #: Legendre degree in wavelength of each fitted shape term
    shape_fiber_deg: int = 1    #: polynomial degree across a bundle's fibers of each fitted shape term
    shape_min_spots: int = 30   #: fewer usable spots in a bundle keeps its starting shape terms


# ---------------------------------------------------------------------------- spot geometry
def render_windows(stamps, sx0, sy0, wx0, wy0, wnx, wny):
    """Cut model stamps into fixed data windows.

    Parameters
    ----------
    stamps : (n, sny, snx)
        Spots with CCD origins ``sx0, sy0`` (n,).
    wx0, wy0 : int (n,)
        CCD origins of the windows.
    wnx, wny : int
        Window size.

    Returns
    -------
    (n, wny, wnx)
        Stamp values on the window's pixels (0 where the stamp does not reach).
    """
    n, sny, snx = stamps.shape
    ri = (wy0 - sy0)[:, None] + np.arange(wny)[None, :]
    ci = (wx0 - sx0)[:, None] + np.arange(wnx)[None, :]
    vr = (ri >= 0) & (ri < sny)
    vc = (ci >= 0) & (ci < snx)
    out = stamps[np.arange(n)[:, None, None], np.clip(ri, 0, sny - 1)[:, :, None], np.clip(ci, 0, snx - 1)[:, None, :]]
    return out * (vr[:, :, None] & vc[:, None, :])


def paint(shape, stamps, sx0, sy0, weights):
    """Sum of ``weights[k] * stamps[k]`` placed on a CCD image of ``shape`` (ny, nx)."""
    n, sny, snx = stamps.shape
    ny, nx = shape
    rows = sy0[:, None, None] + np.arange(sny)[None, :, None]
    cols = sx0[:, None, None] + np.arange(snx)[None, None, :]
    ok = (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
    vals = stamps * weights[:, None, None]
    idx = (np.broadcast_to(rows, stamps.shape) * nx + np.broadcast_to(cols, stamps.shape))[ok]
    return np.bincount(idx, weights=vals[ok], minlength=ny * nx).reshape(ny, nx)


def gather_windows(image, wx0, wy0, wnx, wny, fill=0.0):
    """Pixels of ``image`` in windows (n, wny, wnx); outside the CCD gives ``fill``."""
    ny, nx = image.shape
    rows = wy0[:, None] + np.arange(wny)[None, :]
    cols = wx0[:, None] + np.arange(wnx)[None, :]
    ok = ((rows >= 0) & (rows < ny))[:, :, None] & ((cols >= 0) & (cols < nx))[:, None, :]
    out = image[np.clip(rows, 0, ny - 1)[:, :, None], np.clip(cols, 0, nx - 1)[:, None, :]].astype(np.float64)
    out[~ok] = fill
    return out


# ---------------------------------------------------------------------------- coarse offset
def coarse_offset(image, weight, xpred, ypred, search_x, search_y):
    """Global (dx, dy) that puts the predicted spots on the arc lines.

    Parameters
    ----------
    image : (ny, nx) electrons
    weight : (ny, nx) bool
        Usable pixels.
    xpred, ypred : (nspot,)
        Predicted spot centres of the starting PSF.
    search_x, search_y : float
        Half ranges of the search [pixel].

    Returns
    -------
    dx, dy : float
    """
    img = np.where(weight, np.clip(image, 0, None), 0.0)
    img = np.clip(ndimage.uniform_filter(img, size=3), 0.0, None)

    def score(dx, dy):
        vals = ndimage.map_coordinates(img, [ypred + dy, xpred + dx], order=1, mode="constant")
        return np.sum(np.sqrt(vals))

    def scan(lags, fixed, axis):
        s = np.array([score(fixed, lag) if axis == "y" else score(lag, fixed) for lag in lags])
        k = int(np.argmax(s))
        if 0 < k < len(lags) - 1:  # parabolic refinement
            den = s[k - 1] - 2 * s[k] + s[k + 1]
            frac = 0.5 * (s[k - 1] - s[k + 1]) / den if den < 0 else 0.0
            return lags[k] + frac * (lags[1] - lags[0]), s[k]
        return lags[k], s[k]

    ylags = np.arange(-search_y, search_y + 1e-9, 0.5)
    xlags = np.arange(-search_x, search_x + 1e-9, 0.25)
    dy, best = scan(ylags, 0.0, "y")
    dx, _ = scan(xlags, dy, "x")
    dy, best = scan(ylags, dx, "y")
    if not np.isfinite(best) or best <= 0:
        raise ValueError("no arc line light found near the predicted line positions")
    return float(dx), float(dy)


# ---------------------------------------------------------------------------- spot fits
def _stamps(inputs, sx, sy, hx, hy, x, y):
    st, x0, y0 = psfmodel.spot_stamps(x, y, inputs["sigx"] * sx, inputs["sigy"] * sy, inputs["gh"], inputs["tail"], hx, hy)
    return st, x0, y0


def fit_spots(image, ivar, readnoise, psf, wave, xinit, yinit, opts):
    """Fit flux, position and width scales of every (fiber, line) spot.

    Parameters
    ----------
    image, ivar, readnoise : (ny, nx)
        Preprocessed arc (electrons), its inverse variance (0 = masked) and read noise.
    psf : GaussHermitePSF
        Shape parameters (GHSIG*, GH-i-j, tails) evaluated at each spot.
    wave : (nline,)
    xinit, yinit : (nfiber, nline)
        Starting positions.
    opts : PSFFitOptions

    Returns
    -------
    dict of (nfiber, nline) arrays: FLUX, X, Y, SX, SY (width scales), FLUX_ERR, X_ERR,
    Y_ERR, SX_ERR, SY_ERR, CHI2 (per degree of freedom), MASKED (light fraction on masked
    pixels), GOOD (bool)
    """
    nfib, nline = xinit.shape
    shape = image.shape
    inputs = psfmodel.spot_inputs(psf, np.broadcast_to(wave, (nfib, nline)).copy())
    hx, hy = psf.hsizex, psf.hsizey
    wnx, wny = 2 * opts.window_hx + 1, 2 * hy + 1
    x = xinit.ravel().astype(float).copy()
    y = yinit.ravel().astype(float).copy()
    n = x.size
    wx0 = np.floor(x + 0.5).astype(np.int64) - opts.window_hx
    wy0 = np.floor(y + 0.5).astype(np.int64) - hy
    data = gather_windows(image, wx0, wy0, wnx, wny)
    usable = gather_windows((ivar > 0).astype(float), wx0, wy0, wnx, wny) > 0
    rn2 = gather_windows(np.asarray(readnoise, float) ** 2, wx0, wy0, wnx, wny, fill=1.0)
    data = np.where(usable, data, 0.0)
    flux = np.clip(data.sum(axis=(1, 2)), 1.0, None)
    sx = np.ones(n)
    sy = np.ones(n)
    prior = 1.0 / opts.width_prior**2 if opts.fit_widths else 1e12
    h = 1e-3
    for it in range(opts.niter):
        st, sx0, sy0 = _stamps(inputs, sx, sy, hx, hy, x, y)
        W = render_windows(st, sx0, sy0, wx0, wy0, wnx, wny)
        canvas = paint(shape, st, sx0, sy0, flux)
        others = gather_windows(canvas, wx0, wy0, wnx, wny) - flux[:, None, None] * W
        derivs = []
        for dxx, dyy, dsx, dsy in ((h, 0, 0, 0), (0, h, 0, 0), (0, 0, h, 0), (0, 0, 0, h)):
            s2, a0, b0 = _stamps(inputs, sx + dsx, sy + dsy, hx, hy, x + dxx, y + dyy)
            derivs.append((render_windows(s2, a0, b0, wx0, wy0, wnx, wny) - W) / h)
        model = flux[:, None, None] * W + others
        var = rn2 + np.clip(model, 0.0, None)
        w = np.where(usable, 1.0 / var, 0.0).reshape(n, -1)
        r = (data - model).reshape(n, -1)
        J = np.stack([W.reshape(n, -1)] + [flux[:, None] * d.reshape(n, -1) for d in derivs], axis=-1)
        A = np.einsum("npk,np,npl->nkl", J, w, J)
        b = np.einsum("npk,np,np->nk", J, w, r)
        A[:, 3, 3] += prior
        A[:, 4, 4] += prior
        b[:, 3] += prior * (1.0 - sx)
        b[:, 4] += prior * (1.0 - sy)
        A += np.eye(5)[None] * 1e-9 * (np.trace(A, axis1=1, axis2=2)[:, None, None] + 1e-30)
        try:
            delta = np.linalg.solve(A, b[..., None])[..., 0]
        except np.linalg.LinAlgError:
            delta = np.zeros((n, 5))
            for k in range(n):
                try:
                    delta[k] = np.linalg.solve(A[k], b[k])
                except np.linalg.LinAlgError:
                    pass
        delta = np.nan_to_num(delta)
        flux = np.clip(flux + delta[:, 0], 1e-3, None)
        x += np.clip(delta[:, 1], -0.5, 0.5)
        y += np.clip(delta[:, 2], -0.5, 0.5)
        sx = np.clip(sx + np.clip(delta[:, 3], -0.1, 0.1), 0.5, 2.0)
        sy = np.clip(sy + np.clip(delta[:, 4], -0.1, 0.1), 0.5, 2.0)
    # final model, covariance and quality
    st, sx0, sy0 = _stamps(inputs, sx, sy, hx, hy, x, y)
    W = render_windows(st, sx0, sy0, wx0, wy0, wnx, wny)
    canvas = paint(shape, st, sx0, sy0, flux)
    others = gather_windows(canvas, wx0, wy0, wnx, wny) - flux[:, None, None] * W
    model = flux[:, None, None] * W + others
    var = rn2 + np.clip(model, 0.0, None)
    w = np.where(usable, 1.0 / var, 0.0)
    chi2 = np.sum(w * (data - model) ** 2, axis=(1, 2))
    ngood = usable.sum(axis=(1, 2))
    dof = np.clip(ngood - 5, 1, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = np.linalg.pinv(A)
    err = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0, None))
    rchi2 = chi2 / dof
    scale = np.sqrt(np.clip(rchi2, 1.0, None))
    masked = 1.0 - np.sum(W * usable, axis=(1, 2)) / np.clip(W.sum(axis=(1, 2)), 1e-12, None)
    moved = np.hypot(x - (wx0 + opts.window_hx), y - (wy0 + hy))
    good = (np.isfinite(x) & np.isfinite(y) & (flux / np.clip(err[:, 0], 1e-12, None) > opts.snr_min)
            & (rchi2 < opts.chi2_max) & (masked < opts.masked_max) & (moved < 1.0))
    shp = (nfib, nline)
    return {
        "FLUX": flux.reshape(shp), "X": x.reshape(shp), "Y": y.reshape(shp), "SX": sx.reshape(shp),
        "SY": sy.reshape(shp), "FLUX_ERR": (err[:, 0] * scale).reshape(shp),
        "X_ERR": np.hypot(err[:, 1] * scale, opts.pos_floor).reshape(shp),
        "Y_ERR": np.hypot(err[:, 2] * scale, opts.pos_floor).reshape(shp),
        "SX_ERR": (err[:, 3] * scale).reshape(shp), "SY_ERR": (err[:, 4] * scale).reshape(shp),
        "CHI2": rchi2.reshape(shp), "MASKED": masked.reshape(shp), "GOOD": good.reshape(shp),
    }


# ---------------------------------------------------------------------------- smooth fits
def _bundle_basis(u, t, deg, fdeg):
    """Design matrix (n, (fdeg+1)*(deg+1)): t^a L_j(u)."""
    L = legendre.legvander(u, deg)
    return np.concatenate([L * (t[:, None] ** a) for a in range(fdeg + 1)], axis=1)


def _coverage(u_used, u_all):
    """Fraction of the lines' wavelength span covered by the used lines."""
    if u_used.size < 2:
        return 0.0
    return float(np.ptp(u_used) / max(np.ptp(u_all), 1e-9))


def fit_trace_corrections(u, resid, err, good, bundlesize, opts):
    """Per-fiber Legendre corrections of a trace coordinate: camera, bundle, fiber levels.

    A camera-wide model (Legendre in fiber x Legendre in wavelength) carries the shape of the
    correction where a bundle lacks lines (dead amplifier, masked region); each bundle adds a
    smooth term whose wavelength degree follows its line coverage; each fiber adds its own
    low-order term. Fibers with fewer than ``min_lines`` good lines or lines over less than
    60% of the span are flagged BADARC; fibers far off their bundle are flagged BADTRACE;
    both keep the camera + bundle model (interpolation from their neighbours).

    Parameters
    ----------
    u : (nline,)
        Reduced wavelength of the lines in the trace domain.
    resid, err : (nfiber, nline)
        Measured minus predicted coordinate and its error [pixel].
    good : (nfiber, nline) bool
    bundlesize : int
    opts : PSFFitOptions

    Returns
    -------
    coeff : (nfiber, trace_deg+1)
        Legendre coefficients of the correction in ``u``.
    status : (nfiber,) int32
        BADARC / BADTRACE bits.
    used : (nfiber, nline) bool
        Spots kept by the fits.
    """
    nfib, nline = resid.shape
    deg = opts.trace_deg
    coeff = np.zeros((nfib, deg + 1))
    status = np.zeros(nfib, np.int32)
    used = np.zeros_like(good)
    uu = np.broadcast_to(u, (nfib, nline))
    u_all = u[good.any(axis=0)]
    # camera level
    ff, ll = np.nonzero(good)
    tf = 2.0 * np.arange(nfib) / max(nfib - 1, 1) - 1.0
    cdeg = min(deg, max(len(np.unique(ll)) - 2, 0))
    gdeg = min(2, max(len(np.unique(ff)) - 1, 0), max(nfib // bundlesize - 1, 0))
    if len(ff) < (cdeg + 1) * (gdeg + 1) + 2:
        return coeff, status | BADARC, used
    Lf = legendre.legvander(tf, gdeg)  # (nfib, gdeg+1)
    A = np.concatenate([legendre.legvander(uu[good], cdeg) * Lf[ff][:, [a]] for a in range(gdeg + 1)], axis=1)
    gc, _ = robust_lstsq(A, resid[good], err[good], opts.nsig_clip)
    gc = gc.reshape(gdeg + 1, cdeg + 1)
    camera_c = np.zeros((nfib, deg + 1))
    camera_c[:, : cdeg + 1] = Lf @ gc
    for b0 in range(0, nfib, bundlesize):
        fib = np.arange(b0, min(b0 + bundlesize, nfib))
        t_f = 2.0 * (fib - fib[0]) / max(len(fib) - 1, 1) - 1.0
        g = good[fib]
        ff, ll = np.nonzero(g)
        base = camera_c[fib]
        r_b = resid[fib][g] - np.einsum("nc,nc->n", legendre.legvander(uu[fib][g], deg), base[ff])
        cover_b = _coverage(u[np.unique(ll)], u_all)
        bdeg = deg if cover_b > 0.8 else (1 if cover_b > 0.4 else 0)
        bdeg = min(bdeg, max(len(np.unique(ll)) - 2, 0))
        fdeg = min(opts.fiber_deg, max(len(np.unique(ff)) - 1, 0))
        bc = np.zeros((fdeg + 1, bdeg + 1))
        keep = np.zeros(len(ff), bool)
        if len(ff) >= (bdeg + 1) * (fdeg + 1) + 2:
            bcf, keep = robust_lstsq(_bundle_basis(uu[fib][g], t_f[ff], bdeg, fdeg), r_b, err[fib][g], opts.nsig_clip)
            bc = bcf.reshape(fdeg + 1, bdeg + 1)
        for k, f in enumerate(fib):
            c = base[k].copy()
            c[: bdeg + 1] += sum(bc[a] * t_f[k] ** a for a in range(fdeg + 1))
            coeff[f] = c
            sel = ff == k
            lines_f = ll[sel][keep[sel]]
            if lines_f.size < opts.min_lines or _coverage(u[lines_f], u_all) < 0.6:
                status[f] |= BADARC
                continue
            fdeg_f = max(min(opts.fiber_resid_deg, lines_f.size - 3), 0)
            r = resid[f, lines_f] - legendre.legval(u[lines_f], c)
            e = err[f, lines_f]
            rc, kf = robust_lstsq(legendre.legvander(u[lines_f], fdeg_f), r, e, opts.nsig_clip)
            used[f, lines_f[kf]] = True
            # a fiber whose own offset from its bundle is many sigma (and > 0.25 px) off is flagged
            sig_off = 1.0 / np.sqrt(np.sum(1.0 / e[kf] ** 2)) if kf.any() else np.inf
            if abs(rc[0]) > max(opts.badtrace_nsig * sig_off, 0.25):
                status[f] |= BADTRACE
                continue
            coeff[f, : fdeg_f + 1] += rc
    return coeff, status, used


def fit_width_scales(u, s, serr, good, bundlesize, opts):
    """Smooth log width scales per bundle.

    Parameters
    ----------
    u : (nline,)
        Reduced wavelength in the PSF-parameter domain.
    s, serr : (nfiber, nline)
        Spot width scales and errors.
    good : (nfiber, nline) bool

    Returns
    -------
    callable(uq (nq,)) -> (nfiber, nq) multiplicative scale
    """
    nfib, nline = s.shape
    coefs = []
    for b0 in range(0, nfib, bundlesize):
        fib = np.arange(b0, min(b0 + bundlesize, nfib))
        t_f = 2.0 * (fib - fib[0]) / max(len(fib) - 1, 1) - 1.0
        g = good[fib] & (serr[fib] < 0.05) & (serr[fib] > 0)
        ff, ll = np.nonzero(g)
        wdeg = min(opts.width_deg, max(len(np.unique(ll)) - 2, 0))
        fdeg = min(opts.fiber_deg, max(len(np.unique(ff)) - 1, 0))
        if len(ff) < 3 * (wdeg + 1) * (fdeg + 1):
            coefs.append((fib, t_f, None, 0, 0))
            continue
        A = _bundle_basis(u[ll], t_f[ff], wdeg, fdeg)
        vals = np.log(s[fib][g])
        c, _ = robust_lstsq(A, vals, serr[fib][g] / s[fib][g], opts.nsig_clip)
        coefs.append((fib, t_f, c, wdeg, fdeg))

    def scale(uq):
        out = np.ones((nfib, len(uq)))
        for fib, t_f, c, wdeg, fdeg in coefs:
            if c is None:
                continue
            for k, f in enumerate(fib):
                out[f] = np.exp(_bundle_basis(uq, np.full(len(uq), t_f[k]), wdeg, fdeg) @ c)
        return out

    return scale


# ---------------------------------------------------------------------------- GH shape terms
def shape_term_keys(psf, terms):
    """Where each fitted shape term sits in :func:`fiberflow.models.psf.spot_inputs`.

    Parameters
    ----------
    psf : GaussHermitePSF
    terms : list of str
        ``GH-i-j`` names or ``TAILAMP``.

    Returns
    -------
    list of ("gh", i, j) or ("tail", 0, 0)

    Raises
    ------
    ValueError
        For a name that is not a shape term of the PSF, or one a spot fit already measures
        (GH-0-0 flux, GH-1-0 / GH-0-1 position, GH-2-0 / GH-0-2 width).
    """
    out = []
    for name in terms:
        if name == "TAILAMP":
            out.append(("tail", 0, 0))
            continue
        parts = str(name).split("-")
        if len(parts) != 3 or parts[0] != "GH" or not (parts[1].isdigit() and parts[2].isdigit()):
            raise ValueError(f"psf.shape_terms: {name!r} is not a GH-i-j term or TAILAMP")
        i, j = int(parts[1]), int(parts[2])
        if (i, j) in ((0, 0), (1, 0), (0, 1), (2, 0), (0, 2)):
            raise ValueError(f"psf.shape_terms: {name} is degenerate with the spots' flux, position or width")
        if i > psf.ghdegx or j > psf.ghdegy:
            raise ValueError(f"psf.shape_terms: {name} is beyond the PSF's GH degree ({psf.ghdegx}, {psf.ghdegy})")
        out.append(("gh", i, j))
    return out


def shape_term_derivatives(inputs, keys, spots, hx, hy, wx0, wy0, wnx, wny, h=1e-3):
    """Model of each spot in its window and its derivative with respect to each shape term.

    Parameters
    ----------
    inputs : dict
        :func:`fiberflow.models.psf.spot_inputs` of the spots (flattened).
    keys : list
        :func:`shape_term_keys`.
    spots : dict
        Spot fits (:func:`fit_spots`): FLUX, X, Y, SX, SY (nfiber, nline).
    wx0, wy0 : (n,) int
        Window origins; ``wnx, wny`` their size.

    Returns
    -------
    stamps : (stamps, x0, y0)
        The spots' stamps and CCD origins (:func:`_stamps`), for painting the frame's model.
    D : (nterm, n, wny, wnx)
        flux x d(model)/d(term) (finite differences: the stamps are normalised to unit sum).
    """
    x, y = spots["X"].ravel(), spots["Y"].ravel()
    sx, sy = spots["SX"].ravel(), spots["SY"].ravel()
    flux = spots["FLUX"].ravel()
    st, a0, b0 = _stamps(inputs, sx, sy, hx, hy, x, y)
    W = render_windows(st, a0, b0, wx0, wy0, wnx, wny)
    D = []
    for kind, i, j in keys:
        pert = dict(inputs)
        if kind == "gh":
            gh = inputs["gh"].copy()
            gh[:, i, j] += h
            pert["gh"] = gh
        else:
            tail = inputs["tail"].copy()
            tail[:, 0] += h
            pert["tail"] = tail
        s2, a1, b1 = _stamps(pert, sx, sy, hx, hy, x, y)
        D.append(flux[:, None, None] * (render_windows(s2, a1, b1, wx0, wy0, wnx, wny) - W) / h)
    return (st, a0, b0), np.stack(D) if D else np.zeros((0,) + W.shape)


def fit_shape_terms(image, ivar, readnoise, psf, lines, spots, used, bundlesize, opts, target=None):
    """Corrections to higher-order Gauss-Hermite terms (and the tail amplitude), smooth per bundle.

    With every spot's flux, position and width scales held at their fitted values, each term
    of ``opts.shape_terms`` of the bundle's fibers gets a correction that is a Legendre
    polynomial in reduced wavelength (degree ``shape_deg``) times a polynomial across the
    bundle's fibers (degree ``shape_fiber_deg``), fitted by weighted linear least squares over
    the pixels of every used spot (neighbouring spots included in the model). The GH terms
    allowed are orthogonal, to first order, to what the spot fit measures.

    Parameters
    ----------
    image, ivar, readnoise : (ny, nx)
    psf : GaussHermitePSF
        The PSF the spots were fitted with (their width scales are relative to it).
    lines : (nline,)
    spots : dict of (nfiber, nline) spot fits; ``used`` (nfiber, nline) bool
    bundlesize : int
    opts : PSFFitOptions
    target : GaussHermitePSF, optional
        PSF that receives the corrections (default ``psf``; the pass's updated PSF).

    Returns
    -------
    new : GaussHermitePSF
        ``target`` with the corrected terms.
    info : dict
        ``delta`` {term: (nfiber,) correction of the constant coefficient}, ``nspot`` per bundle,
        ``rchi2_before`` / ``rchi2_after`` per bundle (chi2 / pixel of the used spots).
    """
    keys = shape_term_keys(psf, opts.shape_terms)
    names = list(opts.shape_terms)
    nfib, nline = spots["X"].shape
    inputs = psfmodel.spot_inputs(psf, np.broadcast_to(lines, (nfib, nline)).copy())
    hx, hy = psf.hsizex, psf.hsizey
    wnx, wny = 2 * opts.window_hx + 1, 2 * hy + 1
    x, y = spots["X"].ravel(), spots["Y"].ravel()
    wx0 = np.floor(x + 0.5).astype(np.int64) - opts.window_hx
    wy0 = np.floor(y + 0.5).astype(np.int64) - hy
    data = gather_windows(image, wx0, wy0, wnx, wny)
    usable = gather_windows((np.asarray(ivar) > 0).astype(float), wx0, wy0, wnx, wny) > 0
    rn2 = gather_windows(np.asarray(readnoise, float) ** 2, wx0, wy0, wnx, wny, fill=1.0)
    flux = spots["FLUX"].ravel()
    (st, a0, b0), D = shape_term_derivatives(inputs, keys, spots, hx, hy, wx0, wy0, wnx, wny)
    # neighbours' light in each window (every spot, used or not, is painted)
    canvas = paint(image.shape, st, a0, b0, flux)
    model = gather_windows(canvas, wx0, wy0, wnx, wny)
    w = np.where(usable, 1.0 / (rn2 + np.clip(model, 0.0, None)), 0.0)
    r = np.where(usable, data - model, 0.0)
    M = np.einsum("kspq,spq,lspq->skl", D, w, D)  # (n, nterm, nterm)
    v = np.einsum("kspq,spq,spq->sk", D, w, r)     # (n, nterm)
    chi2 = np.sum(w * r**2, axis=(1, 2))
    npix = usable.sum(axis=(1, 2))
    uline = psfmodel.reduced_wave(lines, psf.psf_wavemin, psf.psf_wavemax)
    nterm = len(keys)
    new = (target if target is not None else psf).copy()
    delta = {name: np.zeros(nfib) for name in names}
    info = {"delta": delta, "nspot": [], "rchi2_before": [], "rchi2_after": []}
    use = used.ravel()
    ncoef = max(opts.shape_deg + 1, 1)
    for name in delta:
        if name not in new.params:  # a PSF without tails: TAILAMP 0
            new.params[name] = np.zeros((nfib, ncoef))
            new.legdeg[name] = (0, ncoef - 1)
        par = np.atleast_2d(np.asarray(new.params[name], float))
        if par.shape[0] != nfib:
            par = np.repeat(par[:1], nfib, axis=0)
        new.params[name] = par
        if new.params[name].shape[1] < ncoef:
            new.params[name] = _pad(new.params[name], ncoef)
            new.legdeg[name] = (new.legdeg.get(name, (0, 0))[0], ncoef - 1)
    for b0_ in range(0, nfib, bundlesize):
        fib = np.arange(b0_, min(b0_ + bundlesize, nfib))
        t_f = 2.0 * (fib - fib[0]) / max(len(fib) - 1, 1) - 1.0
        sel = np.zeros((nfib, nline), bool)
        sel[fib] = True
        s_idx = np.flatnonzero(sel.ravel() & use)
        info["nspot"].append(int(s_idx.size))
        if s_idx.size < opts.shape_min_spots:
            info["rchi2_before"].append(np.nan)
            info["rchi2_after"].append(np.nan)
            continue
        ff, ll = np.divmod(s_idx, nline)
        fdeg = min(opts.shape_fiber_deg, len(np.unique(ff)) - 1)
        wdeg = min(opts.shape_deg, len(np.unique(ll)) - 1)
        B = _bundle_basis(uline[ll], t_f[ff - fib[0]], wdeg, fdeg)  # (ns, nb)
        nb = B.shape[1]
        # normal equations of the (term, basis) unknowns
        A = np.einsum("sa,skl,sb->kalb", B, M[s_idx], B).reshape(nterm * nb, nterm * nb)
        rhs = np.einsum("sa,sk->ka", B, v[s_idx]).reshape(nterm * nb)
        A += np.eye(nterm * nb) * 1e-9 * (np.trace(A) / max(nterm * nb, 1) + 1e-30)
        try:
            c = np.linalg.solve(A, rhs).reshape(nterm, nb)
        except np.linalg.LinAlgError:
            info["rchi2_before"].append(np.nan)
            info["rchi2_after"].append(np.nan)
            continue
        # chi2 change to first order: r - sum_k D_k dc_k
        dc = B @ c.T  # (ns, nterm)
        r_after = r[s_idx] - np.einsum("kspq,sk->spq", D[:, s_idx], dc)
        info["rchi2_before"].append(float(chi2[s_idx].sum() / max(npix[s_idx].sum(), 1)))
        info["rchi2_after"].append(float(np.sum(w[s_idx] * r_after**2) / max(npix[s_idx].sum(), 1)))
        # into the PSF: per fiber, a Legendre polynomial in wavelength of degree wdeg
        for k, name in enumerate(names):
            for kk, f in enumerate(fib):
                coef = np.zeros(wdeg + 1)
                for a in range(fdeg + 1):
                    coef += c[k, a * (wdeg + 1):(a + 1) * (wdeg + 1)] * t_f[kk] ** a
                new.params[name][f, : wdeg + 1] += coef
                delta[name][f] = coef[0]
    return new, info


# ---------------------------------------------------------------------------- driver
def _pad(coeff, ncoef):
    out = np.zeros((coeff.shape[0], max(ncoef, coeff.shape[1])))
    out[:, : coeff.shape[1]] = coeff
    return out


def update_widths(psf, scale):
    """New PSF whose GHSIGX/GHSIGY are multiplied by ``scale`` = (sx(u), sy(u)) callables."""
    out = psf.copy()
    uq = np.linspace(-1, 1, 41)
    wq = psf.psf_wavemin + (uq + 1) * 0.5 * (psf.psf_wavemax - psf.psf_wavemin)
    for name, fn in zip(("GHSIGX", "GHSIGY"), scale):
        old = psfmodel.legendre_eval(psf.params[name], wq, psf.psf_wavemin, psf.psf_wavemax)
        new = old * fn(uq)
        deg = max(psf.params[name].shape[1] - 1, 3)
        out.params[name] = legendre.legfit(uq, new.T, deg).T
        out.legdeg[name] = (psf.legdeg.get(name, (0, 0))[0], deg)
    return out


def _usable_lines(psf, lines):
    """Lines inside every fiber's wavelength range whose spots stay HSIZEY+2 rows off the CCD edges."""
    fibers = psf.fibermin + np.arange(psf.nfiber)
    wmin, wmax = psfmodel.wavelength_range(psf)
    lines = np.asarray(lines, float)
    lines = lines[(lines > np.max(wmin)) & (lines < np.min(wmax))]
    if lines.size == 0:
        return lines
    y = psfmodel.trace_y(psf, lines, fibers)
    edge = np.all((y > psf.hsizey + 2) & (y < psf.npix_y - psf.hsizey - 3), axis=0)
    return lines[edge]


def fit_psf(image, ivar, readnoise, start, arm, lines, bundlesize, opts=None, log=None, refine_lines=None):
    """Fit a PSF to a preprocessed arc image.

    Parameters
    ----------
    image, ivar, readnoise : (ny, nx)
        Preprocessed arc [electron], inverse variance (0 = masked) and read noise.
    start : GaussHermitePSF
        Starting PSF (nominal or previous night's), same fibers and CCD.
    arm : str
    lines : (nline,)
        Vacuum wavelengths of the anchor lines (see :func:`fiberflow.models.arclines.lines_for_camera`).
    bundlesize : int
    opts : PSFFitOptions, optional
    log : callable(str), optional
    refine_lines : (nref,), optional
        More lines tried from the second pass on (see :func:`fiberflow.models.arclines.refinement_lines`);
        those the data do not show clearly in most fibers are dropped.

    Returns
    -------
    psf : GaussHermitePSF
        With FIBERSTATUS and SPOTS tables and fit-quality keywords.
    """
    opts = opts or PSFFitOptions()
    log = log or (lambda msg: None)
    image = np.asarray(image, np.float64)
    ivar = np.asarray(ivar, np.float64)
    if image.shape != (start.npix_y, start.npix_x):
        raise ValueError(f"image shape {image.shape} differs from the PSF's CCD ({start.npix_y}, {start.npix_x})")
    usable = (ivar > 0) & np.isfinite(image)
    if not usable.any():
        raise ValueError("every pixel of the arc image is masked")
    nfib = start.nfiber
    fibers = start.fibermin + np.arange(nfib)
    lines = _usable_lines(start, lines)
    if lines.size < 3:
        raise ValueError(f"only {lines.size} arc lines fall on the {arm} CCD; need at least 3")
    xpred = psfmodel.trace_x(start, lines, fibers)
    ypred = psfmodel.trace_y(start, lines, fibers)
    dx, dy = coarse_offset(image, usable, xpred.ravel(), ypred.ravel(), opts.search_x, opts.search_y)
    log(f"coarse offset of the arc vs the starting PSF: dx={dx:+.2f} dy={dy:+.2f} px ({lines.size} lines)")
    psf = start.copy()
    psf.xtrace[:, 0] += dx
    psf.ytrace[:, 0] += dy
    anchors = lines
    for npass in range(opts.npass):
        if npass > 0 and refine_lines is not None and len(refine_lines):
            extra = _usable_lines(psf, refine_lines)
            extra = extra[np.min(np.abs(extra[:, None] - anchors[None, :]), axis=1) > 6.0] if extra.size else extra
            lines = np.sort(np.concatenate([anchors, extra]))
        xp = psfmodel.trace_x(psf, lines, fibers)
        yp = psfmodel.trace_y(psf, lines, fibers)
        spots = fit_spots(image, ivar, readnoise, psf, lines, xp, yp, opts)
        good = spots["GOOD"]
        # a line that is bad in most fibers (absent from the lamp, blended) is dropped
        line_ok = good.mean(axis=0) > 0.3
        good = good & line_ok[None, :]
        if good.sum() < opts.min_lines:
            raise ValueError(f"arc lines not found: {good.sum()} good spots out of {good.size}")
        u = psfmodel.reduced_wave(lines, psf.trace_wavemin, psf.trace_wavemax)
        cx, stx, usedx = fit_trace_corrections(u, spots["X"] - xp, spots["X_ERR"], good, bundlesize, opts)
        cy, sty, usedy = fit_trace_corrections(u, spots["Y"] - yp, spots["Y_ERR"], good, bundlesize, opts)
        new = psf.copy()
        new.xtrace = _pad(psf.xtrace, cx.shape[1])
        new.xtrace[:, : cx.shape[1]] += cx
        new.ytrace = _pad(psf.ytrace, cy.shape[1])
        new.ytrace[:, : cy.shape[1]] += cy
        status = stx | sty
        if opts.fit_widths:
            up = psfmodel.reduced_wave(lines, psf.psf_wavemin, psf.psf_wavemax)
            ok = good & usedx & usedy
            fx = fit_width_scales(up, spots["SX"], spots["SX_ERR"], ok, bundlesize, opts)
            fy = fit_width_scales(up, spots["SY"], spots["SY_ERR"], ok, bundlesize, opts)
            new = update_widths(new, (fx, fy))
        if opts.shape_terms:
            new, shinfo = fit_shape_terms(image, ivar, readnoise, psf, lines, spots, good & usedx & usedy,
                                          bundlesize, opts, target=new)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # bundles without enough spots: NaN
                before, after = np.nanmean(shinfo["rchi2_before"]), np.nanmean(shinfo["rchi2_after"])
            log(f"pass {npass + 1}: shape terms {', '.join(opts.shape_terms)} refitted; spot chi2/pixel "
                f"{before:.3f} -> {after:.3f} (first order)")
        # residuals about the new traces
        rx = spots["X"] - psfmodel.trace_x(new, lines, fibers)
        ry = spots["Y"] - psfmodel.trace_y(new, lines, fibers)
        used = good & usedx & usedy
        rmsx = np.sqrt(np.nanmean(rx[used] ** 2)) if used.any() else np.nan
        rmsy = np.sqrt(np.nanmean(ry[used] ** 2)) if used.any() else np.nan
        log(f"pass {npass + 1}: {used.sum()}/{good.size} spots used, {int(line_ok.sum())}/{lines.size} lines, "
            f"residual rms x {rmsx:.4f} px y {rmsy:.4f} px, {int(np.sum(status != 0))} flagged fibers")
        psf = new
    # products: status table, spots table, quality keywords
    nline = lines.size
    fs = np.zeros(nfib, dtype=[("FIBER", "i4"), ("STATUS", "i4"), ("NLINE", "i4"), ("RMSX", "f4"), ("RMSY", "f4")])
    fs["FIBER"] = fibers
    fs["STATUS"] = status
    fs["NLINE"] = used.sum(axis=1)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # fibers without used spots: NaN
        fs["RMSX"] = np.sqrt(np.nanmean(np.where(used, rx, np.nan) ** 2, axis=1))
        fs["RMSY"] = np.sqrt(np.nanmean(np.where(used, ry, np.nan) ** 2, axis=1))
    psf.fiberstatus = fs
    sp = np.zeros(nfib * nline, dtype=[("FIBER", "i4"), ("WAVE", "f8"), ("X", "f8"), ("Y", "f8"), ("FLUX", "f4"),
                                        ("X_ERR", "f4"), ("Y_ERR", "f4"), ("SX", "f4"), ("SY", "f4"), ("CHI2", "f4"),
                                        ("GOOD", "?"), ("USED", "?")])
    sp["FIBER"] = np.repeat(fibers, nline)
    sp["WAVE"] = np.tile(lines, nfib)
    for key in ("X", "Y", "FLUX", "X_ERR", "Y_ERR", "SX", "SY", "CHI2"):
        sp[key] = spots[key].ravel()
    sp["GOOD"] = spots["GOOD"].ravel()
    sp["USED"] = used.ravel()
    psf.spots = sp
    meta = psf.meta
    for k in list(meta):
        if len(k) == 8 and k[0] == "B" and k[1:3].isdigit():
            del meta[k]
    for b, b0 in enumerate(range(0, nfib, bundlesize)):
        sel = slice(b0, b0 + bundlesize)
        u_b = used[sel]
        meta[f"B{b:02d}RCHI2"] = (float(np.mean(spots["CHI2"][sel][u_b])) if u_b.any() else -1.0,
                                  f"bundle {b}: mean spot chi2/dof")
        meta[f"B{b:02d}NSPOT"] = (int(u_b.sum()), f"bundle {b}: spots used")
    meta["NLINES"] = (int(line_ok.sum()), "arc lines used")
    meta["RMSX"] = (float(rmsx), "spot x residual rms about the traces [pixel]")
    meta["RMSY"] = (float(rmsy), "spot y residual rms about the traces [pixel]")
    meta["MEANDX"] = (float(np.mean(psf.xtrace[:, 0] - _pad(start.xtrace, psf.xtrace.shape[1])[:, 0])),
                      "mean x shift vs the starting PSF [pixel]")
    meta["MEANDY"] = (float(np.mean(psf.ytrace[:, 0] - _pad(start.ytrace, psf.ytrace.shape[1])[:, 0])),
                      "mean y shift vs the starting PSF [pixel]")
    meta["NBADFIB"] = (int(np.sum(status != 0)), "fibers flagged BADARC/BADTRACE")
    meta["SHTERMS"] = (",".join(opts.shape_terms) or "none", "PSF shape terms fitted (others: start)")
    return psf


def check_arc(image, ivar, path):
    """Reject images a PSF cannot be fitted to, naming the file."""
    if not np.any(np.isfinite(image) & (ivar > 0)):
        raise DataError(path, "every pixel is masked or NaN: no arc light to fit")


# ---------------------------------------------------------------------------- nightly PSF
def _clipped_mean(values, good, nsig):
    """Mean over axis 0 of ``values`` (n, ...) using ``good`` (n, ...) with median/MAD clipping."""
    v = np.where(good, values, np.nan)
    med = np.nanmedian(v, axis=0)
    mad = 1.4826 * np.nanmedian(np.abs(v - med), axis=0)
    # MAD of 2 or 3 values is degenerate; do not clip below a tiny relative scale
    scale = np.maximum(mad, 1e-6 * np.maximum(np.abs(med), 1.0))
    keep = good & (np.abs(values - med) <= nsig * scale)
    keep = np.where(keep.any(axis=0), keep, good)
    n = keep.sum(axis=0)
    mean = np.where(n > 0, np.sum(np.where(keep, values, 0.0), axis=0) / np.maximum(n, 1), med)
    return mean, keep


def combine_psfs(psfs, bundlesize, nsig=3.0, chi2_factor=3.0):
    """Nightly PSF: per-fiber outlier-rejecting mean of the arc PSFs' coefficients.

    Only fibers that are unflagged in an input, in bundles whose fit quality is normal
    (B{bb}RCHI2 below ``chi2_factor`` times the median of that bundle over the inputs), enter
    the mean; a fiber bad in every input keeps the plain mean and the OR of its flags.

    Parameters
    ----------
    psfs : list of GaussHermitePSF
        Same fibers, CCD and Legendre domains.
    bundlesize : int

    Returns
    -------
    GaussHermitePSF
        With FIBERSTATUS (NLINE = number of inputs used per fiber) and header NPSF/NPSFUSED.
    """
    if not psfs:
        raise ValueError("no PSF to combine")
    ref = psfs[0]
    for p in psfs[1:]:
        if p.nfiber != ref.nfiber or p.npix_x != ref.npix_x or p.npix_y != ref.npix_y:
            raise ValueError("PSFs of different fibers or CCD sizes cannot be combined")
        if not np.allclose([p.trace_wavemin, p.trace_wavemax, p.psf_wavemin, p.psf_wavemax],
                           [ref.trace_wavemin, ref.trace_wavemax, ref.psf_wavemin, ref.psf_wavemax]):
            raise ValueError("PSFs with different wavelength domains cannot be combined")
    nfib, npsf = ref.nfiber, len(psfs)
    good = np.ones((npsf, nfib), bool)
    for k, p in enumerate(psfs):
        good[k] &= p.status() == 0
    for b, b0 in enumerate(range(0, nfib, bundlesize)):
        key = f"B{b:02d}RCHI2"
        chi = np.array([float(p.meta.get(key, 1.0)) for p in psfs])
        ok = chi >= 0
        if ok.any():
            med = np.median(chi[ok])
            bad = ~ok | (chi > chi2_factor * max(med, 1.0))
            good[bad, b0:b0 + bundlesize] = False
    out = ref.copy()
    keep_any = np.zeros((npsf, nfib), bool)

    def combine(arrays):
        width = max(a.shape[1] for a in arrays)
        stack = np.stack([_pad(a, width) for a in arrays])  # (npsf, nfib, ncoef)
        g = np.broadcast_to(good[:, :, None], stack.shape)
        none = ~good.any(axis=0)
        g = np.where(none[None, :, None], True, g)
        mean, keep = _clipped_mean(stack, g, nsig)
        keep_any[:] |= keep.all(axis=2)
        return mean

    out.xtrace = combine([p.xtrace for p in psfs])
    out.ytrace = combine([p.ytrace for p in psfs])
    for name in ref.params:
        if all(name in p.params for p in psfs):
            out.params[name] = combine([p.params[name] for p in psfs])
    status = np.zeros(nfib, np.int32)
    none = ~good.any(axis=0)
    for p in psfs:
        status[none] |= p.status()[none]
    fs = np.zeros(nfib, dtype=[("FIBER", "i4"), ("STATUS", "i4"), ("NLINE", "i4"), ("RMSX", "f4"), ("RMSY", "f4")])
    fs["FIBER"] = ref.fibermin + np.arange(nfib)
    fs["STATUS"] = status
    fs["NLINE"] = np.where(none, 0, (keep_any & good).sum(axis=0))
    fs["RMSX"] = np.nan
    fs["RMSY"] = np.nan
    out.fiberstatus = fs
    out.spots = None
    out.meta["NPSF"] = (npsf, "arc PSFs offered")
    out.meta["NPSFUSED"] = (int(good.any(axis=1).sum()), "arc PSFs with at least one good fiber")
    out.meta["NBADFIB"] = (int(np.sum(status != 0)), "fibers bad in every input")
    return out
