"""``fiberflow sky``: fiberflat, sky model and sky subtraction of one camera of a science exposure.

Writes the sky model (``sky-{camera}-{expid}.fits``) and the flat-fielded, sky-subtracted
frame (``sframe-{camera}-{expid}.fits``). A camera without usable sky fibers is not an error
that stops the petal: its sky is written as zero with BADSKY everywhere, the sframe keeps the
unsubtracted flux masked BADSKY, and FIBERSTATUS gets BADPETALSKY.
"""

from __future__ import annotations

import os
import time

from .common import camera_step, check_identity, prod_root
from .fiberflat import bad_fiberstatus, read_camera_frame


def add_arguments(p, name):
    p.add_argument("--config", default=None, help="workflow configuration (instrument, sky options)")
    p.add_argument("--camera", required=True, help="camera, e.g. r0")
    p.add_argument("-i", "--infile", required=True, help="extracted science frame-{camera}-{expid}.fits")
    p.add_argument("--fiberflat", required=True, help="fiberflatnight-{camera}-{night}.fits")
    p.add_argument("-o", "--outfile", required=True, help="sky-{camera}-{expid}.fits")
    p.add_argument("--sframe", required=True, help="sframe-{camera}-{expid}.fits")


def sky_fibers(fibermap, mask, nspec):
    """Indices of the usable sky fibers: OBJTYPE SKY, good FIBERSTATUS, flat valid on most bins."""
    import numpy as np

    from ..bitmasks import usable_bins

    if fibermap is None or "OBJTYPE" not in (fibermap.dtype.names or ()):
        return np.zeros(0, int)
    objtype = np.char.strip(np.asarray(fibermap["OBJTYPE"]).astype(str))
    ok = (objtype == "SKY") & ~bad_fiberstatus(fibermap, nspec)
    ok &= np.mean(~usable_bins(mask, np.ones(mask.shape)), axis=1) < 0.5
    return np.flatnonzero(ok)


def run(args):
    import numpy as np

    from ..bitmasks import fibermask, specmask
    from ..errors import DataError
    from ..io.calib import SkyModel, read_fiberflat
    from ..io.frame import ELECTRON_UNITS, Frame
    from ..provenance import provenance_header
    from ..steps import sky as skymod

    t0 = time.time()
    cfg, inst, cam = camera_step(args)
    frame = read_camera_frame(args.infile, cam, inst, ("SCIENCE",))
    ff = read_fiberflat(args.fiberflat)
    check_identity(ff.header, args.fiberflat, "fiberflat", camera=cam)
    if ff.fiberflat.shape != frame.flux.shape or not np.allclose(ff.wave, frame.wave):
        raise DataError(args.fiberflat, f"fiberflat is {ff.fiberflat.shape[0]}x{ff.fiberflat.shape[1]} on "
                                        f"{ff.wave[0]:.1f}-{ff.wave[-1]:.1f} A; the frame {args.infile} is "
                                        f"{frame.nspec}x{frame.nwave} on {frame.wave[0]:.1f}-{frame.wave[-1]:.1f} A")
    flux, ivar, mask = skymod.apply_fiberflat(frame.flux.astype(float), frame.ivar.astype(float), frame.mask,
                                              ff.fiberflat.astype(float), ff.ivar.astype(float), ff.mask)
    opts = skymod.SkyOptions.from_config(cfg["sky"])
    skyf = sky_fibers(frame.fibermap, mask, frame.nspec)
    fm = None if frame.fibermap is None else frame.fibermap.copy()
    hdr = {k: v for k, v in frame.header.items() if not k.startswith(("FF", "DEPNAM", "DEPVER"))}
    hdr.update(provenance_header("sky", cfg["sky"], [args.infile, args.fiberflat], cfg, prod_root(cfg)))
    hdr["CAMERA"] = cam
    hdr["IN_FRAME"] = (os.path.basename(args.infile), "extracted frame")
    hdr["IN_FFLAT"] = (os.path.basename(args.fiberflat), "fiberflat applied")
    hdr["NSKYFIB"] = (int(skyf.size), "sky fibers used")
    if skyf.size == 0:
        msg = "no usable sky fiber (OBJTYPE SKY with good FIBERSTATUS): sky not subtracted, BADSKY set"
        print(f"sky {cam}: WARNING {msg}")
        sky = np.zeros_like(flux)
        var = np.zeros_like(flux)
        smask = np.full(flux.shape, specmask.mask("BADSKY"), np.int32)
        sky_ivar = np.zeros_like(flux)
        stat_ivar = np.zeros_like(flux)
        thr = np.ones(frame.nspec)
        hdr["SKYFLAG"] = ("NOSKYFIB", msg[:60])
        hdr["SKYCHI2"] = (0.0, "median residual chi2/dof of the sky fibers")
        if fm is not None and "FIBERSTATUS" in (fm.dtype.names or ()):
            fm["FIBERSTATUS"] |= fibermask.mask("BADPETALSKY")
        sflux, sivar, smask_out = flux, ivar, mask | smask
    else:
        try:
            res = skymod.fit_sky(frame.wave, flux, ivar, mask, frame.resolution, skyf, opts)
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise DataError(args.infile, f"sky fit failed: {exc}") from exc
        sky, var = res["sky"], res["var"]
        # no sky fiber measured a bin (a bad CCD row masked in every fiber): the model is
        # unconstrained there and flagged
        smask = np.where((var > 0) & res["covered"][None, :], 0, specmask.mask("BADSKY")).astype(np.int32)
        sky_ivar = np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), 0.0)
        sv = res["stat_var"]
        stat_ivar = np.where(sv > 0, 1.0 / np.where(sv > 0, sv, 1.0), 0.0)
        thr = res["throughput"]
        hdr["SKYCHI2"] = (float(np.median(res["chi2dof"])), "median residual chi2/dof of the sky fibers")
        if hdr["SKYCHI2"][0] > opts.max_chi2dof:
            hdr["SKYFLAG"] = ("HIGHCHI2", f"sky-fiber chi2/dof above sky.max_chi2dof {opts.max_chi2dof:g}")
            print(f"sky {cam}: WARNING median sky-fiber chi2/dof {hdr['SKYCHI2'][0]:.2f} > sky.max_chi2dof "
                  f"{opts.max_chi2dof:g}: SKYFLAG HIGHCHI2, the cframe gets BADPETALSKY")
        else:
            hdr["SKYFLAG"] = ("OK", "sky model status")
        hdr["SKYNITER"] = (int(res["niter"]), "sky fit iterations")
        hdr["SKYNCLIP"] = (int(res["clipped"].sum()), "sky-fiber bins clipped")
        hdr["SKYMERR"] = (float(np.max(res["model_frac"])), "largest fractional model error added")
        hdr["THRUCORR"] = (int(np.sum(thr != 1.0)), "fibers with a throughput correction applied")
        if res["adjustments"] is not None:
            terms = "+".join(t for t, on in (("wave", opts.adjust_wavelength), ("lsf", opts.adjust_lsf)) if on)
            hdr["SKYADJ"] = (terms, "per-fiber adjustments of the sky model on lines")
            if opts.adjust_wavelength:
                hdr["SKYDWMAX"] = (float(np.max(np.abs(res["adjustments"][:, 0]))),
                                   "largest per-fiber wavelength shift of the sky [A]")
        sflux, sivar, smask_out = skymod.subtract_sky(flux, ivar, mask, sky, var, smask)
    SkyModel(frame.wave, sky.astype("f4"), sky_ivar.astype("f4"), smask, stat_ivar.astype("f4"),
             thr.astype("f4"), dict(hdr)).write(args.outfile)
    shdr = dict(hdr)
    shdr["BUNIT"] = ELECTRON_UNITS
    shdr["IN_SKY"] = (os.path.basename(args.outfile), "sky model subtracted")
    Frame(frame.wave, sflux.astype("f4"), sivar.astype("f4"), smask_out.astype(np.int32), frame.resolution, fm,
          frame.chi2pix, None, shdr, ELECTRON_UNITS).write(args.sframe)
    print(f"sky {cam}: {skyf.size} sky fibers, median chi2/dof {hdr['SKYCHI2'][0]:.2f}, "
          f"{time.time() - t0:.1f} s -> {args.outfile}, {args.sframe}")
    return 0
