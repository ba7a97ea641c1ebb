"""``fiberflow tile-qa`` (tile QA of one cumulative tile from its redrock files: FITS + PNG) and
``fiberflow tile-qa-reference`` (the n(z) and redshift success a tile QA compares with, from the
redrock files of a production known to be good). See :mod:`fiberflow.qa.tileqa`."""

from __future__ import annotations

import os
import time

import numpy as np


def add_arguments(p, name):
    if name == "nightqa":
        p.add_argument("--night", type=int, required=True)
        p.add_argument("--prod", required=True, help="production root (exposure and night pages)")
        p.add_argument("--qa-night", required=True, help="the night's QA record qa-night-{night}.json")
        p.add_argument("--tile-qa", nargs="*", default=[], help="tile-qa-{tileid}-thru{night}.fits of the night")
        p.add_argument("-o", "--html", required=True, help="nightqa-{night}.html")
        return
    p.add_argument("--config", default=None, help="workflow configuration (completeness: goal time, mintfrac)")
    p.add_argument("-i", "--redrock", nargs="+", required=True,
                   help="cumulative tile redrock files redrock-{petal}-{tileid}-thru{night}.fits")
    p.add_argument("-o", "--outfile", required=True)
    if name == "tile-qa":
        p.add_argument("--thresholds", default=None, help="QA thresholds file (its tile_qa section); default config/qa.yaml")
        p.add_argument("--reference", default=None, help="tile QA reference (default: tile_qa.reference, else the shipped one)")
        p.add_argument("--png", default=None, help="tile QA picture")
        p.add_argument("--program", default=None, help="the tile's program when the files do not say (dark, bright)")
        p.add_argument("--history", nargs="*", default=None,
                       help="tile QA files of earlier nights: with enough NORMAL ones of other tiles (tile_qa."
                            "history_min_tiles), they are the reference")
        p.add_argument("--coadd", nargs="*", default=None,
                       help="the petals' cumulative coadds coadd-{petal}-{tileid}-thru{night}.fits (sky fiber residuals)")


def run(args):
    if args.command == "nightqa":
        return _nightqa(args)
    if args.command == "tile-qa-reference":
        return _reference(args)
    return _tile_qa(args)


def _parsed(path):
    """(file type, ids) of a production path; (None, {}) for a name the path table does not know."""
    from .. import paths

    try:
        return paths.parse_path(path)
    except ValueError:
        return None, {}


def read_tile(files, program=None):
    """The petals of one cumulative tile.

    Returns
    -------
    tileid, night, program, [(petal, Redrock)]

    Raises
    ------
    DataError
        A file not named as a cumulative tile redrock file, of another tile or night, or a
        petal given twice.
    """
    from ..errors import DataError
    from ..io.zcatalog import read_redrock

    tiles, petals = set(), {}
    out = []
    for f in files:
        ftype, ids = _parsed(f)
        if ftype != "redrock_cumulative":
            raise DataError(f, "is not named as a cumulative tile redrock file (redrock-{petal}-{tileid}-thru{night}.fits)")
        tiles.add((int(ids["tileid"]), int(ids["night"])))
        if len(tiles) > 1:
            raise DataError(f, f"is of tile {ids['tileid']} thru {ids['night']}, the other files of "
                               f"{sorted(tiles)[0][0]} thru {sorted(tiles)[0][1]}")
        p = int(ids["spectrograph"])
        if p in petals:
            raise DataError(f, f"petal {p} is given twice (also {petals[p]})")
        petals[p] = f
        rr = read_redrock(f)
        prog = str(rr.header.get("PROGRAM", "") or "").strip() or program
        out.append((p, rr, prog))
    tileid, night = tiles.pop()
    progs = {pr for _, _, pr in out if pr}
    return tileid, night, (progs.pop() if len(progs) == 1 else (program or "dark")), [(p, rr) for p, rr, _ in out]


def read_coadds(files, tileid, night, petals):
    """The cumulative coadd of each petal: {petal: path}.

    Raises
    ------
    DataError
        A file not named as a cumulative tile coadd, of another tile or night, or a petal without
        its coadd (checked before any work).
    """
    from ..errors import DataError

    out = {}
    for f in files:
        ftype, ids = _parsed(f)
        if ftype != "coadd_cumulative":
            raise DataError(f, "is not named as a cumulative tile coadd (coadd-{petal}-{tileid}-thru{night}.fits)")
        if (int(ids["tileid"]), int(ids["night"])) != (tileid, night):
            raise DataError(f, f"is of tile {ids['tileid']} thru {ids['night']}, the redrock files of {tileid} thru {night}")
        if not os.path.exists(f):
            raise DataError(f, "does not exist")
        out[int(ids["spectrograph"])] = f
    missing = sorted(set(petals) - set(out))
    if missing:
        raise DataError(files[0] if files else "--coadd", f"no coadd given for petal(s) {missing} of tile {tileid}")
    return out


def coadd_sky_residuals(path, fqa):
    """Fill FIBERQA's SKY_RESID_SIG / _WAVE of the sky fibers from one petal's coadd (rows matched
    by TARGETID)."""
    from ..io.fitsutil import open_fits, read_table
    from ..io.spectra import read_spectra_band
    from ..qa.tileqa import sky_residuals

    bands = {}
    for b in ("b", "r", "z"):
        wave, flux, ivar, mask, _, _ = read_spectra_band(path, b, resolution=False)
        bands[b] = (wave, flux, ivar, mask)
    with open_fits(path) as fx:
        fm = read_table(fx, "FIBERMAP", path, required=("TARGETID", "OBJTYPE"))[0]
    sig, wav = sky_residuals(fm["OBJTYPE"], bands)
    row = {t: k for k, t in enumerate(fm["TARGETID"].tolist())}
    for i, t in enumerate(fqa["TARGETID"].tolist()):
        k = row.get(t)
        if k is not None:
            fqa["SKY_RESID_SIG"][i], fqa["SKY_RESID_WAVE"][i] = sig[k], wav[k]


def _fiberqa(files, cfg, program, dchi2_min, coadds=None):
    from ..qa.tables import efftime_tracer, shipped_snr2time
    from ..qa.tileqa import fiber_qa
    from ..steps.summary import COMPLETENESS

    tileid, night, prog, petals = read_tile(files, program)
    coadd = read_coadds(coadds, tileid, night, [p for p, _ in petals]) if coadds is not None else {}
    comp = dict(COMPLETENESS, **(cfg.get("completeness") or {}))
    goal = dict(COMPLETENESS["goaltime"], **(comp.get("goaltime") or {}))
    goaltime = float(goal.get(prog.lower(), goal["dark"]))
    tracer = efftime_tracer(prog)
    snr2time = shipped_snr2time().get(tracer, 0.0)
    parts = []
    for petal, rr in sorted(petals, key=lambda x: x[0]):
        fqa = fiber_qa(rr.redshifts, rr.fibermap, rr.tsnr2, snr2time, tracer, goaltime, comp["mintfrac"],
                       comp["fiber_rel_mintfrac"], dchi2_min, rr.exp_fibermap)
        fqa["PETAL_LOC"] = np.where(fqa["PETAL_LOC"] < 0, petal, fqa["PETAL_LOC"])
        if petal in coadd:
            coadd_sky_residuals(coadd[petal], fqa)
        parts.append(fqa)
    return tileid, night, prog, goaltime, np.concatenate(parts)


def _tile_qa(args):
    from ..config import load_config
    from ..io.tileqa import METRICS_DTYPE, TileQA, read_reference
    from ..provenance import step_header
    from ..qa import plots
    from ..qa import tileqa as T
    from ..qa.scoring import load_thresholds, thresholds_version
    from .common import prod_root

    t0 = time.time()
    cfg = load_config(args.config)
    thr_path = args.thresholds or cfg.get("qa", {}).get("thresholds", "config/qa.yaml")
    thr = load_thresholds(thr_path) if os.path.exists(thr_path) or args.thresholds else {}
    st = T.settings(thr)
    history = [TileQA.read(f) for f in (args.history or [])]  # every input read before the work
    tileid, night, prog, goaltime, fqa = _fiberqa(args.redrock, cfg, args.program, st["dchi2_min"], args.coadd)
    ref_path = args.reference or (st["reference"] if st["reference"] != "history" else None)
    own = T.history_reference(history, tileid, night, st["history_min_tiles"]) if history else None
    if own is not None:
        ref_nz, ref_success, ntile = own
        refsrc = f"history: {ntile} NORMAL tiles before {night}"
    else:
        ref = read_reference(ref_path)
        ref_nz, ref_success = ref.nz, ref.success
        refsrc = os.path.basename(ref_path) if ref_path else "shipped tile-qa-reference.fits"
    petals = T.petal_qa(fqa, ref_success, st["sky_resid_sigma"])
    tgt = np.char.strip(fqa["OBJTYPE"].astype(str)) == "TGT"
    efftime = float(np.median(fqa["EFFTIME_SPEC"][tgt])) if tgt.any() else 0.0
    metrics = T.tile_metrics(fqa, petals, ref_nz, ref_success, efftime, goaltime)
    scored = T.score_tile(metrics, petals, st["metrics"])
    rows = np.zeros(len(scored["SCORES"]), METRICS_DTYPE)
    detail = {"NZ_EXCESS": (f"{metrics.get('NZ_EXCESS_TRACER', '')} z {metrics.get('NZ_EXCESS_ZLO', '')}-"
                            f"{metrics.get('NZ_EXCESS_ZHI', '')}: {metrics.get('NZ_EXCESS_N', '')} good redshifts, "
                            f"{metrics.get('NZ_EXCESS_EXPECTED', '')} expected"),
              "SUCCESS_DEFICIT": f"petal {metrics.get('SUCCESS_DEFICIT_PETAL', '')}",
              "SKY_RESID_FRAC": (f"petal {metrics.get('SKY_RESID_PETAL')}: {metrics.get('SKY_RESID_NRESID')}/"
                                 f"{metrics.get('SKY_RESID_NSKY')}; fiber {metrics.get('SKY_RESID_FIBER')} "
                                 f"{metrics.get('SKY_RESID_SIG')} sig at {metrics.get('SKY_RESID_WAVE')} A")}
    for k, (name, sc) in enumerate(scored["SCORES"].items()):
        nlo, nhi = sc.get("NORMAL") or (None, None)
        wlo, whi = sc.get("WARNING") or (None, None)

        def num(v):
            return np.nan if v is None else float(v)

        rows[k] = (name, num(sc.get("VALUE")), sc["STATUS"], num(nlo), num(nhi), num(wlo), num(whi),
                   detail.get(name, "")[:64])
    hdr = step_header("tile_qa", {"dchi2_min": st["dchi2_min"]}, list(args.redrock), cfg, prod_root(cfg))
    hdr.update({"TILEID": (tileid, "tile"), "LASTNIGHT": (night, "last night of the cumulative coadd"),
                "PROGRAM": prog, "EFFTIME": (round(efftime, 1) if np.isfinite(efftime) else -1.0,
                            "median EFFTIME_SPEC of the targets [s] (-1: no TSNR2)"),
                "GOALTIME": (goaltime, "goal effective time [s]"), "QASTATUS": (scored["STATUS"], "worst tile QA score"),
                "NALARM": (scored["NALARM"], "tile QA metrics at ALARM"),
                "REFSRC": (refsrc[:60], "n(z) and success reference"),
                "QAVER": (thresholds_version(thr_path) if os.path.exists(thr_path) else "",
                          "sha256[:12] of the thresholds that scored it")})
    out = TileQA(fqa, petals, rows, hdr)
    if args.png:
        title = (f"tile {tileid} thru {night} ({prog}): {scored['STATUS']}, EFFTIME {efftime:.0f} s / goal "
                 f"{goaltime:.0f} s, {int(fqa['GOODZ'][tgt].sum())}/{int(tgt.sum())} good redshifts")
        plots.tile_qa(args.png, title, fqa, petals, ref_nz, metrics, scored["SCORES"], goaltime, st["sky_resid_sigma"])
    out.write(args.outfile)
    bad = [f"{n} {sc['STATUS']} ({sc['VALUE']})" for n, sc in scored["SCORES"].items() if sc["STATUS"] in ("WARNING", "ALARM")]
    print(f"tile-qa {tileid} thru {night}: {scored['STATUS']}" + (f" - {', '.join(bad)}" if bad else "")
          + f" [{time.time() - t0:.1f} s] -> {args.outfile}")
    return 0


def _reference(args):
    from ..config import load_config
    from ..io.tileqa import TileQAReference
    from ..provenance import step_header
    from ..qa import tileqa as T
    from .common import prod_root

    cfg = load_config(args.config)

    by_tile = {}
    for f in args.redrock:
        _, ids = _parsed(f)
        by_tile.setdefault((ids.get("tileid"), ids.get("night")), []).append(f)
    parts = [_fiberqa(files, cfg, None, T.DEFAULTS["dchi2_min"])[4] for files in by_tile.values()]
    fqa = np.concatenate(parts)
    nz, success = T.reference_tables(fqa)
    hdr = step_header("tile_qa_reference", {"dchi2_min": T.DEFAULTS["dchi2_min"]}, list(args.redrock), cfg,
                      prod_root(cfg))
    hdr["NTILE"] = (len(by_tile), "tiles of the reference")
    TileQAReference(nz, success, hdr).write(args.outfile)
    for r in success:
        print(f"{r['TRACER']}: {r['NGOODZ']}/{r['NVALID']} good redshifts ({100 * r['SUCCESS']:.1f}%)")
    print(f"tile-qa-reference: {len(by_tile)} tiles, {len(fqa)} fibers -> {args.outfile}")
    return 0


def _nightqa(args):
    from .. import paths
    from ..io.datamodel import read_json
    from ..io.tileqa import TileQA
    from ..qa.html import nightqa_page

    rec = read_json(args.qa_night, "qa_night", "night QA JSON")
    if int(rec["NIGHT"]) != args.night:
        from ..errors import DataError

        raise DataError(args.qa_night, f"is the QA of night {rec['NIGHT']}, not {args.night}")
    tiles = []
    for f in args.tile_qa:
        qa = TileQA.read(f)
        h = qa.header
        tiles.append({"TILEID": int(h["TILEID"]), "LASTNIGHT": int(h["LASTNIGHT"]), "STATUS": qa.status,
                      "EFFTIME": float(h["EFFTIME"]), "GOALTIME": float(h["GOALTIME"]), "FITS": os.path.abspath(f),
                      "PNG": os.path.abspath(f[:-5] + ".png"),
                      "METRICS": [(str(r["NAME"]).strip(), float(r["VALUE"]), str(r["STATUS"]).strip(),
                                   str(r["DETAIL"]).strip()) for r in qa.metrics]})
    tiles.sort(key=lambda t: t["TILEID"])
    pages = {e["EXPID"]: paths.findfile("qa_exposure_html", prod=args.prod, night=args.night, expid=e["EXPID"])
             for e in rec["EXPOSURES"]}
    nightqa_page(args.html, rec, tiles, paths.findfile("qa_night_html", prod=args.prod, night=args.night), pages,
                 paths.findfile("qa_production_html", prod=args.prod))
    worst = [t for t in tiles if t["STATUS"] in ("WARNING", "ALARM")]
    print(f"nightqa {args.night}: {len(tiles)} tile(s)" + (f", {len(worst)} with warnings or alarms: "
          + ", ".join(f"{t['TILEID']} {t['STATUS']}" for t in worst) if worst else ", all tiles clean")
          + f" -> {args.html}")
    return 0
