"""``fiberflow sky``: fiberflat, sky model and sky subtraction of one camera of a science exposure.

Writes the sky model (``sky-{camera}-{expid}.fits``) and the flat-fielded, sky-subtracted
frame (``sframe-{camera}-{expid}.fits``). A camera without usable sky fibers is not an error
that stops the petal: its sky is written as zero with BADSKY everywhere, the sframe keeps the
unsubtracted flux masked BADSKY, and FIBERSTATUS gets BADPETALSKY.
"""

from __future__ import annotations

import os
import time

from .common import camera_step, check_identity, prod_root, read_camera_frame


def add_arguments(p, name):
    p.add_argument("--config", default=None, help="workflow configuration (instrument, sky options)")
    p.add_argument("--camera", required=True, help="camera, e.g. r0")
    p.add_argument("-i", "--infile", required=True, help="extracted science frame-{camera}-{expid}.fits")
    p.add_argument("--fiberflat", required=True, help="fiberflatnight-{camera}-{night}.fits")
    p.add_argument("-o", "--outfile", required=True, help="sky-{camera}-{expid}.fits")
    p.add_argument("--sframe", required=True, help="sframe-{camera}-{expid}.fits")


def run(args):
    import numpy as np

    from ..errors import DataError
    from ..io.calib import read_fiberflat

    t0 = time.time()
    cfg, inst, cam = camera_step(args)
    frame = read_camera_frame(args.infile, cam, inst, ("SCIENCE",))
    ff = read_fiberflat(args.fiberflat)
    check_identity(ff.header, args.fiberflat, "fiberflat", camera=cam)
    if ff.fiberflat.shape != frame.flux.shape or not np.allclose(ff.wave, frame.wave):
        raise DataError(args.fiberflat, f"fiberflat is {ff.fiberflat.shape[0]}x{ff.fiberflat.shape[1]} on "
                                        f"{ff.wave[0]:.1f}-{ff.wave[-1]:.1f} A; the frame {args.infile} is "
                                        f"{frame.nspec}x{frame.nwave} on {frame.wave[0]:.1f}-{frame.wave[-1]:.1f} A")
    return sky_and_write(cfg, cam, frame, (ff.fiberflat, ff.ivar, ff.mask), args.infile, args.fiberflat,
                         args.outfile, args.sframe, t0)


def sky_and_write(cfg, cam, frame, fiberflat, infile, fiberflat_name, outfile, sframe_path, t0=None):
    """Sky model and sky subtraction of a read frame with fiberflat arrays (fiberflat, ivar, mask;
    ``fiberflat_name`` says where they come from), written to ``outfile`` and ``sframe_path``."""
    import numpy as np

    from ..errors import DataError
    from ..io.calib import SkyModel
    from ..io.frame import ELECTRON_UNITS, Frame
    from ..provenance import step_header
    from ..steps import sky as skymod

    t0 = time.time() if t0 is None else t0
    try:
        res = skymod.sky_step(frame.wave, frame.flux, frame.ivar, frame.mask, frame.resolution, frame.fibermap,
                              tuple(fiberflat), skymod.SkyOptions.from_config(cfg["sky"]))
    except ValueError as exc:
        raise DataError(infile, str(exc)) from exc
    for msg in res["warnings"]:
        print(f"sky {cam}: WARNING {msg}")
    hdr = step_header("sky", cfg["sky"], {"IN_FRAME": (infile, "extracted frame"),
                                          "IN_FFLAT": (fiberflat_name, "fiberflat applied")},
                      cfg, prod_root(cfg), base=frame.header, camera=cam)
    hdr.update(res["cards"])
    SkyModel(frame.wave, res["sky"].astype("f4"), res["sky_ivar"].astype("f4"), res["sky_mask"],
             res["stat_ivar"].astype("f4"), res["throughput"].astype("f4"), dict(hdr)).write(outfile)
    shdr = dict(hdr, BUNIT=ELECTRON_UNITS, IN_SKY=(os.path.basename(outfile), "sky model subtracted"))
    sflux, sivar, smask = res["sframe"]
    Frame(frame.wave, sflux.astype("f4"), sivar.astype("f4"), smask.astype(np.int32), frame.resolution,
          res["fibermap"], frame.chi2pix, None, shdr, ELECTRON_UNITS).write(sframe_path)
    print(f"sky {cam}: {res['nskyfib']} sky fibers, median chi2/dof {hdr['SKYCHI2'][0]:.2f}, "
          f"{time.time() - t0:.1f} s -> {outfile}, {sframe_path}")
    return 0
