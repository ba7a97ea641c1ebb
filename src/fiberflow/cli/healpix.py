"""``fiberflow tilepix | spectra | coadd``: the HEALPix stage.

- ``tilepix`` (per exposure, early): which nested HEALPix pixels each petal's fibers fall in,
  from the raw fibermap alone (DESI's ``tilepix-{tileid}.json``). The workflow reads these
  maps to know which cframes feed which pixel without reading any cframe.
- ``spectra`` (per pixel): every fiber of the given cframes that falls in the pixel, one
  exposure x spectrograph at a time (memory bounded by the pixel, not by the inputs).
- ``coadd`` (per pixel): one spectrum per target.
"""

from __future__ import annotations

import os
import time


def add_arguments(p, name):
    p.add_argument("--config", default=None, help="workflow configuration (instrument, healpix options)")
    p.add_argument("-o", "--outfile", required=True)
    if name == "tilepix":
        p.add_argument("--fibermap", required=True, help="raw fibermap-{expid}.fits of the exposure")
        p.add_argument("--nside", type=int, default=None, help="nested HEALPix nside (default: healpix.nside)")
    elif name == "spectra":
        p.add_argument("--pix", type=int, required=True, help="nested HEALPix pixel")
        p.add_argument("--nside", type=int, default=None, help="nested HEALPix nside (default: healpix.nside)")
        p.add_argument("--survey", default=None, help="survey recorded in the header (default: healpix.survey)")
        p.add_argument("--program", default="dark", help="program recorded in the header")
        p.add_argument("cframes", nargs="+", help="cframe-{camera}-{expid}.fits files that may feed the pixel")
    else:
        p.add_argument("-i", "--infile", required=True, help="spectra-{survey}-{program}-{pix}.fits")
        p.add_argument("--cosmics-nsig", type=float, default=None,
                       help="cross-exposure cosmic-ray threshold in sigma, 0 = off (default: healpix.cosmics_nsig)")
        p.add_argument("--merge-bands", action="store_true", default=None,
                       help="write the b, r, z bands merged on one grid (BRZ_*) instead of per band")


def run(args):
    if args.command == "tilepix":
        return _tilepix(args)
    if args.command == "spectra":
        return _spectra(args)
    return _coadd(args)


def _nside(args, cfg):
    import numpy as np

    from ..errors import ConfigError

    nside = args.nside if args.nside is not None else int(cfg["healpix"]["nside"])
    if nside < 1 or (nside & (nside - 1)) or not np.log2(nside) <= 29:
        raise ConfigError(f"nside must be a power of two, not {nside}")
    return nside


def _tilepix(args):
    from .. import healpixmap
    from ..config import load_config

    cfg = load_config(args.config)
    nside = _nside(args, cfg)
    tileid, pixmap = healpixmap.tilepix_from_fibermap(args.fibermap, nside)
    healpixmap.write_tilepix(args.outfile, tileid, pixmap, nside)
    npix = len({x for v in pixmap.values() for x in v})
    print(f"tilepix: tile {tileid}, {len(pixmap)} petal(s), {npix} pixel(s) at nside {nside} -> {args.outfile}")
    return 0


def _group_inputs(paths_in):
    """{(spectrograph, night, expid): {band: path}} from DESI cframe names; DataError otherwise."""
    from .. import paths
    from ..errors import DataError

    groups = {}
    for path in paths_in:
        try:
            ftype, ids = paths.parse_path(path)
        except ValueError:
            ftype, ids = None, {}
        if ftype != "cframe":
            raise DataError(path, "not a cframe-{camera}-{expid}.fits file name")
        key = (int(ids["camera"][1:]), int(ids["night"]), int(ids["expid"]))
        band = ids["camera"][0]
        if band in groups.setdefault(key, {}):
            raise DataError(path, f"camera {ids['camera']} of exposure {ids['expid']} is given twice")
        groups[key][band] = path
    return dict(sorted(groups.items()))


def _read_cframe(path, camera, inst, grid):
    import numpy as np

    from ..errors import DataError
    from ..io.frame import FLUX_UNITS
    from .fiberflat import read_camera_frame

    fr = read_camera_frame(path, camera, inst, ("SCIENCE",))
    if str(fr.header.get("BUNIT", fr.units)).strip() != FLUX_UNITS:
        raise DataError(path, f"BUNIT is {fr.header.get('BUNIT', fr.units)!r}: not a flux-calibrated cframe")
    if fr.fibermap is None:
        raise DataError(path, "the cframe has no FIBERMAP: its fibers cannot be placed on the sky")
    for key in ("NIGHT", "EXPID"):
        if fr.header.get(key) is None:
            raise DataError(path, f"header keyword {key} is missing")
    if fr.nwave != len(grid) or not np.allclose(fr.wave, grid, rtol=0, atol=1e-6):
        raise DataError(path, f"wavelength grid ({fr.nwave} bins from {fr.wave[0]:.2f} A) is not the "
                              f"instrument's {camera[0]} grid ({len(grid)} bins from {grid[0]:.2f} A)")
    return fr


def _spectra(args):
    import numpy as np

    from .. import regroup
    from ..config import load_config
    from ..errors import DataError
    from ..instrument import load_instrument
    from ..io.spectra import Spectra
    from ..provenance import provenance_header
    from .common import prod_root

    t0 = time.time()
    cfg = load_config(args.config)
    inst = load_instrument(cfg["instrument"])
    nside = _nside(args, cfg)
    survey = args.survey or cfg["healpix"]["survey"]
    grids = {arm: inst.wavegrid(arm) for arm in inst.arms}
    groups = _group_inputs(args.cframes)
    parts = []
    for (spec, night, expid), files in groups.items():
        frames = {}
        for band, path in files.items():
            if band not in grids:
                raise DataError(path, f"instrument {inst.name} has no {band} arm")
            fr = _read_cframe(path, f"{band}{spec}", inst, grids[band])
            if int(fr.header["NIGHT"]) != night or int(fr.header["EXPID"]) != expid:
                raise DataError(path, f"header says night {fr.header['NIGHT']} exposure {fr.header['EXPID']}, "
                                      f"the file name {night} / {expid}")
            frames[band] = fr
        nd = max(f.ndiag for f in frames.values())
        try:
            rows = regroup.exposure_rows(frames, args.pix, grids, {b: nd for b in grids}, nside)
        except ValueError as exc:
            raise DataError(next(iter(files.values())), str(exc)) from None
        if rows is not None:
            parts.append(rows)
        del frames
    if not parts:
        raise DataError(None, f"no fiber of the {len(args.cframes)} input cframe(s) falls in nside-{nside} "
                              f"pixel {args.pix}")
    try:
        fm, flux, ivar, mask, res, scores = regroup.stack_rows(parts, grids)
    except ValueError as exc:
        raise DataError(None, str(exc)) from None
    hdr = {"HPXPIXEL": (int(args.pix), "nested HEALPix pixel"), "HPXNSIDE": (nside, "HEALPix nside"),
           "HPXNEST": (True, "nested pixel numbering"), "SURVEY": survey, "PROGRAM": args.program}
    hdr.update(provenance_header("spectra", {"nside": nside}, args.cframes, cfg, prod_root(cfg)))
    sp = Spectra(list(grids), grids, flux, ivar, mask, res, fm, None, scores, hdr)
    sp.write(args.outfile)
    nexp = len({(n, e) for n, e in zip(fm["NIGHT"], fm["EXPID"])})
    print(f"spectra {survey}-{args.program}-{args.pix}: {len(fm)} spectra of {len(np.unique(fm['TARGETID']))} "
          f"targets from {nexp} exposure(s), {len(parts)} exposure x petal group(s) "
          f"[{time.time() - t0:.1f} s] -> {args.outfile}")
    return 0


def _coadd(args):
    from .. import coadd
    from ..config import load_config
    from ..errors import DataError
    from ..io.spectra import read_spectra
    from ..provenance import provenance_header
    from .common import prod_root

    t0 = time.time()
    cfg = load_config(args.config)
    opts = coadd.CoaddOptions.from_config(cfg.get("healpix"))
    if args.cosmics_nsig is not None:
        opts.cosmics_nsig = args.cosmics_nsig
    if args.merge_bands:
        opts.merge_bands = True
    sp = read_spectra(args.infile)
    if sp.exp_fibermap is not None:
        raise DataError(args.infile, "has an EXP_FIBERMAP: it is already a coadd")
    for col in ("TARGETID", "FIBERSTATUS"):
        if col not in sp.fibermap.dtype.names:
            raise DataError(args.infile, f"FIBERMAP has no {col} column")
    out = coadd.coadd_spectra(sp, opts)
    out.header.update(provenance_header("coadd", vars(opts), [args.infile], cfg, prod_root(cfg)))
    out.write(args.outfile)
    ncr = ", ".join(f"{b} {out.header[f'NCOSMIC{b.upper()}'][0]}" for b in sp.bands)
    print(f"coadd: {out.nspec} targets from {sp.nspec} spectra; cosmic-ray bins rejected: {ncr} "
          f"[{time.time() - t0:.1f} s] -> {args.outfile}")
    return 0
