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


def fluxcalib_step(wave, flux, ivar, mask, rows, fibers, exptime, stars, average=None, opts=None):
    """The flux calibration of one camera of an exposure, with its fallback and flags.

    With at least ``opts.min_stdstars`` usable standards the calibration comes from this
    exposure's standards (FLUXFLAG OK; a scatter of the per-star scales above
    ``opts.max_star_rms`` gives the petal BADPETALFLUXCAL). With fewer, the average calibration
    (per second) x EXPTIME with a 5% systematic error (FLUXFLAG AVERAGE), else no calibration
    (FLUXFLAG NOCALIB, BADFIBER everywhere); both give the petal BADPETALSTDSTAR.

    Parameters
    ----------
    wave : (nwave,)
    flux, ivar, mask : (nspec, nwave) sky-subtracted frame
    rows : (nspec, nwave, ndiag) resolution rows
    fibers : (nspec,) FIBER of each row
    exptime : float
    stars : tuple
        ``(model_wave (nm,), model_flux (nstar, nm), fibers (nstar,))`` of the fitted standards.
    average : tuple, optional
        ``(wave (nwave,), calib (n, nwave))`` of the average calibration per second.
    opts : FluxCalibOptions

    Returns
    -------
    dict
        ``calib``, ``ivar``, ``mask`` (nspec, nwave), ``fibercorr`` (per-star table or None),
        ``cards`` (header cards), ``badpetal`` (FIBERSTATUS bits the cframe sets, 0 if none),
        ``summary`` (str), ``warnings`` (list of str).

    Raises
    ------
    ValueError
        The fit failed, or the average calibration does not fit the frame.
    """
    from ..bitmasks import fibermask
    from ..models.atmosphere import telluric_mask
    from ..models.resolution import model_on_frame

    opts = opts or FluxCalibOptions()
    model_wave, model_flux, star_fibers = stars
    index = {int(fb): k for k, fb in enumerate(fibers)}
    sel = np.array([index[int(fb)] for fb in star_fibers if int(fb) in index], int)
    cards, warnings = {}, []
    res = None
    ok = sel.size >= opts.min_stdstars
    if ok:
        binned, _ = model_on_frame(wave, model_wave, np.asarray(model_flux, float), rows[sel])
        try:
            res = fit_calibration(flux[sel].astype(float), ivar[sel].astype(float), mask[sel], rows[sel], binned,
                                  opts, telluric=telluric_mask(wave))
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise ValueError(f"flux calibration fit failed: {exc}") from exc
        ok = int(res["used"].sum()) >= opts.min_stdstars
    badpetal = 0
    if ok:
        used = res["used"]
        cal, var = fiber_calibration(rows, res["calib"], res["cov_band"])
        civ = np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), 0.0)
        cmask = np.where(cal > 0, 0, specmask.mask("BADFIBER")).astype(np.int32)
        cards["FLUXFLAG"] = ("OK", "calibration from this exposure's standards")
        cards["NSTDUSED"] = (int(used.sum()), "standards used")
        cards["NSTDREJ"] = (int(np.sum(~used)), "standards rejected")
        cards["STDCHI2"] = (float(np.median(res["chi2dof"][used])), "median chi2/dof of the standards")
        cards["STDSCRMS"] = (float(np.std(res["scale"][used])), "rms of the per-star scales")
        corr = np.zeros(sel.size, dtype=[("FIBER", "i4"), ("SCALE", "f4"), ("USED", "bool"), ("CHI2DOF", "f4")])
        corr["FIBER"], corr["SCALE"], corr["USED"], corr["CHI2DOF"] = fibers[sel], res["scale"], used, res["chi2dof"]
        summary = f"{int(used.sum())} standards"
        if cards["STDSCRMS"][0] > opts.max_star_rms:
            badpetal = fibermask.mask("BADPETALFLUXCAL")
            warnings.append(f"rms of the standards' scales {cards['STDSCRMS'][0]:.3f} > fluxcalib.max_star_rms "
                            f"{opts.max_star_rms:g}: the cframe gets BADPETALFLUXCAL")
        return {"calib": cal, "ivar": civ, "mask": cmask, "fibercorr": corr, "cards": cards, "badpetal": badpetal,
                "summary": summary, "warnings": warnings}
    nused = 0 if res is None else int(res["used"].sum())
    msg = f"{nused or sel.size} usable standard(s) < min_stdstars {opts.min_stdstars}"
    warnings.append(msg)
    if average is not None:
        avg_wave, avg_calib = average
        if avg_calib.shape[1] != wave.size or not np.allclose(avg_wave, wave):
            raise ValueError("the average calibration's wavelength grid differs from the frame's")
        if not exptime or exptime <= 0:
            raise ValueError("EXPTIME missing or not positive: cannot scale the average calibration")
        cal = np.broadcast_to(np.median(np.asarray(avg_calib, float), axis=0) * exptime, flux.shape).copy()
        # the average carries a systematic error of a few %: say so in the ivar (5%)
        civ = np.where(cal > 0, 1.0 / np.where(cal > 0, (0.05 * cal) ** 2, 1.0), 0.0)
        cmask = np.zeros(flux.shape, np.int32)
        cards["FLUXFLAG"] = ("AVERAGE", "too few standards: average calibration x EXPTIME")
        summary = f"average calibration ({msg})"
    else:
        cal = np.ones(flux.shape)
        civ = np.zeros(flux.shape)
        cmask = np.full(flux.shape, specmask.mask("BADFIBER"), np.int32)
        cards["FLUXFLAG"] = ("NOCALIB", "too few standards and no average calibration")
        summary = f"NO calibration ({msg}; set calibration.default_fluxcalib)"
    cards["NSTDUSED"] = (0, "standards used")
    return {"calib": cal, "ivar": civ, "mask": cmask, "fibercorr": None, "cards": cards,
            "badpetal": fibermask.mask("BADPETALSTDSTAR"), "summary": summary, "warnings": warnings}


def tsnr_scores(wave, calib, sframe_ivar, good, fibermap, band, ensemble):
    """Template signal-to-noise of every fiber of one camera for each tracer of ``ensemble``
    (:mod:`fiberflow.models.tsnr`): DESI's ``TSNR2_{TRACER}_{B}`` SCORES columns of a cframe.

    Parameters
    ----------
    wave : (nwave,)
    calib : (nspec, nwave)
        The calibration applied (electron/A per 1e-17 erg/s/cm2/A).
    sframe_ivar : (nspec, nwave)
        The sframe's inverse variance (the noise model comes from its sky fibers).
    good : bool (nspec, nwave)
        Bins the cframe has data in (ivar > 0, mask 0).
    fibermap : structured (nspec,) or None
        OBJTYPE and FIBERSTATUS pick the sky fibers (none: each fiber's own variance).
    band : str
    ensemble : :class:`fiberflow.io.tsnr.TsnrEnsemble`

    Returns
    -------
    dict name -> float32 (nspec,)
    """
    from ..bitmasks import bad_fiberstatus
    from ..models import tsnr

    nspec = calib.shape[0]
    if fibermap is not None and "OBJTYPE" in (fibermap.dtype.names or ()):
        sky = (np.char.strip(np.asarray(fibermap["OBJTYPE"]).astype(str)) == "SKY") & ~bad_fiberstatus(fibermap, nspec)
    else:
        sky = np.zeros(nspec, bool)
    var_bg = tsnr.background_variance(sframe_ivar, good & (sframe_ivar > 0), sky)
    return {f"TSNR2_{t}_{band.upper()}": tsnr.tsnr2(ensemble.dflux2_of(t, wave), calib, good, var_bg).astype(np.float32)
            for t in ensemble.names}
