"""QA metrics: pure functions from fiberflow products to JSON-ready dictionaries.

Every function takes products already read (numpy arrays and header dicts) and returns
``{METRIC: value}`` with plain Python numbers, strings, lists or ``{amp: value}`` mappings, so
the result goes straight into the frame QA JSON. Nothing here knows about thresholds: scoring
is :mod:`fiberflow.qa.scoring`, so changing a threshold never recomputes a metric.

Conventions: fibers are rows of a frame (``nspec``), wavelengths columns (``nwave``); CCD
images are ``(ny, nx)`` with DESI's amplifier quadrants A (lower left), B (lower right),
C (upper left), D (upper right).
"""

from __future__ import annotations

import warnings

import numpy as np

from ..bitmasks import BAD_FIBERSTATUS, desi_target
from ..linalg import clipped_stats, robust_sigma

#: Steps of the data flow, in processing order. The first step with an alarm is where a
#: problem first shows ("first bad step").
STEPS = ("BIAS", "PREPROC", "PSF", "TRACESHIFT", "EXTRACT", "FIBERFLAT", "SKY", "STDSTARS", "FLUXCALIB", "CFRAME")
AMPS = ("A", "B", "C", "D")
#: wavelength [Angstrom] at which the zero point of each arm is quoted (as DESI's QA)
ZP_WAVE = {"b": 4800.0, "r": 6500.0, "z": 8250.0}
#: fiducial r magnitude of each target class for the S/N-versus-magnitude fit
FIDUCIAL_MAG = {"ELG": 23.0, "LRG": 22.0, "QSO": 21.0, "STD": 18.0}
#: fibers per positioner block (50 on DESI: one CANbus, one patch of the focal plane)
BLOCK = 50
C_ANGSTROM = 2.99792458e18


def _f(x, ndigits=6):
    """A JSON-safe float (None for nan/inf), rounded to ``ndigits`` significant digits."""
    x = float(x)
    if not np.isfinite(x):
        return None
    return float(f"{x:.{ndigits}g}")


# --------------------------------------------------------------------------- ZERO / DARK

def bias_metrics(image, stats, gains, master, master_mask, nzero, in_master, exptime=0.0, nsig_hot=6.0):
    """Metrics of a ZERO or DARK exposure against the night's master bias.

    Parameters
    ----------
    image : (ny, nx)
        Overscan-subtracted exposure [ADU] (:func:`fiberflow.steps.preproc.subtract_overscan`).
    stats : dict amp -> dict
        Its per-amplifier overscan statistics (``level`` and ``rdnoise_adu`` [ADU], ``ostep``).
    gains : dict amp -> float
        [electron / ADU]
    master : (ny, nx)
        Master bias [ADU]; ``master_mask`` (ny, nx) its ccdmask bits (HOT pixels).
    nzero : int
        ZEROs averaged into the master.
    in_master : bool
        Whether this exposure is one of them (its residual then has variance read
        noise^2 x the included factor of :func:`fiberflow.steps.preproc.master_noise_factors`, about
        1 - 1/nzero; otherwise the excluded factor, about 1 + 1/nzero, + the dark signal).
    exptime : float
        [s]; DARK_RATE_AMP is quoted for exptime > 0.
    nsig_hot : float
        Pixels whose residual exceeds this many expected sigma count in HOT_FRAC.

    Returns
    -------
    dict
        PREPROC-style overscan values READNOISE_AMP [electron], BIAS_AMP [ADU], OSTEP_AMP [ADU]
        (``overscan``), and the BIAS metrics: RESID_AMP (median of exposure - master
        [electron]), NOISE_RATIO_AMP (robust rms of exposure - master over its expected value:
        about 1; a bias jump or pattern change in the image area is far above), EXPECTED_AMP (that expected
        value [electron]), DARK_RATE_AMP (median residual
        per hour [electron / hour / pixel], exposures with exptime > 0), HOT_FRAC (fraction of
        unmasked pixels beyond ``nsig_hot``), MASTER_HOT_FRAC (pixels the master masks), NZERO.
    """
    from ..steps.preproc import master_noise_factors

    image = np.asarray(image, float)
    resid_adu = image - np.asarray(master, float)
    good = np.asarray(master_mask) == 0
    over = {k: {} for k in ("READNOISE_AMP", "BIAS_AMP", "OSTEP_AMP")}
    bias = {k: {} for k in ("RESID_AMP", "NOISE_RATIO_AMP", "EXPECTED_AMP")}
    if exptime > 0:
        bias["DARK_RATE_AMP"] = {}
    nhot = ngood = 0
    for amp, (sy, sx) in amp_slices(image.shape).items():
        st = stats.get(amp)
        if st is None:
            continue
        g = float(gains[amp])
        rn = float(st["rdnoise_adu"]) * g
        over["READNOISE_AMP"][amp] = _f(rn)
        over["BIAS_AMP"][amp] = _f(st["level"])
        over["OSTEP_AMP"][amp] = _f(st.get("ostep", np.nan))
        r = resid_adu[sy, sx][good[sy, sx]] * g
        if r.size == 0:
            continue
        # clipped statistics: integer ADU make a MAD-based sigma useless at ~1.5 ADU noise,
        # cosmic rays and hot pixels make a plain one useless
        med, sig = clipped_stats(r, 4.0)
        factor = master_noise_factors(max(int(nzero), 1))[1 if in_master else 2]
        expected = np.sqrt(rn ** 2 * factor + max(med, 0.0))
        bias["RESID_AMP"][amp] = _f(med)
        bias["EXPECTED_AMP"][amp] = _f(expected)
        bias["NOISE_RATIO_AMP"][amp] = _f(sig / expected if expected > 0 else np.nan)
        if exptime > 0:
            bias["DARK_RATE_AMP"][amp] = _f(med / exptime * 3600.0)
        nhot += int(np.sum(np.abs(r - med) > nsig_hot * expected))
        ngood += r.size
    bias["HOT_FRAC"] = _f(nhot / ngood if ngood else np.nan)
    bias["MASTER_HOT_FRAC"] = _f(np.mean(~good))
    bias["NZERO"] = int(nzero)
    return {"overscan": over, "BIAS": bias}


# --------------------------------------------------------------------------- preproc

def amp_slices(shape):
    """DESI amplifier quadrants of a CCD image of ``shape`` (ny, nx): amp -> (slice_y, slice_x)."""
    ny, nx = shape
    hy, hx = ny // 2, nx // 2
    return {"A": (slice(0, hy), slice(0, hx)), "B": (slice(0, hy), slice(hx, nx)),
            "C": (slice(hy, ny), slice(0, hx)), "D": (slice(hy, ny), slice(hx, nx))}


def pixel_noise(image, good):
    """Noise of an image from differences of neighbouring pixels along x.

    Parameters
    ----------
    image : (ny, nx)
    good : (ny, nx) bool

    Returns
    -------
    float
        robust sigma of ``image[:, 1:] - image[:, :-1]`` over good pairs, / sqrt(2). Equal to
        the read noise where there is no light; larger with light (Poisson noise, structure);
        much smaller when an amplifier returns no signal at all (dead amplifier).
    """
    d = image[:, 1:] - image[:, :-1]
    ok = good[:, 1:] & good[:, :-1]
    if not ok.any():
        return np.nan
    return robust_sigma(d[ok]) / np.sqrt(2.0)


def preproc_metrics(image, mask, header):
    """Per-amplifier and per-camera CCD metrics of a preprocessed image.

    Parameters
    ----------
    image : (ny, nx) electrons
    mask : (ny, nx) ccdmask bits
    header : dict
        With preproc's OVERSCN{amp} [ADU], OBSRDN{amp} [electron], OSTEP{amp} [ADU],
        CRFRAC, SATFRAC.

    Returns
    -------
    dict
        BIAS_AMP, READNOISE_AMP, OSTEP_AMP, NOISE_AMP ({amp: value}); NOISE_RATIO_AMP (data
        noise / overscan read noise: about 1 or more for a working amplifier, far below 1 for
        a dead one whose pixels carry no bias pattern); LITFRAC_AMP (fraction of pixels above
        3 read-noise sigma) and LITFRAC_REL_AMP (over the median of the camera's amplifiers:
        an amplifier that returns no signal is far below 1); COSMIC_FRAC,
        SAT_FRAC, MASKED_FRAC.
    """
    image = np.asarray(image, float)
    good = np.asarray(mask) == 0
    out = {k: {} for k in ("BIAS_AMP", "READNOISE_AMP", "OSTEP_AMP", "NOISE_AMP", "NOISE_RATIO_AMP", "LITFRAC_AMP")}
    for amp, (sy, sx) in amp_slices(image.shape).items():
        rn = float(header.get(f"OBSRDN{amp}", np.nan))
        noise = pixel_noise(image[sy, sx], good[sy, sx])
        sub = image[sy, sx][good[sy, sx]]
        out["BIAS_AMP"][amp] = _f(header.get(f"OVERSCN{amp}", np.nan))
        out["READNOISE_AMP"][amp] = _f(rn)
        out["OSTEP_AMP"][amp] = _f(header.get(f"OSTEP{amp}", np.nan))
        out["NOISE_AMP"][amp] = _f(noise)
        out["NOISE_RATIO_AMP"][amp] = _f(noise / rn if rn > 0 else np.nan)
        out["LITFRAC_AMP"][amp] = _f(np.mean(sub > 3.0 * rn) if sub.size and rn > 0 else np.nan)
    lit = {a: v for a, v in out["LITFRAC_AMP"].items() if v is not None}
    ref = float(np.median(list(lit.values()))) if lit else np.nan
    out["LITFRAC_REL_AMP"] = {a: _f(v / ref) if ref > 0 else None for a, v in lit.items()}
    out["COSMIC_FRAC"] = _f(header.get("CRFRAC", np.nan))
    out["SAT_FRAC"] = _f(header.get("SATFRAC", np.nan))
    out["MASKED_FRAC"] = _f(np.mean(~good))
    return out


# --------------------------------------------------------------------------- PSF

def psf_metrics(meta, fiberstatus=None, spots=None):
    """Metrics of an arc PSF fit.

    Parameters
    ----------
    meta : dict
        PSF HDU header of ``fiberflow psf``: NLINES, RMSX, RMSY, NBADFIB, B{nn}RCHI2.
    fiberstatus : structured (nfiber,), optional
        FIBERSTATUS table (FIBER, STATUS, NLINE, RMSX, RMSY).
    spots : structured (nspot,), optional
        SPOTS table (WAVE, SX, SY, USED ...): core widths.

    Returns
    -------
    dict
        NLINES, RMSX / RMSY (trace and wavelength residual RMS, pixels), NBADFIB,
        MAX_BUNDLE_RCHI2, MEDIAN_BUNDLE_RCHI2, MIN_FIBER_NLINE, SX_MEDIAN / SY_MEDIAN (core
        widths, pixels).
    """
    out = {"NLINES": int(meta.get("NLINES", 0)), "RMSX": _f(meta.get("RMSX", np.nan)),
           "RMSY": _f(meta.get("RMSY", np.nan)), "NBADFIB": int(meta.get("NBADFIB", 0))}
    rchi2 = [float(v) for k, v in meta.items() if len(k) == 8 and k.startswith("B") and k.endswith("RCHI2")]
    out["MAX_BUNDLE_RCHI2"] = _f(max(rchi2)) if rchi2 else None
    out["MEDIAN_BUNDLE_RCHI2"] = _f(np.median(rchi2)) if rchi2 else None
    if fiberstatus is not None and "NLINE" in (fiberstatus.dtype.names or ()):
        out["MIN_FIBER_NLINE"] = int(np.min(fiberstatus["NLINE"]))
    if spots is not None and len(spots):
        used = spots["USED"].astype(bool) if "USED" in spots.dtype.names else np.ones(len(spots), bool)
        for key in ("SX", "SY"):
            if key in spots.dtype.names and used.any():
                out[f"{key}_MEDIAN"] = _f(np.median(spots[key][used]))
    return out


def traceshift_metrics(meta):
    """Trace shifts of a flat or science PSF: MEANDX / MEANDY [pixel], number of measurements."""
    return {"MEANDX": _f(meta.get("MEANDX", np.nan)), "MEANDY": _f(meta.get("MEANDY", np.nan)),
            "NDXMEAS": int(meta.get("NDXMEAS", 0)), "NDYMEAS": int(meta.get("NDYMEAS", 0)),
            "DYMETHOD": str(meta.get("DYMETHOD", ""))}


# --------------------------------------------------------------------------- fibers

def good_fibers(fibermap, nspec):
    """(nspec,) bool: FIBERSTATUS without any :data:`BAD_FIBERSTATUS` bit (all when no fibermap)."""
    if fibermap is None or "FIBERSTATUS" not in (fibermap.dtype.names or ()):
        return np.ones(nspec, bool)
    return (np.asarray(fibermap["FIBERSTATUS"]) & BAD_FIBERSTATUS) == 0


def objtype(fibermap, nspec):
    if fibermap is None or "OBJTYPE" not in (fibermap.dtype.names or ()):
        return np.array(["TGT"] * nspec)
    return np.char.strip(np.asarray(fibermap["OBJTYPE"]).astype(str))


def target_class(fibermap, nspec):
    """(nspec,) str: SKY, STD, ELG, LRG, QSO or OTHER from OBJTYPE and DESI_TARGET bits."""
    cls = np.array(["OTHER"] * nspec, dtype="<U5")
    if fibermap is None:
        return cls
    names = fibermap.dtype.names or ()
    if "DESI_TARGET" in names:
        dt = np.asarray(fibermap["DESI_TARGET"]).astype(np.int64)
        for name in ("QSO", "LRG", "ELG"):
            cls[(dt & desi_target.mask(name)) != 0] = name
        cls[(dt & desi_target.mask("STD_FAINT|STD_WD|STD_BRIGHT")) != 0] = "STD"
    cls[objtype(fibermap, nspec) == "SKY"] = "SKY"
    return cls


def fiber_median(flux, ivar, mask):
    """(nspec,) median flux over the good bins of each fiber (nan when none)."""
    good = (ivar > 0) & (mask == 0)
    med = np.full(flux.shape[0], np.nan)
    for i in range(flux.shape[0]):
        if good[i].any():
            med[i] = np.median(flux[i, good[i]])
    return med


def frame_metrics(flux, ivar, mask, chi2pix, fibermap, obstype, low=0.5):
    """Extraction metrics of a frame.

    Parameters
    ----------
    flux, ivar, mask, chi2pix : (nspec, nwave)
    fibermap : structured (nspec,) or None
    obstype : str
        FLAT or SCIENCE: the relative throughput of each fiber is its median flux over the
        median of the reference fibers (all good fibers for a flat, the sky fibers of a
        science frame: every target fiber sees at least the sky).
    low : float
        A fiber below this relative throughput counts in NLOWTHRU (broken or dead fiber).

    Returns
    -------
    metrics : dict
        CHI2PIX_MEDIAN, CHI2PIX_P95, MASKED_FRAC, NBADFIB (bad FIBERSTATUS), NLOWTHRU,
        LOWTHRU_FIBERS.
    fibers : dict
        THRU (nspec,) relative throughput per fiber.
    """
    nspec = flux.shape[0]
    goodfib = good_fibers(fibermap, nspec)
    med = fiber_median(flux, ivar, mask)
    ref = goodfib.copy()
    if str(obstype).upper() == "SCIENCE":
        ref &= objtype(fibermap, nspec) == "SKY"
    refval = np.nanmedian(med[ref]) if np.isfinite(med[ref]).any() else np.nan
    thru = med / refval if refval and np.isfinite(refval) and refval > 0 else np.full(nspec, np.nan)
    lowfib = np.flatnonzero(goodfib & ~(thru >= low))
    okbins = (ivar > 0) & (mask == 0)
    c2 = np.asarray(chi2pix)[okbins] if chi2pix is not None else np.array([])
    metrics = {
        "CHI2PIX_MEDIAN": _f(np.median(c2)) if c2.size else None,
        "CHI2PIX_P95": _f(np.percentile(c2, 95)) if c2.size else None,
        "MASKED_FRAC": _f(np.mean(~okbins)),
        "NBADFIB": int(np.sum(~goodfib)),
        "NLOWTHRU": int(lowfib.size),
        "LOWTHRU_FIBERS": [int(f) for f in lowfib[:50]],
    }
    return metrics, {"THRU": [_f(t, 4) for t in thru]}


# --------------------------------------------------------------------------- fiberflat

def fiberflat_metrics(fiberflat, ivar, mask, header, off=0.05):
    """Fiberflat metrics.

    Parameters
    ----------
    fiberflat, ivar, mask : (nspec, nwave)
    header : dict with CHI2DOF, NBADFIB of ``fiberflow fiberflat``
    off : float
        A fiber whose median flat is more than this fraction from 1 counts in NOFF.

    Returns
    -------
    metrics : dict
        MAX_RMS (largest per-fiber RMS of flat / its median - 1 along wavelength), MAX_DEV
        (largest |median flat - 1|), NOFF, GRADIENT (end-to-end change of the median flat
        across the fibers from a straight-line fit: a tilted lamp illumination), CHI2DOF,
        NBADFIB.
    fibers : dict
        FLAT (nspec,) median flat per fiber.
    """
    good = (ivar > 0) & (mask == 0)
    nspec = fiberflat.shape[0]
    med = fiber_median(fiberflat, ivar, mask)
    rms = np.full(nspec, np.nan)
    for i in range(nspec):
        if good[i].sum() > 10 and med[i] > 0:
            rms[i] = np.std(fiberflat[i, good[i]] / med[i] - 1.0)
    ok = np.isfinite(med) & (med > 0.2)
    grad = np.nan
    if ok.sum() >= 3:
        x = np.linspace(-1.0, 1.0, nspec)[ok]
        slope = np.polyfit(x, med[ok], 1)[0]
        grad = 2.0 * slope / np.median(med[ok])
    metrics = {
        "MAX_RMS": _f(np.nanmax(rms)) if np.isfinite(rms).any() else None,
        "MAX_DEV": _f(np.nanmax(np.abs(med[ok] - 1.0))) if ok.any() else None,
        "NOFF": int(np.sum(ok & (np.abs(med - 1.0) > off))),
        "GRADIENT": _f(grad),
        "CHI2DOF": _f(header.get("CHI2DOF", np.nan)),
        "NBADFIB": int(header.get("NBADFIB", 0)),
    }
    return metrics, {"FLAT": [_f(m, 4) for m in med]}


# --------------------------------------------------------------------------- sky

def bright_sky_lines(wave, sky, nline=5, halfwidth=3.0, good=None):
    """Wavelengths of the ``nline`` brightest sky-line peaks of a mean sky spectrum.

    Parameters
    ----------
    wave, sky : (nwave,)
    halfwidth : float
        Angstrom; two peaks closer than 4 x halfwidth count once.
    good : (nwave,) bool, optional
        Bins where the sky was measured (some sky fiber has data). Elsewhere (a bad CCD row
        masked in every fiber) the deconvolved model is unconstrained and may show a spike
        that is no sky line: those bins and their neighbours within ``halfwidth`` are never
        picked, and their values are interpolated before the continuum is estimated.

    Returns
    -------
    list of float
    """
    cont = np.asarray(sky, float).copy()
    wave = np.asarray(wave, float)
    allowed = np.ones(cont.size, bool)
    if good is not None:
        good = np.asarray(good, bool)
        if good.any() and not good.all():
            cont[~good] = np.interp(wave[~good], wave[good], cont[good])
            near = np.abs(wave[:, None] - wave[~good][None, :]).min(axis=1) <= halfwidth
            allowed = ~near
    n = max(5, int(round(25.0 / max(np.median(np.diff(wave)), 1e-3))))
    from scipy.ndimage import median_filter

    line = cont - median_filter(cont, size=2 * n + 1, mode="nearest")
    line[~allowed] = -np.inf
    order = np.argsort(line)[::-1]
    picked = []
    for k in order:
        if line[k] <= 0 or len(picked) >= nline:
            break
        if all(abs(wave[k] - w) > 4 * halfwidth for w in picked):
            picked.append(float(wave[k]))
    return sorted(picked)


def line_window_residuals(wave, resid, good, meansky, lines, halfwidth=2.0):
    """Median over fibers of the residual summed over each sky line's window, as a fraction of
    the sky summed there.

    Parameters
    ----------
    wave : (nwave,)
    resid : (nfib, nwave) residual flux (sky-subtracted, minus the object where known)
    good : (nfib, nwave) bool, bins that count
    meansky : (nwave,) mean sky of the camera
    lines : sequence of float, line wavelengths (:func:`bright_sky_lines`)
    halfwidth : float, Angstrom

    Returns
    -------
    list of float (nan where the window holds no sky or no fiber)
    """
    out = []
    for w in lines:
        sel = np.abs(wave - w) <= halfwidth
        s = np.sum(meansky[sel])
        r = np.sum(np.where(good[:, sel], resid[:, sel], 0.0), axis=1)
        out.append(float(np.median(r) / s) if s > 0 and r.size else float("nan"))
    return out


def window_residuals(wave, flux, ivar, mask, sky=None, width=100.0, nsig=5.0, nmin=20):
    """Residual of each fiber in wavelength windows: what a whole-band median misses (light
    entering a few fibers over a limited wavelength range, a sky model wrong in one region).

    Parameters
    ----------
    wave : (nwave,)
    flux, ivar, mask : (nfib, nwave) sky-subtracted fibers (sframe rows, or coadd rows)
    sky : (nfib, nwave), optional
        Their sky model (the residual is then also measured as a fraction of the sky).
    width : window width [Angstrom]
    nsig : a window counts for FRAC only when its weighted mean is this significant
    nmin : fewest good bins a window needs

    Returns
    -------
    dict of (nfib,) arrays
        SIG: the largest |weighted mean / its error| over windows (signed);
        SIG_WAVE: that window's centre; FRAC: over the windows at least ``nsig`` significant,
        the largest |median residual / median sky| (signed; 0 when none, NaN without ``sky``);
        FRAC_WAVE: its centre (NaN when none).
    """
    wave = np.asarray(wave, float)
    flux = np.asarray(flux, float)
    good = (np.asarray(ivar) > 0) & (np.asarray(mask) == 0) & np.isfinite(flux)
    w = np.where(good, np.asarray(ivar, float), 0.0)
    flux = np.where(good, flux, 0.0)
    nfib = flux.shape[0]
    out = {"SIG": np.zeros(nfib), "SIG_WAVE": np.full(nfib, np.nan),
           "FRAC": np.zeros(nfib) if sky is not None else np.full(nfib, np.nan), "FRAC_WAVE": np.full(nfib, np.nan)}
    if nfib == 0 or wave.size == 0:
        return out
    edges = np.arange(wave[0], wave[-1] + width, width)
    which = np.clip(np.searchsorted(edges, wave, side="right") - 1, 0, len(edges) - 1)
    for k in np.unique(which):
        s = which == k
        g = good[:, s]
        ok = g.sum(axis=1) >= nmin
        if not ok.any():
            continue
        centre = float(np.mean(wave[s]))
        sw = w[:, s].sum(axis=1)
        sig = np.where(ok & (sw > 0), (w[:, s] * flux[:, s]).sum(axis=1) / np.sqrt(np.where(sw > 0, sw, 1.0)), 0.0)
        up = np.abs(sig) > np.abs(out["SIG"])
        out["SIG"][up], out["SIG_WAVE"][up] = sig[up], centre
        if sky is None:
            continue
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a fiber without a good bin in the window
            med = np.nanmedian(np.where(g, flux[:, s], np.nan), axis=1)
            msky = np.nanmedian(np.where(g, np.asarray(sky, float)[:, s], np.nan), axis=1)
            frac = np.where(ok & (msky > 0) & (np.abs(sig) >= nsig), med / np.where(msky > 0, msky, 1.0), 0.0)
        frac = np.where(np.isfinite(frac), frac, 0.0)
        up = np.abs(frac) > np.abs(out["FRAC"])
        out["FRAC"][up], out["FRAC_WAVE"][up] = frac[up], centre
    return out


def sky_metrics(wave, sflux, sivar, smask, sky, fibermap, header=None, nline=5, outlier=0.1, window=100.0,
                window_outlier=0.2, window_nsig=5.0, tail_nsig=5.0):
    """Sky-subtraction metrics from the sframe and the sky model of one camera.

    Parameters
    ----------
    wave : (nwave,)
    sflux, sivar, smask : (nspec, nwave) sky-subtracted frame (electron/Angstrom)
    sky : (nspec, nwave) sky model seen by each fiber (electron/Angstrom)
    fibermap : structured (nspec,)
    header : dict, optional
        Sky header (SKYCHI2, NSKYFIB, SKYFLAG).
    outlier : float
        A sky fiber whose median residual exceeds this fraction of the sky counts in
        NSKY_OUTLIER (contaminated or misplaced sky fiber).
    window, window_outlier, window_nsig : float
        So does a sky fiber whose median residual over some ``window`` Angstrom exceeds
        ``window_outlier`` of the sky there at ``window_nsig`` significance
        (:func:`window_residuals`: light entering a few fibers over a limited wavelength range).
    tail_nsig : float
        RESID_CHI2DOF counts each bin's chi2 up to ``tail_nsig**2`` (for Gaussian residuals its
        mean stays 1 to 1e-5); bins beyond are RESID_TAIL_FRAC.

    Returns
    -------
    metrics : dict
        NSKYFIB; MED_RESID (median residual of the sky fibers, electron/Angstrom) and
        MED_RESID_FRAC (over the median sky); RESID_CHI2DOF (chi2 per bin of the sky fibers
        after subtraction, each bin's capped at ``tail_nsig**2``, expected 1); RESID_TAIL_FRAC
        (fraction of their bins beyond ``tail_nsig`` sigma: lone defects); NSKY_OUTLIER,
        SKY_OUTLIER_FIBERS; SKY_WINDOW_RESID_MAX
        (largest significant |median residual / sky| of a sky fiber in a window) with
        SKY_WINDOW_WAVE and SKY_WINDOW_FIBER; SKYLINE_RESID_MAX (largest |median residual / sky| at the brightest sky lines) with SKYLINE_WAVE;
        MAX_BLOCK_RESID (largest |median residual fraction| of the sky fibers of a 50-fiber
        block); SKY_MEDIAN (median sky, electron/Angstrom); SKYCHI2 from the fit.
    fibers : dict
        SKYRESID (nspec,) median residual / median sky per fiber (targets include their own
        light, so only sky fibers should be near 0); LINERESID (nspec,) sky-line residual of
        every fiber (:func:`line_residuals`).
    """
    header = header or {}
    nspec = sflux.shape[0]
    good = (sivar > 0) & (smask == 0)
    goodfib = good_fibers(fibermap, nspec)
    skyfib = goodfib & (objtype(fibermap, nspec) == "SKY")
    med_sky = fiber_median(sky, np.where(good, 1.0, 0.0), np.zeros_like(smask))
    med_res = fiber_median(sflux, sivar, smask)
    frac = med_res / np.where(med_sky > 0, med_sky, np.nan)
    sky_level = float(np.nanmedian(med_sky[skyfib])) if skyfib.any() else float(np.nanmedian(med_sky))
    metrics = {"NSKYFIB": int(skyfib.sum()), "SKY_MEDIAN": _f(sky_level), "SKYCHI2": _f(header.get("SKYCHI2", np.nan)),
               "SKYFLAG": str(header.get("SKYFLAG", "OK"))}
    if skyfib.any():
        g = good[skyfib]
        res = sflux[skyfib][g]
        metrics["MED_RESID"] = _f(np.median(res))
        metrics["MED_RESID_FRAC"] = _f(np.median(res) / sky_level if sky_level > 0 else np.nan)
        chi2 = res ** 2 * sivar[skyfib][g]
        # each bin counts at most a (tail_nsig)-sigma point: a cosmic ray or hot pixel the masks
        # missed in one sky fiber is that fiber's defect (RESID_TAIL_FRAC counts them), not a sky
        # model worse than its variance, which shows in many bins and keeps its size
        metrics["RESID_CHI2DOF"] = _f(np.mean(np.minimum(chi2, tail_nsig ** 2)))
        metrics["RESID_TAIL_FRAC"] = _f(np.mean(chi2 > tail_nsig ** 2))
        fib = np.arange(nspec) if fibermap is None else np.asarray(fibermap["FIBER"])
        sel = np.flatnonzero(skyfib)
        win = window_residuals(wave, sflux[sel], sivar[sel], smask[sel], sky[sel], window, window_nsig)
        wfrac = np.zeros(nspec)
        wfrac[sel] = win["FRAC"]
        k = int(np.argmax(np.abs(win["FRAC"])))
        metrics["SKY_WINDOW_RESID_MAX"] = _f(abs(win["FRAC"][k]))
        metrics["SKY_WINDOW_WAVE"] = _f(win["FRAC_WAVE"][k]) if win["FRAC"][k] else None
        metrics["SKY_WINDOW_FIBER"] = int(fib[sel[k]]) if win["FRAC"][k] else None
        bad = np.flatnonzero(skyfib & ((np.abs(frac) > outlier) | (np.abs(wfrac) > window_outlier)))
        metrics["NSKY_OUTLIER"] = int(bad.size)
        metrics["SKY_OUTLIER_FIBERS"] = [int(fib[f]) for f in bad]
        meansky = np.median(sky[skyfib], axis=0)
        lines = bright_sky_lines(wave, meansky, nline=nline, good=good[skyfib].any(axis=0))
        worst, worst_w = 0.0, None
        for w, fr in zip(lines, line_window_residuals(wave, sflux[skyfib], good[skyfib], meansky, lines)):
            fr = 0.0 if np.isnan(fr) else fr
            if abs(fr) > abs(worst):
                worst, worst_w = fr, w
        metrics["SKYLINE_RESID_MAX"] = _f(abs(worst))
        metrics["SKYLINE_WAVE"] = _f(worst_w) if worst_w is not None else None
        blocks = {}
        for b in np.unique(fib[skyfib] // BLOCK):
            sel = skyfib & (fib // BLOCK == b)
            blocks[str(int(b))] = _f(np.nanmedian(frac[sel]))
        metrics["BLOCK_RESID"] = blocks
        vals = [abs(v) for v in blocks.values() if v is not None]
        metrics["MAX_BLOCK_RESID"] = _f(max(vals)) if vals else None
    return metrics, {"SKYRESID": [_f(v, 4) for v in frac],
                     "LINERESID": [_f(v, 4) for v in line_residuals(wave, sflux, sivar, smask, sky, skyfib)]}


def line_residuals(wave, sflux, sivar, smask, sky, skyfib, nline=5, halfwidth=2.0, nbins=51):
    """Per-fiber sky-line residual: over windows around the brightest sky lines, the sum of
    the sky-subtracted flux above its local continuum divided by the sum of the sky lines.

    A continuum (the target's own light) cancels, so every fiber, not only the sky fibers,
    measures how well the sky lines were subtracted: a focal-plane map of it shows sky-model
    structure across the petal.

    Parameters
    ----------
    wave : (nwave,)
    sflux, sivar, smask : (nspec, nwave)
    sky : (nspec, nwave)
    skyfib : (nspec,) bool, fibers used to find the lines
    nbins : int
        Median-filter width of the local continuum (bins).

    Returns
    -------
    (nspec,) fractional residual (nan where no line bin is good)
    """
    rows = skyfib if np.any(skyfib) else np.ones(sflux.shape[0], bool)
    good = (sivar > 0) & (smask == 0)
    lines = bright_sky_lines(wave, np.median(sky[rows], axis=0), nline=nline, good=good[rows].any(axis=0))
    sel = np.zeros(wave.size, bool)
    for w in lines:
        sel |= np.abs(wave - w) <= halfwidth
    cols = np.flatnonzero(sel)
    # the continuum only where it is used (the line windows: a few dozen columns of thousands)
    res = sflux[:, cols] - running_median_at(np.where(good, sflux, 0.0), cols, nbins)
    line = sky[:, cols] - running_median_at(sky, cols, nbins)
    use = good[:, cols]
    num = np.sum(np.where(use, res, 0.0), axis=1)
    den = np.sum(np.where(use, line, 0.0), axis=1)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def running_median_at(a, cols, width):
    """Running median of each row of ``a`` over ``width`` bins centred on the columns ``cols``,
    edges extended with the end values: ``scipy.ndimage.median_filter(a, size=(1, width),
    mode="nearest")[:, cols]`` without filtering every column.

    Parameters
    ----------
    a : (nrow, ncol)
    cols : (k,) int
    width : int, odd

    Returns
    -------
    (nrow, k)
    """
    half = int(width) // 2
    padded = np.pad(np.asarray(a, float), ((0, 0), (half, half)), mode="edge")
    if len(cols) == 0:
        return np.zeros((a.shape[0], 0))
    windows = np.stack([padded[:, c:c + 2 * half + 1] for c in np.asarray(cols, int)], axis=1)
    return np.median(windows, axis=2)


# --------------------------------------------------------------------------- stars / calibration

def stdstars_metrics(metadata, header):
    """Standard-star fit metrics: NSTDCAND (candidates), NSTARS (fitted), CHI2DOF_MEDIAN,
    SNR_R_MEDIAN."""
    n = 0 if metadata is None else len(metadata)
    out = {"NSTDCAND": int(header.get("NSTDCAND", n)), "NSTARS": int(header.get("NSTARS", n))}
    if n:
        out["CHI2DOF_MEDIAN"] = _f(np.median(metadata["CHI2DOF"]))
        if "SNR_R" in metadata.dtype.names:
            out["SNR_R_MEDIAN"] = _f(np.median(metadata["SNR_R"]))
    return out


def zero_point(wave, calib, exptime, arm):
    """AB zero point [mag]: the magnitude of a source giving 1 electron/s/Angstrom at
    :data:`ZP_WAVE` of the arm.

    Parameters
    ----------
    wave : (nwave,)
    calib : (nspec, nwave)
        electron/Angstrom per 1e-17 erg/s/cm^2/Angstrom over the exposure.
    exptime : float, seconds
    arm : str
    """
    w0 = ZP_WAVE.get(arm, float(np.median(wave)))
    sel = np.abs(wave - w0) <= 20.0
    if not sel.any():
        sel = np.argsort(np.abs(wave - w0))[:50]
    c = np.median(calib[:, sel], axis=1)
    c = np.median(c[c > 0]) if np.any(c > 0) else np.nan
    if not np.isfinite(c) or exptime <= 0:
        return np.nan
    flam = 1e-17 * exptime / c
    fnu = flam * w0 ** 2 / C_ANGSTROM
    return -2.5 * np.log10(fnu) - 48.6


def fluxcalib_metrics(wave, calib, header, exptime, arm):
    """Flux-calibration metrics: ZP (AB mag at :data:`ZP_WAVE`), FLUXFLAG (0 fitted, 1 average
    fallback or failed), NSTDUSED, NSTDREJ, STDCHI2."""
    flag = str(header.get("FLUXFLAG", "OK")).strip().upper()
    return {"ZP": _f(zero_point(wave, calib, exptime, arm)), "FLUXFLAG": 0 if flag == "OK" else 1,
            "FLUXFLAG_NAME": flag, "NSTDUSED": int(header.get("NSTDUSED", 0)), "NSTDREJ": int(header.get("NSTDREJ", 0)),
            "STDCHI2": _f(header.get("STDCHI2", np.nan))}


def calibrated_star_ratios(wave, cflux, civar, cmask, fibers, model_wave, model_flux, model_fibers):
    """Calibrated-to-model flux ratio of each fitted standard over one camera.

    Parameters
    ----------
    wave : (nwave,)
    cflux, civar, cmask : (nspec, nwave) cframe of the camera
    fibers : (nspec,) FIBER of the cframe rows
    model_wave : (nmodel,)
    model_flux : (nstd, nmodel) best-fit models of the stars (1e-17 erg/s/cm^2/Angstrom)
    model_fibers : (nstd,) FIBER of each model

    Returns
    -------
    dict fiber -> ratio of median calibrated flux to median model flux on the camera's good bins
    """
    rowof = {int(f): i for i, f in enumerate(fibers)}
    out = {}
    for k, f in enumerate(model_fibers):
        i = rowof.get(int(f))
        if i is None:
            continue
        good = (civar[i] > 0) & (cmask[i] == 0)
        if good.sum() < 50:
            continue
        m = np.interp(wave[good], model_wave, model_flux[k])
        if np.median(m) <= 0:
            continue
        out[int(f)] = float(np.median(cflux[i, good]) / np.median(m))
    return out


def star_ratio_metrics(ratios):
    """CALIB_RMS (RMS of calibrated/model - 1 over the standards) and MAX_ZP_OFF (largest
    |2.5 log10 ratio|, mag)."""
    r = np.array([v for v in ratios.values() if v > 0])
    if r.size == 0:
        return {"CALIB_RMS": None, "MAX_ZP_OFF": None, "NSTAR_CHECKED": 0}
    return {"CALIB_RMS": _f(np.sqrt(np.mean((r - 1.0) ** 2))), "MAX_ZP_OFF": _f(np.max(np.abs(2.5 * np.log10(r)))),
            "NSTAR_CHECKED": int(r.size)}


def fiber_snr(flux, ivar, mask):
    """(nspec,) S/N per bin: median flux over median noise on the good bins (nan when none)."""
    good = (ivar > 0) & (mask == 0)
    out = np.full(flux.shape[0], np.nan)
    for i in range(flux.shape[0]):
        if good[i].sum() > 10:
            out[i] = np.median(flux[i, good[i]]) / np.median(1.0 / np.sqrt(ivar[i, good[i]]))
    return out


def fit_snr_mag(snr, mag, fiducial, nsig=3.0):
    """Fit log10(S/N) = a + b (mag - fiducial) with clipping.

    Returns
    -------
    dict
        FIDSNR (10**a, the S/N at the fiducial magnitude), SLOPE (b), N (fibers used);
        FIDSNR None with fewer than 3 usable fibers.
    """
    ok = np.isfinite(snr) & np.isfinite(mag) & (snr > 0)
    x, y = mag[ok] - fiducial, np.log10(snr[ok])
    keep = np.ones(x.size, bool)
    coef = None
    for _ in range(3):
        if keep.sum() < 3:
            break
        coef = np.polyfit(x[keep], y[keep], 1) if np.ptp(x[keep]) > 0.2 else np.array([0.0, np.median(y[keep])])
        res = y - np.polyval(coef, x)
        s = robust_sigma(res[keep])
        new = np.abs(res) <= max(nsig * s, 0.05)
        if np.array_equal(new, keep):
            break
        keep = new
    if coef is None or keep.sum() < 3:
        return {"FIDSNR": None, "SLOPE": None, "N": int(ok.sum())}
    return {"FIDSNR": _f(10 ** coef[1]), "SLOPE": _f(coef[0]), "N": int(keep.sum())}


def calibrated_sky_level(wave, sky, calib, fibermap, arm):
    """Median calibrated sky [1e-17 erg/(s cm2 A)] of the sky fibers (all fibers when none) within
    100 A of the arm's reference wavelength (:data:`ZP_WAVE`); None when nothing is calibrated.

    Parameters
    ----------
    wave : (nwave,)
    sky, calib : (nspec, nwave) sky model [electron/A] and calibration vectors
    fibermap : structured (nspec,) or None
    arm : str
    """
    nspec = sky.shape[0]
    skyfib = good_fibers(fibermap, nspec) & (objtype(fibermap, nspec) == "SKY")
    w0 = ZP_WAVE.get(arm, float(np.median(wave)))
    sel = np.abs(wave - w0) <= 100.0
    rows = skyfib if skyfib.any() else np.ones(nspec, bool)
    c = calib[rows][:, sel]
    ratio = sky[rows][:, sel] / np.where(c > 0, c, np.nan)
    return float(np.nanmedian(ratio)) if np.isfinite(ratio).any() else None


def cframe_metrics(cflux, civar, cmask, fibermap, sky_flux=None):
    """S/N-versus-magnitude metrics of a cframe.

    Parameters
    ----------
    cflux, civar, cmask : (nspec, nwave) calibrated
    fibermap : structured (nspec,) with FLUX_R, DESI_TARGET, OBJTYPE
    sky_flux : float, optional
        Median calibrated sky (1e-17 erg/s/cm^2/Angstrom) for SKY_FLUX.

    Returns
    -------
    metrics : dict
        FIDSNR_{class}, SNR_SLOPE_{class}, N_{class} for the classes of :data:`FIDUCIAL_MAG`;
        MEDIAN_SNR (good target fibers); NUM_NEGATIVE_SNR; SKY_FLUX.
    fibers : dict
        SNR (nspec,), MAG (nspec,) r magnitude, CLASS (nspec,).
    """
    nspec = cflux.shape[0]
    snr = fiber_snr(cflux, civar, cmask)
    cls = target_class(fibermap, nspec)
    goodfib = good_fibers(fibermap, nspec)
    if fibermap is not None and "FLUX_R" in fibermap.dtype.names:
        fr = np.asarray(fibermap["FLUX_R"], float)
        mag = np.where(fr > 0, 22.5 - 2.5 * np.log10(np.where(fr > 0, fr, 1.0)), np.nan)
    else:
        mag = np.full(nspec, np.nan)
    tgt = goodfib & (cls != "SKY")
    metrics = {"MEDIAN_SNR": _f(np.nanmedian(snr[tgt])) if np.isfinite(snr[tgt]).any() else None,
               "NUM_NEGATIVE_SNR": int(np.sum(tgt & (snr < 0))),
               "SKY_FLUX": _f(sky_flux) if sky_flux is not None else None}
    for name, fid in FIDUCIAL_MAG.items():
        sel = goodfib & (cls == name)
        fit = fit_snr_mag(snr[sel], mag[sel], fid)
        metrics[f"FIDSNR_{name}"] = fit["FIDSNR"]
        metrics[f"SNR_SLOPE_{name}"] = fit["SLOPE"]
        metrics[f"N_{name}"] = int(sel.sum())
    fibers = {"SNR": [_f(s, 4) for s in snr], "MAG": [_f(m, 5) for m in mag], "CLASS": [str(c) for c in cls]}
    return metrics, fibers


def tsnr2_metrics(scores, fibermap, band):
    """Median template signal-to-noise of a cframe's good target fibers, per tracer.

    Parameters
    ----------
    scores : structured (nspec,) or None
        The cframe's SCORES (``TSNR2_{TRACER}_{B}`` columns).
    fibermap : structured (nspec,) or None
    band : str

    Returns
    -------
    dict
        ``TSNR2_{TRACER}`` (this camera's share); empty without TSNR2 columns.
    """
    if scores is None:
        return {}
    nspec = len(scores)
    sel = good_fibers(fibermap, nspec) & (objtype(fibermap, nspec) != "SKY")
    suffix = "_" + band.upper()
    out = {}
    for n in scores.dtype.names:
        if n.startswith("TSNR2_") and n.endswith(suffix) and sel.any():
            out[n[: -len(suffix)]] = _f(np.median(np.asarray(scores[n], float)[sel]))
    return out


def efftime(exptime, zp, sky_flux, zp_ref, sky_ref):
    """Effective exposure time [s] of a background-limited faint target.

    S/N^2 scales as throughput^2 x time / sky, so
    ``EFFTIME = EXPTIME x 10**(0.8 (ZP - ZP_ref)) x SKY_ref / SKY``: the time the exposure is
    worth under the reference throughput (zero point ZP_ref) and reference (dark) sky.
    None when an input is missing.
    """
    vals = (exptime, zp, sky_flux, zp_ref, sky_ref)
    if any(v is None or not np.isfinite(v) for v in vals) or sky_flux <= 0:
        return None
    return _f(exptime * 10 ** (0.8 * (zp - zp_ref)) * sky_ref / sky_flux)
