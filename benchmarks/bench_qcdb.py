"""QC1 database: ingestion time per frame and query time of a metric's history, on a synthetic
production of many nights (default 1,000 nights x 10 exposures x 30 cameras x 20 metrics = 6
million rows), in the embedded SQLite database or on a PostgreSQL server.

    .venv/bin/python benchmarks/bench_qcdb.py [--nights 1000] [--exposures 10] [--cameras 30] [--metrics 20]
    .venv/bin/python benchmarks/bench_qcdb.py --postgres          # a throw-away local server (tests/_postgres.py)
    .venv/bin/python benchmarks/bench_qcdb.py --db postgresql://user@host/emptydb

Each night is one product (as ``qa-night-{night}.json`` is), ingested in one transaction. The
query is what ``fiberflow qc history --metric M --camera C`` runs (one row per exposure of every
night), and the same over the last 30 nights (the health check's window); then the health check
of the last night (every parameter against its last 30 nights).
"""

import argparse
import contextlib
import os
import resource
import sys
import tempfile
import time

import numpy as np


def night_rows(night, nexp, cams, metrics, rng):
    rows = []
    for e in range(nexp):
        for cam in cams:
            for m in metrics:
                rows.append({"KIND": "frame", "NIGHT": night, "EXPID": night % 100000 * 100 + e, "TILEID": 1000 + e,
                             "CAMERA": cam, "OBSTYPE": "SCIENCE", "MJD": 60000.0 + e / 100, "STEP": "SKY", "METRIC": m,
                             "VALUE": float(rng.normal()), "UNIT": "", "STATUS": "NORMAL", "SCORE": 0, "SOURCE": "static",
                             "NORMAL_LO": -3.0, "NORMAL_HI": 3.0, "WARNING_LO": -5.0, "WARNING_HI": 5.0,
                             "THRESHOLDS": "0123456789ab"})
    return rows


def main():
    from fiberflow.io import qcdb

    ap = argparse.ArgumentParser()
    ap.add_argument("--nights", type=int, default=1000)
    ap.add_argument("--exposures", type=int, default=10)
    ap.add_argument("--cameras", type=int, default=30)
    ap.add_argument("--metrics", type=int, default=20)
    ap.add_argument("--dir", default=None, help="where the database goes (default: a temporary directory)")
    ap.add_argument("--db", default=None, help="a postgresql:// URL of an empty database to fill")
    ap.add_argument("--postgres", action="store_true", help="start a throw-away PostgreSQL server and use it")
    args = ap.parse_args()
    cams = [f"{a}{p}" for p in range(10) for a in "brz"][: args.cameras]
    metrics = [f"METRIC_{k:02d}" for k in range(args.metrics)]
    rng = np.random.default_rng(1)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(dir=args.dir))
        db = args.db or os.path.join(tmp, "qc1.sqlite")
        if args.postgres:
            sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
            import _postgres

            if _postgres.available():
                raise SystemExit(f"bench_qcdb: {_postgres.available()}")
            db = _postgres.new_database(stack.enter_context(_postgres.server()), "bench")
        conn = qcdb.connect(db)
        print(f"database: {conn.kind} {conn.where}")
        t_ing = 0.0
        nrows = 0
        for k in range(args.nights):
            night = 20200101 + k
            rows = night_rows(night, args.exposures, cams, metrics, rng)
            t0 = time.perf_counter()
            nrows += qcdb.ingest(conn, f"qa/nights/{night}/qa-night-{night}.json", "night", night, rows)
            t_ing += time.perf_counter() - t0
        nframes = args.nights * args.exposures * len(cams)
        print(f"ingested {args.nights} nights, {nframes} frames, {nrows} rows in {t_ing:.1f} s: "
              f"{1e3 * t_ing / nframes:.3f} ms per frame ({args.metrics} metrics), {nrows / t_ing:.0f} rows/s; "
              f"database {_size(conn, db) / 1e6:.0f} MB")
        # re-ingest one night (idempotent replace)
        t0 = time.perf_counter()
        qcdb.ingest(conn, "qa/nights/20200101/qa-night-20200101.json", "night", 20200101,
                    night_rows(20200101, args.exposures, cams, metrics, rng))
        print(f"re-ingesting one night: {time.perf_counter() - t0:.3f} s")
        for label, kw in (("whole history", {}), ("last 30 nights", {"night_min": 20200101 + args.nights - 30})):
            t0 = time.perf_counter()
            for _ in range(5):
                res = qcdb.query(conn, metric="METRIC_07", camera="r3", **kw)
            dt = (time.perf_counter() - t0) / 5
            print(f"history of one metric of one camera, {label}: {len(res)} rows in {1e3 * dt:.1f} ms")
        from fiberflow.qa import health

        t0 = time.perf_counter()
        last = 20200101 + args.nights - 1
        vals = qcdb.values(conn, night_min=last - 30, night_max=last)
        rows = health.health_check(vals, last, {"min_values": 5, "warning_nsig": 4, "alarm_nsig": 6}, window=30)
        print(f"health check of the last night: {len(rows)} parameters against {len(vals)} values of 30 nights "
              f"in {time.perf_counter() - t0:.2f} s")
        conn.close()
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; cores: {os.cpu_count()}")


def _size(conn, db):
    if conn.kind == "postgresql":
        return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return os.path.getsize(db)


if __name__ == "__main__":
    main()
