"""``fiberflow tilepix | spectra | coadd``: the HEALPix stage.

- ``tilepix`` (per exposure, early): which nested HEALPix pixels each petal's fibers fall in,
  from the raw fibermap alone (DESI's ``tilepix-{tileid}.json``). The workflow reads these
  maps to know which cframes feed which pixel without reading any cframe.
- ``spectra`` (per pixel): every fiber of the given cframes that falls in the pixel, one
  band and one cframe at a time, written straight into the output (memory bounded by one frame).
- ``coadd`` (per pixel): one spectrum per target.
"""

from __future__ import annotations

import time


def add_arguments(p, name):
    p.add_argument("--config", default=None, help="workflow configuration (instrument, healpix options)")
    p.add_argument("-o", "--outfile", required=True)
    if name == "tilepix":
        p.add_argument("--fibermap", required=True, help="raw fibermap-{expid}.fits of the exposure")
        p.add_argument("--nside", type=int, default=None, help="nested HEALPix nside (default: healpix.nside)")
    elif name == "spectra":
        p.add_argument("--pix", type=int, default=None, help="nested HEALPix pixel (a HEALPix spectra file)")
        p.add_argument("--tile", type=int, default=None,
                       help="tile (a tile spectra file of one petal: with --spectrograph, --night and --group)")
        p.add_argument("--spectrograph", type=int, default=None, help="petal of a tile spectra file")
        p.add_argument("--night", type=int, default=None,
                       help="night of a tile spectra file (cumulative: the last night it includes)")
        p.add_argument("--group", choices=("cumulative", "pernight"), default=None,
                       help="tile spectra of every exposure up to --night (cumulative) or of --night alone")
        p.add_argument("--nside", type=int, default=None, help="nested HEALPix nside (default: healpix.nside)")
        p.add_argument("--survey", default=None, help="survey recorded in the header (default: healpix.survey)")
        p.add_argument("--program", default="dark", help="program recorded in the header")
        p.add_argument("cframes", nargs="+", help="cframe-{camera}-{expid}.fits files that may feed the pixel or tile")
    else:
        p.add_argument("-i", "--infile", required=True, help="spectra-{survey}-{program}-{pix}.fits")
        p.add_argument("--cosmics-nsig", type=float, default=None,
                       help="cross-exposure cosmic-ray threshold in sigma, 0 = off (default: healpix.cosmics_nsig)")
        p.add_argument("--merge-bands", action="store_true", default=None,
                       help="write the b, r, z bands merged on one grid (BRZ_*) instead of per band")
        p.add_argument("--max-rows", type=int, default=None,
                       help="input spectra held in memory at a time (default: healpix.coadd_max_rows)")


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
    from ..config import load_config
    from ..workflow import tilepix

    cfg = load_config(args.config)
    nside = _nside(args, cfg)
    tileid, pixmap = tilepix.tilepix_from_fibermap(args.fibermap, nside)
    tilepix.write_tilepix(args.outfile, tileid, pixmap, nside)
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


def _tile_request(args):
    """The tile of a tile spectra request (None for a HEALPix pixel); ConfigError when the options
    name neither or mix them."""
    from ..errors import ConfigError

    tile_opts = {"--tile": args.tile, "--spectrograph": args.spectrograph, "--night": args.night, "--group": args.group}
    if args.pix is not None:
        if any(v is not None for v in tile_opts.values()):
            raise ConfigError("spectra: give --pix (a HEALPix pixel) or --tile with --spectrograph, --night and "
                              "--group (a tile petal), not both")
        return None
    missing = [k for k, v in tile_opts.items() if v is None]
    if missing:
        raise ConfigError(f"spectra: give --pix (a HEALPix pixel) or a tile petal ({', '.join(missing)} missing)")
    return int(args.tile)


def _check_tile_member(path, header, spec, night, args):
    """A cframe fed to a tile spectra file must be of that tile and petal and of the requested
    night(s) (cumulative: up to --night; pernight: that night)."""
    from ..errors import DataError

    tile = int(header.get("TILEID", -1))
    if tile != args.tile:
        raise DataError(path, f"is an exposure of tile {tile}, not of tile {args.tile}")
    if spec != args.spectrograph:
        raise DataError(path, f"is of spectrograph {spec}, not {args.spectrograph}")
    if (night > args.night) if args.group == "cumulative" else (night != args.night):
        rel = "after" if args.group == "cumulative" else "not"
        raise DataError(path, f"is of night {night}, {rel} night {args.night} of this {args.group} file")


def _cframe_meta(path, camera, inst, grid):
    """(header, fibermap, ndiag) of a cframe, read without its data arrays; DataError when the
    file is not a flux-calibrated science cframe of ``camera`` on the instrument's grid."""
    import numpy as np

    from ..errors import DataError
    from ..io import fitsutil
    from ..io.fibermap import conform
    from ..io.frame import FLUX_UNITS

    with fitsutil.open_fits(path) as fx:
        names = fitsutil.hdu_names(fx)
        for hdu in ("FLUX", "WAVELENGTH", "RESOLUTION", "FIBERMAP"):
            if hdu not in names:
                fitsutil.require_hdu(fx, hdu, path)  # names a truncated file as truncated
        hdr = fitsutil.header_dict(fx["FLUX"].read_header())
        fm = conform(fitsutil.read_table(fx, "FIBERMAP", path)[0], path)
        wave = fitsutil.read_image(fx, "WAVELENGTH", path, dtype="f8", ndim=1)[0]
        dims = fx["RESOLUTION"].get_dims()
    if str(hdr.get("CAMERA", "")).strip().lower() != camera:
        raise DataError(path, f"CAMERA is {hdr.get('CAMERA')!r}, expected {camera}")
    if str(hdr.get("BUNIT", "")).strip() != FLUX_UNITS:
        raise DataError(path, f"BUNIT is {hdr.get('BUNIT')!r}: not a flux-calibrated cframe")
    if str(hdr.get("OBSTYPE", "")).strip().upper() != "SCIENCE":
        raise DataError(path, f"OBSTYPE is {hdr.get('OBSTYPE')!r}; expected SCIENCE")
    for key in ("NIGHT", "EXPID"):
        if hdr.get(key) is None:
            raise DataError(path, f"header keyword {key} is missing")
    if len(fm) != inst.nfiber or len(dims) != 3 or dims[0] != inst.nfiber:
        raise DataError(path, f"has {len(fm)} fibers; instrument {inst.name} has {inst.nfiber}")
    if len(wave) != len(grid) or not np.allclose(wave, grid, rtol=0, atol=1e-6):
        raise DataError(path, f"wavelength grid ({len(wave)} bins from {wave[0]:.2f} A) is not the "
                              f"instrument's {camera[0]} grid ({len(grid)} bins from {grid[0]:.2f} A)")
    return hdr, fm, int(dims[1])


def _spectra(args):
    """Two passes over the inputs: fibermaps first (which rows, how many), then each band's
    data one cframe at a time, written straight into the output images."""
    import numpy as np

    from ..config import load_config
    from ..errors import DataError
    from ..instrument import load_instrument
    from ..io.spectra import SpectraStreamWriter
    from ..models.scores import scores_table
    from ..provenance import step_header
    from ..steps import regroup
    from .common import prod_root, read_camera_frame

    t0 = time.time()
    tile = _tile_request(args)
    cfg = load_config(args.config)
    inst = load_instrument(cfg["instrument"])
    nside = _nside(args, cfg)
    survey = args.survey or cfg["healpix"]["survey"]
    grids = {arm: inst.wavegrid(arm) for arm in inst.arms}
    groups = _group_inputs(args.cframes)
    # pass 1: fibermaps and headers only
    selected = []  # (files, sel, fibermap rows)
    ndiag = {b: 1 for b in grids}
    for (spec, night, expid), files in groups.items():
        fibermaps, header = {}, None
        for band, path in files.items():
            if band not in grids:
                raise DataError(path, f"instrument {inst.name} has no {band} arm")
            hdr, fm, nd = _cframe_meta(path, f"{band}{spec}", inst, grids[band])
            if int(hdr["NIGHT"]) != night or int(hdr["EXPID"]) != expid:
                raise DataError(path, f"header says night {hdr['NIGHT']} exposure {hdr['EXPID']}, "
                                      f"the file name {night} / {expid}")
            fibermaps[band], header = fm, header or hdr
            ndiag[band] = max(ndiag[band], nd)
        if tile is not None:
            _check_tile_member(next(iter(files.values())), header, spec, night, args)
        try:
            found = regroup.select_exposure(fibermaps, header, args.pix, nside)
        except ValueError as exc:
            raise DataError(next(iter(files.values())), str(exc)) from None
        if found is not None:
            selected.append((files, *found))
    if not selected:
        raise DataError(None, f"no fiber of the {len(args.cframes)} input cframe(s) falls in nside-{nside} "
                              f"pixel {args.pix}")  # (a tile request selects every fiber: never empty)
    names = selected[0][2].dtype.names
    for files, _, fm in selected[1:]:
        if fm.dtype.names != names:
            raise DataError(next(iter(files.values())), "its FIBERMAP columns differ from the other exposures': "
                                                        f"{sorted(set(names) ^ set(fm.dtype.names))}")
    for b in grids:  # a band no input has: diagonals of the others
        if ndiag[b] == 1:
            ndiag[b] = max(ndiag.values())
    fibermap = np.concatenate([fm for _, _, fm in selected])
    if tile is None:
        hdr = {"HPXPIXEL": (int(args.pix), "nested HEALPix pixel"), "HPXNSIDE": (nside, "HEALPix nside"),
               "HPXNEST": (True, "nested pixel numbering"), "SURVEY": survey, "PROGRAM": args.program}
        hdr.update(step_header("spectra", {"nside": nside}, args.cframes, cfg, prod_root(cfg)))
        what = f"{survey}-{args.program}-{args.pix}"
    else:
        hdr = {"TILEID": (args.tile, "tile"), "PETAL": (args.spectrograph, "petal (spectrograph)"),
               "SPGRP": (args.group, "spectra grouping"),
               "SPGRPVAL": (args.night, "last night included" if args.group == "cumulative" else "night"),
               "NIGHT": args.night}
        hdr.update(step_header("spectra", {"group": args.group}, args.cframes, cfg, prod_root(cfg)))
        what = f"tile {args.tile} petal {args.spectrograph} {args.group} {args.night}"
    # pass 2: band by band, one cframe at a time
    scores = {}
    with SpectraStreamWriter(args.outfile, hdr, fibermap, grids, ndiag) as out:
        for b, wave in grids.items():
            start, parts = 0, []
            for files, sel, fm in selected:
                frame = None
                if b in files:
                    frame = read_camera_frame(files[b], None, inst, ("SCIENCE",))
                rows = regroup.band_rows(frame, sel, wave, b, ndiag[b])
                out.write_rows(b, start, rows["flux"], rows["ivar"], rows["mask"], rows["resolution"])
                parts.append(rows["scores"])
                start += len(fm)
                del frame, rows
            scores[b] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        out.close(scores_table(fibermap["TARGETID"], scores))
    nexp = len({(n, e) for n, e in zip(fibermap["NIGHT"], fibermap["EXPID"])})
    print(f"spectra {what}: {len(fibermap)} spectra of "
          f"{len(np.unique(fibermap['TARGETID']))} targets from {nexp} exposure(s), {len(selected)} exposure x "
          f"petal group(s) [{time.time() - t0:.1f} s] -> {args.outfile}")
    return 0


def _coadd(args):
    """Targets in chunks of about ``healpix.coadd_max_rows`` input spectra (memory bounded by the
    chunk, not by the pixel); every band of a chunk is coadded, and merged when asked."""
    from ..config import load_config
    from ..provenance import step_header
    from ..steps import coadd
    from .common import prod_root

    t0 = time.time()
    cfg = load_config(args.config)
    opts = coadd.CoaddOptions.from_config(cfg.get("healpix"))
    if args.cosmics_nsig is not None:
        opts.cosmics_nsig = args.cosmics_nsig
    if args.merge_bands:
        opts.merge_bands = True
    if args.max_rows is not None:
        opts.coadd_max_rows = args.max_rows
    prov = step_header("coadd", vars(opts), [args.infile], cfg, prod_root(cfg))
    info = coadd.coadd_file(args.infile, args.outfile, opts, prov)
    ncr = ", ".join(f"{b} {n}" for b, n in info["ncosmic"].items())
    print(f"coadd: {info['ntarget']} targets from {info['nspec']} spectra in {info['nchunk']} chunk(s); "
          f"cosmic-ray bins rejected: {ncr} [{time.time() - t0:.1f} s] -> {args.outfile}")
    return 0
