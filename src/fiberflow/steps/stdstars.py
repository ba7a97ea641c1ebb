"""Standard-star fits: the shipped F-star model (:mod:`fiberflow.models.stellar`) fitted to each
standard's flat-fielded, sky-subtracted b, r and z spectra, then normalised to its photometry.

The fit is done in continuum-normalised space: in every camera the data are modelled as
``d_c = P_c(lambda) * R_c <m>_c`` where ``<m>_c`` is the model averaged over the camera's
flux bins (super-sampled 8x), ``R_c`` the star's resolution matrix and ``P_c`` a Legendre
polynomial of degree ``poly_deg`` that absorbs the unknown calibration and extinction (so only
lines, jumps and band shapes narrower than ``P`` inform the fit). The three cameras are fitted
jointly (one chi2 over b, r and z); a colour prior ``((g-r)_phot - (g-r)_model) / sigma`` ties
the continuum slope the polynomials remove back to the photometry.

Steps per star: radial-velocity scan with a mid-grid model, chi2 over the whole shipped grid
(:func:`fiberflow.models.stellar.grid_parameters`) at that velocity, then a continuous refinement of
(Teff, logg, [Fe/H], RV) from the best grid point (Nelder-Mead on the analytic model, bounded
to the grid's range). The best model is scaled so that its synthetic r flux through the DECam
filter equals the fibermap's FLUX_R.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from ..bitmasks import BAD_FIBERSTATUS, desi_target, usable_bins
from ..config import StepOptions
from ..models import stellar
from ..models.atmosphere import telluric_mask
from ..models.photometry import ab_nanomaggies
from ..models.resolution import apply_rows, bin_average, fine_grid

C_KMS = 299792.458
#: DESI_TARGET bits of standard stars
STD_BITS = desi_target.mask("STD_FAINT|STD_WD|STD_BRIGHT")
#: wavelength grid of the stored models [Angstrom]
MODEL_WAVE = np.arange(3500.0, 10600.0, 0.2)


@dataclass
class StdStarOptions(StepOptions):
    """Options of :func:`fit_star` (config section ``stdstars``)."""

    poly_deg: int = 8             #: Legendre degree of each camera's multiplicative polynomial
    rv_max: float = 400.0         #: km/s, half range of the radial-velocity scan
    rv_step: float = 20.0         #: km/s
    color_sigma: float = 0.05     #: mag, width of the g-r prior (added to the photometric error)
    refine: bool = True           #: continuous refinement after the grid
    min_snr: float = 5.0          #: stars with a lower median S/N per bin (r camera) are not fitted


def select_standards(fibermap):
    """Indices of the standard stars with usable FIBERSTATUS.

    Parameters
    ----------
    fibermap : structured (nspec,)

    Returns
    -------
    (nstd,) int
    """
    names = fibermap.dtype.names or ()
    if "DESI_TARGET" not in names:
        return np.zeros(0, int)
    std = (np.asarray(fibermap["DESI_TARGET"]).astype(np.int64) & STD_BITS) != 0
    if "FIBERSTATUS" in names:
        std &= (np.asarray(fibermap["FIBERSTATUS"]).astype(np.int64) & BAD_FIBERSTATUS) == 0
    return np.flatnonzero(std)


@dataclass
class CameraData:
    """One camera's spectrum of one star: wave (nwave,), flux, ivar (nwave,), rows (nwave, ndiag).

    Bins in :data:`TELLURIC_BANDS` get ivar 0."""

    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    rows: np.ndarray

    def __post_init__(self):
        self.ivar = np.where(telluric_mask(self.wave), 0.0, self.ivar)
        self.fine = fine_grid(self.wave)
        x = 2.0 * (self.wave - self.wave[0]) / (self.wave[-1] - self.wave[0]) - 1.0
        self.x = x

    def basis(self, deg):
        return np.polynomial.legendre.legvander(self.x, deg)  # (nwave, deg + 1)


def convolved_model(cam, teff, logg, feh, rv):
    """The star model seen by one camera: bin-averaged, then through the star's R. (nwave,)"""
    m = bin_average(cam.wave, cam.fine, stellar.stellar_spectrum(cam.fine, teff, logg, feh, rv))
    return apply_rows(cam.rows[None], m)[0]


def poly_chi2(cam, model, deg):
    """chi2 of ``d = P * model`` with the best Legendre polynomial P of degree ``deg``.

    Returns
    -------
    chi2 : float
    scale : (nwave,) the fitted P
    """
    w = cam.ivar
    B = cam.basis(deg) * model[:, None]
    A = B.T @ (B * w[:, None])
    b = B.T @ (w * cam.flux)
    A[np.diag_indices_from(A)] += 1e-12 * np.trace(A) / A.shape[0]
    coef = np.linalg.solve(A, b)
    fit = B @ coef
    return float(np.sum(w * (cam.flux - fit) ** 2)), fit / np.where(model != 0, model, 1.0)


def model_color(teff, logg, feh):
    """Synthetic g-r (AB mag) of the model (cached per process: every standard of a job
    scans the same grid)."""
    return _model_color(round(float(teff), 3), round(float(logg), 4), round(float(feh), 4))


@functools.lru_cache(maxsize=4096)
def _model_color(teff, logg, feh):
    fl = stellar.stellar_spectrum(MODEL_WAVE, teff, logg, feh)
    nm = ab_nanomaggies(MODEL_WAVE, fl[None, :])[0]
    return float(-2.5 * np.log10(nm[0] / nm[1]))


def fit_star(cams, gr, gr_err, opts=None, log=None):
    """Fit one standard star.

    Parameters
    ----------
    cams : list of CameraData (the star's b, r, z spectra; electron/Angstrom, sky-subtracted)
    gr : float or nan
        Photometric g-r (AB); nan disables the colour prior.
    gr_err : float
        Photometric error of g-r [mag].
    opts : StdStarOptions

    Returns
    -------
    dict with TEFF, LOGG, FEH, RV (km/s), CHI2DOF, CHI2_GRID (best grid chi2), MODEL_GR, NDOF.
    """
    opts = opts or StdStarOptions()
    sig_c = np.hypot(opts.color_sigma, gr_err if np.isfinite(gr_err) else 0.0)
    ndof = sum(int(np.sum(c.ivar > 0)) - (opts.poly_deg + 1) for c in cams)
    def chi2(t, g, f, rv, prior=True):
        total = sum(poly_chi2(c, convolved_model(c, t, g, f, rv), opts.poly_deg)[0] for c in cams)
        if prior and np.isfinite(gr):
            total += ((gr - model_color(t, g, f)) / sig_c) ** 2
        return total

    # 1. radial velocity with a mid-grid model (the lines' positions hardly depend on the model)
    t0, g0, f0 = 6250.0, 4.0, -0.5
    rvs = np.arange(-opts.rv_max, opts.rv_max + 0.5 * opts.rv_step, opts.rv_step)
    c_rv = np.array([chi2(t0, g0, f0, rv, prior=False) for rv in rvs])
    k = int(np.argmin(c_rv))
    rv = float(rvs[k])
    if 0 < k < rvs.size - 1:  # parabola through the minimum
        den = c_rv[k - 1] - 2 * c_rv[k] + c_rv[k + 1]
        if den > 0:
            rv += 0.5 * opts.rv_step * (c_rv[k - 1] - c_rv[k + 1]) / den
    # 2. the shipped grid at that velocity
    grid = stellar.grid_parameters()
    c_grid = np.array([chi2(float(p["TEFF"]), float(p["LOGG"]), float(p["FEH"]), rv) for p in grid])
    best = grid[int(np.argmin(c_grid))]
    x = np.array([best["TEFF"], best["LOGG"], best["FEH"], rv], float)
    c_best = float(c_grid.min())
    # 3. continuous refinement within the grid's range
    if opts.refine:
        lo = np.array([stellar.GRID_TEFF[0], stellar.GRID_LOGG[0], stellar.GRID_FEH[0], -opts.rv_max])
        hi = np.array([stellar.GRID_TEFF[-1], stellar.GRID_LOGG[-1], stellar.GRID_FEH[-1], opts.rv_max])
        scale = np.array([250.0, 0.5, 0.5, opts.rv_step])

        def obj(u):
            p = np.clip(x + u * scale, lo, hi)
            pen = np.sum(((x + u * scale - p) / scale) ** 2) * 1e3
            return chi2(*p) + pen

        res = minimize(obj, np.zeros(4), method="Nelder-Mead",
                       options={"xatol": 0.02, "fatol": 0.05, "maxfev": 400, "initial_simplex":
                                np.vstack([np.zeros(4), 0.5 * np.eye(4)])})
        if res.fun < c_best:
            x = np.clip(x + res.x * scale, lo, hi)
            c_best = float(res.fun)
    if log:
        log(f"Teff {x[0]:.0f} K, logg {x[1]:.2f}, [Fe/H] {x[2]:+.2f}, RV {x[3]:+.1f} km/s, "
            f"chi2/dof {c_best / max(ndof, 1):.2f}")
    return {"TEFF": x[0], "LOGG": x[1], "FEH": x[2], "RV": x[3], "CHI2DOF": c_best / max(ndof, 1),
            "CHI2_GRID": float(c_grid.min()), "MODEL_GR": float(model_color(*x[:3])), "NDOF": ndof}


def normalised_model(teff, logg, feh, rv, flux_r):
    """Best model on :data:`MODEL_WAVE` scaled to the star's r flux [1e-17 erg/s/cm2/A].

    Parameters
    ----------
    flux_r : float, nanomaggies (fibermap FLUX_R)

    Returns
    -------
    (nmodel_wave,)
    """
    fl = stellar.stellar_spectrum(MODEL_WAVE, teff, logg, feh, rv)
    nm = ab_nanomaggies(MODEL_WAVE, fl[None, :])[0]
    return fl * (flux_r / nm[1]) / 1e-17




def color_error(fibermap, f):
    """g-r photometric error [mag] of fiber index ``f`` from FLUX_IVAR_G/R (0 when unknown)."""
    names = fibermap.dtype.names or ()
    if "FLUX_IVAR_G" not in names or "FLUX_IVAR_R" not in names:
        return 0.0
    err2 = 0.0
    for b in ("G", "R"):
        fl, iv = float(fibermap[f"FLUX_{b}"][f]), float(fibermap[f"FLUX_IVAR_{b}"][f])
        if fl > 0 and iv > 0:
            err2 += (1.0857 / (fl * np.sqrt(iv))) ** 2
    return float(np.sqrt(err2))


#: columns of the fitted standards' table (STDSTARS METADATA)
META_DTYPE = [("FIBER", "i4"), ("TARGETID", "i8"), ("TEFF", "f4"), ("LOGG", "f4"), ("FEH", "f4"), ("REDSHIFT", "f8"),
              ("CHI2DOF", "f4"), ("SNR_R", "f4"), ("DATA_G-R", "f4"), ("MODEL_G-R", "f4")]


def stdstars_step(cameras, fibermap, opts=None, log=None):
    """Fit every standard star of one spectrograph of an exposure.

    Standards are the fibermap's STD targets with good FIBERSTATUS (:func:`select_standards`);
    a star whose median S/N per bin in the r camera (else the first) is below
    ``opts.min_snr``, or without a positive FLUX_R, is not fitted.

    Parameters
    ----------
    cameras : list of dict
        One per camera of the spectrograph, in b, r, z order: ``camera`` (str), ``wave``
        (nwave,), ``flux``, ``ivar``, ``mask`` (nspec, nwave), ``rows`` (nspec, nwave, ndiag)
        resolution rows.
    fibermap : structured (nspec,)
    opts : StdStarOptions
    log : callable, optional

    Returns
    -------
    dict
        ``flux`` (nstar, MODEL_WAVE.size) float32 models normalised to FLUX_R [1e-17 units],
        ``fibers`` (nstar,) int32, ``meta`` (nstar,) :data:`META_DTYPE`, ``fibermap``
        (nstar,) rows, ``ncand`` (standards in the fibermap), ``nfit``. A petal without a
        fitted standard gets one row with FIBER -1 and zero flux (FITS images cannot be empty).
    """
    opts = opts or StdStarOptions()
    log = log or (lambda m: None)
    std = select_standards(fibermap)
    ref = next((c for c in cameras if c["camera"][0] == "r"), cameras[0])
    results, models, fibers = [], [], []
    for f in std:
        ok_r = usable_bins(ref["mask"][f], ref["ivar"][f], ref["flux"][f])
        snr = float(np.median(ref["flux"][f][ok_r] * np.sqrt(ref["ivar"][f][ok_r]))) if ok_r.any() else 0.0
        fl_g, fl_r = float(fibermap["FLUX_G"][f]), float(fibermap["FLUX_R"][f])
        if snr < opts.min_snr or fl_r <= 0:
            log(f"fiber {int(fibermap['FIBER'][f])} not fitted (S/N {snr:.1f}, FLUX_R {fl_r:.3g})")
            continue
        cams = []
        for c in cameras:
            ok = usable_bins(c["mask"][f], c["ivar"][f], c["flux"][f])
            cams.append(CameraData(c["wave"], np.where(ok, c["flux"][f], 0.0).astype(float),
                                   np.where(ok, c["ivar"][f], 0.0).astype(float), c["rows"][f]))
        gr = -2.5 * np.log10(fl_g / fl_r) if fl_g > 0 else np.nan
        res = fit_star(cams, gr, color_error(fibermap, f), opts,
                       log=lambda m, f=f: log(f"fiber {int(fibermap['FIBER'][f])}: {m}"))
        res.update({"SNR_R": snr, "DATA_GR": gr})
        results.append(res)
        models.append(normalised_model(res["TEFF"], res["LOGG"], res["FEH"], res["RV"], fl_r))
        fibers.append(f)
    meta = np.zeros(len(results), dtype=META_DTYPE)
    for k, (f, r) in enumerate(zip(fibers, results)):
        meta[k] = (int(fibermap["FIBER"][f]), int(fibermap["TARGETID"][f]), r["TEFF"], r["LOGG"], r["FEH"],
                   r["RV"] / C_KMS, r["CHI2DOF"], r["SNR_R"], r["DATA_GR"], r["MODEL_GR"])
    out = {"flux": np.array(models, dtype="f4").reshape(len(models), MODEL_WAVE.size),
           "fibers": np.array([int(fibermap["FIBER"][f]) for f in fibers], dtype=np.int32), "meta": meta,
           "fibermap": fibermap[np.array(fibers, int)], "ncand": int(std.size), "nfit": len(results)}
    if not fibers:
        out["flux"] = np.zeros((1, MODEL_WAVE.size), "f4")
        out["fibers"] = np.array([-1], np.int32)
        out["meta"] = np.zeros(1, dtype=META_DTYPE)
        out["meta"]["FIBER"] = -1
        out["fibermap"] = fibermap[:1].copy()
        out["fibermap"]["FIBER"] = -1
    return out
