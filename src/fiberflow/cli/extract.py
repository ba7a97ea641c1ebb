"""``fiberflow extract``: extraction of one camera of a flat or science exposure.

Spectroperfectionism (default) or boxcar (``extract.method: boxcar``, quick-look). Under an
MPI launcher (``mpirun -n N fiberflow extract ...``, ``srun --mpi=pmix``) the patches are
spread over the ranks and rank 0 writes the frame; otherwise ``--nthreads`` threads share them.
"""

from __future__ import annotations

import sys
import time

from .common import camera_step, check_identity, check_psf, prod_root


def add_arguments(p, name):
    p.add_argument("--config", default=None, help="workflow configuration (instrument, extract options)")
    p.add_argument("--camera", required=True, help="camera, e.g. r0")
    p.add_argument("-i", "--infile", required=True, help="preproc-{camera}-{expid}.fits")
    p.add_argument("--psf", required=True, help="the exposure's PSF (traceshift output psf-{camera}-{expid}.fits)")
    p.add_argument("-o", "--outfile", required=True, help="frame-{camera}-{expid}.fits")
    p.add_argument("--nthreads", type=int, default=None, help="threads (default: config extract.threads)")
    p.add_argument("--model", default=None, help="also write the model image (model-{camera}-{expid}.fits)")
    p.add_argument("--method", choices=["spectroperfectionism", "boxcar"], default=None,
                   help="override config extract.method")


def run(args):
    from ..parallel import keep_freed_memory, mpi_comm

    keep_freed_memory()  # thousands of patches' few-MB temporaries: no page faults for each
    comm = mpi_comm()
    if comm is None:
        return _run(args, None)
    try:
        return _run(args, comm)
    except BaseException as exc:  # one failing rank must not leave the others waiting forever
        print(f"extract: rank {comm.Get_rank()} failed: {exc}", file=sys.stderr)
        sys.stderr.flush()
        comm.Abort(1)


def _run(args, comm):
    import numpy as np

    from ..bitmasks import specmask
    from ..errors import DataError
    from ..io.frame import ELECTRON_UNITS, Frame
    from ..io.image import ModelImage, PreprocImage
    from ..io.psf import read_psf
    from ..provenance import step_header
    from ..steps import boxcar, extract, preproc

    cfg, inst, cam = camera_step(args)
    img = PreprocImage.read(args.infile)
    check_identity(img.header, args.infile, "preprocessed image", camera=cam)
    psf = read_psf(args.psf)
    check_psf(psf, args.psf, inst, img.image.shape, args.infile, camera=cam, expid=img.header.get("EXPID"))
    if not np.any(img.ivar > 0):
        raise DataError(args.infile, "every pixel is masked (ivar 0): nothing to extract")
    if not np.all(np.isfinite(img.image[img.ivar > 0])):
        raise DataError(args.infile, "IMAGE has NaN or infinite values on unmasked pixels")
    ecfg = cfg["extract"]
    method = args.method or ecfg.get("method", "spectroperfectionism")
    nthreads = args.nthreads or int(ecfg.get("threads", 1))
    if method == "boxcar" and args.model is not None:
        raise DataError(args.model, "the boxcar extraction has no model image (use method spectroperfectionism)")
    rank, size = (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())
    wave = inst.wavegrid(cam)
    t0 = time.time()
    if method == "boxcar":
        if rank != 0:
            return 0
        res = boxcar.boxcar_frame(img.image, img.ivar, psf, wave, float(ecfg.get("boxcar_halfwidth", 3.0)))
    else:
        opts = extract.ExtractOptions.from_config(ecfg)
        floor = preproc.image_variance_floor(img) if opts.model_variance else None
        res = extract.extract_frame(img.image, img.ivar, psf, wave, inst.bundlesize, opts, nthreads=nthreads,
                                    comm=comm, model=args.model is not None, var_floor=floor)
        if res is None:  # not rank 0
            return 0
    fm = img.fibermap
    status = psf.status()
    if fm is not None and "FIBERSTATUS" in (fm.dtype.names or ()):
        fm = fm.copy()
        fm["FIBERSTATUS"] |= status.astype(fm["FIBERSTATUS"].dtype)
    bad = status != 0
    res["mask"][bad] |= specmask.mask("BADFIBER")
    hdr = step_header("extract", ecfg, {"IN_IMG": (args.infile, "image extracted"), "IN_PSF": (args.psf, "PSF used")},
                      cfg, prod_root(cfg), base=img.header, camera=cam)
    hdr["EXTRACT"] = (method, "extraction method")
    hdr["SPECMIN"] = psf.fibermin
    hdr["SPECMAX"] = psf.fibermin + psf.nfiber - 1
    hdr["NSPEC"] = psf.nfiber
    hdr["WAVEMIN"] = float(wave[0])
    hdr["WAVEMAX"] = float(wave[-1])
    hdr["WAVESTEP"] = float(wave[1] - wave[0])
    hdr["BUNIT"] = ELECTRON_UNITS
    good = res["ivar"] > 0
    hdr["CHI2PIX"] = (float(np.median(res["chi2pix"][good])) if method != "boxcar" and np.any(good) else 0.0,
                      "median extraction chi2 per flux bin")
    hdr["BADFIBM"] = (int(np.sum(bad)), "fibers with PSF fibermask bits (BADARC/BADTRACE)")
    hdr["NRANKS"] = (size, "MPI ranks")
    frame = Frame(wave, res["flux"].astype("f4"), res["ivar"].astype("f4"), res["mask"], res["resolution"].astype("f4"),
                  fm, res["chi2pix"].astype("f4"), None, hdr, ELECTRON_UNITS)
    frame.write(args.outfile)
    if args.model is not None:
        mhdr = {k: hdr[k] for k in ("CAMERA", "NIGHT", "EXPID", "IN_PSF", "IN_IMG") if k in hdr}
        ModelImage(res["model"].astype("f4"), mhdr).write(args.model)
    print(f"extract {cam} ({method}, {size} rank(s) x {nthreads} thread(s)): {psf.nfiber} fibers x {wave.size} "
          f"wavelengths in {time.time() - t0:.1f} s, median CHI2PIX {hdr['CHI2PIX'][0]:.2f}, "
          f"{int(np.sum(bad))} fibers flagged by the PSF -> {args.outfile}")
    return 0
