"""``fiberflow preproc`` and ``fiberflow biasnight``: CCD preprocessing steps."""

from __future__ import annotations

import os

from .common import add_certification_arguments, camera_step, check_fibermap, check_identity, prod_root


def add_arguments(p, name):
    p.add_argument("--config", default=None, help="workflow configuration (instrument preset, preproc options)")
    p.add_argument("--camera", required=True, help="camera, e.g. r0")
    p.add_argument("-o", "--outfile", required=True)
    if name == "preproc":
        p.add_argument("-i", "--infile", required=True, help="raw file desi-{expid}.fits.fz")
        p.add_argument("--biasnight", default=None, help="master bias of the night (default: none, overscan only)")
        p.add_argument("--fibermap", default=None, help="fibermap-{expid}.fits to attach (rows of the petal)")
        p.add_argument("--badamps", default="", help="amplifiers to mask, e.g. B or B,C")
        p.add_argument("--pixflat", default=None, help="pixel flat pixflat-{camera}.fits to divide by (default: none)")
        p.add_argument("--no-cosmics", action="store_true", help="skip cosmic-ray rejection")
        p.add_argument("--fallback-bias", default=None,
                       help="master bias used when the night's is REJECTED (an earlier night's; default: overscan only)")
        add_certification_arguments(p)
    else:
        p.add_argument("-i", "--infiles", nargs="+", required=True, help="raw ZERO exposures of the night")


def run(args):
    from ..errors import DataError
    from ..io.fibermap import petal_rows, read_fibermap
    from ..io.image import BiasNight, PixFlat, PreprocImage
    from ..io.raw import read_raw_camera
    from ..provenance import step_header
    from ..steps import preproc

    cfg, inst, cam = camera_step(args)
    spec = inst.camera(cam)
    gains = dict(zip(preproc.AMPS, spec.gain))
    opts = cfg["preproc"]
    prod = prod_root(cfg)
    if args.command == "biasnight":
        images, expids = [], []
        for path in args.infiles:
            rc = read_raw_camera(path, cam)
            if str(rc.header.get("OBSTYPE", "")).upper() != "ZERO":
                raise DataError(path, f"OBSTYPE {rc.header.get('OBSTYPE')!r} is not ZERO")
            img, _ = preproc.subtract_overscan(rc, opts["overscan_per_row"], opts["ostep_threshold"], path)
            images.append(img)
            expids.append(int(rc.header["EXPID"]))
        bias, mask = preproc.master_bias(images)
        hdr = step_header("biasnight", {"camera": cam}, args.infiles, cfg, prod)
        hdr.update({"CAMERA": cam, "NIGHT": int(rc.header["NIGHT"]), "NZERO": len(images),
                    "EXPIDS": ",".join(str(e) for e in expids)})
        BiasNight(bias, mask, hdr).write(args.outfile)
        print(f"biasnight {cam}: {len(images)} zero(s) -> {args.outfile}")
        return 0
    rc = read_raw_camera(args.infile, cam)
    bias = bmask = None
    nzero = 0
    inputs = [args.infile]
    cards = {}
    biasfile = args.biasnight
    if args.biasnight and args.qa:  # the night's master bias is certified from its ZEROs' frame QA first
        from .common import certification_state

        args.night = int(rc.header.get("NIGHT", -1))
        usable, cards, why = certification_state(args, "biasnight", cam)
        if not usable:
            biasfile = args.fallback_bias
            print(f"preproc {cam}: the night's master bias is REJECTED ({why}); "
                  + (f"taking {biasfile}" if biasfile else "overscan only"))
            cards["BIASFB"] = (os.path.basename(biasfile) if biasfile else "none", "master bias used instead")
    if biasfile:
        b = BiasNight.read(biasfile)
        check_identity(b.header, biasfile, "master bias", camera=cam)
        bias, bmask = b.image, b.mask
        nzero = int(b.header.get("NZERO", 0))
        inputs.append(biasfile)
    badamps = [a.strip().upper() for a in args.badamps.split(",") if a.strip()]
    pixflat = None
    if args.pixflat:
        pf = PixFlat.read(args.pixflat)
        check_identity(pf.header, args.pixflat, "pixel flat", camera=cam)
        pixflat = pf.image
        inputs.append(args.pixflat)
    fibermap = None
    if args.fibermap:  # checked before the work: it must be this exposure's, one row per fiber
        fm, fmhdr = read_fibermap(args.fibermap)
        fibermap = petal_rows(fm, int(cam[1:]))
        check_fibermap(fibermap, fmhdr, args.fibermap, int(cam[1:]), inst.nfiber, rc.header)
        inputs.append(args.fibermap)
    image, ivar, rdnoise, mask, qa = preproc.preproc_camera(
        rc, gains=gains, dark_rate=spec.dark, bias=bias, bias_mask=bmask, bias_nzero=nzero, badamps=badamps,
        nsig_cosmics=0.0 if args.no_cosmics else opts["cosmics_nsig"], per_row=opts["overscan_per_row"],
        ostep_threshold=opts["ostep_threshold"], path=args.infile, pixflat=pixflat, pixflat_path=args.pixflat)
    # camera + exposure keywords; structural ones are dropped by the writer, provenance is re-stamped
    raw = {k: v for k, v in rc.header.items() if not k.startswith(("PRESEC", "DATASEC", "BIASSEC", "CCDSEC", "INHERIT"))}
    hdr = step_header("preproc", {"camera": cam, "badamps": args.badamps, "cosmics": not args.no_cosmics}, inputs,
                      cfg, prod, base=raw, camera=cam)
    hdr.update(qa)
    hdr.update(cards)
    PreprocImage(image, ivar, mask, rdnoise, fibermap, hdr).write(args.outfile)
    rdn = ", ".join("%.2f" % qa["OBSRDN" + a][0] for a in preproc.AMPS if "OBSRDN" + a in qa)
    print(f"preproc {cam} {os.path.basename(args.infile)}: {qa['NCOSMIC'][0]} cosmic-ray clusters, "
          f"read noise {rdn} e -> {args.outfile}")
    return 0
