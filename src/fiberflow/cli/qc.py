"""``fiberflow qc``: the QC1 database (:mod:`fiberflow.io.qcdb`).

- ``fiberflow qc ingest --config CFG FILES...``: ingest night QA records (``qa-night-*.json``) and
  tile QAs (``tile-qa-*.fits``), and the certification states of certification records
  (``certification-*.json``); every file is read and checked before anything is written, and
  each product is replaced in its own transaction.
- ``fiberflow qc history --config CFG --metric M [--camera C] [--step S] [--kind K] [--nights A B]``:
  the metric's values over the nights, as CSV (default) or JSON.
- ``fiberflow qc products --config CFG [--night N]``: what the database holds.

``--db PATH`` gives the database directly (default: ``{prod}/qa/qc1.sqlite`` of ``--config``).
"""

from __future__ import annotations

import os
import sys
import time


def add_arguments(p, name):
    sub = p.add_subparsers(dest="qc_command", metavar="action", required=True)
    for action, text in (("ingest", "ingest night QA records and tile QAs"),
                         ("history", "a metric's values over the nights (CSV or JSON)"),
                         ("products", "the products the database holds"),
                         ("certify", "certify a night's nightly calibrations (AUTO / REVIEW / REJECTED, the ledger's "
                                     "overrides) into the database"),
                         ("calibrations", "the certification state of the nightly calibrations"),
                         ("health", "health check: every QC1 parameter of a night against its history in the "
                                    "database (dynamic ranges; breakpoints cut the history), with trend pages")):
        s = sub.add_parser(action, help=text, description=text)
        s.add_argument("--config", default=None, help="workflow configuration (the database under its production)")
        s.add_argument("--db", default=None, help="the database: a SQLite file (default {prod}/qa/qc1.sqlite) or a "
                                                  "postgresql://user@host:port/dbname URL")
        if action == "ingest":
            s.add_argument("files", nargs="+", help="qa-night-{night}.json and tile-qa-{tileid}-thru{night}.fits files")
            s.add_argument("--receipt", default=None,
                           help="write a JSON receipt of what went in (the workflow's qc_ingest output)")
        elif action == "history":
            s.add_argument("--metric", required=True)
            s.add_argument("--camera", default=None)
            s.add_argument("--step", default=None)
            s.add_argument("--kind", default=None, choices=("frame", "exposure", "tile"))
            s.add_argument("--nights", type=int, nargs=2, default=None, metavar=("FIRST", "LAST"))
            s.add_argument("--format", default="csv", choices=("csv", "json"))
            s.add_argument("-o", "--outfile", default=None, help="write here instead of the terminal")
        elif action == "certify":
            s.add_argument("--night", type=int, required=True)
            s.add_argument("--qa-night", default=None, help="the night's QA record (default: the production's)")
            s.add_argument("--ledger", default=None,
                           help="certification ledger YAML (default: qa.ledger, else {prod}/calibnight/certification.yaml)")
            s.add_argument("--review-fraction", type=float, default=None,
                           help="share of green calibrations sent to review (default: qa.review_fraction, 0.2)")
            s.add_argument("-o", "--outfile", default=None, help="also write the decisions as JSON")
        elif action == "health":
            s.add_argument("--night", type=int, default=None, help="the night checked (default: the database's last)")
            s.add_argument("--nights", type=int, default=None,
                           help="earlier nights with values in the history (default: the thresholds' history.nights)")
            s.add_argument("--thresholds", default=None,
                           help="QA thresholds YAML for the history settings (default: the production's qa.thresholds)")
            s.add_argument("--breakpoints", type=int, nargs="*", default=None,
                           help="nights of instrument changes (default: the config's calibration.breakpoints)")
            s.add_argument("--format", default="csv", choices=("csv", "json"))
            s.add_argument("-o", "--outfile", default=None, help="write the table here instead of the terminal")
            s.add_argument("--html", default=None, help="write the health page here (trend plots beside it)")
            s.add_argument("--receipts", nargs="*", default=[],
                           help="the nights' qc_ingest receipts (the workflow's inputs; not read)")
        else:
            s.add_argument("--night", type=int, default=None)
            s.add_argument("--format", default="csv", choices=("csv", "json"))
            if action == "calibrations":
                s.add_argument("--who", default=None, help="only the decisions of this reviewer (the ledger's who)")
                s.add_argument("--status", default=None, choices=("AUTO", "REVIEW", "REJECTED", "CERTIFIED", "NA"),
                               help="only calibrations in this state (e.g. REVIEW: the review queue)")


def run(args):
    return {"ingest": _ingest, "history": _history, "products": _products, "certify": _certify,
            "calibrations": _calibrations, "health": _health}[args.qc_command](args)


def _db(args):
    """The database path and the production root (None without --config)."""
    from ..config import load_config
    from .common import prod_root

    cfg = load_config(args.config) if args.config else {}
    prod = prod_root(cfg) if args.config else None
    if args.db:
        return args.db, prod
    return database_of(cfg, prod), prod


def database_of(cfg, prod):
    """The QC1 database of a production: its ``qa.database`` (a URL, or a path relative to the
    production), else ``{prod}/qa/qc1.sqlite``."""
    from ..errors import ConfigError
    from ..io.qcdb import default_path, is_url

    configured = (cfg.get("qa") or {}).get("database")
    if configured:
        return (configured if is_url(configured) or os.path.isabs(configured) or prod is None
                else os.path.join(prod, configured))
    if prod is None:
        raise ConfigError("give --db, or --config of a production (the database is {prod}/qa/qc1.sqlite, "
                          "or its qa.database)")
    return default_path(prod)


def read_product(path):
    """(kind, night, rows) of one QA product, read and checked.

    Raises
    ------
    DataError
        Naming the file: missing, unreadable, or not a night QA record or tile QA.
    """
    from .. import paths
    from ..errors import DataError
    from ..qa import qc1

    try:
        ftype, _ = paths.parse_path(path)
    except ValueError:
        ftype = None
    if ftype == "qa_night":
        from ..io.datamodel import read_json

        rec = read_json(path, "qa_night", "night QA JSON")
        if "EXPOSURES" not in rec or "NIGHT" not in rec:
            raise DataError(path, "night QA JSON without NIGHT / EXPOSURES")
        return "night", int(rec["NIGHT"]), qc1.night_rows(rec)
    if ftype == "certification":
        from ..io.datamodel import read_json

        rec = read_json(path, "certification", "certification record")
        decisions = rec.get("DECISIONS")
        if not isinstance(decisions, list) or "NIGHT" not in rec:
            raise DataError(path, "certification record without NIGHT / DECISIONS")
        return "certification", int(rec["NIGHT"]), decisions
    if ftype == "tile_qa":
        from ..io.tileqa import TileQA

        qa = TileQA.read(path)
        return "tile", int(qa.header["LASTNIGHT"]), qc1.tile_rows(qa, str(qa.header.get("QAVER", "")))
    raise DataError(path, "is not a night QA record (qa-night-{night}.json), a tile QA "
                          "(tile-qa-{tileid}-thru{night}.fits) or a certification record "
                          "(certification-{calibration}-{night}.json)")


def _key(path, prod):
    """The product's key: its path relative to the production when it lies in it."""
    a = os.path.abspath(path)
    if prod:
        p = os.path.abspath(prod)
        if a.startswith(p + os.sep):
            return os.path.relpath(a, p)
    return a


def _ingest(args):
    from ..io import qcdb
    from ..io.delivery import sha256

    db, prod = _db(args)
    t0 = time.time()
    items = [(f, *read_product(f)) for f in args.files]  # everything checked before the first write
    conn = qcdb.connect(db)
    n = 0
    done = []
    try:
        for f, kind, night, rows in items:
            sha = sha256(f)
            if kind == "certification":  # the calibrations' states, not QC1 rows
                qcdb.store_certification(conn, rows)
                done.append({"PRODUCT": _key(f, prod), "KIND": kind, "NIGHT": night, "NROWS": len(rows),
                             "SHA256": sha})
                continue
            n += qcdb.ingest(conn, _key(f, prod), kind, night, rows, sha)
            done.append({"PRODUCT": _key(f, prod), "KIND": kind, "NIGHT": night, "NROWS": len(rows), "SHA256": sha})
    finally:
        conn.close()
    if args.receipt:
        from ..io.datamodel import write_json

        write_json(args.receipt, "qc_ingest", {"DATABASE": os.path.abspath(db), "PRODUCTS": done, "NROWS": n})
    print(f"qc ingest: {len(items)} product(s), {n} QC1 rows [{time.time() - t0:.2f} s] -> {db}")
    return 0


def _write(rows, columns, fmt, outfile=None):
    import csv
    import json

    from ..io.fitsutil import atomic_path

    def emit(fh):
        if fmt == "json":
            json.dump(rows, fh, indent=1)
            fh.write("\n")
        else:
            w = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
            w.writeheader()
            w.writerows(rows)

    if outfile:
        with atomic_path(outfile) as tmp, open(tmp, "w", newline="") as fh:
            emit(fh)
    else:
        emit(sys.stdout)


def _read(args, fn):
    """``fn(connection)`` on the existing database of ``args`` (DataError when there is none)."""
    from ..errors import DataError
    from ..io import qcdb

    db, _ = _db(args)
    if not qcdb.is_url(db) and not os.path.exists(db):
        raise DataError(db, "QC1 database not found (fiberflow qc ingest writes it)")
    conn = qcdb.connect(db)
    try:
        return fn(conn)
    finally:
        conn.close()


def _history(args):
    from ..io import qcdb
    from ..qa.qc1 import COLUMNS

    lo, hi = args.nights or (None, None)
    rows = _read(args, lambda conn: qcdb.query(conn, metric=args.metric, camera=args.camera, step=args.step,
                                               kind=args.kind, night_min=lo, night_max=hi))
    _write(rows, ("PRODUCT", *COLUMNS), args.format, args.outfile)
    if args.outfile:
        print(f"qc history {args.metric}: {len(rows)} rows -> {args.outfile}")
    return 0


def _products(args):
    from ..io import qcdb

    rows = _read(args, lambda conn: qcdb.products(conn, args.night))
    _write(rows, ("PRODUCT", "KIND", "NIGHT", "NROWS", "INGESTED", "SHA256"), args.format)
    return 0


def _certify(args):
    from .. import paths
    from ..config import load_config
    from ..errors import ConfigError, DataError
    from ..io import qcdb
    from ..io.datamodel import read_json, write_json
    from ..qa import certify

    db, prod = _db(args)
    cfg = (load_config(args.config).get("qa") or {}) if args.config else {}
    qa_night = args.qa_night or (paths.findfile("qa_night", prod=prod, night=args.night) if prod else None)
    if qa_night is None:
        raise ConfigError("give --qa-night, or --config of a production")
    ledger_path = args.ledger or cfg.get("ledger") or (paths.findfile("certification_ledger", prod=prod) if prod else None)
    fraction = args.review_fraction if args.review_fraction is not None else float(cfg.get("review_fraction", 0.2))
    if not 0 <= fraction <= 1:
        raise ConfigError(f"--review-fraction {fraction}: must be between 0 and 1")
    rec = read_json(qa_night, "qa_night", "night QA JSON")
    if int(rec.get("NIGHT", -1)) != args.night:
        raise DataError(qa_night, f"is the QA of night {rec.get('NIGHT')}, not {args.night}")
    ledger = certify.load_ledger(ledger_path)
    decisions = certify.decide(certify.automatic(rec, fraction), ledger)
    conn = qcdb.connect(db)
    try:
        qcdb.store_certification(conn, decisions)
    finally:
        conn.close()
    if args.outfile:
        write_json(args.outfile, "certification", {"NIGHT": args.night, "LEDGER": ledger_path, "REVIEW_FRACTION": fraction,
                                                   "DECISIONS": decisions})
    for d in decisions:
        print(f"{d['CALIBRATION']}-{d['CAMERA']}-{d['NIGHT']}: {d['STATUS']} ({d['REASON']})")
    return 0


def _calibrations(args):
    from ..io import qcdb

    rows = _read(args, lambda conn: qcdb.certification(conn, night=args.night))
    if args.who:
        rows = [r for r in rows if r["SOURCE"] == f"ledger:{args.who}"]
    if args.status:
        rows = [r for r in rows if r["STATUS"] == args.status]
    _write(rows, ("CALIBRATION", "NIGHT", "CAMERA", "STATUS", "USABLE", "REASON", "SOURCE", "AUTO_STATUS", "DECIDED"),
           args.format)
    return 0


def _health(args):
    from ..config import load_config
    from ..errors import ConfigError
    from ..io import qcdb
    from ..qa import health
    from ..qa.scoring import load_thresholds

    cfg = load_config(args.config) if args.config else None
    thresholds = args.thresholds
    if thresholds is None:
        if cfg is None:
            raise ConfigError("give --thresholds, or --config of a production")
        from ..workflow.plan import qa_thresholds_path

        thresholds = qa_thresholds_path(cfg, os.path.dirname(os.path.abspath(args.config)))
    hist_cfg = load_thresholds(thresholds)["history"]
    window = args.nights if args.nights is not None else int(hist_cfg["nights"])
    breakpoints = args.breakpoints if args.breakpoints is not None else \
        ([int(b) for b in cfg["calibration"]["breakpoints"]] if cfg else [])

    def check(conn):
        nights = qcdb.nights(conn)
        if not nights:
            raise ConfigError(f"{qcdb.redacted(_db(args)[0])}: the QC1 database holds no night yet")
        night = args.night if args.night is not None else nights[-1]
        if night not in nights:
            raise ConfigError(f"night {night} is not in the QC1 database (it holds {nights[0]} .. {nights[-1]})")
        since = max([b for b in breakpoints if b <= night], default=0)
        hn = health.history_nights(nights, night, window, since)
        vals = qcdb.values(conn, night_min=hn[0] if hn else night, night_max=night)
        return night, since, vals, health.health_check(vals, night, hist_cfg, window, since)

    t0 = time.time()
    night, since, vals, rows = _read(args, check)
    _write(rows, health.COLUMNS, args.format, args.outfile)
    if args.html:
        from ..qa import plots
        from ..qa.html import health_page

        out = os.path.dirname(os.path.abspath(args.html))
        pngs = {}
        for step, metric in sorted({(r["STEP"], r["METRIC"]) for r in rows if r["HIST_N"]}):
            png = os.path.join(out, "trends", f"trend-{step}-{metric}.png")
            bands = {r["CAMERA"] or "all": (r["NORMAL_LO"], r["NORMAL_HI"]) for r in rows
                     if r["STEP"] == step and r["METRIC"] == metric}
            plots.trend(png, f"{step} {metric}", health.series_of(vals, step, metric), night,
                        [b for b in breakpoints if b <= night], bands)
            pngs[(step, metric)] = png
        settings = (f"the last {window} nights with values" if window else "every earlier night") + \
            (f" since the breakpoint {since}" if since else "") + \
            f"; ranges median +- {hist_cfg['warning_nsig']} / {hist_cfg['alarm_nsig']} robust sigma, " \
            f"at least {hist_cfg['min_values']} values ({os.path.basename(thresholds)})"
        prod_page = None
        if cfg is not None:
            from .. import paths

            prod_page = paths.findfile("qa_production_html", prod=_db(args)[1]) if _db(args)[1] else None
        health_page(args.html, rows, night, pngs, settings, prod_page)
    counts = {}
    for r in rows:
        counts[r["STATUS"]] = counts.get(r["STATUS"], 0) + 1
    print(f"qc health {night}: {len(rows)} parameters, " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
          + (f" (history since {since})" if since else "") + f" [{time.time() - t0:.2f} s]", file=sys.stderr)
    return 0
