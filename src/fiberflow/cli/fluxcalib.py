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

from .common import camera_step, check_identity, prod_root, read_camera_frame


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
        p.add_argument("--thresholds", default=None,
                       help="QA thresholds YAML whose certification: fluxcalib-average: ranges judge it "
                            "(default: NAVERAGE >= 5 normal, >= 3 warning; SCATTER <= 0.05 normal, <= 0.10 warning)")
        p.add_argument("--ledger", default=None,
                       help="certification ledger YAML (an entry {calibration: fluxcalib-average, night: the latest "
                            "night of the inputs, camera, decision, who, when, reason} overrides)")
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

    from ..qa.certify import certify_average, load_ledger
    from ..qa.scoring import load_thresholds

    thresholds = load_thresholds(args.thresholds) if args.thresholds else None
    ledger = load_ledger(args.ledger)  # both checked before the work
    vectors, exptimes, used, wave, nights = [], [], [], None, []
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
        nights.append(int(fc.header.get("NIGHT", 0) or 0))
    if not used:
        raise DataError(args.infiles[0], "no input calibration with FLUXFLAG OK")
    mean, scatter = average_calibration(np.array(vectors), np.array(exptimes))
    # the average's error as a fraction: the scatter between exposures, at least 5% (airmass,
    # seeing and transparency change the calibration from one exposure to the next)
    frac = np.maximum(scatter, 0.05)
    ivar = np.where(mean > 0, 1.0 / np.where(mean > 0, (frac * mean) ** 2, 1.0), 0.0)
    mask = np.where(mean > 0, 0, specmask.mask("BADFIBER")).astype(np.int32)
    med_scatter = float(np.median(scatter[mean > 0])) if np.any(mean > 0) else float("inf")
    night = max(nights)
    cert = certify_average({"NAVERAGE": len(used), "SCATTER": med_scatter}, args.camera, night, thresholds, ledger)
    hdr = {"CAMERA": args.camera, "NAVERAGE": (len(used), "exposures averaged"),
           "SCATMED": (med_scatter, "median fractional scatter between them"),
           "AVGNIGHT": (night, "latest night of the inputs (the ledger's key)"),
           "AVGUNIT": ("per second", "calibration per second of exposure"),
           "FLUXFLAG": ("OK", "average of good calibrations"),
           "AVGFILES": (",".join(os.path.basename(p) for p in used)[:68], "inputs"),
           "CERTSTAT": (cert["STATUS"], "certification (REJECTED: fluxcalib does not use it)"),
           "CERTSRC": (str(cert["SOURCE"])[:40], "auto or ledger:who"),
           "CERTWHY": (str(cert["REASON"])[:48], "reason (abridged)")}
    FluxCalib(wave, mean[None].astype("f4"), ivar[None].astype("f4"), mask[None], header=hdr).write(args.outfile)
    print(f"fluxcalib-average {args.camera}: {len(used)} calibration(s), median scatter "
          f"{100 * med_scatter:.2f}%, {cert['STATUS']} ({cert['REASON']}) -> {args.outfile}")
    return 0


def _stdstars(args):
    import numpy as np

    from ..config import load_config
    from ..errors import DataError
    from ..instrument import load_instrument
    from ..io.calib import StdStars
    from ..models.resolution import diags_to_rows
    from ..provenance import step_header
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
    cameras = [{"camera": fr.camera, "wave": fr.wave, "flux": fr.flux, "ivar": fr.ivar, "mask": fr.mask,
                "rows": diags_to_rows(np.asarray(fr.resolution, float))} for _, fr in frames]
    res = stdstars.stdstars_step(cameras, frames[0][1].fibermap, opts,
                                 log=lambda m: print(f"stdstars {args.spectrograph}: {m}"))
    inputs = np.zeros(len(frames), dtype=[("NIGHT", "i4"), ("EXPID", "i4"), ("CAMERA", "U3")])
    for k, (_, fr) in enumerate(frames):
        inputs[k] = (int(fr.header.get("NIGHT", 0)), int(fr.header.get("EXPID", 0)), fr.camera)
    hdr = step_header("stdstars", cfg.get("stdstars") or {}, args.sframes, cfg, prod_root(cfg), base=frames[0][1].header,
                      keep=("NIGHT", "EXPID", "EXPTIME", "TILEID", "MJD-OBS"))
    hdr["SPECGRPH"] = (args.spectrograph, "spectrograph")
    hdr["NSTDCAND"] = (res["ncand"], "standards with good FIBERSTATUS in the fibermap")
    hdr["NSTARS"] = (res["nfit"], "standards fitted")
    StdStars(stdstars.MODEL_WAVE, res["flux"], res["fibers"], res["meta"], res["fibermap"], inputs, hdr).write(args.outfile)
    print(f"stdstars {args.spectrograph}: {res['nfit']} of {res['ncand']} standards fitted in {time.time() - t0:.1f} s "
          f"-> {args.outfile}")
    return 0


def _fluxcalib(args):
    import numpy as np

    from ..errors import DataError
    from ..io.calib import FluxCalib, read_fluxcalib, read_stdstars
    from ..models.resolution import diags_to_rows
    from ..provenance import step_header
    from ..steps import fluxcalib

    t0 = time.time()
    cfg, inst, cam = camera_step(args)
    fr = read_camera_frame(args.infile, cam, inst, ("SCIENCE",))
    stars = read_stdstars(args.stdstars)
    check_identity(stars.header, args.stdstars, "standard-star file", expid=fr.header.get("EXPID"))
    if not np.all(np.isfinite(stars.flux)) or not np.all(np.isfinite(stars.wave)):
        raise DataError(args.stdstars, "standard-star model fluxes have NaN or infinite values")
    opts = fluxcalib.FluxCalibOptions.from_config(cfg["fluxcalib"])
    fibers = np.asarray(fr.fibermap["FIBER"]) if fr.fibermap is not None else np.arange(fr.nspec)
    average = None
    if args.average:
        avg = read_fluxcalib(args.average)
        if str(avg.header.get("CERTSTAT", "")).strip() == "REJECTED":
            print(f"fluxcalib {cam}: the average calibration {os.path.basename(args.average)} is REJECTED "
                  f"({avg.header.get('CERTWHY', '')}); not used")
        else:
            average = (avg.wave, avg.calib)
    try:
        res = fluxcalib.fluxcalib_step(fr.wave, fr.flux, fr.ivar, fr.mask, diags_to_rows(np.asarray(fr.resolution, float)),
                                       fibers, float(fr.header.get("EXPTIME", 0.0)),
                                       (stars.wave, stars.flux, stars.fibers), average, opts)
    except ValueError as exc:
        bad = args.average if "average calibration's" in str(exc) else args.infile
        raise DataError(bad, str(exc)) from exc
    for msg in res["warnings"]:
        print(f"fluxcalib {cam}: WARNING {msg}")
    named = {"IN_SFRAM": (args.infile, "sky-subtracted frame"), "IN_STARS": (args.stdstars, "standard-star models")}
    if res["cards"]["FLUXFLAG"][0] == "AVERAGE":
        named["IN_AVGCL"] = (args.average, "average calibration")
    hdr = step_header("fluxcalib", cfg["fluxcalib"], named, cfg, prod_root(cfg), base=fr.header, camera=cam,
                      keep=("NIGHT", "EXPID", "EXPTIME", "TILEID", "MJD-OBS", "AIRMASS"))
    hdr.update(res["cards"])
    if res["badpetal"]:
        hdr["BADPETAL"] = (res["badpetal"], "FIBERSTATUS bits the cframe sets")
    fm_std = stars.fibermap
    fm_std = fm_std[np.asarray(fm_std["FIBER"]) >= 0] if fm_std is not None else None
    fcal = FluxCalib(fr.wave, res["calib"].astype("f4"), res["ivar"].astype("f4"), res["mask"], res["fibercorr"],
                     fm_std if fm_std is not None and len(fm_std) else None, hdr)
    fcal.write(args.outfile)
    print(f"fluxcalib {cam}: {res['summary']}, {time.time() - t0:.1f} s -> {args.outfile}")
    return 0


def _cframe(args):
    import numpy as np

    from ..errors import DataError
    from ..io.calib import read_fluxcalib
    from ..io.frame import FLUX_UNITS, Frame
    from ..provenance import step_header
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
    hdr = step_header("cframe", {}, {"": (args.infile, ""), "IN_CALIB": (args.fluxcalib, "flux calibration applied")},
                      cfg, prod_root(cfg), base=fr.header)
    hdr["BUNIT"] = FLUX_UNITS
    hdr["FLUXFLAG"] = cal.header.get("FLUXFLAG", "OK")
    # DESI's TSNR2_{TRACER}_{B} SCORES: the depth reached at each fiber for each target class
    from ..io.tsnr import read_ensemble
    from ..models.scores import scores_table

    ens = read_ensemble()
    band = cam[0]
    cols = fluxcalib.tsnr_scores(fr.wave, cal.calib.astype(float), fr.ivar.astype(float), (ivar > 0) & (mask == 0),
                                 fm, band, ens)
    tids = fm["TARGETID"] if fm is not None and "TARGETID" in (fm.dtype.names or ()) else np.arange(len(flux))
    hdr["TSNRENS"] = (f"{ens.NAME} v{ens.VERSION}", "template ensembles of the TSNR2 scores")
    Frame(fr.wave, flux.astype("f4"), ivar.astype("f4"), mask.astype(np.int32), fr.resolution, fm, fr.chi2pix,
          scores_table(tids, {band: cols}), hdr, FLUX_UNITS).write(args.outfile)
    print(f"cframe {cam}: {hdr['FLUXFLAG']} calibration -> {args.outfile}")
    return 0
