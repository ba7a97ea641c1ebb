"""Flux calibration of one camera from its standard stars, and its application (cframe).

Model of a standard star's flat-fielded, sky-subtracted spectrum (electron/Angstrom):
``d_s = a_s R_s (C * m_s)`` with ``m_s`` the star's model (1e-17 erg/s/cm2/A, bin-averaged on
the frame grid, from :mod:`fiberflow.steps.stdstars`), ``C`` (nwave,) the deconvolved calibration
vector common to the petal (electron/A per 1e-17 erg/s/cm2/A) and ``a_s`` a per-star scale
(fiber positioning, photometry errors) with median 1. ``C`` solves the banded normal equations
of the effective matrices ``R_s diag(m_s)`` (:func:`fiberflow.linalg.banded_normal_equations`)
with a curvature (second-difference) penalty that is strong outside telluric bands (the
instrument's throughput is smooth: the penalty averages the stars' noise over tens of bins)
and weak inside them (C follows the sharp atmospheric absorption); the per-star scales are refitted, stars whose scale is
an outlier (> ``nsig_star`` robust sigma from the median) are dropped, pixels deviating by
more than ``nsig`` are clipped, and the fit repeats until nothing changes.

Every fiber's calibration is ``R_f C`` (the calibration seen at the fiber's resolution). A
calibrated spectrum is ``sframe / (R_f C)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import solveh_banded

from ..bitmasks import specmask, usable_bins
from ..config import StepOptions
from ..linalg import banded_inverse_band, banded_normal_equations, model_variance
from ..models.resolution import apply_rows


@dataclass
class FluxCalibOptions(StepOptions):
    """Options of :func:`fit_calibration` (config section ``fluxcalib``)."""

    min_stdstars: int = 3       #: fewer good standards -> average calibration, flagged
    nsig: float = 5.0           #: pixel clipping [sigma]
    nsig_star: float = 4.0      #: star rejection on the per-star scale [robust sigma]
    max_scale_dev: float = 0.2  #: stars whose scale deviates more than this from 1 are rejected
    smooth: float = 1e5         #: curvature penalty on C outside telluric bands (relative to the median diagonal)
    smooth_telluric: float = 1e-3  #: curvature penalty inside telluric bands (C follows the absorption)
    maxiter: int = 20
    max_star_rms: float = 0.1   #: rms of the standards' scales above this sets BADPETALFLUXCAL (petal-level)


def curvature_penalty(ab, lam):
    """Add ``sum_k lam_k (C_k-1 - 2 C_k + C_k+1)^2`` to a banded normal matrix (in place).

    Parameters
    ----------
    ab : (u + 1, n) upper banded form, u >= 2
    lam : (n,) penalty weight of the second difference centred on each bin (ends ignored)
    """
    u = ab.shape[0] - 1
    n = ab.shape[1]
    stencil = np.array([1.0, -2.0, 1.0])
    for k in range(1, n - 1):
        if lam[k] == 0:
            continue
        for a in range(3):
            for b in range(a, 3):
                i, j = k - 1 + a, k - 1 + b
                ab[u + i - j, j] += lam[k] * stencil[a] * stencil[b]


def _solve(eff, w, d, smooth, smooth_telluric=0.0, telluric=None):
    ab, b = banded_normal_equations(eff, w, d)
    u = ab.shape[0] - 1
    s = np.median(ab[u][ab[u] > 0]) if np.any(ab[u] > 0) else 1.0
    ab[u] += 1e-10 * s
    n = ab.shape[1]
    tell = np.zeros(n, bool) if telluric is None else telluric
    lam = np.where(tell, smooth_telluric, smooth) * s
    if u >= 2 and np.any(lam > 0):
        curvature_penalty(ab, lam)
    return solveh_banded(ab, b, lower=False, check_finite=False), ab


def fit_calibration(flux, ivar, mask, rows, models, opts=None, telluric=None):
    """Deconvolved calibration vector of one camera.

    Parameters
    ----------
    flux, ivar, mask : (nstd, nwave)
        The standards' sframe spectra (electron/Angstrom) and their ivar and mask.
    rows : (nstd, nwave, ndiag) their resolution rows (offsets -h..+h)
    models : (nstd, nwave) their models bin-averaged on the frame grid [1e-17 erg/s/cm2/A]
    opts : FluxCalibOptions
    telluric : (nwave,) bool, optional
        Bins inside telluric bands (penalised with ``smooth_telluric`` instead of ``smooth``).

    Returns
    -------
    dict with ``calib`` (nwave,) C, ``var`` (nwave,) its statistical variance (diagonal of the
    inverse normal matrix), ``scale`` (nstd,) a_s, ``used`` (nstd,) bool, ``chi2dof`` (nstd,),
    ``niter``, ``nclipped``, ``cov_band`` band of the covariance of C.
    """
    opts = opts or FluxCalibOptions()
    nstd, nwave = flux.shape
    ndiag = rows.shape[2]
    h = ndiag // 2
    mp = np.concatenate([np.zeros((nstd, h)), models, np.zeros((nstd, h))], axis=1)
    idx = np.arange(nwave)[:, None] + np.arange(ndiag)[None, :]
    eff0 = rows * mp[:, idx]  # R_s diag(m_s) rows
    w0 = np.where(usable_bins(mask, ivar, flux), ivar, 0.0)
    d = np.where(w0 > 0, flux, 0.0)
    w = w0.copy()
    a = np.ones(nstd)
    used = np.any(w > 0, axis=1)
    nclip = 0
    for it in range(1, opts.maxiter + 1):
        wm = np.where(used[:, None], w, 0.0)
        C, ab = _solve(eff0 * a[:, None, None], wm, d, opts.smooth, opts.smooth_telluric, telluric)
        unit = np.einsum("fkd,fkd->fk", eff0, np.concatenate([np.zeros(h), C, np.zeros(h)])[idx][None])
        num = np.sum(w * d * unit, axis=1)
        den = np.sum(w * unit**2, axis=1)
        a_new = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
        med = np.median(a_new[used]) if used.any() else 1.0
        a_new = a_new / med
        C = C * med
        mad = 1.4826 * np.median(np.abs(a_new[used] - 1.0)) if used.sum() >= 3 else np.inf
        bad_star = used & ((np.abs(a_new - 1.0) > opts.max_scale_dev) |
                           (np.abs(a_new - 1.0) > opts.nsig_star * max(mad, 0.01)))
        model = a_new[:, None] * unit * med
        pull = (d - model) * np.sqrt(w)
        bad_pix = (np.abs(pull) > opts.nsig) & (w > 0) & used[:, None]
        changed = np.max(np.abs(a_new - a)) > 1e-5
        a = a_new
        if bad_star.any() and used.sum() - bad_star.sum() >= 1:
            used &= ~bad_star
            continue
        if bad_pix.any():
            # the worst pixels first: one bad region drags its neighbours' pulls
            worst = bad_pix & (np.abs(pull) > max(opts.nsig, 0.5 * np.max(np.abs(pull[bad_pix]))))
            w[worst] = 0.0
            nclip += int(worst.sum())
            continue
        if not changed:
            break
    wm = np.where(used[:, None], w, 0.0)
    C, ab = _solve(eff0 * a[:, None, None], wm, d, opts.smooth, opts.smooth_telluric, telluric)
    cb = banded_inverse_band(ab)
    resid = (d - a[:, None] * np.einsum("fkd,fkd->fk", eff0, np.concatenate([np.zeros(h), C, np.zeros(h)])[idx][None]))
    ndof = np.maximum((w > 0).sum(axis=1) - 1, 1)
    chi2dof = np.sum(w * resid**2, axis=1) / ndof
    return {"calib": C, "var": cb[0], "cov_band": cb, "scale": a, "used": used, "chi2dof": chi2dof,
            "niter": it, "nclipped": nclip}


def fiber_calibration(rows, calib, cov_band=None):
    """Each fiber's calibration ``R_f C`` (nspec, nwave) and its variance (or None)."""
    cal = apply_rows(rows, calib)
    var = model_variance(rows, cov_band) if cov_band is not None else None
    return cal, var


def apply_calibration(flux, ivar, mask, calib, calib_ivar, calib_mask):
    """Calibrated flux ``flux / calib`` with ``var = var_flux / c^2 + flux^2 var_c / c^4``.

    Parameters
    ----------
    flux, ivar, mask, calib, calib_ivar, calib_mask : (nspec, nwave)

    Returns
    -------
    flux, ivar, mask : (nspec, nwave); ivar 0 and NODATA where the calibration is not positive
    or has no information (calib_ivar 0).
    """
    ok = (calib > 0) & (calib_ivar > 0)
    c = np.where(ok, calib, 1.0)
    out = np.where(ok, flux / c, 0.0)
    var = np.where(ivar > 0, 1.0 / np.where(ivar > 0, ivar, 1.0), np.inf) / c**2
    var = var + np.where(ok, out**2 / (np.where(ok, calib_ivar, 1.0) * c**2), 0.0)
    oiv = np.where(ok & (ivar > 0), 1.0 / var, 0.0)
    m = np.asarray(mask, np.int32) | np.asarray(calib_mask, np.int32)
    m[~ok] |= specmask.mask("NODATA")
    return out, oiv, m
