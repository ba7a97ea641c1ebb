"""``fiberflow quicklook`` and ``fiberflow quicklook-exposure``: the night-time quick-look of one
camera of an exposure, and the roll-up of an exposure (the jobs ``fiberflow watch`` runs through
``Snakefile.quicklook``).

``quicklook`` runs, in one process (each job is a fresh Python, so one process saves the start
of four): preproc (overscan, the chosen master bias, no cosmic-ray rejection unless
``quicklook.cosmics``), a boxcar extraction with the chosen nightly PSF (flats and science), the
sky model and subtraction with the chosen fiberflat (science; a unity fiberflat when there is
none), then the QA metrics of every product and the coversheet. A step that fails does not stop
the camera: the record says which step failed and why (the monitor shows it red) and the steps
before it keep their checks. The calibrations are those of the exposure's ``qlcalib`` record.

``quicklook-exposure`` scores the cameras' records against the QA thresholds (static, and the
production's QA history of earlier nights), gives each camera a status per check family (CCD,
FIBERS, SPECTRA), ingests the QC1 parameters into the production's QC1 database (product
``quicklook/{night}/{expid}``, KIND ``quicklook``) and writes ``qa-{expid}.json`` and its page.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def add_arguments(p, name):
    p.add_argument("--config", required=True, help="the production's configuration")
    p.add_argument("--night", type=int, required=True)
    p.add_argument("--expid", type=int, required=True)
    p.add_argument("--calib", required=True, help="the exposure's quick-look calibration record qlcalib-{expid}.json")
    if name == "quicklook":
        p.add_argument("--camera", required=True)
        p.add_argument("--raw", required=True, help="raw file desi-{expid}.fits.fz")
        p.add_argument("--fibermap", default=None, help="fibermap-{expid}.fits")
        p.add_argument("-o", "--outfile", required=True, help="camera QA record qa-{camera}-{expid}.json")
        p.add_argument("--png", required=True, help="coversheet PNG")
    else:
        p.add_argument("-i", "--infiles", nargs="+", required=True, help="the cameras' QA records")
        p.add_argument("-o", "--outfile", required=True, help="exposure QA record qa-{expid}.json")
        p.add_argument("--html", required=True, help="exposure page")
        p.add_argument("--no-database", action="store_true", help="do not ingest into the QC1 database")


def _call(modname, command, argv):
    """Run a fiberflow step command in this process (its own argument parsing and checks)."""
    import importlib

    from ..io.fitsutil import all_or_none
    from . import guard

    mod = importlib.import_module(f"fiberflow.cli.{modname}")
    p = argparse.ArgumentParser(prog=f"fiberflow {command}")
    mod.add_arguments(p, command)
    args = p.parse_args(argv)
    args.command = command
    guard.check_outputs(args)
    with all_or_none():  # each step's outputs all or none, in place before the next step reads them
        return mod.run(args)


def run(args):
    return _camera(args) if args.command == "quicklook" else _exposure(args)


def _camera(args):
    """One camera's chain; its steps write as they go (not one all-or-none block: the steps read
    what the ones before wrote, and a failing step keeps the checks of the ones before)."""
    from .. import paths
    from . import guard
    from ..config import load_config, resolve_roots
    from ..errors import DataError
    from ..io.datamodel import read_json, write_json

    guard.check_outputs(args)
    cfg = load_config(args.config)
    prod = resolve_roots(cfg)["prod"]
    man = read_json(args.calib, "ql_calib", "quick-look calibration record")
    cam = args.camera.lower()
    if int(man["EXPID"]) != args.expid or int(man["NIGHT"]) != args.night:
        raise DataError(args.calib, f"record of {man['NIGHT']}/{man['EXPID']}, not of {args.night}/{args.expid}")
    if cam not in man["CAMERAS"]:
        raise DataError(args.calib, f"camera {cam} is not in exposure {args.expid} ({', '.join(man['CAMERAS'])})")
    calib = {k: v["PATH"] for k, v in man["CALIBRATIONS"].get(cam, {}).items()}
    obstype = man["OBSTYPE"]

    def find(kind):
        return paths.findfile(kind, prod=prod, night=args.night, expid=args.expid, camera=cam)

    conf = ["--config", args.config, "--camera", cam]
    timing, failed, qa = {}, None, {}

    def step(name, fn):
        nonlocal failed
        if failed:
            return False
        t0 = time.time()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001  (reported in the record; the monitor shows it red)
            from ..errors import one_line

            failed = {"STEP": name, "ERROR": one_line(exc)}
            print(f"quicklook {cam} {args.expid}: {name} FAILED: {failed['ERROR']}", file=sys.stderr)
            return False
        finally:
            timing[name] = round(time.time() - t0, 3)
        return True

    bias = calib.get("biasnight")
    if obstype in ("ZERO", "DARK") and bias:
        qa.update(raw=args.raw, biasnight=bias)
    else:
        argv = conf + ["-i", args.raw, "-o", find("ql_preproc")]
        if bias:
            argv += ["--biasnight", bias]
        if args.fibermap:
            argv += ["--fibermap", args.fibermap]
        if not cfg["quicklook"]["cosmics"]:
            argv.append("--no-cosmics")
        if step("PREPROC", lambda: _call("preproc", "preproc", argv)):
            qa["preproc"] = find("ql_preproc")
    psf = calib.get("psfnight")
    if obstype in ("FLAT", "SCIENCE") and "preproc" in qa:
        if not psf:
            failed = {"STEP": "EXTRACT", "ERROR": "no PSF: no psfnight tonight or earlier and no calibration.default_psf"}
        elif step("EXTRACT", lambda: _call("extract", "extract", conf + ["-i", qa["preproc"], "--psf", psf, "-o",
                                                                     find("ql_frame"), "--method", "boxcar"])):
            qa["frame"] = find("ql_frame")
    if obstype == "FLAT" and "frame" in qa:
        # the quick-look's own fiberflat (of the boxcar extraction, as the science it divides)
        # (a few clipping iterations: the quick-look's flat need not converge to 1e-5)
        if step("FIBERFLAT", lambda: _call("fiberflat", "fiberflat", conf + ["-i", qa["frame"], "-o",
                                                                         find("ql_fiberflat"), "--maxiter", "5"])):
            qa["fiberflat"] = find("ql_fiberflat")
    if obstype == "SCIENCE" and "frame" in qa:
        if step("SKY", lambda: _sky(args.config, cam, qa["frame"], calib.get("fiberflatnight"), find("ql_sky"),
                                    find("ql_sframe"))):
            qa.update(sky=find("ql_sky"), sframe=find("ql_sframe"))
    argv = ["--night", str(args.night), "--expid", str(args.expid), "--camera", cam, "--prod", prod,
            "-o", args.outfile, "--png", args.png, "--config", args.config]
    for k, v in qa.items():
        argv += [f"--{k}", v]
    t0 = time.time()
    if qa:
        _call("qa", "qa-frame", argv)
        rec = read_json(args.outfile, "qa_frame")
    else:  # nothing to measure: a record that says why
        rec = {"FFQA": 1, "NIGHT": args.night, "EXPID": args.expid, "CAMERA": cam, "PETAL": int(cam[1:]),
               "OBSTYPE": obstype, "TILEID": man.get("TILEID"), "PROGRAM": man.get("PROGRAM"),
               "EXPTIME": man.get("EXPTIME"), "MJD": man.get("MJD"), "METRICS": {}, "FIBERS": {}, "FILES": {},
               "LOGS": {}, "QAFILE": os.path.relpath(args.outfile, prod), "PLOT": None}
        from ..qa.plots import message

        message(args.png, f"{obstype} {args.expid} {cam}: {failed['ERROR'] if failed else 'nothing to measure'}")
    timing["QA"] = round(time.time() - t0, 3)
    rec["QUICKLOOK"] = {"TIMING": timing, "FAILED": failed, "CALIBRATIONS": man["CALIBRATIONS"].get(cam, {})}
    write_json(args.outfile, "qa_frame", rec)
    total = sum(timing.values())
    print(f"quicklook {cam} {args.expid} ({obstype}): " + ", ".join(f"{k} {v:.1f} s" for k, v in timing.items())
          + f" = {total:.1f} s" + (f"; {failed['STEP']} FAILED" if failed else "") + f" -> {args.outfile}")
    return 0


def _sky(config, cam, frame_path, fiberflat, outfile, sframe):
    import numpy as np

    from ..config import load_config
    from ..instrument import load_instrument
    from ..io.calib import read_fiberflat
    from .common import read_camera_frame
    from .sky import sky_and_write

    cfg = load_config(config)
    inst = load_instrument(cfg["instrument"])
    frame = read_camera_frame(frame_path, cam, inst, ("SCIENCE",))
    if fiberflat:
        ff = read_fiberflat(fiberflat)
        arrays = (ff.fiberflat, ff.ivar, ff.mask)
        name = fiberflat
    else:
        arrays = (np.ones_like(frame.flux), np.full_like(frame.flux, 1e8), np.zeros(frame.flux.shape, np.int32))
        name = "unity (no fiberflat)"
    from ..io.fitsutil import all_or_none

    with all_or_none():  # the sky model and the sframe together
        return sky_and_write(cfg, cam, frame, arrays, frame_path, name, outfile, sframe)


def _exposure(args):
    from ..config import load_config, resolve_roots
    from ..errors import DataError
    from ..io.datamodel import read_json, write_json
    from ..qa import tables
    from ..qa.scoring import load_thresholds, thresholds_version, worst
    from ..workflow.plan import qa_thresholds_path
    from ..workflow.quicklook import FAMILIES, family_status

    cfg = load_config(args.config)
    prod = resolve_roots(cfg)["prod"]
    man = read_json(args.calib, "ql_calib", "quick-look calibration record")
    frames = []
    for f in args.infiles:
        fr = read_json(f, "qa_frame", "quick-look camera QA record")
        if int(fr.get("EXPID", -1)) != args.expid:
            raise DataError(f, f"record of exposure {fr.get('EXPID')} given to the quick-look of {args.expid}")
        frames.append(fr)
    # relative thresholds files: beside the configuration (the quick-look runs in its own tree)
    base = os.path.dirname(os.path.abspath(args.config))
    thr_path, ql_path = qa_thresholds_path(cfg, base), qa_thresholds_path(cfg, base, "quicklook")
    thr = load_thresholds(thr_path, ql_path)
    history, hist_nights = _history(prod, args.night, thr)
    night = tables.score_night(args.night, frames, thr, history)
    exp = night["EXPOSURES"][0]
    cameras = {}
    for fr in frames:
        cam = fr["CAMERA"]
        scored = exp["FRAMES"][cam]
        ql = fr.get("QUICKLOOK") or {}
        fams = family_status(scored)
        if ql.get("FAILED"):
            fam = next((f for f, steps in FAMILIES.items() if ql["FAILED"]["STEP"] in steps), "CCD")
            fams[fam] = "ALARM"
            scored["STATUS"] = "ALARM"
        cameras[cam] = {"STATUS": worst([scored["STATUS"], *fams.values()]), "FAMILIES": fams,
                        "NALARM": scored["NALARM"], "NSCORED": scored["NSCORED"], "FAILED": ql.get("FAILED"),
                        "TIMING": ql.get("TIMING", {}), "CALIBRATIONS": ql.get("CALIBRATIONS", {}),
                        "ALARMS": sorted(f"{st}.{m}" for st, ms in scored["SCORES"].items() for m, s in ms.items()
                                         if s["STATUS"] == "ALARM"),
                        "WARNINGS": sorted(f"{st}.{m}" for st, ms in scored["SCORES"].items() for m, s in ms.items()
                                           if s["STATUS"] == "WARNING"),
                        "PLOT": fr.get("PLOT"), "QAFILE": fr.get("QAFILE")}
    families = {f: worst([c["FAMILIES"][f] for c in cameras.values()]) for f in FAMILIES}
    rec = {"NIGHT": args.night, "EXPID": args.expid, "OBSTYPE": man["OBSTYPE"], "TILEID": man.get("TILEID"),
           "PROGRAM": man.get("PROGRAM"), "EXPTIME": man.get("EXPTIME"), "MJD": man.get("MJD"),
           "STATUS": worst(c["STATUS"] for c in cameras.values()), "FAMILIES": families, "CAMERAS": cameras,
           "EFFTIME": exp.get("EFFTIME"), "FIRST_BAD": exp.get("FIRST_BAD"), "THRESHOLDS": [thr_path, ql_path],
           "THRESHOLDS_VERSION": thresholds_version(thr_path, ql_path), "HISTORY_NIGHTS": hist_nights,
           "SCORED": exp}
    if not args.no_database:
        rec["DATABASE"] = _ingest(cfg, prod, rec, night)
    write_json(args.outfile, "ql_qa", rec)
    _page(args.html, rec, prod)
    bad = [c for c, v in cameras.items() if v["STATUS"] == "ALARM"]
    print(f"quicklook-exposure {args.expid} ({rec['OBSTYPE']}): {rec['STATUS']} "
          + " ".join(f"{f} {s}" for f, s in families.items()) + (f"; ALARM on {', '.join(bad)}" if bad else "")
          + f" -> {args.outfile}")
    return 0


def _history(prod, night, thr):
    """QA history of the production's earlier nights (night QA records), as the night QA uses."""
    import glob

    from ..io.datamodel import read_json
    from ..qa import tables

    files = sorted(glob.glob(os.path.join(prod, "qa", "nights", "*", "qa-night-*.json")))
    recs = []
    for f in reversed(files):
        if len(recs) >= thr["history"]["nights"]:
            break
        try:
            r = read_json(f, "qa_night")
        except Exception:  # noqa: BLE001  (a night being rewritten is simply not history yet)
            continue
        if int(r.get("NIGHT", 0)) < night:
            recs.append(r)
    return tables.history_from_nights(recs, thr["history"]["nights"]), sorted(int(r["NIGHT"]) for r in recs)


def _ingest(cfg, prod, rec, night_rec):
    """Ingest the exposure's QC1 parameters (KIND quicklook); returns the database (redacted)."""
    from ..io import qcdb
    from ..qa import qc1
    from .qc import database_of

    db = database_of(cfg, prod)
    rows = qc1.night_rows(dict(night_rec, THRESHOLDS_VERSION=rec["THRESHOLDS_VERSION"]))
    for r in rows:
        r["KIND"] = "quicklook"
    conn = qcdb.connect(db)
    try:
        qcdb.ingest(conn, f"quicklook/{rec['NIGHT']}/{rec['EXPID']:08d}", "quicklook", rec["NIGHT"], rows)
    finally:
        conn.close()
    return qcdb.redacted(db)


def _page(path, rec, prod):
    """A static page of one quick-look exposure (the monitor serves richer ones)."""
    import html

    from ..io.fitsutil import atomic_path
    from ..qa.plots import STATUS_COLORS

    def cell(status):
        return f'<td class="{status}" style="background:{STATUS_COLORS.get(status, "#fff")};color:#fff">{status}</td>'

    rows = []
    for cam, c in sorted(rec["CAMERAS"].items()):
        why = html.escape(f"{c['FAILED']['STEP']} failed: {c['FAILED']['ERROR']}" if c["FAILED"] else
                          ", ".join(c["ALARMS"] + c["WARNINGS"]))
        plot = os.path.relpath(os.path.join(prod, c["PLOT"]), os.path.dirname(path)) if c.get("PLOT") else ""
        rows.append(f"<tr><td>{cam}</td>{cell(c['STATUS'])}" + "".join(cell(c["FAMILIES"][f]) for f in rec["FAMILIES"])
                    + f"<td>{sum(c['TIMING'].values()):.1f} s</td><td>{why}</td>"
                    + (f'<td><a href="{html.escape(plot)}">coversheet</a></td>' if plot else "<td></td>") + "</tr>")
    head = "".join(f"<th>{f}</th>" for f in rec["FAMILIES"])
    text = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>quick-look {rec['EXPID']}</title></head><body>"
            f"<h1>Quick-look {rec['OBSTYPE']} {rec['EXPID']} (night {rec['NIGHT']}, tile {rec.get('TILEID')}): "
            f"{rec['STATUS']}</h1><table border='1' cellpadding='3'><tr><th>camera</th><th>status</th>{head}"
            f"<th>time</th><th>out of range</th><th></th></tr>{''.join(rows)}</table></body></html>\n")
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write(text)
