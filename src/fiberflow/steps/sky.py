"""Sky model of one camera from its sky fibers, and sky subtraction.

Model of a flat-fielded frame (flux divided by the fiberflat): in sky fibers
``flux_f = a_f (R_f S)`` with ``S`` (nwave,) the deconvolved sky spectrum common to the
petal and ``a_f`` an optional per-fiber throughput correction (1 without it). ``S`` solves the
banded normal equations ``sum_f (a_f R_f)^T W_f (a_f R_f) S = sum_f (a_f R_f)^T W_f flux_f``
(:func:`fiberflow.linalg.solve_mean_spectrum`, with a tiny first-difference penalty so that
bins no fiber constrains stay finite); pixels deviating by more than ``nsig`` are clipped and
the fit repeats until nothing changes. Every fiber's sky is then ``a_f R_f S``.

Variance of the sky model:

- statistical: ``var(R_f S) = diag(R_f C R_f^T)`` with ``C = A^-1``; only the band of ``C``
  within the bandwidth of ``A`` is needed and it is computed exactly from the banded
  Cholesky factor (Takahashi's recurrence, :func:`banded_inverse_band`);
- model error (``model_error``): where the sky fibers' residuals exceed their variance
  significantly (bright sky lines: sub-pixel line shapes the deconvolved model cannot follow
  in every fiber), the excess is measured per wavelength as a fraction of the sky and added
  to every fiber's sky variance. Each bin's excess is taken against its own model flux (the
  errors of a bright line sit in its wings, a few percent of the line's peak but tens of
  percent of the wing) and the points the fit clipped count in it (they are the largest
  errors); without that, the [OI] 6302 A wings of the demo night left 4-6 sigma pulls in
  every target and redrock put false [OII] or [OIII] lines there.

Throughput corrections (``throughput_correction``): ``a_f`` of a fiber is the ratio of the
integrated flux of its sky lines to its model's, above a continuum measured without the lines
(:func:`throughput_corrections`); every sky fiber's enters the fit (normalised to median 1,
the level belongs to ``S``), another fiber's is applied only where it differs from 1 by more
than 3 sigma, its error (photon noise, or the scatter of its lines when the target's own
features make that larger) added to the sky variance.

Wavelength and line-width adjustments (``adjust_wavelength``, ``adjust_lsf``): a fiber whose
wavelength solution is off (its data are ``m(w + c)``) or whose line-spread function is wider
by ``ds`` (``m + s ds m''`` for a Gaussian LSF of width s) than its model ``m = R_f S`` says
has, to first order, the residual ``c m' + e m''`` on the sky lines (``e = s ds``). Each sky fiber's ``c`` and ``e`` are fitted as Legendre polynomials in wavelength
(degree ``adjust_deg``); across the petal they are smooth functions of the fiber (they come
from the traceshift / PSF model errors), so a weighted polynomial in fiber number (degree
``adjust_fiber_deg``, clipped) carries them from the sky fibers to every fiber, and every
fiber's sky becomes ``m + c m' + e m''``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation, label, median_filter, uniform_filter1d

from ..bitmasks import bad_fiberstatus, fibermask, specmask, usable_bins
from ..config import StepOptions
from ..linalg import banded_inverse_band, model_variance, solve_mean_spectrum
from ..models.resolution import apply_rows, diags_to_rows

BADSKY = specmask.mask("BADSKY")


@dataclass
class SkyOptions(StepOptions):
    """Options of :func:`fit_sky` (config section ``sky``)."""

    nsig_clipping: float = 4.0      #: clipping threshold [sigma]
    maxiter: int = 20
    smooth: float = 1e-4            #: first-difference penalty on S (relative to the local diagonal)
    local_smooth: bool = True       #: scale the penalty by the local normal-matrix diagonal (not the median)
    throughput_correction: bool = False  #: per-fiber sky throughput corrections from the sky lines (see throughput_corrections)
    model_error: bool = True        #: add the measured model error to the sky variance
    highpass_bins: int = 51         #: window [bins] of the continuum under the sky lines used for a_f
    excess_window: int = 5          #: bins over which the sky fibers' excess variance is averaged
    model_weights: bool = True      #: weight the fit by a variance model of the sky, not the data's ivar
    max_chi2dof: float = 1.5        #: median sky-fiber chi2/dof above this: SKYFLAG HIGHCHI2, BADPETALSKY
    adjust_wavelength: bool = False  #: per-fiber wavelength shifts of the sky model on bright lines
    adjust_lsf: bool = False        #: per-fiber line-width changes of the sky model on bright lines
    adjust_deg: int = 1             #: Legendre degree in wavelength of each fiber's adjustments
    adjust_fiber_deg: int = 2       #: polynomial degree across fibers (sky fibers -> every fiber)


def model_based_variance(var, model, good):
    """Variance of each fiber re-evaluated on a model: ``a_f + b_f * model`` with ``a_f`` (read
    noise) and ``b_f`` (electrons per unit flux) regressed from the data's variance.

    Parameters
    ----------
    var, model : (nfib, nwave)
    good : (nfib, nwave) bool, bins to regress on

    Returns
    -------
    (nfib, nwave), positive; the data's own variance for fibers where the regression fails.
    """
    out = np.array(var, float)
    for f in range(var.shape[0]):
        g = good[f]
        if g.sum() < 10:
            continue
        A = np.stack([np.ones(g.sum()), model[f, g]], axis=1)
        coef, *_ = np.linalg.lstsq(A, var[f, g], rcond=None)
        v = coef[0] + coef[1] * model[f]
        if coef[1] > 0 and np.all(v[g] > 0):
            out[f] = np.where(v > 0, v, var[f])
    return out


def highpass(x, nbins):
    """``x - median_filter(x)`` along the last axis (continuum removed)."""
    return x - median_filter(x, size=(1,) * (np.ndim(x) - 1) + (nbins,), mode="nearest")


def line_scatter_error(hd, hm, use, a):
    """Error of the ratio ``a = sum(hd) / sum(hm)`` from the scatter of its lines.

    A target's own spectrum (absorption features under a sky line, a continuum the high-pass
    leaves a little of) moves each line's ratio by more than the photon noise; the spread of
    the per-line residuals ``sum_line(hd - a hm)`` measures it.

    Parameters
    ----------
    hd, hm : (nwave,) high-passed data and model of one fiber
    use : (nwave,) bool, the bins of whole lines
    a : float

    Returns
    -------
    float (0 with fewer than 3 lines)
    """
    lab, n = label(use)
    if n < 3:
        return 0.0
    r = np.bincount(lab[use], weights=(hd - a * hm)[use], minlength=n + 1)[1:]
    return float(np.sqrt(np.sum(r**2) * n / (n - 1)) / np.sum(hm[use]))


def masked_running_mean(x, keep, nbins):
    """Running mean over ``nbins`` of the kept bins of each row (the running median where a
    window keeps nothing); x, keep (nspec, nwave) -> (nspec, nwave)."""
    num = uniform_filter1d(np.where(keep, x, 0.0), nbins, axis=1, mode="nearest")
    den = uniform_filter1d(keep.astype(float), nbins, axis=1, mode="nearest")
    ok = den > 0.5 / nbins
    out = num / np.where(ok, den, 1.0)
    if not ok.all():
        out = np.where(ok, out, median_filter(x, size=(1, nbins), mode="nearest"))
    return out


def throughput_corrections(flux, ivar, model, nbins=51, nsig=5.0, maxiter=5, nouter=3):
    """Per-fiber sky throughput corrections from the sky lines.

    ``a_f`` is the ratio of the integrated flux of the fiber's sky lines to its model's, over
    whole lines (peak +- 3 bins, so the ratio does not depend on the line-spread function),
    unweighted (the frame's ivar follows the data's own noise and would bias a weighted ratio).
    Lines are measured above a continuum: the model's lines (its high-pass) are removed from
    the data, and the running mean of what is left, over the bins away from the lines and not
    deviating from its running median by more than 4 sigma (object emission lines), is the
    continuum (sky and object), refined ``nouter`` times; the model's lines are measured the
    same way, so that a noise-free fiber gives exactly 1. A running median of the data
    themselves (as before) sat above their continuum by a fraction of the noise wherever lines
    shared its window and biased ``a`` by ~2%.

    Parameters
    ----------
    flux, ivar, model : (nspec, nwave)
        Flat-fielded flux, its ivar (0 = unused), and each fiber's sky model.

    Returns
    -------
    a, err : (nspec,)
        Ratio of the data's sky-line signal to the model's, and its 1-sigma error (inf where
        no sky line is measured; the larger of the photon noise and the scatter of the lines,
        which a target's own spectral features enlarge).
    """
    flux = np.asarray(flux, float)
    model = np.asarray(model, float)
    nspec, nwave = flux.shape
    lines = highpass(model, nbins)
    good_all = ivar > 0
    sig = 1.0 / np.sqrt(np.where(good_all, ivar, np.inf))
    s0 = np.array([np.median(sig[f, good_all[f]]) if good_all[f].any() else np.inf for f in range(nspec)])
    # whole lines: where the model's lines stand out, +- 3 bins
    on_line = binary_dilation(lines > 3.0 * s0[:, None], structure=np.ones((1, 7), bool))
    a = np.ones(nspec)
    err = np.full(nspec, np.inf)
    for _ in range(nouter):
        rest = flux - a[:, None] * lines
        med = median_filter(np.where(good_all, rest, model - lines), size=(1, nbins), mode="nearest")
        keep = good_all & ~on_line & (np.abs(rest - med) < 4.0 * sig)
        hm = model - masked_running_mean(model - lines, keep, nbins)
        hd = flux - masked_running_mean(rest, keep, nbins)
        for f in range(nspec):
            use = good_all[f] & on_line[f]
            for _ in range(maxiter):
                if use.sum() < 3:
                    break
                den = np.sum(hm[f, use])
                if den <= 0:
                    break
                a[f] = np.sum(hd[f, use]) / den
                err[f] = max(np.sqrt(np.sum(sig[f, use] ** 2)) / den, line_scatter_error(hd[f], hm[f], use, a[f]))
                res = (hd[f] - a[f] * hm[f]) * np.sqrt(ivar[f])
                bad = use & (np.abs(res) > nsig)
                if not bad.any():
                    break
                use &= ~bad
    return a, err


def model_derivatives(wave, model):
    """First and second derivatives of each fiber's sky model along wavelength.

    Parameters
    ----------
    wave : (nwave,)
    model : (nspec, nwave)

    Returns
    -------
    d1, d2 : (nspec, nwave)
    """
    d1 = np.gradient(model, wave, axis=1)
    return d1, np.gradient(d1, wave, axis=1)


def fit_adjustments(wave, resid, weight, d1, d2, deg=1, use=(True, True)):
    """Per-fiber wavelength / line-width adjustment coefficients from sky-fiber residuals.

    Parameters
    ----------
    wave : (nwave,)
    resid, weight : (nsky, nwave)
        Residual data - model of each sky fiber and its weight (0 = unused).
    d1, d2 : (nsky, nwave)
        First and second wavelength derivatives of their models (:func:`model_derivatives`).
    deg : int
        Legendre degree in wavelength.
    use : (bool, bool)
        Fit the wavelength (d1) and / or the line-width (d2) terms.

    Returns
    -------
    coef : (nsky, nterm)
        Coefficients: the d1 terms (Legendre 0..deg) first, then the d2 terms.
    err : (nsky, nterm)
        Their 1-sigma errors (inf where a fiber constrains nothing).
    """
    x = 2.0 * (wave - wave[0]) / max(wave[-1] - wave[0], 1e-12) - 1.0
    leg = np.polynomial.legendre.legvander(x, deg).T  # (deg + 1, nwave)
    blocks = [d for d, u in zip((d1, d2), use) if u]
    nsky = resid.shape[0]
    nterm = len(blocks) * (deg + 1)
    coef = np.zeros((nsky, nterm))
    err = np.full((nsky, nterm), np.inf)
    for f in range(nsky):
        basis = np.concatenate([b[f][None, :] * leg for b in blocks])  # (nterm, nwave)
        sw = np.sqrt(np.clip(weight[f], 0.0, None))
        A = (basis * sw[None, :]).T
        ata = A.T @ A
        if not np.all(np.isfinite(ata)) or np.linalg.cond(ata) > 1e12:
            continue
        cov = np.linalg.inv(ata)
        coef[f] = cov @ (A.T @ (resid[f] * sw))
        err[f] = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    return coef, err


def smooth_across_fibers(fibers, coef, err, allfibers, deg=2, nsig=4.0, maxiter=5):
    """Weighted, clipped polynomial in fiber number through each coefficient.

    Parameters
    ----------
    fibers : (nsky,) fiber index of each row of ``coef``
    coef, err : (nsky, nterm)
    allfibers : (nspec,) fibers to evaluate at
    deg : int (lowered to what the usable fibers allow)

    Returns
    -------
    (nspec, nterm)
    """
    out = np.zeros((len(allfibers), coef.shape[1]))
    span = max(float(np.max(allfibers) - np.min(allfibers)), 1.0)
    x0 = float(np.min(allfibers))
    for k in range(coef.shape[1]):
        ok = np.isfinite(err[:, k]) & (err[:, k] > 0)
        for _ in range(maxiter):
            n = int(ok.sum())
            if n == 0:
                break
            d = min(deg, n - 1)
            p = np.polynomial.polynomial.polyfit((fibers[ok] - x0) / span, coef[ok, k], d, w=1.0 / err[ok, k])
            pull = (coef[:, k] - np.polynomial.polynomial.polyval((fibers - x0) / span, p)) / np.where(ok, err[:, k], 1.0)
            bad = ok & (np.abs(pull) > nsig)
            if not bad.any():
                break
            ok &= ~(bad & (np.abs(pull) >= np.max(np.abs(pull[ok]))))
        if ok.any():
            out[:, k] = np.polynomial.polynomial.polyval((np.asarray(allfibers) - x0) / span, p)
    return out


def adjustment_model(wave, d1, d2, coef, deg=1, use=(True, True)):
    """``c(w) d1 + e(w) d2`` of every fiber from its coefficients (:func:`fit_adjustments` order).

    Returns
    -------
    (nspec, nwave)
    """
    x = 2.0 * (wave - wave[0]) / max(wave[-1] - wave[0], 1e-12) - 1.0
    leg = np.polynomial.legendre.legvander(x, deg)  # (nwave, deg + 1)
    out = np.zeros_like(d1)
    k = 0
    for d, u in zip((d1, d2), use):
        if u:
            out += (coef[:, k:k + deg + 1] @ leg.T) * d
            k += deg + 1
    return out


def fit_sky(wave, flux, ivar, mask, rdata, skyfibers, opts=None):
    """Sky model of every fiber of a flat-fielded frame.

    Parameters
    ----------
    wave : (nwave,)
    flux, ivar : (nspec, nwave)
        Frame divided by the fiberflat (electron/Angstrom) and its ivar.
    mask : (nspec, nwave) specmask bits (nonzero = not used in the fit)
    rdata : (nspec, ndiag, nwave) resolution diagonals
    skyfibers : (nsky,) int
        Indices of the usable sky fibers (at least 1).
    opts : SkyOptions

    Returns
    -------
    dict with ``sky`` (nspec, nwave) each fiber's sky, ``var`` its total variance,
    ``stat_var`` the statistical part, ``deconv`` (nwave,) S, ``throughput`` (nspec,) a_f,
    ``throughput_err`` (nspec,), ``model_frac`` (nwave,) fractional model error,
    ``clipped`` (nsky, nwave) bool, ``chi2dof`` (nsky,) residual chi2/dof of each sky fiber
    (statistical variance only; dof = bins minus the fiber's leverages), ``niter``,
    ``adjustments`` (nspec, nterm) the wavelength / line-width coefficients of every fiber
    (:func:`fit_adjustments` order; None when off), ``covered`` (nwave,) bins some sky fiber
    measured (elsewhere, e.g. a bad CCD row masked in every fiber, S is unconstrained).
    """
    opts = opts or SkyOptions()
    skyfibers = np.asarray(skyfibers, int)
    if skyfibers.size == 0:
        raise ValueError("no usable sky fiber")
    rows_all = diags_to_rows(np.asarray(rdata, float))
    rows = rows_all[skyfibers]
    d = np.asarray(flux, float)[skyfibers]
    w0 = np.where(usable_bins(np.asarray(mask)[skyfibers], np.asarray(ivar)[skyfibers], d),
                  np.asarray(ivar, float)[skyfibers], 0.0)
    d = np.where(w0 > 0, d, 0.0)
    w = w0.copy()
    scale = np.ones(skyfibers.size)
    reweighted = False
    for it in range(1, opts.maxiter + 1):
        S, ab = solve_mean_spectrum(rows, np.broadcast_to(scale[:, None], d.shape), w, d, opts.smooth,
                                    return_matrix=True, local_smooth=opts.local_smooth)
        model = scale[:, None] * apply_rows(rows, S)
        if opts.model_weights and not reweighted:
            # the frame's ivar follows the data's own noise (the pixel variance comes from the
            # neighbouring pixels the extraction also uses), which biases a weighted fit low;
            # weight by a variance model evaluated on the sky model instead
            mv = model_based_variance(np.where(w0 > 0, 1.0 / np.where(w0 > 0, w0, 1.0), 0.0), model, w0 > 0)
            w = np.where((w > 0) & (mv > 0), 1.0 / np.where(mv > 0, mv, 1.0), 0.0)
            w0 = np.where(w0 > 0, w, 0.0)
            reweighted = True
            continue
        if opts.throughput_correction and skyfibers.size > 1 and it <= 12:
            a, err = throughput_corrections(d, w, model / scale[:, None], opts.highpass_bins)
            # every sky fiber's own (sky lines only, no object): the overall level belongs to S
            new = np.where(np.isfinite(err), a, 1.0)
            new /= np.median(new)
            if np.max(np.abs(new - scale)) > 1e-4:
                scale = new
                continue
        pull = (d - model) * np.sqrt(w)
        bad = (np.abs(pull) > opts.nsig_clipping) & (w > 0)
        if not bad.any():
            break
        # clip the worst offenders first: a bright residual drags its neighbours' pulls up
        w[bad & (np.abs(pull) > max(opts.nsig_clipping, 0.5 * np.max(np.abs(pull))))] = 0.0
    model_sky = apply_rows(rows_all, S)
    cb = banded_inverse_band(ab)
    stat_var = model_variance(rows_all, cb)
    # throughput corrections of every fiber (the sky fibers' from the fit)
    a_all = np.ones(flux.shape[0])
    e_all = np.full(flux.shape[0], np.inf)
    if opts.throughput_correction:
        fl = np.asarray(flux, float)
        iv = np.where(usable_bins(mask, ivar, fl), np.asarray(ivar, float), 0.0)
        a_all, e_all = throughput_corrections(np.where(iv > 0, fl, 0.0), iv, model_sky, opts.highpass_bins)
        applied = np.abs(a_all - 1.0) > 3.0 * e_all
        a_all = np.where(applied, a_all, 1.0)
        a_all[skyfibers] = scale
        applied[skyfibers] = False
    use = (bool(opts.adjust_wavelength), bool(opts.adjust_lsf))
    adj_coef = None
    if any(use) and skyfibers.size >= 2:
        d1, d2 = model_derivatives(np.asarray(wave, float), model_sky)
        resid0 = d - a_all[skyfibers][:, None] * model_sky[skyfibers]
        coef, cerr = fit_adjustments(np.asarray(wave, float), resid0, w, d1[skyfibers], d2[skyfibers],
                                     opts.adjust_deg, use)
        adj_coef = smooth_across_fibers(skyfibers, coef, cerr, np.arange(flux.shape[0]), opts.adjust_fiber_deg)
        model_sky = model_sky + adjustment_model(np.asarray(wave, float), d1, d2, adj_coef, opts.adjust_deg, use)
    sky = a_all[:, None] * model_sky
    stat_var = a_all[:, None] ** 2 * stat_var
    if opts.throughput_correction:
        # a target's correction is uncertain by its error: that much of its sky, fully correlated
        stat_var = stat_var + np.where(applied, np.where(np.isfinite(e_all), e_all, 0.0), 0.0)[:, None] ** 2 * model_sky**2
    # residuals of the sky fibers with their statistical variance
    # residuals of the fitted sky fibers: their expected variance is 1/w - var(model) (the fit
    # follows each point by its leverage w * var(model)); the effective dof of a fiber is
    # sum(1 - leverage)
    resid = d - sky[skyfibers]
    good = w > 0
    lev = np.clip(np.where(good, w * stat_var[skyfibers], 0.0), 0.0, 0.999)
    vtot = np.where(good, (1.0 - lev) / np.where(good, w, 1.0), 0.0)
    ndof = np.maximum(np.sum(np.where(good, 1.0 - lev, 0.0), axis=1), 1.0)
    chi2dof = np.sum(np.where(good, w * resid**2, 0.0), axis=1) / ndof
    frac = np.zeros(flux.shape[1])
    if opts.model_error and skyfibers.size >= 2:
        # the clipped points are the model's worst errors: they count in its error
        seen = w0 > 0
        vall = np.where(good, vtot, np.where(seen, 1.0 / np.where(seen, w0, 1.0), 0.0))
        frac = model_error_fraction(resid, vall, seen, S_model=sky[skyfibers], window=opts.excess_window)
    var = stat_var + (frac[None, :] * sky) ** 2
    return {"sky": sky, "var": var, "stat_var": stat_var, "deconv": S, "throughput": a_all,
            "throughput_err": e_all, "model_frac": frac, "clipped": (w0 > 0) & (w == 0), "chi2dof": chi2dof,
            "niter": it, "adjustments": adj_coef, "covered": (w > 0).any(axis=0)}


def model_error_fraction(resid, var, good, S_model, window=5, nsig=3.0, lone_chi2=16.0):
    """Fractional sky-model error per wavelength from the sky fibers' excess residual variance.

    An error of the model is shared by the sky fibers (a line-spread-function or wavelength
    mismatch shows in all of them); a defect of one fiber (a cosmic ray the masks missed, a bad
    column) is not, and must not raise every fiber's sky variance around it. So each point's
    chi2 counts at most ``max(lone_chi2, 4 x the median chi2 of its bin over the sky fibers)``:
    a lone outlier adds no more than a 4-sigma point, while a mismatch that lifts the whole
    bin keeps its full size.

    Parameters
    ----------
    resid, var : (nsky, nwave) residuals and their expected variance
    good : (nsky, nwave) bool
    S_model : (nsky, nwave) sky model of the sky fibers
    window : bins over which the excess is averaged
    nsig : an excess is kept only where the window's chi2 exceeds its expectation by nsig sigma
    lone_chi2 : the most one point's chi2 counts unless its bin's median chi2 is high

    Returns
    -------
    (nwave,) fractional error (0 where the model is statistically good)
    """
    chi = np.where(good, resid**2 / np.where(good, var, 1.0), 0.0)
    med = np.nanmedian(np.where(good, chi, np.nan), axis=0) if good.any() else np.zeros(chi.shape[1])
    good = good & (chi <= np.maximum(lone_chi2, 4.0 * np.nan_to_num(med))[None, :])
    g = good.astype(float)
    chi = np.where(good, chi, 0.0)
    r2 = np.where(good, resid**2, 0.0)
    n = uniform_filter1d(g.sum(axis=0), window, mode="nearest") * window
    c = uniform_filter1d(chi.sum(axis=0), window, mode="nearest") * window
    excess = uniform_filter1d(np.sum(np.where(good, r2 - var, 0.0), axis=0), window, mode="nearest") * window
    s2 = uniform_filter1d(np.sum(np.where(good, S_model**2, 0.0), axis=0), window, mode="nearest") * window
    significant = (n > 0) & (c - n > nsig * np.sqrt(2.0 * np.maximum(n, 1.0)))
    # the excess of each bin against its own model flux: model errors on a bright line sit in
    # its wings (line-spread-function mismatch), where a fraction of the window's summed flux,
    # dominated by the line's peak, would spread almost nothing
    nb = g.sum(axis=0)
    e = np.maximum(np.sum(np.where(good, r2 - var, 0.0), axis=0), 0.0) / np.maximum(nb, 1.0)
    e = np.maximum(e, uniform_filter1d(e, window, mode="nearest"))
    s2b = np.sum(np.where(good, S_model**2, 0.0), axis=0) / np.maximum(nb, 1.0)
    frac2 = np.where(significant & (s2 > 0), np.maximum(excess, 0.0) / np.where(s2 > 0, s2, 1.0), 0.0)
    frac2 = np.maximum(frac2, np.where(significant & (s2b > 0), e / np.where(s2b > 0, s2b, 1.0), 0.0))
    return np.sqrt(frac2)


def apply_fiberflat(flux, ivar, mask, ff, ffivar, ffmask):
    """Divide a frame by a fiberflat with error propagation.

    Parameters
    ----------
    flux, ivar, mask : (nspec, nwave)
    ff, ffivar, ffmask : (nspec, nwave)

    Returns
    -------
    flux, ivar, mask : (nspec, nwave)
        ``flux / ff``; ``var = var_flux / ff^2 + flux^2 var_ff / ff^4``; masks OR-ed; ivar 0
        where the flat is not positive or has no information.
    """
    ok = (ff > 0) & (ffivar > 0)
    f = np.where(ok, ff, 1.0)
    out = np.where(ok, flux / f, 0.0)
    var = np.where(ivar > 0, 1.0 / np.where(ivar > 0, ivar, 1.0), np.inf) / f**2 + \
        out**2 / np.where(ok, ffivar * f**2, 1.0)
    oiv = np.where(ok & (ivar > 0), 1.0 / var, 0.0)
    m = np.asarray(mask, np.int32) | np.asarray(ffmask, np.int32)
    m[~ok] |= specmask.mask("BADFIBERFLAT")
    return out, oiv, m


def subtract_sky(flux, ivar, mask, sky, skyvar, skymask=None):
    """Sky-subtracted flux and ivar (``var = var_flux + var_sky``); masks OR-ed.

    Parameters
    ----------
    flux, ivar, mask, sky, skyvar : (nspec, nwave)
    skymask : (nspec, nwave), optional
    """
    out = flux - sky
    ok = ivar > 0
    var = np.where(ok, 1.0 / np.where(ok, ivar, 1.0), 0.0) + skyvar
    oiv = np.where(ok & (var > 0), 1.0 / np.where(var > 0, var, 1.0), 0.0)
    m = np.asarray(mask, np.int32).copy()
    if skymask is not None:
        m |= np.asarray(skymask, np.int32)
    return out, oiv, m


def sky_fibers(fibermap, mask):
    """Indices of the usable sky fibers: OBJTYPE SKY, good FIBERSTATUS, valid on most bins.

    Parameters
    ----------
    fibermap : structured (nspec,) or None
    mask : (nspec, nwave) specmask of the flat-fielded frame
    """
    if fibermap is None or "OBJTYPE" not in (fibermap.dtype.names or ()):
        return np.zeros(0, int)
    objtype = np.char.strip(np.asarray(fibermap["OBJTYPE"]).astype(str))
    ok = (objtype == "SKY") & ~bad_fiberstatus(fibermap, mask.shape[0])
    ok &= np.mean(~usable_bins(mask, np.ones(mask.shape)), axis=1) < 0.5
    return np.flatnonzero(ok)


def _ivar(var):
    return np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), 0.0)


def sky_step(wave, flux, ivar, mask, resolution, fibermap, fiberflat, opts=None):
    """The sky step of one camera: fiberflat, sky model from the sky fibers, sky subtraction, and
    the petal's sky status.

    A camera without usable sky fibers is not an error: its sky is zero with BADSKY everywhere,
    the sframe keeps the unsubtracted flux masked BADSKY, FIBERSTATUS gets BADPETALSKY and
    SKYFLAG is NOSKYFIB. A median sky-fiber chi2/dof above ``opts.max_chi2dof`` sets SKYFLAG
    HIGHCHI2 (the cframe then gets BADPETALSKY).

    Parameters
    ----------
    wave : (nwave,)
    flux, ivar, mask : (nspec, nwave) extracted frame [electron/Angstrom]
    resolution : (nspec, ndiag, nwave)
    fibermap : structured (nspec,) or None
    fiberflat : tuple of (nspec, nwave) arrays
        Fiberflat, its ivar and its mask.
    opts : SkyOptions

    Returns
    -------
    dict
        ``sky``, ``sky_ivar``, ``sky_mask``, ``stat_ivar`` (nspec, nwave), ``throughput``
        (nspec,), ``sframe`` (flux, ivar, mask), ``fibermap`` (a copy, BADPETALSKY when there
        is no sky), ``nskyfib``, ``cards`` (header cards of the sky model and the sframe),
        ``warnings`` (list of str).

    Raises
    ------
    ValueError
        The sky fit failed.
    """
    opts = opts or SkyOptions()
    ff, ffivar, ffmask = fiberflat
    flux, ivar, mask = apply_fiberflat(np.asarray(flux, float), np.asarray(ivar, float), mask,
                                       np.asarray(ff, float), np.asarray(ffivar, float), ffmask)
    skyf = sky_fibers(fibermap, mask)
    fm = None if fibermap is None else fibermap.copy()
    cards = {"NSKYFIB": (int(skyf.size), "sky fibers used")}
    warnings = []
    out = {"nskyfib": int(skyf.size), "cards": cards, "warnings": warnings, "fibermap": fm}
    if skyf.size == 0:
        msg = "no usable sky fiber (OBJTYPE SKY with good FIBERSTATUS): sky not subtracted, BADSKY set"
        warnings.append(msg)
        zero = np.zeros_like(flux)
        smask = np.full(flux.shape, BADSKY, np.int32)
        cards["SKYFLAG"] = ("NOSKYFIB", msg[:60])
        cards["SKYCHI2"] = (0.0, "median residual chi2/dof of the sky fibers")
        if fm is not None and "FIBERSTATUS" in (fm.dtype.names or ()):
            fm["FIBERSTATUS"] |= fibermask.mask("BADPETALSKY")
        out.update(sky=zero, sky_ivar=zero.copy(), sky_mask=smask, stat_ivar=zero.copy(),
                   throughput=np.ones(flux.shape[0]), sframe=(flux, ivar, mask | smask))
        return out
    try:
        res = fit_sky(wave, flux, ivar, mask, resolution, skyf, opts)
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise ValueError(f"sky fit failed: {exc}") from exc
    sky, var = res["sky"], res["var"]
    # no sky fiber measured a bin (a bad CCD row masked in every fiber): the model is
    # unconstrained there and flagged
    smask = np.where((var > 0) & res["covered"][None, :], 0, BADSKY).astype(np.int32)
    chi2 = float(np.median(res["chi2dof"]))
    cards["SKYCHI2"] = (chi2, "median residual chi2/dof of the sky fibers")
    if chi2 > opts.max_chi2dof:
        cards["SKYFLAG"] = ("HIGHCHI2", f"sky-fiber chi2/dof above sky.max_chi2dof {opts.max_chi2dof:g}")
        warnings.append(f"median sky-fiber chi2/dof {chi2:.2f} > sky.max_chi2dof {opts.max_chi2dof:g}: "
                        "SKYFLAG HIGHCHI2, the cframe gets BADPETALSKY")
    else:
        cards["SKYFLAG"] = ("OK", "sky model status")
    thr = res["throughput"]
    cards["SKYNITER"] = (int(res["niter"]), "sky fit iterations")
    cards["SKYNCLIP"] = (int(res["clipped"].sum()), "sky-fiber bins clipped")
    cards["SKYMERR"] = (float(np.max(res["model_frac"])), "largest fractional model error added")
    cards["THRUCORR"] = (int(np.sum(thr != 1.0)), "fibers with a throughput correction applied")
    if res["adjustments"] is not None:
        terms = "+".join(t for t, on in (("wave", opts.adjust_wavelength), ("lsf", opts.adjust_lsf)) if on)
        cards["SKYADJ"] = (terms, "per-fiber adjustments of the sky model on lines")
        if opts.adjust_wavelength:
            cards["SKYDWMAX"] = (float(np.max(np.abs(res["adjustments"][:, 0]))),
                                 "largest per-fiber wavelength shift of the sky [A]")
    out.update(sky=sky, sky_ivar=_ivar(var), sky_mask=smask, stat_ivar=_ivar(res["stat_var"]), throughput=thr,
               sframe=subtract_sky(flux, ivar, mask, sky, var, smask))
    return out
