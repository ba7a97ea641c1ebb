"""Fiber flat field from an extracted continuum-lamp frame, and the nightly average.

Model of the flat frame (Bolton & Schlegel's resolution matrices make it exact for the
extraction's output): ``flux_f = T_f * (R_f M)``, with

- ``M`` (nwave,) the deconvolved mean lamp spectrum, common to all fibers, and
- ``T_f`` (nwave,) each fiber's throughput relative to the others, smooth in wavelength
  (least-squares cubic B-spline with knots every ``knot_step`` Angstrom).

``M`` is solved from the banded normal equations ``sum_f (T_f R_f)^T W_f (T_f R_f) M =
sum_f (T_f R_f)^T W_f flux_f`` (bandwidth ``2 * (ndiag // 2)``, scipy ``solveh_banded``), then
``T_f`` is refitted to ``flux_f / (R_f M)``; pixels deviating by more than ``nsig`` are clipped
and the two steps alternate until nothing changes. The fiberflat is then the ratio at native
resolution, ``flux_f / (R_f M)``, normalised so that the smooth throughputs of good fibers
have median 1 at each wavelength,
with ``ivar = 1 / (1 / (W (R M)^2) + (floor * flat)^2)`` (a systematic floor).

Masks (specmask): LOWFLAT where the flat is below ``lowflat``; BADFIBERFLAT for fibers whose
smooth throughput is below ``deadfiber`` (dead/broken fibers) or whose residual chi2/dof
against the model exceeds ``max_chi2dof``, or where the flat has no information (ivar 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import make_lsq_spline

from ..bitmasks import specmask, usable_bins
from ..config import StepOptions
from ..linalg import solve_mean_spectrum
from ..models.resolution import apply_rows, diags_to_rows

LOWFLAT = specmask.mask("LOWFLAT")
BADFIBERFLAT = specmask.mask("BADFIBERFLAT")


@dataclass
class FiberflatOptions(StepOptions):
    """Options of :func:`compute_fiberflat` (config section ``fiberflat``)."""

    knot_step: float = 60.0     #: Angstrom between spline knots of the smooth throughputs
    nsig: float = 5.0           #: clipping threshold [sigma]
    maxiter: int = 50
    tol: float = 1e-5           #: convergence: largest relative change of a throughput shape
    smooth: float = 0.01        #: first-difference penalty on the mean spectrum (see solve_mean_spectrum)
    floor: float = 0.0005       #: systematic fractional error added to the flat's variance
    lowflat: float = 0.5        #: LOWFLAT below this
    deadfiber: float = 0.1      #: fibers with median throughput below this are BADFIBERFLAT
    max_chi2dof: float = 4.0    #: fibers with a worse residual chi2/dof are BADFIBERFLAT


def smooth_throughput(wave, ratio, weight, knot_step):
    """Least-squares cubic B-spline of ``ratio`` (nwave,) with knots every ``knot_step`` A.

    Falls back to the weighted mean where a fiber has too few good points for the spline.
    """
    good = weight > 0
    mean = np.sum(ratio * weight) / np.sum(weight) if weight.sum() > 0 else 0.0
    if good.sum() < 8:
        return np.full(wave.size, mean)
    x = wave[good]
    w0, w1 = x[0], x[-1]
    nk = max(int((w1 - w0) / knot_step), 1)
    inner = np.linspace(w0, w1, nk + 1)[1:-1]
    # Schoenberg-Whitney: drop knots around gaps in the data (masked stretches) so that
    # every knot interval holds data; otherwise the spline is singular there
    counts = np.histogram(x, np.concatenate([[w0], inner, [w1 + 1e-9]]))[0]
    while inner.size and counts.min() < 4:
        k = int(np.argmin(counts))
        inner = np.delete(inner, min(k, inner.size - 1))
        counts = np.histogram(x, np.concatenate([[w0], inner, [w1 + 1e-9]]))[0]
    t = np.concatenate([[w0] * 4, inner, [w1] * 4])
    try:
        spl = make_lsq_spline(x, ratio[good], t, k=3, w=np.sqrt(weight[good]))
    except (ValueError, np.linalg.LinAlgError):
        return np.full(wave.size, mean)
    out = spl(np.clip(wave, w0, w1))
    return out if np.all(np.isfinite(out)) else np.full(wave.size, mean)


def compute_fiberflat(wave, flux, ivar, mask, rdata, opts=None, exclude=None):
    """Fiberflat of one camera from an extracted flat frame.

    Parameters
    ----------
    wave : (nwave,)
    flux, ivar : (nspec, nwave) [electron/Angstrom]
    mask : (nspec, nwave) specmask bits (nonzero = not used)
    rdata : (nspec, ndiag, nwave) resolution diagonals
    opts : FiberflatOptions
    exclude : (nspec,) bool, optional
        Fibers kept out of the mean spectrum (e.g. bad FIBERSTATUS); they still get a flat.

    Returns
    -------
    dict with ``fiberflat``, ``ivar`` (nspec, nwave), ``mask`` (int32), ``meanspec`` (nwave,),
    ``smooth`` (nspec, nwave) the smooth throughput model, ``chi2dof`` (nspec,), ``niter``,
    ``nclipped``.
    """
    opts = opts or FiberflatOptions()
    flux = np.asarray(flux, float)
    nspec, nwave = flux.shape
    rows = diags_to_rows(np.asarray(rdata, float))
    w0 = np.where(usable_bins(mask, ivar, flux), np.asarray(ivar, float), 0.0)
    flux = np.where(w0 > 0, flux, 0.0)
    use = np.ones(nspec, bool) if exclude is None else ~np.asarray(exclude, bool)
    # start: per-fiber median level relative to the typical fiber
    med = np.array([np.median(flux[f][w0[f] > 0]) if np.any(w0[f] > 0) else 0.0 for f in range(nspec)])
    ref = np.median(med[use & (med > 0)]) if np.any(use & (med > 0)) else 1.0
    T = np.repeat((med / ref)[:, None], nwave, axis=1)
    dead = med < opts.deadfiber * ref
    use &= ~dead
    if not use.any():
        raise ValueError("no fiber is usable for the mean lamp spectrum (every fiber excluded by FIBERSTATUS, "
                         "dead or without valid bins)")
    w = w0.copy()
    nclip = 0
    for it in range(1, opts.maxiter + 1):
        wm = np.where(use[:, None], w, 0.0)
        M = solve_mean_spectrum(rows, T, wm, flux, opts.smooth)
        C = apply_rows(rows, M)
        ratio = np.where(np.abs(C) > 0, flux / np.where(np.abs(C) > 0, C, 1.0), 0.0)
        wr = w * C**2
        T_old = T.copy()
        for f in np.flatnonzero(~dead):
            T[f] = smooth_throughput(wave, ratio[f], wr[f], opts.knot_step)
        # T and M are degenerate in a common smooth factor: follow the change of shape only
        g = np.median(T[use] / np.where(T_old[use] != 0, T_old[use], 1.0), axis=0)
        change = np.max(np.abs(T[~dead] / np.where(T_old[~dead] != 0, T_old[~dead], 1.0) - g[None, :])) \
            if np.any(~dead) else 0.0
        model = T * C
        pull = (flux - model) * np.sqrt(w)
        newclip = (np.abs(pull) > opts.nsig) & (w > 0)
        nclip += int(newclip.sum())
        w[newclip] = 0.0
        if not newclip.any() and change < opts.tol:
            break
    C = apply_rows(rows, M)
    resid = (flux - T * C) * np.sqrt(w)
    ok = (w0 > 0) & (C > 0)
    # clipped bins (cosmic rays, bad columns) take the smooth throughput
    ff = np.where(ok & (w > 0), flux / np.where(ok, C, 1.0), T)
    # normalise: the smooth throughputs of good fibers have median 1 at each wavelength (the
    # median of the noisy ratios would not do: with a 3% spread of throughputs and ~0.2%
    # noise it is the noisy value of whichever fiber sits in the middle)
    good_f = use & ~dead
    fnorm = np.median(T[good_f], axis=0) if good_f.any() else np.ones(nwave)
    fnorm = np.where(np.isfinite(fnorm) & (fnorm > 0), fnorm, 1.0)
    ff /= fnorm[None, :]
    T /= fnorm[None, :]
    M = M * fnorm  # fnorm is smooth: (R M) fnorm ~ R (M fnorm)
    var = np.where(ok, 1.0 / np.where(ok, w0 * (C * fnorm[None, :]) ** 2, 1.0), np.inf) + (opts.floor * ff) ** 2
    fivar = np.where(ok, 1.0 / var, 0.0)
    ndof = np.maximum((w > 0).sum(axis=1) - max(int((wave[-1] - wave[0]) / opts.knot_step) + 3, 1), 1)
    chi2dof = np.sum(resid**2, axis=1) / ndof
    out_mask = np.zeros((nspec, nwave), np.int32)
    out_mask[ff < opts.lowflat] |= LOWFLAT
    badfiber = dead | (chi2dof > opts.max_chi2dof)
    out_mask[badfiber] |= BADFIBERFLAT
    out_mask[fivar == 0] |= BADFIBERFLAT
    return {"fiberflat": ff, "ivar": fivar, "mask": out_mask, "meanspec": M, "smooth": T,
            "chi2dof": chi2dof, "niter": it, "nclipped": nclip}


def average_fiberflats(flats, ivars, masks, nsig=4.0):
    """Nightly fiberflat: inverse-variance weighted mean over flats with outlier rejection.

    Parameters
    ----------
    flats, ivars, masks : (nflat, nspec, nwave)

    Returns
    -------
    fiberflat, ivar, mask : (nspec, nwave)
        Masks are OR-ed over the flats that entered; bins where no flat is good get the
        median flat, ivar 0 and BADFIBERFLAT.
    """
    flats = np.asarray(flats, float)
    w = np.where(np.asarray(masks) == 0, np.asarray(ivars, float), 0.0)
    med = np.median(flats, axis=0)
    if flats.shape[0] >= 3:
        mad = 1.4826 * np.median(np.abs(flats - med[None]), axis=0)
        sig = np.maximum(mad, 1.0 / np.sqrt(np.where(w > 0, w, np.inf)).min(axis=0, initial=np.inf))
        w = np.where(np.abs(flats - med[None]) > nsig * sig[None], 0.0, w)
    ws = w.sum(axis=0)
    ok = ws > 0
    ff = np.where(ok, np.sum(w * flats, axis=0) / np.where(ok, ws, 1.0), med)
    mask = np.bitwise_or.reduce(np.where(w > 0, np.asarray(masks), 0), axis=0).astype(np.int32)
    mask[~ok] |= BADFIBERFLAT
    return ff, np.where(ok, ws, 0.0), mask
