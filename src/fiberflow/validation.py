"""Comparisons of pipeline products with the simulator's truth (for tests, the demo and
validation scripts; the pipeline itself never reads truth)."""

from __future__ import annotations

import os

import numpy as np

from .linalg import robust_sigma


class TruthFluxes:
    """The simulator's true flux of a target in one exposure and camera (truth ``FLUX``: the
    object at the instrument resolution through that exposure's aperture), files read once."""

    def __init__(self, truth_root):
        self.root = truth_root
        self.cache = {}

    def __call__(self, night, expid, camera, tid):
        from . import paths
        from .sim.truth import TruthFrame

        key = (night, expid, camera)
        if key not in self.cache:
            path = paths.findfile("truth", truth=self.root, night=night, expid=expid, camera=camera)
            self.cache[key] = TruthFrame.read(path) if os.path.exists(path) else None
        t = self.cache[key]
        if t is None:
            return None
        k = np.flatnonzero(t.fibermap["TARGETID"] == tid)
        return t.flux[k[0]] if k.size else None


def expected_coadd(sp, co, truth_flux, bands=("b", "r", "z")):
    """The coadd the truth predicts: each exposure's true flux coadded with exactly the weights
    of the coadd (same ivar, masks and cross-exposure cosmic-ray rejection).

    Parameters
    ----------
    sp, co : fiberflow.io.spectra.Spectra
        A spectra file and its coadd (per-band layout).
    truth_flux : callable (night, expid, camera, targetid) -> (nwave,) or None
        e.g. :class:`TruthFluxes`.
    bands : sequence of str

    Returns
    -------
    dict band -> (ntarget, nwave) float, NaN rows for targets without truth;
    and dict band -> list of (targetid index, input rows) for the S/N figures.
    """
    from .steps import coadd

    fm = sp.fibermap
    out, rows = {}, {}
    for b in bands:
        if b not in sp.bands or b not in co.bands:
            continue
        exp = np.full(co.flux[b].shape, np.nan)
        rows[b] = []
        for i, tid in enumerate(co.fibermap["TARGETID"]):
            jj = np.flatnonzero(fm["TARGETID"] == tid)
            tr = [truth_flux(int(fm["NIGHT"][j]), int(fm["EXPID"][j]), f"{b}{int(fm['PETAL_LOC'][j])}", tid) for j in jj]
            if not jj.size or any(t is None for t in tr):
                continue
            fl, iv, mk = sp.flux[b][jj].astype(float), sp.ivar[b][jj].astype(float), sp.mask[b][jj]
            rej = None
            if len(jj) > 1 and float(co.header.get("COSMNSIG", 0) or 0) > 0:
                rej = coadd.cosmic_mask(fl, iv * (mk == 0), float(co.header["COSMNSIG"]),
                                        float(co.header.get("COSMFRAC", 0.05)), float(co.header.get("COSMGROW", 2.0)))
            exp[i] = coadd.coadd_band(np.array(tr, float), iv, mk, None, rej)[0]
            rows[b].append((i, jj))
        out[b] = exp
    return out, rows


def coadd_vs_truth(prod, truth_root, bands=("b", "r", "z"), min_single_snr=2.0):
    """Pulls of every multi-exposure coadd of a production against the truth, and its S/N gain.

    The expected coadd is :func:`expected_coadd`.

    Parameters
    ----------
    prod : str
        Production root (``healpix/`` below it).
    truth_root : str
        Simulator truth folder.
    bands : sequence of str
        Bands to compare (bands without truth files are skipped).
    min_single_snr : float
        Targets whose median single-exposure S/N per bin is below this are left out of the
        S/N-gain figure (their median S/N is noise).

    Returns
    -------
    dict nexp -> dict with ``pulls`` (concatenated (n,) over good bins), ``snr_ratio`` (list of
    median coadd S/N over median single-exposure S/N per target and band), ``ntarget``.
    """
    import glob

    from .io.spectra import read_spectra

    truth_flux = TruthFluxes(truth_root)
    out = {}
    for f in sorted(glob.glob(os.path.join(prod, "healpix", "*", "*", "*", "*", "spectra-*.fits"))):
        cpath = f.replace(os.sep + "spectra-", os.sep + "coadd-")
        if not os.path.exists(cpath):
            continue
        sp, co = read_spectra(f), read_spectra(cpath)
        for tid in co.fibermap["TARGETID"]:
            n = int(np.sum(sp.fibermap["TARGETID"] == tid))
            out.setdefault(n, {"pulls": [], "snr_ratio": [], "ntarget": 0})["ntarget"] += 1
        expect, rows = expected_coadd(sp, co, truth_flux, bands)
        for b, exp in expect.items():
            for i, jj in rows[b]:
                entry = out[len(jj)]
                civ = co.ivar[b][i].astype(float)
                ok = (civ > 0) & (co.mask[b][i] == 0)
                if not ok.any():
                    continue
                entry["pulls"].append(((co.flux[b][i] - exp[i]) * np.sqrt(civ))[ok])
                fl, iv = sp.flux[b][jj].astype(float), sp.ivar[b][jj].astype(float)
                single = np.median([np.median((fl[k] * np.sqrt(iv[k]))[ok]) for k in range(len(jj))])
                if len(jj) > 1 and single > min_single_snr:
                    entry["snr_ratio"].append(float(np.median((co.flux[b][i] * np.sqrt(civ))[ok]) / single))
    for entry in out.values():
        entry["pulls"] = np.concatenate(entry["pulls"]) if entry["pulls"] else np.zeros(0)
    return out


def extraction_vs_truth(frame, truth, edge=None):
    """Extracted frame against the truth of an exposure simulated with ``projection="grid"``.

    With that projection every bin's electrons were deposited at the centre of an extraction
    bin, so the true deconvolved spectrum is known exactly per bin (``photons / dwave``) and
    ``R @ truth`` is what the extraction estimates: (flux - R truth) sqrt(ivar) must be unit
    normal (Bolton & Schlegel 2010).

    Parameters
    ----------
    frame : fiberflow.io.frame.Frame
        Extracted frame (electron/Angstrom).
    truth : fiberflow.sim.truth.TruthFrame
        Truth of the same exposure and camera with ``fine_center`` on the frame's grid.
    edge : int, optional
        Bins left out at each end (default ``ndiag // 2``: edge rows of R are cut at the grid's
        end, so they do not see the light beyond it).

    Returns
    -------
    dict with ``pull_mean``, ``pull_std``, ``pull_mad_std`` (over good bins of good fibers),
    ``chi2pix_median`` (same bins), ``rowsum_maxdev`` (max |row sum - 1| over all stored rows),
    ``ngood`` (bins), ``nfiber`` (fibers used), ``pulls`` ((nspec, nwave), NaN where not good).

    Raises
    ------
    ValueError
        When the truth has sub-bin structure or another grid.
    """
    from .models import resolution

    wave = frame.wave
    dw = float(wave[1] - wave[0])
    centers = truth.fine_center
    if centers is None or truth.fine_dwave is None or np.any(truth.fine_dwave != 0):
        raise ValueError("truth was not projected on the extraction grid (simulate with projection='grid')")
    k0 = int(np.argmin(np.abs(centers - wave[0])))
    if k0 + wave.size > centers.size or not np.allclose(centers[k0:k0 + wave.size], wave, atol=1e-6 * dw):
        raise ValueError("truth's bins are not the frame's wavelength grid")
    ftrue = truth.photons[:, k0:k0 + wave.size] / dw
    nspec, ndiag = frame.flux.shape[0], frame.resolution.shape[1]
    edge = ndiag // 2 if edge is None else int(edge)
    good = (frame.ivar > 0) & (frame.mask == 0)
    good[:, :edge] = good[:, wave.size - edge:] = False
    if frame.fibermap is not None and "FIBERSTATUS" in frame.fibermap.dtype.names:
        good[np.asarray(frame.fibermap["FIBERSTATUS"]) != 0] = False
    pulls = np.full(frame.flux.shape, np.nan)
    rowdev = 0.0
    for f in range(nspec):
        rf = resolution.apply(frame.resolution[f], ftrue[f])
        pulls[f] = np.where(good[f], (frame.flux[f] - rf) * np.sqrt(frame.ivar[f]), np.nan)
        rowdev = max(rowdev, float(np.abs(resolution.row_sums(frame.resolution[f]) - 1.0).max()))
    p = pulls[good]
    mad = 1.4826 * np.median(np.abs(p - np.median(p))) if p.size else float("nan")
    chi2 = frame.chi2pix[good] if frame.chi2pix is not None else np.array([np.nan])
    return {"pull_mean": float(p.mean()) if p.size else float("nan"),
            "pull_std": float(p.std()) if p.size else float("nan"), "pull_mad_std": float(mad),
            "chi2pix_median": float(np.median(chi2)), "rowsum_maxdev": rowdev, "ngood": int(p.size),
            "nfiber": int(np.any(good, axis=1).sum()), "pulls": pulls}


def sky_vs_truth(sframe, sky, truth, nline=5, halfwidth=2.0):
    """Sky subtraction of one camera against the simulator's truth.

    Parameters
    ----------
    sframe : fiberflow.io.frame.Frame
        Flat-fielded, sky-subtracted frame (electron/Angstrom).
    sky : fiberflow.io.calib.SkyModel
        The sky model subtracted from it.
    truth : fiberflow.sim.truth.TruthFrame
        Truth of the same exposure and camera (``electrons``, ``sky``, ``fiberflat``).
    nline : int
        Brightest sky lines to measure.
    halfwidth : float
        Half width (Angstrom) of the window summed around each line.

    Returns
    -------
    dict with
        ``lines`` (list of float, Angstrom); ``line_resid_sky`` / ``line_resid_target`` (lists):
        median over sky / target fibers of the summed residual over each line's window,
        as a fraction of the summed sky there (sky fibers: the sframe itself; targets: sframe
        minus the true object); ``pull_std_offline``, ``pull_mean_offline``: pulls of the
        targets' sframe against the true object away from the sky lines (bins within 3 bins of
        a line brighter than 3 sigma over the sky continuum excluded, 20 edge bins too);
        ``resid_cont_frac``: mean sky-fiber residual off the lines over the mean sky continuum;
        ``nsky``, ``ntarget``.
    """
    from scipy.ndimage import binary_dilation, median_filter

    from .qa.metrics import bright_sky_lines, line_window_residuals

    fm = sframe.fibermap
    objtype = np.char.strip(np.asarray(fm["OBJTYPE"]).astype(str)) if fm is not None else np.array([])
    skyf = np.flatnonzero(objtype == "SKY")
    tgt = np.flatnonzero(objtype != "SKY")
    wave = sframe.wave
    obj = (truth.electrons - truth.sky) / truth.fiberflat
    meansky = np.median(sky.flux[skyf], axis=0) if skyf.size else np.median(sky.flux, axis=0)
    good = (sframe.ivar > 0) & (sframe.mask == 0)
    lines = bright_sky_lines(wave, meansky, nline=nline, good=good[skyf if skyf.size else tgt].any(axis=0))
    out = {"lines": lines, "nsky": int(skyf.size), "ntarget": int(tgt.size),
           "line_resid_sky": line_window_residuals(wave, sframe.flux[skyf], good[skyf], meansky, lines, halfwidth),
           "line_resid_target": line_window_residuals(wave, (sframe.flux - obj)[tgt], good[tgt], meansky, lines,
                                                      halfwidth)}
    cont = median_filter(meansky, 51, mode="nearest")
    online = binary_dilation(meansky > cont + 3.0 * np.sqrt(np.maximum(cont, 1.0)), iterations=3)
    off = ~online
    off[:20] = off[-20:] = False
    g = good[tgt] & off[None, :]
    pulls = ((sframe.flux - obj) * np.sqrt(sframe.ivar))[tgt][g]
    out["pull_mean_offline"] = float(pulls.mean()) if pulls.size else float("nan")
    out["pull_std_offline"] = float(pulls.std()) if pulls.size else float("nan")
    gs = good[skyf] & off[None, :]
    out["resid_cont_frac"] = (float(np.mean(sframe.flux[skyf][gs]) / np.mean(cont[off]))
                              if gs.any() and np.mean(cont[off]) > 0 else float("nan"))
    return out


def calibration_ratio(fc, truth, edge=30):
    """Calibration over true calibration (median over fibers) off the telluric bands and the
    ``edge`` bins at each end. fc: FluxCalib, truth: TruthFrame of the same camera; (n,)."""
    from .steps.stdstars import telluric_mask

    sel = ~telluric_mask(fc.wave)
    sel[:edge] = sel[-edge:] = False
    return np.median(fc.calib / truth.calib, axis=0)[sel]


def calib_vs_truth(prod, truth_root, night, expid, spectrograph, min_snr=20.0):
    """Standard-star fits and calibrated point sources of one spectrograph of an exposure against truth.

    Parameters
    ----------
    prod, truth_root : str
        Production root and simulator truth folder.
    night, expid, spectrograph : int
    min_snr : float
        Standards and point sources are compared only above this S/N (per Angstrom-bin median
        of the star over the r camera; integrated over the r band for point sources).

    Returns
    -------
    dict with
        ``stars``: list of dict (FIBER, SNR, DTEFF, DLOGG, DFEH: fitted minus true) of the
        standards fitted with S/N >= min_snr; ``point_ratio``: (n,) calibrated over true flux of
        the non-standard point sources (MORPHTYPE PSF) through the DECam r filter over the r
        camera's range. (The calibration vectors themselves: :func:`calibration_ratio`.)
    """
    from . import paths
    from .io.calib import read_stdstars
    from .io.frame import read_frame
    from .models.photometry import filters
    from .sim.truth import TruthFrame, TruthStdStars
    from .steps.stdstars import STD_BITS

    sp = int(spectrograph)
    out = {"stars": [], "point_ratio": np.zeros(0)}
    std = read_stdstars(paths.findfile("stdstars", prod=prod, night=night, expid=expid, spectrograph=sp))
    ttab = TruthStdStars.read(paths.findfile("truth_stdstars", truth=truth_root, night=night, expid=expid)).table
    rcam = f"r{sp}"
    cf_r = read_frame(paths.findfile("cframe", prod=prod, night=night, expid=expid, camera=rcam))
    snr = np.nanmedian(np.where(cf_r.ivar > 0, cf_r.flux * np.sqrt(cf_r.ivar), np.nan), axis=1)
    for k, fiber in enumerate(np.asarray(std.fibers)):
        sel = (ttab["FIBER"] == fiber) & (ttab["PETAL_LOC"] == sp)
        local = int(fiber) % cf_r.flux.shape[0]
        if not sel.any() or not snr[local] >= min_snr:
            continue
        t = ttab[sel][0]
        m = std.metadata[k]
        out["stars"].append({"FIBER": int(fiber), "SNR": float(snr[local]), "DTEFF": float(m["TEFF"] - t["TEFF"]),
                             "DLOGG": float(m["LOGG"] - t["LOGG"]), "DFEH": float(m["FEH"] - t["FEH"])})
    # point sources: the r filter seen through the r camera, calibrated against true flux
    tr = TruthFrame.read(paths.findfile("truth", truth=truth_root, night=night, expid=expid, camera=rcam))
    fm = cf_r.fibermap
    resp = filters()[1](cf_r.wave) * cf_r.wave
    objtype = np.char.strip(np.asarray(fm["OBJTYPE"]).astype(str))
    morph = np.char.strip(np.asarray(fm["MORPHTYPE"]).astype(str))
    is_std = (np.asarray(fm["DESI_TARGET"]).astype(np.int64) & STD_BITS) != 0
    ratios = []
    for f in np.flatnonzero((objtype == "TGT") & (morph == "PSF") & ~is_std):
        good = cf_r.ivar[f] > 0
        w = resp * good
        true = np.sum(w * tr.flux[f])
        err = np.sqrt(np.sum(w**2 / np.where(good, cf_r.ivar[f], np.inf)))
        if true > 0 and true / err >= min_snr:
            ratios.append(np.sum(w * cf_r.flux[f]) / true)
    out["point_ratio"] = np.asarray(ratios)
    return out


# ---------------------------------------------------------------------------- redshifts
C_KMS = 299792.458
#: DESI's redshift success: |dz| / (1 + z) below this velocity, with ZWARN == 0
SUCCESS_KMS = 1000.0
#: target classes of the success table (the simulator's CLASS)
Z_CLASSES = ("LRG", "ELG", "QSO", "STD")


def load_truth_targets(truth_root):
    """Every simulated tile's targets (``truth-targets-{tileid}.fits``) in one table."""
    import glob

    from .sim.truth import TruthTargets

    files = sorted(glob.glob(os.path.join(truth_root, "tiles", "*", "truth-targets-*.fits")))
    if not files:
        raise FileNotFoundError(f"no truth-targets-*.fits under {truth_root}/tiles: not a simulated production")
    return np.concatenate([TruthTargets.read(f).table for f in files])


def wilson(k, n, z=1.0):
    """Binomial rate k / n and its Wilson score interval (z sigma; sound at k = 0 and k = n).

    Returns
    -------
    (rate, low, high); NaNs when n == 0.
    """
    if n == 0:
        return np.nan, np.nan, np.nan
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return p, 0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half)


def redshift_outcomes(zcat, truth):
    """Each target of a catalog (its ZCAT_PRIMARY row) against the truth.

    Parameters
    ----------
    zcat : structured array
        Catalog rows (TARGETID, Z, ZWARN, ZCAT_PRIMARY, optionally COADD_EXPTIME).
    truth : structured array
        :func:`load_truth_targets` rows.

    Returns
    -------
    structured (ntarget,) with TARGETID, CLASS, ZTRUE, Z, ZWARN, DV [km/s], SUCCESS (ZWARN 0
    and |DV| < 1000 km/s), CATASTROPHIC (ZWARN 0 and |DV| >= 1000 km/s), EXPTIME (COADD_EXPTIME
    or NaN). Sky fibers and targets without truth are left out.
    """
    rows = zcat[zcat["ZCAT_PRIMARY"]] if "ZCAT_PRIMARY" in zcat.dtype.names else zcat
    order = np.argsort(truth["TARGETID"])
    k = np.searchsorted(truth["TARGETID"], rows["TARGETID"], sorter=order)
    k = order[np.clip(k, 0, len(order) - 1)]
    found = truth["TARGETID"][k] == rows["TARGETID"]
    rows, t = rows[found], truth[k[found]]
    keep = np.char.strip(t["CLASS"].astype(str)) != "SKY"
    rows, t = rows[keep], t[keep]
    out = np.zeros(len(rows), dtype=[("TARGETID", "i8"), ("CLASS", "U4"), ("ZTRUE", "f8"), ("Z", "f8"),
                                     ("ZWARN", "i8"), ("DV", "f8"), ("SUCCESS", "?"), ("CATASTROPHIC", "?"),
                                     ("EXPTIME", "f4")])
    out["TARGETID"], out["CLASS"], out["ZTRUE"] = rows["TARGETID"], t["CLASS"], t["Z"]
    out["Z"], out["ZWARN"] = rows["Z"], rows["ZWARN"]
    out["DV"] = C_KMS * (rows["Z"] - t["Z"]) / (1 + t["Z"])
    good = rows["ZWARN"] == 0
    out["SUCCESS"] = good & (np.abs(out["DV"]) < SUCCESS_KMS)
    out["CATASTROPHIC"] = good & (np.abs(out["DV"]) >= SUCCESS_KMS)
    out["EXPTIME"] = rows["COADD_EXPTIME"] if "COADD_EXPTIME" in rows.dtype.names else np.nan
    return out


def success_table(outcomes, ideal=None):
    """Success and catastrophic-failure rates per class, with Wilson 1-sigma intervals.

    Parameters
    ----------
    outcomes : :func:`redshift_outcomes` of the production's catalog
    ideal : :func:`redshift_outcomes` of the ideal reduction of the same targets, optional.
        A target that fails here but succeeds there is a pipeline-induced failure.

    Returns
    -------
    list of dict, one per class present (and "ALL"): CLASS, N, NSUCCESS, SUCCESS (rate, low,
    high), NCATASTROPHIC, CATASTROPHIC (rate, low, high), EXPTIME (median coadd exposure time),
    and with ``ideal``: NIDEAL_SUCCESS, NPIPELINE (pipeline-induced failures), PIPELINE (rate,
    low, high).
    """
    table = []
    classes = [c for c in Z_CLASSES if (outcomes["CLASS"] == c).any()] + ["ALL"]
    if ideal is not None:
        ideal_ok = dict(zip(ideal["TARGETID"].tolist(), ideal["SUCCESS"].tolist()))
    for c in classes:
        o = outcomes if c == "ALL" else outcomes[outcomes["CLASS"] == c]
        n, ns, nc = len(o), int(o["SUCCESS"].sum()), int(o["CATASTROPHIC"].sum())
        row = {"CLASS": c, "N": n, "NSUCCESS": ns, "SUCCESS": wilson(ns, n), "NCATASTROPHIC": nc,
               "CATASTROPHIC": wilson(nc, n),
               "EXPTIME": float(np.nanmedian(o["EXPTIME"])) if n and np.isfinite(o["EXPTIME"]).any() else np.nan}
        if ideal is not None:
            known = [t for t in o["TARGETID"].tolist() if t in ideal_ok]
            ok_here = dict(zip(o["TARGETID"].tolist(), o["SUCCESS"].tolist()))
            npipe = sum(1 for t in known if ideal_ok[t] and not ok_here[t])
            nrev = sum(1 for t in known if ok_here[t] and not ideal_ok[t])
            nk = max(len(known), 1)
            row.update({"NIDEAL": len(known), "NIDEAL_SUCCESS": sum(1 for t in known if ideal_ok[t]),
                        "NPIPELINE": npipe, "PIPELINE": wilson(npipe, len(known)), "NREVERSE": nrev,
                        "NET_PIPELINE": (npipe - nrev) / nk, "NET_PIPELINE_ERR": np.sqrt(npipe + nrev) / nk})
        table.append(row)
    return table


def format_success_table(table):
    """The success table as text lines (rates in percent with their 1-sigma intervals)."""
    def pct(r):
        p, lo, hi = r
        return "-" if not np.isfinite(p) else f"{100 * p:.1f} [{100 * lo:.1f}-{100 * hi:.1f}]"

    ideal = "NPIPELINE" in table[0]
    head = f"{'class':5s} {'N':>5s} {'ok':>5s} {'success % [1 sigma]':>20s} {'cat':>4s} {'catastrophic %':>17s} {'exptime':>8s}"
    if ideal:
        head += f" {'ideal ok':>8s} {'only-ff':>7s} {'only-ideal':>10s} {'net pipeline loss %':>20s}"
    lines = [head]
    for r in table:
        line = (f"{r['CLASS']:5s} {r['N']:5d} {r['NSUCCESS']:5d} {pct(r['SUCCESS']):>20s} {r['NCATASTROPHIC']:4d} "
                f"{pct(r['CATASTROPHIC']):>17s} {r['EXPTIME']:7.0f}s")
        if ideal:
            net = f"{100 * r['NET_PIPELINE']:+.1f} +- {100 * r['NET_PIPELINE_ERR']:.1f}"
            line += f" {r['NIDEAL_SUCCESS']:8d} {r['NPIPELINE']:7d} {r['NREVERSE']:10d} {net:>20s}"
        lines.append(line)
    return lines


NOISE_RATIO_EDGES = (0.5, 0.7, 0.9)  # bin classes of ivar / its running median: sky-line cores .. continuum
NOISE_WINDOW = 101  # bins of that running median


def robust_std(x, nsig=4.0, niter=5):
    """Standard deviation of the Gaussian core of ``x``: starting from
    :func:`fiberflow.linalg.robust_sigma` (1.4826 MAD), the standard deviation of the values
    within ``nsig`` of the mean, iterated (a few far outliers do not widen it; NaN for no values)."""
    x = np.asarray(x, float)
    if not x.size:
        return np.nan
    m, s = np.median(x), robust_sigma(x)
    for _ in range(niter):
        if not s > 0:
            break
        keep = x[np.abs(x - m) < nsig * s]
        m, s = keep.mean(), keep.std()
    return float(s)


def noise_scale(flux, ivar, good, expect, edges=NOISE_RATIO_EDGES, window=NOISE_WINDOW, min_count=500):
    """The coadd's measured scatter about the truth in units of its own sigma, by bin class.

    A coadd's ivar can be conservative or optimistic where the sky-model variance dominates
    (sky-line bins); an ideal reduction drawn at that ivar would carry more (or less) noise than
    the coadd itself. Bins are classed by ``ivar / running median of ivar`` along each spectrum
    (deep sky lines have a low ratio) and the scatter of each class is the robust standard
    deviation (:func:`robust_std`) of the pulls ``(flux - expect) sqrt(ivar)``: the bulk of the noise, not the tails a
    sky-subtraction residual puts on a few bins (those stay the pipeline's own).

    Parameters
    ----------
    flux, ivar : (ntarget, nwave) float
        One band of a coadd.
    good : (ntarget, nwave) bool
        Bins to measure (ivar > 0, mask 0).
    expect : (ntarget, nwave) float
        The truth's expected coadd (:func:`expected_coadd`), NaN rows without truth.
    edges : sequence of float
        Class boundaries of the ivar ratio.
    window : int
        Bins of the running median.
    min_count : int
        A class with fewer measured bins takes the band's overall scatter.

    Returns
    -------
    scale : (ntarget, nwave) float
        Measured sigma / ``1 / sqrt(ivar)`` of each bin's class (1 where nothing is measured).
    classes : list of (lo, hi, nbins, scale), one per class, ratios low to high.
    """
    from scipy.ndimage import median_filter

    flux, ivar = np.asarray(flux, float), np.asarray(ivar, float)
    run = median_filter(ivar, size=(1, window), mode="nearest")
    ratio = np.where(run > 0, ivar / np.where(run > 0, run, 1.0), 1.0)
    use = good & (ivar > 0) & np.isfinite(expect)
    pull = (flux - np.nan_to_num(expect)) * np.sqrt(np.maximum(ivar, 0.0))
    overall = robust_std(pull[use])
    overall = overall if np.isfinite(overall) and overall > 0 else 1.0
    scale = np.full(flux.shape, overall)
    bounds = [0.0, *edges, np.inf]
    classes = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        sel = (ratio >= lo) & (ratio < hi)
        n = int((sel & use).sum())
        v = robust_std(pull[sel & use]) if n >= min_count else overall
        v = v if v > 0 else overall
        scale[sel] = v
        classes.append((lo, hi, n, v))
    return scale, classes


def ideal_coadd(spectra_path, coadd_path, truth_root, seed=0):
    """The ideal reduction of a coadd: the truth's expected coadd (:func:`expected_coadd`: the
    true flux of every exposure through the instrument, coadded with the coadd's own weights)
    plus Gaussian noise as large as the coadd's own measured scatter (:func:`noise_scale`: its
    sigma ``1 / sqrt(ivar)`` times the robust pull width of each bin class), with the ivar of
    that noise. Everything else (mask, resolution, fibermaps) is the coadd's. The header's
    ``IDNOIS{B,R,Z}`` record the scales of the classes (ivar ratio < 0.5, < 0.7, < 0.9, >= 0.9).

    Returns
    -------
    fiberflow.io.spectra.Spectra
    """
    import dataclasses
    import zlib

    from .errors import DataError
    from .io.spectra import read_spectra

    sp, co = read_spectra(spectra_path), read_spectra(coadd_path)
    expect, _ = expected_coadd(sp, co, TruthFluxes(truth_root), co.bands)
    if not expect:
        raise DataError(coadd_path, "has no band with truth (a merged-band coadd cannot be compared)")
    rng = np.random.default_rng([int(seed), zlib.crc32(os.path.basename(coadd_path).encode())])
    flux, ivar = {}, {}
    header = dict(co.header)
    header["IDEAL"] = (True, "truth through the coadd's weights + its measured noise")
    for b in co.bands:
        f, iv = co.flux[b].astype(float), co.ivar[b].astype(float)
        if b in expect:
            scale, classes = noise_scale(f, iv, (iv > 0) & (co.mask[b] == 0), expect[b])
            sig = np.where(iv > 0, scale / np.sqrt(np.where(iv > 0, iv, 1.0)), 0.0)
            have = np.isfinite(expect[b])
            f = np.where(have, np.nan_to_num(expect[b]) + rng.standard_normal(f.shape) * sig, f)
            iv = np.where(have, iv / scale**2, iv)
            header[f"IDNOIS{b.upper()}"] = (",".join(f"{c[3]:.3f}" for c in classes),
                                            "ideal sigma / coadd sigma by ivar ratio class")
        flux[b], ivar[b] = f.astype(np.float32), iv.astype(np.float32)
    return dataclasses.replace(co, flux=flux, ivar=ivar, header=header)


def simulated_spectra(instrument="tiny", nfiber=16, nexp=2, sigma=0.05, seed=3, tileid=1234, petal=0):
    """Spectra of one petal of a simulated tile without the CCD: the simulator's targets
    (LRG, ELG, QSO, standard stars, sky) averaged over each bin of the instrument's grids, through
    a Gaussian resolution (sigma 1 bin, 11 diagonals), plus Gaussian noise, in ``nexp`` exposures.
    For redrock tests and benchmarks at a known S/N.

    Parameters
    ----------
    instrument : str
        Instrument preset (its wavelength grids).
    nfiber : int
    nexp : int
    sigma : float
        Noise per bin [1e-17 erg/s/cm^2/A].

    Returns
    -------
    spectra : fiberflow.io.spectra.Spectra (nexp * nfiber rows)
    fibermap : structured (nfiber,) of the targets
    info : list of dict (the simulator's per-fiber truth: CLASS, Z, ...)
    """
    from .instrument import load_instrument
    from .io.frame import FLUX_UNITS
    from .io.spectra import Spectra
    from .models import resolution
    from .sim import targets
    from .steps import regroup

    inst = load_instrument(instrument)
    rng = np.random.default_rng(seed)
    tile = targets.Tile(tileid, 150.0, 2.0, "dark", "main")
    fm0, flux, info = targets.tile_targets(seed, tile, petal, nfiber)
    grids = {arm: inst.wavegrid(arm) for arm in inst.arms}
    rows, fl, iv, res = [], {b: [] for b in grids}, {b: [] for b in grids}, {b: [] for b in grids}
    seen = {}
    for b, w in grids.items():
        diags = resolution.gaussian_diags(np.full(w.size, 1.0), 11)
        fine = resolution.fine_grid(w)  # the true flux averaged over each bin, then through R
        true = np.array([resolution.bin_average(w, fine, np.interp(fine, targets.MODEL_WAVE, f)) for f in flux]) * 1e17
        rows_ = np.broadcast_to(resolution.diags_to_rows(diags[None])[0], (nfiber, w.size, diags.shape[0]))
        seen[b] = (resolution.apply_rows_each(rows_, true), diags)
    for e in range(nexp):
        rows.append(regroup.exposure_fibermap(fm0, {"NIGHT": 20250301, "EXPID": 500 + e, "MJD-OBS": 60700.0 + e,
                                                   "TILEID": tileid, "EXPTIME": 1000.0}))
        for b, (s, diags) in seen.items():
            fl[b].append(s + rng.normal(0, sigma, s.shape))
            iv[b].append(np.full(s.shape, 1 / sigma**2))
            res[b].append(np.broadcast_to(diags, (nfiber,) + diags.shape))
    fm = np.concatenate(rows)
    cat = {b: np.concatenate(v).astype("f4") for b, v in fl.items()}
    sp = Spectra(list(grids), grids, cat, {b: np.concatenate(v).astype("f4") for b, v in iv.items()},
                 {b: np.zeros(cat[b].shape, "i4") for b in grids},
                 {b: np.concatenate(v).astype("f4") for b, v in res.items()}, fm, None, None,
                 {"TILEID": tileid, "PETAL": petal, "SPGRP": "cumulative", "SPGRPVAL": 20250301}, FLUX_UNITS)
    return sp, fm0, info
