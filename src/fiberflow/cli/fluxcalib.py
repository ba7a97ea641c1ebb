"""``fiberflow stdstars`` (standard-star fits of one spectrograph from its b, r, z sframes),
``fiberflow fluxcalib`` (calibration vector of one camera) and ``fiberflow cframe``
(flux-calibrated frame).

Too few usable standards never stop a petal: stdstars writes what it could fit (possibly no
star), fluxcalib then falls back to the average calibration (``calibration.default_fluxcalib``
/ ``fluxcalib-avg-{camera}.fits``, electron/A per 1e-17 erg/s/cm2/A per second, scaled by
EXPTIME) and flags FLUXFLAG and FIBERSTATUS BADPETALSTDSTAR; without an average calibration
the calibration is written with ivar 0 and the cframe carries no information (ivar 0), flagged.
"""

from __future__ import annotations

import os
import time

from .common import camera_step, check_identity, prod_root
from .fiberflat import read_camera_frame


def add_arguments(p, name):
    p.add_argument("--config", default=None, help="workflow configuration (instrument, stdstars/fluxcalib options)")
    p.add_argument("-o", "--outfile", required=True)
    if name == "stdstars":
        p.add_argument("--spectrograph", type=int, required=True, help="spectrograph (petal) number")
        p.add_argument("--sframes", nargs="+", required=True, help="the spectrograph's sframe-{camera}-{expid}.fits")
    elif name == "fluxcalib":
        p.add_argument("--camera", required=True)
        p.add_argument("-i", "--infile", required=True, help="sframe-{camera}-{expid}.fits")
        p.add_argument("--stdstars", required=True, help="stdstars-{spectrograph}-{expid}.fits")
        p.add_argument("--average", default=None,
                       help="average calibration per second (fallback when too few standards)")
    elif name == "fluxcalib-average":
        p.add_argument("--camera", required=True)
        p.add_argument("-i", "--infiles", nargs="+", required=True,
                       help="fluxcalib-{camera}-{expid}.fits of good exposures (FLUXFLAG OK)")
    else:
        p.add_argument("--camera", required=True)
        p.add_argument("-i", "--infile", required=True, help="sframe-{camera}-{expid}.fits")
        p.add_argument("--fluxcalib", required=True, help="fluxcalib-{camera}-{expid}.fits")


def run(args):
    if args.command == "stdstars":
        return _stdstars(args)
    if args.command == "fluxcalib":
        return _fluxcalib(args)
    if args.command == "fluxcalib-average":
        return _average(args)
    return _cframe(args)


def average_calibration(vectors, exptimes):
    """Average calibration per second from the calibrations of several exposures.

    Parameters
    ----------
    vectors : (nexp, nwave)
        Each exposure's calibration vector (median over its fibers), electron/Angstrom per
        1e-17 erg/s/cm^2/Angstrom.
    exptimes : (nexp,) seconds

    Returns
    -------
    mean : (nwave,) per second: the median over exposures (mean of two)
    scatter : (nwave,) fractional rms over exposures (0 for one exposure)
    """
    import numpy as np

    per_s = np.asarray(vectors, float) / np.asarray(exptimes, float)[:, None]
    mean = np.median(per_s, axis=0)
    scatter = np.std(per_s / np.where(mean > 0, mean, 1.0)[None], axis=0) if per_s.shape[0] > 1 \
        else np.zeros(per_s.shape[1])
    return mean, scatter


def _average(args):
    """``fiberflow fluxcalib-average``: the average calibration per second that fluxcalib scales
    by EXPTIME when a petal has too few standards (``calibration.default_fluxcalib``)."""
    import numpy as np

    from ..bitmasks import specmask
    from ..errors import DataError
    from ..io.calib import FluxCalib, read_fluxcalib

    vectors, exptimes, used, wave = [], [], [], None
    for path in args.infiles:
        fc = read_fluxcalib(path)
        if str(fc.header.get("CAMERA", args.camera)).strip() != args.camera:
            raise DataError(path, f"calibration of camera {fc.header.get('CAMERA')}, not {args.camera}")
        flag = str(fc.header.get("FLUXFLAG", "OK")).strip()
        if flag != "OK":
            print(f"fluxcalib-average {args.camera}: skipping {os.path.basename(path)} (FLUXFLAG {flag})")
            continue
        exptime = float(fc.header.get("EXPTIME", 0.0) or 0.0)
        if exptime <= 0:
            raise DataError(path, "EXPTIME missing or not positive")
        if wave is None:
            wave = fc.wave
        elif fc.wave.shape != wave.shape or not np.allclose(fc.wave, wave):
            raise DataError(path, f"wavelength grid differs from {used[0]}")
        good = (fc.ivar > 0) & (fc.mask == 0)
        vec = np.nanmedian(np.where(good, fc.calib, np.nan), axis=0)
        vectors.append(np.nan_to_num(vec, nan=0.0))
        exptimes.append(exptime)
        used.append(path)
    if not used:
        raise DataError(args.infiles[0], "no input calibration with FLUXFLAG OK")
    mean, scatter = average_calibration(np.array(vectors), np.array(exptimes))
    # the average's error as a fraction: the scatter between exposures, at least 5% (airmass,
    # seeing and transparency change the calibration from one exposure to the next)
    frac = np.maximum(scatter, 0.05)
    ivar = np.where(mean > 0, 1.0 / np.where(mean > 0, (frac * mean) ** 2, 1.0), 0.0)
    mask = np.where(mean > 0, 0, specmask.mask("BADFIBER")).astype(np.int32)
    hdr = {"CAMERA": args.camera, "NAVERAGE": (len(used), "exposures averaged"),
           "AVGUNIT": ("per second", "calibration per second of exposure"),
           "FLUXFLAG": ("OK", "average of good calibrations"),
           "AVGFILES": (",".join(os.path.basename(p) for p in used)[:68], "inputs")}
    FluxCalib(wave, mean[None].astype("f4"), ivar[None].astype("f4"), mask[None], header=hdr).write(args.outfile)
    print(f"fluxcalib-average {args.camera}: {len(used)} calibration(s), median scatter "
          f"{100 * float(np.median(scatter)):.2f}% -> {args.outfile}")
    return 0


def _stdstars(args):
    import numpy as np

    from ..config import load_config
    from ..errors import DataError
    from ..instrument import load_instrument
    from ..io.calib import StdStars
    from ..models.resolution import diags_to_rows
    from ..provenance import provenance_header
    from ..steps import stdstars

    t0 = time.time()
    cfg = load_config(args.config)
    inst = load_instrument(cfg["instrument"])
    opts = stdstars.StdStarOptions.from_config(cfg.get("stdstars"))
    frames = []
    for path in args.sframes:
        fr = read_camera_frame(path, None, inst, ("SCIENCE",))
        cam = fr.camera
        if int(cam[1:]) != args.spectrograph:
            raise DataError(path, f"camera {cam} is not of spectrograph {args.spectrograph}")
        if fr.fibermap is None:
            raise DataError(path, "the sframe has no FIBERMAP: standards cannot be selected")
        frames.append((path, fr))
    frames.sort(key=lambda pf: "brz".index(pf[1].camera[0]))
    expids = {int(fr.header.get("EXPID", -1)) for _, fr in frames}
    if len(expids) != 1:
        raise DataError(args.sframes[0], f"sframes of different exposures {sorted(expids)}")
    fm = frames[0][1].fibermap
    std = stdstars.select_standards(fm)
    rows = {id(fr): diags_to_rows(np.asarray(fr.resolution, float)) for _, fr in frames}
    results, models, fibers = [], [], []
    ref = next((fr for _, fr in frames if fr.camera[0] == "r"), frames[0][1])
    from ..bitmasks import usable_bins

    for f in std:
        ok_r = usable_bins(ref.mask[f], ref.ivar[f], ref.flux[f])
        snr = float(np.median(ref.flux[f][ok_r] * np.sqrt(ref.ivar[f][ok_r]))) if ok_r.any() else 0.0
        fl_g, fl_r = float(fm["FLUX_G"][f]), float(fm["FLUX_R"][f])
        if snr < opts.min_snr or fl_r <= 0:
            print(f"stdstars {args.spectrograph}: fiber {int(fm['FIBER'][f])} not fitted (S/N {snr:.1f}, FLUX_R {fl_r:.3g})")
            continue
        cams = []
        for _, fr in frames:
            ok = usable_bins(fr.mask[f], fr.ivar[f], fr.flux[f])
            cams.append(stdstars.CameraData(fr.wave, np.where(ok, fr.flux[f], 0.0).astype(float),
                                            np.where(ok, fr.ivar[f], 0.0).astype(float), rows[id(fr)][f]))
        gr = -2.5 * np.log10(fl_g / fl_r) if fl_g > 0 else np.nan
        gr_err = _color_error(fm, f)
        res = stdstars.fit_star(cams, gr, gr_err, opts,
                                log=lambda m, f=f: print(f"stdstars {args.spectrograph}: fiber {int(fm['FIBER'][f])}: {m}"))
        res.update({"SNR_R": snr, "DATA_GR": gr})
        results.append(res)
        models.append(stdstars.normalised_model(res["TEFF"], res["LOGG"], res["FEH"], res["RV"], fl_r))
        fibers.append(f)
    meta = np.zeros(len(results), dtype=[("FIBER", "i4"), ("TARGETID", "i8"), ("TEFF", "f4"), ("LOGG", "f4"),
                                         ("FEH", "f4"), ("REDSHIFT", "f8"), ("CHI2DOF", "f4"), ("SNR_R", "f4"),
                                         ("DATA_G-R", "f4"), ("MODEL_G-R", "f4")])
    for k, (f, r) in enumerate(zip(fibers, results)):
        meta[k] = (int(fm["FIBER"][f]), int(fm["TARGETID"][f]), r["TEFF"], r["LOGG"], r["FEH"], r["RV"] / stdstars.C_KMS,
                   r["CHI2DOF"], r["SNR_R"], r["DATA_GR"], r["MODEL_GR"])
    inputs = np.zeros(len(frames), dtype=[("NIGHT", "i4"), ("EXPID", "i4"), ("CAMERA", "U3")])
    for k, (_, fr) in enumerate(frames):
        inputs[k] = (int(fr.header.get("NIGHT", 0)), int(fr.header.get("EXPID", 0)), fr.camera)
    hdr = {k: frames[0][1].header[k] for k in ("NIGHT", "EXPID", "EXPTIME", "TILEID", "MJD-OBS") if k in frames[0][1].header}
    hdr.update(provenance_header("stdstars", cfg.get("stdstars") or {}, args.sframes, cfg, prod_root(cfg)))
    hdr["SPECGRPH"] = (args.spectrograph, "spectrograph")
    hdr["NSTDCAND"] = (int(std.size), "standards with good FIBERSTATUS in the fibermap")
    hdr["NSTARS"] = (len(results), "standards fitted")
    flux = np.array(models, dtype="f4").reshape(len(models), stdstars.MODEL_WAVE.size)
    fibs = np.array([int(fm["FIBER"][f]) for f in fibers], dtype=np.int32)
    fmrows = fm[np.array(fibers, int)]
    if not fibers:
        # FITS images cannot be empty: a petal without a fitted standard gets one row with
        # FIBER -1 and zero flux (NSTARS = 0); fluxcalib matches no fiber and falls back
        flux = np.zeros((1, stdstars.MODEL_WAVE.size), "f4")
        fibs = np.array([-1], np.int32)
        meta = np.zeros(1, dtype=meta.dtype)
        meta["FIBER"] = -1
        fmrows = fm[:1].copy()
        fmrows["FIBER"] = -1
    StdStars(stdstars.MODEL_WAVE, flux, fibs, meta, fmrows, inputs, hdr).write(args.outfile)
    print(f"stdstars {args.spectrograph}: {len(results)} of {std.size} standards fitted in {time.time() - t0:.1f} s "
          f"-> {args.outfile}")
    return 0


def _color_error(fm, f):
    """g-r photometric error [mag] from FLUX_IVAR_G/R (0 when unknown)."""
    import numpy as np

    names = fm.dtype.names or ()
    if "FLUX_IVAR_G" not in names or "FLUX_IVAR_R" not in names:
        return 0.0
    err2 = 0.0
    for b in ("G", "R"):
        fl, iv = float(fm[f"FLUX_{b}"][f]), float(fm[f"FLUX_IVAR_{b}"][f])
        if fl > 0 and iv > 0:
            err2 += (1.0857 / (fl * np.sqrt(iv))) ** 2
    return float(np.sqrt(err2))


def _fluxcalib(args):
    import numpy as np

    from ..bitmasks import fibermask, specmask
    from ..errors import DataError
    from ..io.calib import FluxCalib, read_fluxcalib, read_stdstars
    from ..models.resolution import diags_to_rows
    from ..provenance import provenance_header
    from ..steps import fluxcalib, stdstars

    t0 = time.time()
    cfg, inst, cam = camera_step(args)
    fr = read_camera_frame(args.infile, cam, inst, ("SCIENCE",))
    stars = read_stdstars(args.stdstars)
    check_identity(stars.header, args.stdstars, "standard-star file", expid=fr.header.get("EXPID"))
    if not np.all(np.isfinite(stars.flux)) or not np.all(np.isfinite(stars.wave)):
        raise DataError(args.stdstars, "standard-star model fluxes have NaN or infinite values")
    opts = fluxcalib.FluxCalibOptions.from_config(cfg["fluxcalib"])
    rows = diags_to_rows(np.asarray(fr.resolution, float))
    fibers = np.asarray(fr.fibermap["FIBER"]) if fr.fibermap is not None else np.arange(fr.nspec)
    index = {int(fb): k for k, fb in enumerate(fibers)}
    sel = [index[int(fb)] for fb in stars.fibers if int(fb) in index]
    hdr = {k: fr.header[k] for k in ("NIGHT", "EXPID", "EXPTIME", "TILEID", "MJD-OBS", "AIRMASS") if k in fr.header}
    hdr.update(provenance_header("fluxcalib", cfg["fluxcalib"], [args.infile, args.stdstars], cfg, prod_root(cfg)))
    hdr["CAMERA"] = cam
    hdr["IN_SFRAM"] = (os.path.basename(args.infile), "sky-subtracted frame")
    hdr["IN_STARS"] = (os.path.basename(args.stdstars), "standard-star models")
    fm_std = stars.fibermap
    ok_std = len(sel) >= opts.min_stdstars
    res = None
    if ok_std:
        sel = np.array(sel)
        binned, _ = stdstars.model_on_frame(fr.wave, stars.wave, stars.flux.astype(float), rows[sel])
        try:
            res = fluxcalib.fit_calibration(fr.flux[sel].astype(float), fr.ivar[sel].astype(float), fr.mask[sel],
                                            rows[sel], binned, opts, telluric=stdstars.telluric_mask(fr.wave))
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise DataError(args.infile, f"flux calibration fit failed: {exc}") from exc
        ok_std = int(res["used"].sum()) >= opts.min_stdstars
    if ok_std:
        cal, var = fluxcalib.fiber_calibration(rows, res["calib"], res["cov_band"])
        civ = np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), 0.0)
        cmask = np.where(cal > 0, 0, specmask.mask("BADFIBER")).astype(np.int32)
        hdr["FLUXFLAG"] = ("OK", "calibration from this exposure's standards")
        hdr["NSTDUSED"] = (int(res["used"].sum()), "standards used")
        hdr["NSTDREJ"] = (int(np.sum(~res["used"])), "standards rejected")
        hdr["STDCHI2"] = (float(np.median(res["chi2dof"][res["used"]])), "median chi2/dof of the standards")
        hdr["STDSCRMS"] = (float(np.std(res["scale"][res["used"]])), "rms of the per-star scales")
        corr = np.zeros(len(sel), dtype=[("FIBER", "i4"), ("SCALE", "f4"), ("USED", "bool"), ("CHI2DOF", "f4")])
        corr["FIBER"], corr["SCALE"], corr["USED"], corr["CHI2DOF"] = fibers[sel], res["scale"], res["used"], res["chi2dof"]
        what = f"{int(res['used'].sum())} standards"
    else:
        nused = 0 if res is None else int(res["used"].sum())
        msg = f"{nused or len(sel)} usable standard(s) < min_stdstars {opts.min_stdstars}"
        exptime = float(fr.header.get("EXPTIME", 0.0))
        corr = None
        if args.average:
            avg = read_fluxcalib(args.average)
            if avg.calib.shape[1] != fr.nwave or not np.allclose(avg.wave, fr.wave):
                raise DataError(args.average, f"average calibration grid differs from {args.infile}")
            if exptime <= 0:
                raise DataError(args.infile, "EXPTIME missing or not positive: cannot scale the average calibration")
            vec = np.median(avg.calib.astype(float), axis=0) * exptime
            cal = np.broadcast_to(vec, fr.flux.shape).copy()
            # the average carries a systematic error of a few %: say so in the ivar (5%)
            civ = np.where(cal > 0, 1.0 / np.where(cal > 0, (0.05 * cal) ** 2, 1.0), 0.0)
            hdr["FLUXFLAG"] = ("AVERAGE", "too few standards: average calibration x EXPTIME")
            hdr["IN_AVGCL"] = (os.path.basename(args.average), "average calibration")
            what = f"average calibration ({msg})"
        else:
            cal = np.ones(fr.flux.shape)
            civ = np.zeros(fr.flux.shape)
            hdr["FLUXFLAG"] = ("NOCALIB", "too few standards and no average calibration")
            what = f"NO calibration ({msg}; set calibration.default_fluxcalib)"
        cmask = np.full(fr.flux.shape, specmask.mask("BADFIBER"), np.int32) if not args.average else \
            np.zeros(fr.flux.shape, np.int32)
        hdr["NSTDUSED"] = (0, "standards used")
        print(f"fluxcalib {cam}: WARNING {msg}")
    fm_std = fm_std[np.asarray(fm_std["FIBER"]) >= 0] if fm_std is not None else None
    fcal = FluxCalib(fr.wave, cal.astype("f4"), civ.astype("f4"), cmask, corr,
                     fm_std if fm_std is not None and len(fm_std) else None, hdr)
    if hdr["FLUXFLAG"][0] != "OK":
        fcal.header["BADPETAL"] = (fibermask.mask("BADPETALSTDSTAR"), "FIBERSTATUS bits the cframe sets")
    elif hdr["STDSCRMS"][0] > opts.max_star_rms:
        fcal.header["BADPETAL"] = (fibermask.mask("BADPETALFLUXCAL"), "FIBERSTATUS bits the cframe sets")
        print(f"fluxcalib {cam}: WARNING rms of the standards' scales {hdr['STDSCRMS'][0]:.3f} > fluxcalib.max_star_rms "
              f"{opts.max_star_rms:g}: the cframe gets BADPETALFLUXCAL")
    fcal.write(args.outfile)
    print(f"fluxcalib {cam}: {what}, {time.time() - t0:.1f} s -> {args.outfile}")
    return 0


def _cframe(args):
    import numpy as np

    from ..errors import DataError
    from ..io.calib import read_fluxcalib
    from ..io.frame import FLUX_UNITS, Frame
    from ..provenance import provenance_header
    from ..steps import fluxcalib

    cfg, inst, cam = camera_step(args)
    fr = read_camera_frame(args.infile, cam, inst, ("SCIENCE",))
    cal = read_fluxcalib(args.fluxcalib)
    check_identity(cal.header, args.fluxcalib, "flux calibration", camera=cam, expid=fr.header.get("EXPID"))
    if cal.calib.shape != fr.flux.shape or not np.allclose(cal.wave, fr.wave):
        raise DataError(args.fluxcalib, f"calibration is {cal.calib.shape}, the sframe {args.infile} is {fr.flux.shape}")
    usable = (cal.ivar > 0) & np.isfinite(cal.calib)
    if not np.all(np.isfinite(cal.calib[cal.ivar > 0])):
        raise DataError(args.fluxcalib, "calibration has NaN or infinite values on bins with ivar > 0")
    flag = str(cal.header.get("FLUXFLAG", "OK")).strip().upper()
    if flag != "NOCALIB" and not np.any(usable & (cal.calib > 0)):
        raise DataError(args.fluxcalib, f"FLUXFLAG is {flag} but the calibration has no positive value with ivar > 0")
    flux, ivar, mask = fluxcalib.apply_calibration(fr.flux.astype(float), fr.ivar.astype(float), fr.mask,
                                                   cal.calib.astype(float), cal.ivar.astype(float), cal.mask)
    fm = None if fr.fibermap is None else fr.fibermap.copy()
    bad = int(cal.header.get("BADPETAL", 0) or 0)
    # petal-level QA bits (DESI): no usable sky model, no calibration at all
    from ..bitmasks import fibermask

    if str(fr.header.get("SKYFLAG", "OK")).strip().upper() != "OK":
        bad |= fibermask.mask("BADPETALSKY")
    if str(cal.header.get("FLUXFLAG", "OK")).strip().upper() == "NOCALIB":
        bad |= fibermask.mask("BADPETALFLUXCAL")
    if fm is not None and bad and "FIBERSTATUS" in (fm.dtype.names or ()):
        fm["FIBERSTATUS"] |= bad
    hdr = dict(fr.header)
    hdr.update(provenance_header("cframe", {}, [args.infile, args.fluxcalib], cfg, prod_root(cfg)))
    hdr["BUNIT"] = FLUX_UNITS
    hdr["IN_CALIB"] = (os.path.basename(args.fluxcalib), "flux calibration applied")
    hdr["FLUXFLAG"] = cal.header.get("FLUXFLAG", "OK")
    Frame(fr.wave, flux.astype("f4"), ivar.astype("f4"), mask.astype(np.int32), fr.resolution, fm, fr.chi2pix, None,
          hdr, FLUX_UNITS).write(args.outfile)
    print(f"cframe {cam}: {hdr['FLUXFLAG']} calibration -> {args.outfile}")
    return 0
