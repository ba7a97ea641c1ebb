"""``fiberflow fiberflat`` (fiberflat of one camera of a flat exposure) and
``fiberflow fiberflatnight`` (the night's average, or a fallback)."""

from __future__ import annotations

from .common import add_certification_arguments, camera_step, check_identity, prod_root, read_camera_frame


def add_arguments(p, name):
    p.add_argument("--config", default=None, help="workflow configuration (instrument, fiberflat options)")
    p.add_argument("--camera", required=True, help="camera, e.g. r0")
    p.add_argument("-o", "--outfile", required=True)
    if name == "fiberflat":
        p.add_argument("-i", "--infile", required=True, help="extracted flat frame-{camera}-{expid}.fits")
        p.add_argument("--maxiter", type=int, default=None,
                       help="at most this many fit / clip iterations (default config fiberflat.maxiter; the quick-look: 5)")
    else:
        p.add_argument("-i", "--infiles", nargs="*", default=[], help="the night's fiberflat-{camera}-{expid}.fits")
        p.add_argument("--night", type=int, required=True)
        p.add_argument("--fallback", default=None,
                       help="fiberflat used when the night has no usable flat (an earlier night's or a default)")
        add_certification_arguments(p)


def run(args):
    cfg, inst, cam = camera_step(args)
    if args.command == "fiberflat":
        return _fiberflat(args, cfg, inst, cam)
    return _fiberflatnight(args, cfg, inst, cam)


def _fiberflat(args, cfg, inst, cam):
    import time

    import numpy as np

    from ..bitmasks import bad_fiberstatus
    from ..io.calib import FiberFlat
    from ..provenance import step_header
    from ..steps import fiberflat

    t0 = time.time()
    frame = read_camera_frame(args.infile, cam, inst, ("FLAT",))
    opts = fiberflat.FiberflatOptions.from_config(cfg["fiberflat"])
    if args.maxiter is not None:
        if args.maxiter < 1:
            from ..errors import ConfigError

            raise ConfigError(f"--maxiter {args.maxiter}: at least 1")
        opts.maxiter = args.maxiter
    exclude = bad_fiberstatus(frame.fibermap, frame.nspec)
    try:
        res = fiberflat.compute_fiberflat(frame.wave, frame.flux, frame.ivar, frame.mask, frame.resolution, opts,
                                          exclude=exclude)
    except ValueError as exc:
        from ..errors import DataError

        raise DataError(args.infile, str(exc)) from exc
    badfib = np.all((res["mask"] & fiberflat.BADFIBERFLAT) != 0, axis=1) | \
        (np.mean((res["mask"] & fiberflat.BADFIBERFLAT) != 0, axis=1) > 0.5)
    hdr = step_header("fiberflat", cfg["fiberflat"], {"IN_FRAME": (args.infile, "extracted flat")}, cfg,
                      prod_root(cfg), base=frame.header, camera=cam,
                      keep=("NIGHT", "EXPID", "EXPTIME", "MJD-OBS", "OBSTYPE", "TILEID"))
    hdr["NITER"] = (int(res["niter"]), "fit iterations")
    hdr["NCLIPPED"] = (int(res["nclipped"]), "flux bins clipped")
    good = ~badfib & ~exclude
    chi2 = res["chi2dof"][good]
    hdr["CHI2DOF"] = (float(np.median(chi2)) if chi2.size else 0.0, "median chi2/dof of the fibers' flat fit")
    hdr["NBADFIB"] = (int(np.sum(badfib)), "fibers flagged BADFIBERFLAT")
    # QA: largest departure of a good fiber's smooth throughput from 1 (DESI's MAX_RMS spirit)
    hdr["MAXDEV"] = (float(np.max(np.abs(res["smooth"][good] - 1.0))) if good.any() else 0.0,
                     "max |smooth throughput - 1| of good fibers")
    fm = frame.fibermap
    if fm is not None and "FIBERSTATUS" in (fm.dtype.names or ()):
        from ..bitmasks import fibermask

        fm = fm.copy()
        fm["FIBERSTATUS"][badfib] |= fibermask.mask("BADFLAT")
    FiberFlat(frame.wave, res["fiberflat"].astype("f4"), res["ivar"].astype("f4"), res["mask"].astype(np.int32),
              res["meanspec"].astype("f4"), fm, hdr).write(args.outfile)
    print(f"fiberflat {cam}: {res['niter']} iterations, {res['nclipped']} bins clipped, median chi2/dof "
          f"{hdr['CHI2DOF'][0]:.2f}, {hdr['NBADFIB'][0]} bad fibers, {time.time() - t0:.1f} s -> {args.outfile}")
    return 0


def _fiberflatnight(args, cfg, inst, cam):
    import numpy as np

    from ..errors import DataError
    from ..io.calib import FiberFlat, read_fiberflat
    from ..provenance import step_header
    from ..steps import fiberflat
    from .common import certification_state

    flats, used = [], []
    for path in args.infiles:
        ff = read_fiberflat(path)
        check_identity(ff.header, path, "fiberflat", camera=cam, night=args.night)
        if ff.fiberflat.shape[0] != inst.nfiber:
            raise DataError(path, f"fiberflat has {ff.fiberflat.shape[0]} fibers; instrument has {inst.nfiber}")
        if flats and (ff.wave.shape != flats[0].wave.shape or not np.allclose(ff.wave, flats[0].wave)):
            raise DataError(path, f"wavelength grid differs from {used[0]}")
        if np.any(ff.ivar > 0):
            flats.append(ff)
            used.append(path)
        else:
            print(f"fiberflatnight {cam}: {path} has no valid bin; not used")
    prod = prod_root(cfg)
    nsig = cfg["fiberflat"]["night_nsig"]
    usable, cards, why = certification_state(args, "fiberflatnight", cam)
    if flats and not usable:
        print(f"fiberflatnight {cam} {args.night}: the night's flats are REJECTED ({why}); taking the fallback")
    if flats and usable:
        f, iv, m = fiberflat.average_fiberflats([x.fiberflat for x in flats], [x.ivar for x in flats],
                                                [x.mask for x in flats], nsig)
        # the mean lamp spectrum of a lamp that may have drifted: the plain mean is fine (QA only)
        mean = np.mean([x.meanspec for x in flats], axis=0)
        fm = flats[0].fibermap
        out = FiberFlat(flats[0].wave, f.astype("f4"), iv.astype("f4"), m, mean.astype("f4"), fm, {})
        hdr = step_header("fiberflatnight", {"night_nsig": nsig}, used, cfg, prod)
        hdr["FALLBACK"] = (False, "True when no flat of the night was usable")
        hdr["NFLATS"] = (len(flats), "flats averaged")
        what = f"{len(flats)} flat(s)"
    else:
        if not args.fallback:
            if flats:
                raise DataError(args.qa[0], f"fiberflatnight {cam} {args.night} is REJECTED ({why}) and "
                                "there is no earlier night's to take: set calibration.default_fiberflat, or "
                                "certify it in the ledger")
            raise DataError(None, f"night {args.night} camera {cam}: no usable flat and no --fallback fiberflat "
                                  "(set calibration.default_fiberflat)")
        out = read_fiberflat(args.fallback)
        check_identity(out.header, args.fallback, "fallback fiberflat", camera=cam)
        if out.fiberflat.shape[0] != inst.nfiber:
            raise DataError(args.fallback, f"fiberflat has {out.fiberflat.shape[0]} fibers; instrument has {inst.nfiber}")
        hdr = step_header("fiberflatnight", {"fallback": True}, {"IN_FLAT": (args.fallback, "fallback fiberflat")},
                          cfg, prod)
        hdr["FALLBACK"] = (True, ("the night's flats are REJECTED" if flats else "no usable flat this night")
                           + ": copied from IN_FLAT")
        what = f"fallback {args.fallback}"
    out.header = {k: v for k, v in out.header.items() if k in ("CAMERA",)}
    out.header.update(hdr)
    out.header.update(cards)
    out.header["CAMERA"] = cam
    out.header["NIGHT"] = int(args.night)
    out.write(args.outfile)
    print(f"fiberflatnight {cam} {args.night}: {what} -> {args.outfile}")
    return 0
