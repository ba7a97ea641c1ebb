"""``fiberflow psf`` (PSF fit of one arc camera), ``fiberflow psfnight`` (nightly PSF) and
``fiberflow traceshift`` (the nightly PSF moved onto a flat or science exposure)."""

from __future__ import annotations

from .common import add_certification_arguments, camera_step, check_identity, check_psf, prod_root


def add_arguments(p, name):
    p.add_argument("--config", default=None, help="workflow configuration (instrument preset, psf options)")
    p.add_argument("--camera", required=True, help="camera, e.g. r0")
    p.add_argument("-o", "--outfile", required=True)
    if name == "psf":
        p.add_argument("-i", "--infile", required=True, help="preprocessed arc preproc-{camera}-{expid}.fits")
        p.add_argument("--start", required=True, help="starting PSF (nominal or a previous night's psfnight)")
    elif name == "traceshift":
        p.add_argument("-i", "--infile", required=True, help="preprocessed flat or science preproc-{camera}-{expid}.fits")
        p.add_argument("--psf", required=True, help="nightly PSF psfnight-{camera}-{night}.fits")
    else:
        p.add_argument("-i", "--infiles", nargs="*", default=[], help="the night's arc PSFs fit-psf-{camera}-{expid}.fits")
        p.add_argument("--night", type=int, required=True)
        p.add_argument("--fallback", default=None,
                       help="PSF used when the night has no usable arc PSF (nominal or an earlier night's)")
        add_certification_arguments(p)


def run(args):
    cfg, inst, cam = camera_step(args)
    if args.command == "psf":
        return _psf(args, cfg, inst, cam)
    if args.command == "traceshift":
        return _traceshift(args, cfg, inst, cam)
    return _psfnight(args, cfg, inst, cam)


def _traceshift(args, cfg, inst, cam):
    from ..errors import DataError
    from ..io.image import PreprocImage
    from ..io.psf import read_psf
    from ..provenance import step_header
    from ..steps import traceshift

    img = PreprocImage.read(args.infile)
    check_identity(img.header, args.infile, "preprocessed image", camera=cam)
    obstype = str(img.header.get("OBSTYPE", "")).strip().upper()
    if obstype not in ("FLAT", "SCIENCE"):
        raise DataError(args.infile, f"OBSTYPE is {obstype or 'missing'!r}; trace shifts are measured on FLAT or SCIENCE")
    psf = read_psf(args.psf)
    check_psf(psf, args.psf, inst, img.image.shape, args.infile, camera=cam)
    opts = traceshift.TraceShiftOptions.from_config(cfg["traceshift"])
    try:
        out, _ = traceshift.trace_shift(img.image, img.ivar, psf, continuum_only=(obstype == "FLAT"), opts=opts,
                                        log=lambda m: print(f"traceshift {cam}: {m}"))
    except ValueError as exc:
        raise DataError(args.infile, str(exc)) from exc
    hdr = step_header("traceshift", cfg["traceshift"], {"IN_IMAGE": (args.infile, "image the shifts were measured on"),
                                                        "IN_PSF": (args.psf, "nightly PSF")},
                      cfg, prod_root(cfg), base=img.header, keep=("NIGHT", "EXPID", "EXPTIME", "MJD-OBS", "OBSTYPE"),
                      camera=cam)
    out.header = {k: v for k, v in out.header.items() if k not in ("TRUTH", "NOMINAL", "FALLBACK", "ARCEXP")
                  and not k.startswith("FF")}
    out.header.update(hdr)
    out.spots = None
    out.write(args.outfile)
    print(f"traceshift {cam}: dx {out.meta['MEANDX'][0]:+.3f} px, dy {out.meta['MEANDY'][0]:+.3f} px "
          f"({out.meta['DYMETHOD'][0]}) -> {args.outfile}")
    return 0


def _psf(args, cfg, inst, cam):
    import numpy as np

    from ..errors import DataError
    from ..io.image import PreprocImage
    from ..io.psf import read_psf
    from ..models import arclines
    from ..models import psf as psfmodel
    from ..provenance import step_header
    from ..steps import psffit

    opts = cfg["psf"]
    img = PreprocImage.read(args.infile)
    obstype = str(img.header.get("OBSTYPE", "")).strip().upper()
    if obstype != "ARC":
        raise DataError(args.infile, f"OBSTYPE is {obstype or 'missing'!r}; a PSF is fitted on ARC exposures")
    if str(img.header.get("CAMERA", cam)).strip().lower() != cam:
        raise DataError(args.infile, f"CAMERA is {img.header.get('CAMERA')!r}, expected {cam}")
    psffit.check_arc(img.image, img.ivar, args.infile)
    start = read_psf(args.start)
    check_psf(start, args.start, inst, img.image.shape, args.infile, camera=cam)
    wmin, wmax = psfmodel.wavelength_range(start)
    lines = arclines.lines_for_camera(cam[0], float(np.max(wmin)), float(np.min(wmax)), path=opts["line_list"])
    refine = arclines.refinement_lines(float(np.max(wmin)), float(np.min(wmax))) if opts["refine"] else None
    fit_opts = psffit.PSFFitOptions.from_config(opts)
    try:
        psf = psffit.fit_psf(img.image, img.ivar, img.readnoise, start, cam[0], lines, inst.bundlesize, fit_opts,
                             log=lambda m: print(f"psf {cam}: {m}"), refine_lines=refine)
    except ValueError as exc:
        raise DataError(args.infile, str(exc)) from exc
    hdr = step_header("psf", opts, {"IN_IMAGE": (args.infile, "arc image"), "IN_PSF": (args.start, "starting PSF")},
                      cfg, prod_root(cfg), base=img.header, keep=("NIGHT", "EXPID", "EXPTIME", "MJD-OBS"), camera=cam)
    psf.header = {k: v for k, v in psf.header.items() if k not in ("TRUTH", "NOMINAL")}
    psf.header.update(hdr)
    psf.meta["CAMERA"] = cam
    psf.meta["ARCEXP"] = int(img.header.get("EXPID", 0))
    psf.write(args.outfile)
    print(f"psf {cam}: {psf.meta['NLINES'][0]} lines, x/y residual rms {psf.meta['RMSX'][0]:.4f}/"
          f"{psf.meta['RMSY'][0]:.4f} px, {psf.meta['NBADFIB'][0]} flagged fibers -> {args.outfile}")
    return 0


def _psfnight(args, cfg, inst, cam):
    from ..errors import DataError
    from ..io.psf import read_psf
    from ..provenance import step_header
    from ..steps import psffit
    from .common import certification_state

    psfs, used = [], []
    for path in args.infiles:
        p = read_psf(path)
        check_psf(p, path, inst, camera=cam, night=args.night)
        if (p.status() == 0).any():
            psfs.append(p)
            used.append(path)
        else:
            print(f"psfnight {cam}: {path} has no good fiber; not used")
    prod = prod_root(cfg)
    usable, cards, why = certification_state(args, "psfnight", cam)
    if psfs and not usable:
        print(f"psfnight {cam} {args.night}: the night's arc PSFs are REJECTED ({why}); taking the fallback")
    if psfs and usable:
        try:
            out = psffit.combine_psfs(psfs, inst.bundlesize, cfg["psf"]["night_nsig"])
        except ValueError as exc:
            raise DataError(used[0], str(exc)) from exc
        hdr = step_header("psfnight", {"night_nsig": cfg["psf"]["night_nsig"]}, used, cfg, prod)
        hdr["FALLBACK"] = (False, "True when no arc of the night was usable")
        what = f"{len(psfs)} arc PSF(s)"
    else:
        if not args.fallback:
            if psfs:
                raise DataError(args.qa[0], f"psfnight {cam} {args.night} is REJECTED ({why}) and there is "
                                "no earlier night's to take: set calibration.default_psf, or certify it in the ledger")
            raise DataError(None, f"night {args.night} camera {cam}: no usable arc PSF and no --fallback PSF")
        out = read_psf(args.fallback)
        check_psf(out, args.fallback, inst, camera=cam)
        hdr = step_header("psfnight", {"fallback": True}, {"IN_PSF": (args.fallback, "fallback PSF")}, cfg, prod)
        hdr["FALLBACK"] = (True, ("the night's arc PSFs are REJECTED" if psfs else "no usable arc this night")
                           + ": PSF copied from IN_PSF")
        what = f"fallback {args.fallback}"
    out.header = {k: v for k, v in out.header.items()
                  if k not in ("TRUTH", "NOMINAL", "EXPID", "EXPTIME", "MJD-OBS", "IN_IMAGE") and not k.startswith("FF")}
    out.header.update(hdr)
    out.header.update(cards)
    out.header["CAMERA"] = cam
    out.header["NIGHT"] = int(args.night)
    out.spots = None
    out.write(args.outfile)
    print(f"psfnight {cam} {args.night}: {what} -> {args.outfile}")
    return 0
