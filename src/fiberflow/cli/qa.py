"""``fiberflow qa-frame | qa-night | qa-exposure | qa-production``: QA metrics, scores, plots
and pages.

- qa-frame (per exposure x camera): metrics of every product of the frame -> QA JSON +
  coversheet PNG. Independent of the thresholds.
- qa-night (per night): scores every frame against the thresholds (and the history of
  earlier nights), rolls up, finds the first bad step -> night JSON, night page, plots.
- qa-exposure (per exposure): focal-plane / amplifier maps and the exposure page.
- qa-production: production table (CSV, one row per frame), index page, trend plots.
"""

from __future__ import annotations

import os

from ..io.datamodel import read_json, write_json


def add_arguments(p, name):
    if name == "qa-frame":
        p.add_argument("--night", type=int, required=True)
        p.add_argument("--expid", type=int, required=True)
        p.add_argument("--camera", required=True)
        p.add_argument("--prod", required=True, help="production root (paths in the JSON are relative to it)")
        for key in ("preproc", "psf", "frame", "fiberflat", "sky", "sframe", "stdstars", "fluxcalib", "cframe"):
            p.add_argument(f"--{key}", help=f"{key} file of this frame")
        p.add_argument("--raw", help="raw file of a ZERO or DARK exposure (compared with --biasnight)")
        p.add_argument("--biasnight", help="master bias of the night (ZERO / DARK exposures)")
        p.add_argument("--config", default=None, help="workflow configuration (instrument gains; ZERO / DARK)")
        p.add_argument("--log", action="append", default=[], metavar="STEP=PATH", help="job log of a step")
        p.add_argument("-o", "--outfile", required=True, help="frame QA JSON")
        p.add_argument("--png", required=True, help="coversheet PNG")
        p.add_argument("--blink", default=None,
                       help="PNG strip of same-scale panels the exposure page blinks between (science: frame, "
                            "sframe, sky; flat: frame, flat-fielded frame; arc: the image)")
    elif name == "qa-night":
        p.add_argument("--night", type=int, required=True)
        p.add_argument("--prod", required=True)
        p.add_argument("--thresholds", required=True, help="QA thresholds YAML (config/qa.yaml)")
        p.add_argument("-i", "--infiles", nargs="*", default=[], help="frame QA JSON files of the night")
        p.add_argument("--history", nargs="*", default=[], help="night QA JSON files of earlier nights")
        p.add_argument("--certification", nargs="*", default=[],
                       help="the night's certification records (a REJECTED calibration is not blamed for the "
                            "science, which did not use it)")
        p.add_argument("-o", "--outfile", required=True, help="night QA JSON")
        p.add_argument("--html", required=True)
        p.add_argument("--trends", required=True, help="PNG: zero point, sky, EFFTIME versus time")
        p.add_argument("--hist", required=True, help="PNG: channel histograms of headline metrics")
    elif name == "qa-exposure":
        p.add_argument("--night", type=int, required=True)
        p.add_argument("--expid", type=int, required=True)
        p.add_argument("--prod", required=True)
        p.add_argument("--nightqa", required=True, help="night QA JSON (scores)")
        p.add_argument("-i", "--infiles", nargs="*", default=[], help="frame QA JSON files of the exposure")
        p.add_argument("-o", "--outfile", required=True, help="exposure page (HTML)")
        p.add_argument("--png", required=True, help="focal-plane / amplifier map PNG")
    else:
        p.add_argument("--prod", required=True)
        p.add_argument("-i", "--infiles", nargs="*", default=[], help="night QA JSON files")
        p.add_argument("--nightqa", nargs="*", default=[], help="night QA reports of tiles (nightqa-{night}.html)")
        p.add_argument("-o", "--outfile", required=True, help="production index (HTML)")
        p.add_argument("--table", required=True, help="production table (CSV)")
        p.add_argument("--trends", required=True)
        p.add_argument("--hist", required=True)


def run(args):
    return {"qa-frame": _frame, "qa-night": _night, "qa-exposure": _exposure,
            "qa-production": _production}[args.command](args)


def _relprod(path, prod):
    path = os.path.abspath(path)
    r = os.path.relpath(path, os.path.abspath(prod))
    return path if r.startswith("..") else r


def _meta(header, night, expid, camera):
    def num(key, default=None):
        v = header.get(key, default)
        try:
            return float(v)
        except (TypeError, ValueError):
            return default

    return {"NIGHT": int(night), "EXPID": int(expid), "CAMERA": camera, "PETAL": int(camera[1:]),
            "OBSTYPE": str(header.get("OBSTYPE", "")).strip().upper(), "TILEID": int(header.get("TILEID", -1) or -1),
            "PROGRAM": str(header.get("PROGRAM", "")).strip(), "EXPTIME": num("EXPTIME"), "MJD": num("MJD-OBS"),
            "AIRMASS": num("AIRMASS")}


def _frame(args):

    from ..errors import DataError
    from ..qa import metrics as M

    cam = args.camera.lower()
    if args.raw or args.biasnight:
        return _bias_frame(args, cam)
    if not any(getattr(args, k) for k in ("preproc", "psf", "frame")):
        raise DataError(None, "qa-frame needs at least one product (--preproc, --psf or --frame, "
                              "or --raw with --biasnight for ZERO / DARK exposures)")
    rec = {"FFQA": 1}
    out = {}
    fibers = {}
    header = {}
    files = {}
    img = None
    if args.preproc:
        from ..io.image import PreprocImage

        img = PreprocImage.read(args.preproc)
        header = dict(img.header)
        out["PREPROC"] = M.preproc_metrics(img.image, img.mask, img.header)
        files["preproc"] = args.preproc
    psf = None
    if args.psf:
        from ..io.psf import read_psf

        psf = read_psf(args.psf)
        header = header or dict(psf.header)
        files["psf"] = args.psf
        if str(header.get("OBSTYPE", "")).strip().upper() in ("FLAT", "SCIENCE") or psf.header.get("FFSTEP") == "traceshift":
            out["TRACESHIFT"] = M.traceshift_metrics(psf.meta)
        else:
            out["PSF"] = M.psf_metrics(psf.meta, getattr(psf, "fiberstatus", None), getattr(psf, "spots", None))
    frame = None
    if args.frame:
        from ..io.frame import read_frame

        frame = read_frame(args.frame)
        header = header or dict(frame.header)
        obstype = str(header.get("OBSTYPE", frame.header.get("OBSTYPE", ""))).strip().upper()
        # a boxcar extraction (quick-look) has no model: no extraction chi2 to judge
        chi2pix = None if str(frame.header.get("EXTRACT", "")).strip() == "boxcar" else frame.chi2pix
        out["EXTRACT"], f = M.frame_metrics(frame.flux, frame.ivar, frame.mask, chi2pix, frame.fibermap, obstype)
        fibers.update(f)
        files["frame"] = args.frame
    meta = _meta(header, args.night, args.expid, cam)
    ff = None
    if args.fiberflat:
        from ..io.calib import read_fiberflat

        ff = read_fiberflat(args.fiberflat)
        out["FIBERFLAT"], f = M.fiberflat_metrics(ff.fiberflat, ff.ivar, ff.mask, ff.header)
        fibers.update(f)
        files["fiberflat"] = args.fiberflat
    sky = sframe = None
    if args.sky and args.sframe:
        from ..io.calib import read_sky
        from ..io.frame import read_frame

        sky, sframe = read_sky(args.sky), read_frame(args.sframe)
        out["SKY"], f = M.sky_metrics(sframe.wave, sframe.flux, sframe.ivar, sframe.mask, sky.flux, sframe.fibermap,
                                      sky.header)
        fibers.update(f)
        files.update(sky=args.sky, sframe=args.sframe)
    stars = None
    if args.stdstars:
        from ..io.calib import read_stdstars

        stars = read_stdstars(args.stdstars)
        out["STDSTARS"] = M.stdstars_metrics(stars.metadata, stars.header)
        files["stdstars"] = args.stdstars
    cal = None
    if args.fluxcalib:
        from ..io.calib import read_fluxcalib

        cal = read_fluxcalib(args.fluxcalib)
        out["FLUXCALIB"] = M.fluxcalib_metrics(cal.wave, cal.calib, cal.header, meta["EXPTIME"] or 0.0, cam[0])
        files["fluxcalib"] = args.fluxcalib
    if args.cframe:
        from ..io.frame import read_frame

        cf = read_frame(args.cframe)
        sky_flux = None
        if sky is not None and cal is not None:
            sky_flux = M.calibrated_sky_level(cf.wave, sky.flux, cal.calib, cf.fibermap, cam[0])
        out["CFRAME"], f = M.cframe_metrics(cf.flux, cf.ivar, cf.mask, cf.fibermap, sky_flux)
        out["CFRAME"].update(M.tsnr2_metrics(cf.scores, cf.fibermap, cam[0]))
        fibers.update(f)
        if stars is not None and cal is not None:
            ratios = M.calibrated_star_ratios(cf.wave, cf.flux, cf.ivar, cf.mask, cf.fibermap["FIBER"], stars.wave,
                                              stars.flux, stars.fibers)
            out["FLUXCALIB"].update(M.star_ratio_metrics(ratios))
        files["cframe"] = args.cframe
        fm = cf.fibermap
    else:
        fm = (sframe.fibermap if sframe is not None else (frame.fibermap if frame is not None else None))
    if fm is not None:
        fibers["FIBER"] = [int(x) for x in fm["FIBER"]]
        for key, col in (("X", "FIBER_X"), ("Y", "FIBER_Y")):
            if col in fm.dtype.names:
                fibers[key] = [M._f(v, 6) for v in fm[col]]
    elif frame is not None:
        fibers["FIBER"] = list(range(frame.nspec))
    logs = _logs(args)
    rec.update(meta)
    rec.update({"QAFILE": _relprod(args.outfile, args.prod), "PLOT": _relprod(args.png, args.prod),
                "FILES": {k: _relprod(v, args.prod) for k, v in files.items()}, "LOGS": logs,
                "METRICS": out, "FIBERS": fibers})
    title = f"{meta['OBSTYPE']} {args.expid} {cam} (night {args.night})"
    _coversheet(args.png, title, meta["OBSTYPE"], img, psf, frame, ff, sky, sframe, fibers)
    if args.blink:
        names, (width, height) = _blink(args.blink, meta["OBSTYPE"], img, frame, ff, sky, sframe)
        rec["BLINK"] = {"FILE": _relprod(args.blink, args.prod), "PANELS": names, "WIDTH": width, "HEIGHT": height}
    write_json(args.outfile, "qa_frame", rec)
    steps = ", ".join(out)
    print(f"qa-frame {cam} {args.expid}: metrics of {steps} -> {args.outfile}")
    return 0


def _logs(args):
    """{STEP: path relative to the production} of the --log STEP=PATH arguments that exist."""
    from ..errors import DataError
    from ..qa import metrics as M

    logs = {}
    for item in args.log:
        step, _, path = item.partition("=")
        if not path or step.upper() not in M.STEPS:
            raise DataError(None, f"--log {item!r}: expected STEP=PATH with STEP one of {', '.join(M.STEPS)}")
        if os.path.exists(path):
            logs[step.upper()] = _relprod(path, args.prod)
    return logs


def _bias_frame(args, cam):
    """QA of a ZERO or DARK exposure: its overscan and its residual from the night's master bias."""
    import numpy as np

    from ..config import load_config
    from ..errors import DataError
    from ..instrument import load_instrument
    from ..io.image import BiasNight
    from ..io.raw import read_raw_camera
    from ..qa import metrics as M
    from ..qa import plots
    from ..steps import preproc

    if not (args.raw and args.biasnight):
        raise DataError(None, "qa-frame of a ZERO / DARK exposure needs both --raw and --biasnight")
    cfg = load_config(args.config)
    inst = load_instrument(cfg["instrument"])
    gains = dict(zip(preproc.AMPS, inst.camera(cam).gain))
    rc = read_raw_camera(args.raw, cam)
    obstype = str(rc.header.get("OBSTYPE", "")).strip().upper()
    if obstype not in ("ZERO", "DARK"):
        raise DataError(args.raw, f"OBSTYPE {rc.header.get('OBSTYPE')!r}: --raw is for ZERO and DARK exposures")
    opts = cfg["preproc"]
    image, stats = preproc.subtract_overscan(rc, opts["overscan_per_row"], opts["ostep_threshold"], args.raw)
    b = BiasNight.read(args.biasnight)
    if b.image.shape != image.shape:
        raise DataError(args.biasnight, f"master bias is {b.image.shape}, the exposure {args.raw} {image.shape}")
    nzero = int(b.header.get("NZERO", 0) or 0)
    used = {int(e) for e in str(b.header.get("EXPIDS", "")).split(",") if e.strip().isdigit()}
    exptime = float(rc.header.get("EXPTIME", 0.0) or 0.0)
    m = M.bias_metrics(image, stats, gains, b.image, b.mask, nzero, int(args.expid) in used,
                       exptime if obstype == "DARK" else 0.0)
    meta = _meta(rc.header, args.night, args.expid, cam)
    rec = {"FFQA": 1, **meta, "QAFILE": _relprod(args.outfile, args.prod), "PLOT": _relprod(args.png, args.prod),
           "FILES": {"raw": _relprod(args.raw, args.prod), "biasnight": _relprod(args.biasnight, args.prod)},
           "LOGS": _logs(args), "METRICS": {"BIAS": m["BIAS"], "PREPROC": m["overscan"]}, "FIBERS": {}}
    gimg = np.ones(image.shape)
    for amp, (sy, sx) in M.amp_slices(image.shape).items():
        gimg[sy, sx] = gains[amp]
    resid = (image - b.image) * gimg
    expected = {a: v for a, v in m["BIAS"]["EXPECTED_AMP"].items() if v}
    title = f"{obstype} {args.expid} {cam} (night {args.night}): NZERO {nzero}"
    plots.bias_coversheet(args.png, title, resid, b.image * gimg, expected)
    if args.blink:
        size = plots.blink_strip(args.blink, [resid.T, (b.image * gimg).T], width=600, height=400)
        rec["BLINK"] = {"FILE": _relprod(args.blink, args.prod), "PANELS": ["exposure - master", "master bias"],
                        "WIDTH": size[0], "HEIGHT": size[1]}
    write_json(args.outfile, "qa_frame", rec)
    print(f"qa-frame {cam} {args.expid}: {obstype} against the master bias of {nzero} zero(s) -> {args.outfile}")
    return 0


def _coversheet(png, title, obstype, img, psf, frame, ff, sky, sframe, fibers):
    import numpy as np

    from ..qa import plots

    if obstype == "SCIENCE" and frame is not None and sky is not None and sframe is not None:
        fib = np.asarray(fibers.get("FIBER", range(frame.nspec)))
        from ..qa.metrics import good_fibers, objtype

        skyfib = good_fibers(frame.fibermap, frame.nspec) & (objtype(frame.fibermap, frame.nspec) == "SKY")
        arr = {k: np.array([np.nan if v is None else v for v in fibers.get(k, [None] * frame.nspec)], float)
               for k in ("THRU", "SKYRESID", "SNR", "MAG")}
        plots.science_coversheet(png, title, frame.wave, frame.flux, sframe.flux, sky.flux, skyfib, fib, arr["THRU"],
                                 arr["SKYRESID"], arr["SNR"], arr["MAG"], fibers.get("CLASS", ["OTHER"] * frame.nspec),
                                 good=(sframe.ivar > 0) & (sframe.mask == 0))
    elif obstype == "FLAT" and frame is not None and ff is not None:
        fib = np.asarray(fibers.get("FIBER", range(frame.nspec)))
        flat = np.array([np.nan if v is None else v for v in fibers.get("FLAT", [])], float)
        plots.flat_coversheet(png, title, frame.wave, frame.flux, ff.fiberflat, fib, flat, ff.meanspec)
    else:
        plots.arc_coversheet(png, title, None if img is None else img.image,
                             getattr(psf, "fiberstatus", None) if psf is not None else None,
                             getattr(psf, "spots", None) if psf is not None else None)


def _blink(png, obstype, img, frame, ff, sky, sframe):
    """Write the blink strip of a frame; returns (panel names, (width, height) of a panel)."""
    import numpy as np

    from ..qa import plots

    if obstype == "SCIENCE" and frame is not None and sky is not None and sframe is not None:
        names, panels = ["frame", "sframe", "sky model"], [frame.flux, sframe.flux, sky.flux]
    elif obstype == "FLAT" and frame is not None and ff is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            flat = np.where(ff.fiberflat > 0, frame.flux / ff.fiberflat, np.nan)
        names, panels = ["flat frame", "frame / fiberflat"], [frame.flux, flat]
    elif frame is not None:
        names, panels = ["frame"], [frame.flux]
    elif img is not None:  # arcs: the CCD image, columns across, rows (wavelength) along
        names, panels = ["image"], [np.asarray(img.image).T]
    else:
        names, panels = ["no data"], [np.zeros((10, 10))]
    return names, plots.blink_strip(png, panels, width=600, height=400 if names == ["image"] else None)


def _night(args):
    from .. import paths
    from ..qa import plots, tables
    from ..qa.html import night_page
    from ..qa.scoring import load_thresholds, thresholds_version

    thr = load_thresholds(args.thresholds)
    frames = []
    for f in args.infiles:
        fr = read_json(f, "qa_frame", "frame QA JSON")
        if int(fr.get("NIGHT", -1)) != args.night:
            from ..errors import DataError

            raise DataError(f, f"frame QA of night {fr.get('NIGHT')} given to the QA of night {args.night}")
        frames.append(fr)
    earlier = [read_json(f, "qa_night", "night QA JSON") for f in args.history]
    earlier = [r for r in earlier if int(r["NIGHT"]) < args.night]
    history = tables.history_from_nights(earlier, thr["history"]["nights"])
    certification = []
    for f in args.certification:
        cert = read_json(f, "certification", "certification record")
        if int(cert.get("NIGHT", -1)) != args.night:
            from ..errors import DataError

            raise DataError(f, f"certification of night {cert.get('NIGHT')} given to the QA of night {args.night}")
        certification += cert.get("DECISIONS", [])
    rec = tables.score_night(args.night, frames, thr, history, certification)
    rec["THRESHOLDS"] = os.path.abspath(args.thresholds)
    rec["THRESHOLDS_VERSION"] = thresholds_version(args.thresholds)
    rec["HISTORY_NIGHTS"] = sorted(int(r["NIGHT"]) for r in earlier)
    _night_plots(rec, args.trends, args.hist, f"night {args.night}", plots, thr)
    write_json(args.outfile, "qa_night", rec)
    exp_pages = {e["EXPID"]: paths.findfile("qa_exposure_html", prod=args.prod, night=args.night, expid=e["EXPID"])
                 for e in rec["EXPOSURES"]}
    night_page(args.html, rec, args.prod, exp_pages, [args.trends, args.hist],
               paths.findfile("qa_production_html", prod=args.prod))
    fb = rec["FIRST_BAD"]
    print(f"qa-night {args.night}: {rec['NEXP']} exposures, status {rec['STATUS']}, {rec['NALARM']} alarms"
          + (f"; first bad step {fb['STEP']} in {fb['EXPIDS']} ({', '.join(fb['CAMERAS'])})" if fb else ""))
    return 0


def _series(records):
    """Per-arm (MJD, value) series of headline metrics over night records."""
    keys = {"ZP": ("FLUXCALIB", "ZP"), "SKY": ("SKY", "SKY_MEDIAN"), "FIDSNR_ELG": ("CFRAME", "FIDSNR_ELG"),
            "MAX_RMS": ("FIBERFLAT", "MAX_RMS"), "MED_RESID_FRAC": ("SKY", "MED_RESID_FRAC"),
            "MAX_ZP_OFF": ("FLUXCALIB", "MAX_ZP_OFF"), "READNOISE": ("PREPROC", "READNOISE_AMP")}
    out = {k: {} for k in keys}
    eff = ([], [])
    from ..qa.scoring import scalar_history_value

    for rec in records:
        for e in rec["EXPOSURES"]:
            if e.get("EFFTIME") is not None:
                eff[0].append(e["MJD"])
                eff[1].append(e["EFFTIME"])
            for cam, fr in e["FRAMES"].items():
                for k, (step, name) in keys.items():
                    val = fr.get("VALUES", {}).get(step, {}).get(name)
                    if val is None:
                        continue
                    t, v = out[k].setdefault(cam[0], ([], []))
                    t.append(e["MJD"])
                    v.append(scalar_history_value(val))
    return out, eff


#: headline metrics drawn per channel on the night and production pages: (label, step, metric)
HEADLINE = (("FIBERFLAT MAX_RMS", "FIBERFLAT", "MAX_RMS"), ("SKY MED_RESID_FRAC", "SKY", "MED_RESID_FRAC"),
            ("FLUXCALIB MAX_ZP_OFF", "FLUXCALIB", "MAX_ZP_OFF"))


def _bands(thr):
    """label -> (normal, warning) static ranges of the headline metrics (None for an open end)."""
    import math

    from ..qa.scoring import ranges_for

    out = {}
    for label, step, name in HEADLINE:
        spec = ((thr or {}).get("metrics", {}).get(step) or {}).get(name)
        if spec and spec.get("normal") is not None:
            normal, warning = ranges_for(spec, "")
            out[label] = tuple(tuple(None if math.isinf(x) else x for x in r) for r in (normal, warning))
    return out


def _night_plots(rec, trends, hist, label, plots, thr=None):
    s, eff = _series([rec])
    plots.time_series(trends, f"{label}: zero point, sky, effective time", [
        ("zero point (AB mag at ZP_WAVE)", s["ZP"], "ZP"), ("median sky [e/A]", s["SKY"], "sky"),
        ("EFFTIME [s]", {"all": eff} if eff[0] else {}, "s")])
    plots.channel_histograms(hist, f"{label}: headline metrics per channel", [
        (lab, {a: v for a, (_, v) in s[name].items()}) for lab, _step, name in HEADLINE], bands=_bands(thr))


def _exposure(args):
    import numpy as np

    from .. import paths
    from ..errors import DataError
    from ..qa import plots
    from ..qa.html import exposure_page

    rec = read_json(args.nightqa, "qa_night", "night QA JSON")
    exp = next((e for e in rec["EXPOSURES"] if int(e["EXPID"]) == args.expid), None)
    if exp is None:
        raise DataError(args.nightqa, f"exposure {args.expid} is not in the night QA of {rec.get('NIGHT')}")
    frames = [read_json(f, "qa_frame", "frame QA JSON") for f in args.infiles]
    title = f"{exp['OBSTYPE']} {args.expid} (night {args.night})"
    sci = [fr for fr in frames if "X" in fr.get("FIBERS", {}) and "LINERESID" in fr["FIBERS"]]
    if exp["OBSTYPE"] == "SCIENCE" and sci:
        panels = []
        for arm in "brz":
            arm_frames = [fr for fr in sci if fr["CAMERA"][0] == arm]
            if not arm_frames:
                continue

            def cat(key, frs=arm_frames):
                return np.concatenate([np.array([np.nan if v is None else v for v in fr["FIBERS"][key]], float)
                                       for fr in frs])

            x, y, fib = cat("X"), cat("Y"), cat("FIBER").astype(int)
            panels.append((f"{arm}: sky-line residual / sky lines", x, y, cat("LINERESID"), fib, (-0.1, 0.1), "RdBu_r"))
            if arm == "r" and all("SNR" in fr["FIBERS"] for fr in arm_frames):
                snr = cat("SNR")
                panels.append(("r: log10 S/N per bin", x, y, np.log10(np.where(snr > 0, snr, np.nan)), fib, (-1.0, 1.5),
                               "viridis"))
        plots.focal_plane(args.png, title, panels)
    elif exp["OBSTYPE"] in ("ZERO", "DARK"):
        vals = {fr["CAMERA"]: fr.get("METRICS", {}).get("BIAS", {}).get("NOISE_RATIO_AMP", {}) for fr in frames}
        plots.amp_map(args.png, f"{title}: noise of exposure - master bias / expected, per amplifier", vals,
                      "noise ratio")
    else:
        vals = {fr["CAMERA"]: fr.get("METRICS", {}).get("PREPROC", {}).get("NOISE_RATIO_AMP", {}) for fr in frames}
        plots.amp_map(args.png, f"{title}: data noise / overscan read noise per amplifier", vals, "noise ratio")
    exposure_page(args.outfile, rec, exp, args.prod, args.png, paths.findfile("qa_night_html", prod=args.prod,
                                                                                night=args.night),
                  paths.findfile("qa_production_html", prod=args.prod))
    print(f"qa-exposure {args.expid}: status {exp['STATUS']} -> {args.outfile}")
    return 0


def _production(args):
    from .. import paths
    from ..qa import plots, tables
    from ..qa.html import production_page

    records = sorted((read_json(f, "qa_night", "night QA JSON") for f in args.infiles), key=lambda r: r["NIGHT"])
    rows = tables.production_rows(records)
    tables.write_csv(args.table, rows)
    s, eff = _series(records)
    plots.time_series(args.trends, "production: zero point, sky, fiducial S/N, effective time", [
        ("zero point (AB mag)", s["ZP"], "ZP"), ("median sky [e/A]", s["SKY"], "sky"),
        ("FIDSNR_ELG (S/N per bin at r=23)", s["FIDSNR_ELG"], "S/N"),
        ("EFFTIME [s]", {"all": eff} if eff[0] else {}, "s")])
    thr = None
    if records and records[-1].get("THRESHOLDS") and os.path.exists(records[-1]["THRESHOLDS"]):
        from ..qa.scoring import load_thresholds

        thr = load_thresholds(records[-1]["THRESHOLDS"])
    plots.channel_histograms(args.hist, "production: headline metrics per channel", [
        (lab, {a: v for a, (_, v) in s[name].items()}) for lab, _step, name in HEADLINE], bands=_bands(thr))
    night_pages = {r["NIGHT"]: paths.findfile("qa_night_html", prod=args.prod, night=r["NIGHT"]) for r in records}
    tile_pages = {}
    for f in getattr(args, "nightqa", None) or []:
        _, ids = paths.parse_path(f)
        tile_pages[int(ids["night"])] = os.path.abspath(f)
    production_page(args.outfile, records, night_pages, [args.trends, args.hist], args.table, tile_pages,
                    paths.findfile("qc_health_html", prod=args.prod))
    counts = tables.status_counts(records)
    print(f"qa-production: {len(records)} nights, {len(rows)} frames "
          f"({counts['ALARM']} ALARM, {counts['WARNING']} WARNING) -> {args.outfile}")
    return 0
