"""``fiberflow extract``: spectroperfectionism extraction of one camera of a flat or science exposure."""

from __future__ import annotations

import os
import time

from .common import camera_step, check_psf, prod_root


def add_arguments(p, name):
    p.add_argument("--config", default=None, help="workflow configuration (instrument, extract options)")
    p.add_argument("--camera", required=True, help="camera, e.g. r0")
    p.add_argument("-i", "--infile", required=True, help="preproc-{camera}-{expid}.fits")
    p.add_argument("--psf", required=True, help="the exposure's PSF (traceshift output psf-{camera}-{expid}.fits)")
    p.add_argument("-o", "--outfile", required=True, help="frame-{camera}-{expid}.fits")


def run(args):
    import numpy as np

    from .. import extract
    from ..bitmasks import specmask
    from ..errors import DataError
    from ..io.frame import ELECTRON_UNITS, Frame
    from ..io.image import PreprocImage
    from ..io.psf import read_psf
    from ..provenance import provenance_header

    cfg, inst, cam = camera_step(args)
    img = PreprocImage.read(args.infile)
    psf = read_psf(args.psf)
    check_psf(psf, args.psf, inst, img.image.shape, args.infile)
    if not np.any(img.ivar > 0):
        raise DataError(args.infile, "every pixel is masked (ivar 0): nothing to extract")
    if not np.all(np.isfinite(img.image[img.ivar > 0])):
        raise DataError(args.infile, "IMAGE has NaN or infinite values on unmasked pixels")
    opts = extract.ExtractOptions.from_config(cfg["extract"])
    wave = inst.wavegrid(cam)
    t0 = time.time()
    res = extract.extract_frame(img.image, img.ivar, psf, wave, inst.bundlesize, opts)
    fm = img.fibermap
    status = psf.status()
    if fm is not None and "FIBERSTATUS" in (fm.dtype.names or ()):
        fm = fm.copy()
        fm["FIBERSTATUS"] |= status.astype(fm["FIBERSTATUS"].dtype)
    bad = status != 0
    res["mask"][bad] |= specmask.mask("BADFIBER")
    hdr = {k: v for k, v in img.header.items() if not k.startswith(("FF", "DEPNAM", "DEPVER"))}
    hdr.update(provenance_header("extract", cfg["extract"], [args.infile, args.psf], cfg, prod_root(cfg)))
    hdr["CAMERA"] = cam
    hdr["IN_PSF"] = (os.path.basename(args.psf), "PSF used")
    hdr["IN_IMG"] = (os.path.basename(args.infile), "image extracted")
    hdr["SPECMIN"] = psf.fibermin
    hdr["SPECMAX"] = psf.fibermin + psf.nfiber - 1
    hdr["NSPEC"] = psf.nfiber
    hdr["WAVEMIN"] = float(wave[0])
    hdr["WAVEMAX"] = float(wave[-1])
    hdr["WAVESTEP"] = float(wave[1] - wave[0])
    hdr["BUNIT"] = ELECTRON_UNITS
    hdr["CHI2PIX"] = (float(np.median(res["chi2pix"][res["ivar"] > 0])) if np.any(res["ivar"] > 0) else 0.0,
                      "median extraction chi2 per flux bin")
    hdr["BADFIBM"] = (int(np.sum(bad)), "fibers with PSF fibermask bits (BADARC/BADTRACE)")
    frame = Frame(wave, res["flux"].astype("f4"), res["ivar"].astype("f4"), res["mask"], res["resolution"].astype("f4"),
                  fm, res["chi2pix"].astype("f4"), None, hdr, ELECTRON_UNITS)
    frame.write(args.outfile)
    print(f"extract {cam}: {psf.nfiber} fibers x {wave.size} wavelengths in {time.time() - t0:.1f} s, median "
          f"CHI2PIX {hdr['CHI2PIX'][0]:.2f}, {int(np.sum(bad))} fibers flagged by the PSF -> {args.outfile}")
    return 0
