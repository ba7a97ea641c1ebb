"""``fiberflow zcatalog | summary``: redshift catalogs and the production summaries.

- ``zcatalog --group ztile`` (cumulative tile redrock files) or ``--group zpix`` (HEALPix
  redrock files): DESI's ``ztile-{survey}-{program}-cumulative.fits`` / ``zpix-{survey}-{program}.fits``
  with ZCAT_NSPEC and ZCAT_PRIMARY.
- ``summary``: ``exposures-{specprod}`` and ``tiles-{specprod}`` (FITS and CSV) from the night
  QA records, the cframes' fibermaps and the cumulative tile catalogs.
"""

from __future__ import annotations

import time


def add_arguments(p, name):
    p.add_argument("--config", default=None, help="workflow configuration (provenance)")
    if name == "zcatalog":
        p.add_argument("--group", choices=("ztile", "zpix"), required=True,
                       help="ztile: cumulative tile redrock files; zpix: HEALPix redrock files")
        p.add_argument("--survey", required=True)
        p.add_argument("--program", required=True)
        p.add_argument("-o", "--outfile", required=True, help="zcatalog/ztile-...fits or zpix-...fits")
        p.add_argument("redrock", nargs="+", help="redrock-*.fits files")
    else:
        p.add_argument("--qa-night", nargs="+", required=True, help="qa-night-{night}.json of every night")
        p.add_argument("--cframes", nargs="+", required=True, help="cframes of the science exposures to summarize")
        p.add_argument("--ztile", nargs="*", default=[], help="ztile catalogs (redshift success counts)")
        p.add_argument("--tiles-out", required=True, help="tiles-{specprod}.fits")
        p.add_argument("--tiles-csv", required=True, help="tiles-{specprod}.csv")
        p.add_argument("--exposures-out", required=True, help="exposures-{specprod}.fits")
        p.add_argument("--exposures-csv", required=True, help="exposures-{specprod}.csv")


def run(args):
    return _zcatalog(args) if args.command == "zcatalog" else _summary(args)


def _zcatalog(args):
    from ..config import load_config
    from ..provenance import step_header
    from ..steps.zcatalog import zcatalog
    from .common import prod_root

    t0 = time.time()
    cfg = load_config(args.config)
    hdr = step_header("zcatalog", {"group": args.group}, args.redrock, cfg, prod_root(cfg))
    cat = zcatalog(args.redrock, args.group, args.survey, args.program, hdr)
    cat.write(args.outfile)
    z = cat.zcatalog
    print(f"zcatalog {args.group}: {len(args.redrock)} redrock files, {len(z)} rows, {int(z['ZCAT_PRIMARY'].sum())} "
          f"targets, {int(((z['ZWARN'] == 0) & z['ZCAT_PRIMARY']).sum())} with ZWARN 0 [{time.time() - t0:.1f} s] "
          f"-> {args.outfile}")
    return 0


def read_summary_inputs(qa_nights, cframes):
    """Per science exposure: its night QA entry, SURVEY / PROGRAM and its cframes' FIBERMAPs.

    Returns
    -------
    list of dict (see :func:`fiberflow.steps.summary.exposures_table`)
    """
    from .. import paths
    from ..errors import DataError
    from ..io import fitsutil
    from ..io.datamodel import read_json

    entries = {}
    for f in qa_nights:
        rec = read_json(f, "qa_night", "night QA JSON")
        for e in rec.get("EXPOSURES", []):
            if e.get("OBSTYPE") == "SCIENCE":
                entries[(int(rec["NIGHT"]), int(e["EXPID"]))] = dict(e, NIGHT=int(rec["NIGHT"]))
    out = {}
    for f in cframes:
        try:
            ftype, ids = paths.parse_path(f)
        except ValueError:
            ftype, ids = None, {}
        if ftype != "cframe":
            raise DataError(f, "is not named as a cframe (cframe-{camera}-{expid}.fits)")
        key = (int(ids["night"]), int(ids["expid"]))
        if key not in entries:
            raise DataError(f, f"exposure {key[1]} of night {key[0]} is in none of the night QA records given")
        with fitsutil.open_fits(f) as fx:
            fm, _ = fitsutil.read_table(fx, "FIBERMAP", f, required=("TARGETID", "OBJTYPE", "FIBERSTATUS"))
            hdr = fitsutil.header_dict(fx[0].read_header())
        e = out.setdefault(key, dict(entries[key], fibermaps=[], SURVEY=str(hdr.get("SURVEY", "main")),
                                     PROGRAM=str(hdr.get("PROGRAM", entries[key].get("PROGRAM") or "dark"))))
        e["fibermaps"].append(fm)
    return list(out.values())


def _summary(args):
    import numpy as np

    from ..config import load_config
    from ..io.zcatalog import ExposuresSummary, TilesSummary, ZCatalog
    from ..provenance import step_header
    from ..steps.summary import exposures_table, tiles_table
    from ..steps.zcatalog import stack
    from .common import prod_root

    t0 = time.time()
    cfg = load_config(args.config)
    exposures = read_summary_inputs(args.qa_night, args.cframes)
    cats = [ZCatalog.read(f).zcatalog for f in args.ztile]
    ztile = stack(cats) if cats else None
    hdr = step_header("summary", {}, list(args.qa_night) + list(args.ztile), cfg, prod_root(cfg))
    ex = ExposuresSummary(exposures_table(exposures, ztile), dict(hdr))
    from ..qa.tables import shipped_snr2time

    ti = TilesSummary(tiles_table(exposures, ztile, cfg.get("completeness"), shipped_snr2time()), dict(hdr))
    ex.write(args.exposures_out)
    ex.write_csv(args.exposures_csv)
    ti.write(args.tiles_out)
    ti.write_csv(args.tiles_csv)
    t = ti.table
    print(f"summary: {len(ex.table)} science exposures, {len(t)} tiles, {int(t['GOODFIBERS'].sum())} good targets, "
          f"{int(np.maximum(t['NZGOOD'], 0).sum())} with ZWARN 0, {int(t['DONE'].sum())} tile(s) done "
          f"[{time.time() - t0:.1f} s] -> {args.tiles_out}, "
          f"{args.exposures_out}")
    return 0
