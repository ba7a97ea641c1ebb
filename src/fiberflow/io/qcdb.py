"""The QC1 database: every scored metric of every product, with where it was measured and how it
was judged (rows from :mod:`fiberflow.qa.qc1`).

Embedded SQLite under the production by default (``{prod}/qa/qc1.sqlite``). Tables:

- ``products``: one row per ingested product (PRODUCT = its path relative to the production,
  KIND, NIGHT, NROWS, INGESTED UTC time, SHA256 of the file);
- ``qc1``: the parameters, keyed to their product;
- ``certification``: the state of each nightly calibration (:mod:`fiberflow.qa.certify`).

Ingestion is idempotent (re-ingesting a product replaces its rows), transactional (one
transaction per product: a crash leaves the old rows or the new ones, never a mix) and safe with
several writers at once (SQLite's write lock, taken at the start of the transaction, with a
busy timeout; WAL journal so readers never block).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import sqlite3

from ..errors import DataError

SCHEMA_VERSION = "1"

#: columns of a QC1 row (:mod:`fiberflow.qa.qc1` makes them), in database order
COLUMNS = ("KIND", "NIGHT", "EXPID", "TILEID", "CAMERA", "OBSTYPE", "MJD", "STEP", "METRIC", "VALUE", "UNIT", "STATUS",
           "SCORE", "SOURCE", "NORMAL_LO", "NORMAL_HI", "WARNING_LO", "WARNING_HI", "THRESHOLDS")

_TYPES = {"KIND": "TEXT NOT NULL", "NIGHT": "INTEGER", "EXPID": "INTEGER", "TILEID": "INTEGER", "CAMERA": "TEXT",
          "OBSTYPE": "TEXT", "MJD": "REAL", "STEP": "TEXT NOT NULL", "METRIC": "TEXT NOT NULL", "VALUE": "REAL",
          "UNIT": "TEXT", "STATUS": "TEXT", "SCORE": "INTEGER", "SOURCE": "TEXT", "NORMAL_LO": "REAL",
          "NORMAL_HI": "REAL", "WARNING_LO": "REAL", "WARNING_HI": "REAL", "THRESHOLDS": "TEXT"}

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE IF NOT EXISTS products (product TEXT PRIMARY KEY, kind TEXT NOT NULL, night INTEGER, "
    "nrows INTEGER NOT NULL, ingested TEXT NOT NULL, sha256 TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS qc1 (product TEXT NOT NULL, "
    + ", ".join(f"{c.lower()} {_TYPES[c]}" for c in COLUMNS) + ")",
    "CREATE TABLE IF NOT EXISTS certification (calibration TEXT NOT NULL, night INTEGER NOT NULL, "
    "camera TEXT NOT NULL, status TEXT NOT NULL, usable INTEGER NOT NULL, reason TEXT, source TEXT, "
    "auto_status TEXT, decided TEXT NOT NULL, PRIMARY KEY (calibration, night, camera))",
    "CREATE INDEX IF NOT EXISTS qc1_product ON qc1 (product)",
    "CREATE INDEX IF NOT EXISTS qc1_metric ON qc1 (metric, camera, night)",
    "CREATE INDEX IF NOT EXISTS qc1_night ON qc1 (night, expid)",
]


def default_path(prod):
    """``{prod}/qa/qc1.sqlite``."""
    return os.path.join(prod, "qa", "qc1.sqlite")


def connect(path, timeout=120.0):
    """Open (creating it and its schema when new) the QC1 database at ``path``.

    Raises
    ------
    DataError
        The file is not a database, or one of another schema version.
    """
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    try:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout = %d" % int(timeout * 1000))
        conn.execute("BEGIN IMMEDIATE")
        for stmt in SCHEMA:
            conn.execute(stmt)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise DataError(path, f"is not a QC1 database ({exc})") from None
    if row is not None and row[0] != SCHEMA_VERSION:
        conn.close()
        raise DataError(path, f"is a QC1 database of schema version {row[0]}, this fiberflow reads {SCHEMA_VERSION}")
    return conn


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ingest(conn, product, kind, night, rows, sha256=""):
    """Replace the rows of ``product`` by ``rows`` in one transaction.

    Parameters
    ----------
    conn : sqlite3.Connection from :func:`connect`
    product : str
        The product's path relative to the production (its key).
    kind : str
    night : int or None
    rows : list of dict (:data:`COLUMNS`)
    sha256 : str

    Returns
    -------
    int : rows written
    """
    values = [(product, *(r.get(c) for c in COLUMNS)) for r in rows]
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    conn.execute("BEGIN IMMEDIATE")  # the write lock first: two writers of one product serialise
    try:
        conn.execute("DELETE FROM qc1 WHERE product = ?", (product,))
        conn.execute("DELETE FROM products WHERE product = ?", (product,))
        conn.executemany(f"INSERT INTO qc1 VALUES ({', '.join('?' * (len(COLUMNS) + 1))})", values)
        conn.execute("INSERT INTO products VALUES (?, ?, ?, ?, ?, ?)", (product, kind, night, len(values), now, sha256))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return len(values)


def store_certification(conn, decisions):
    """Replace the certification rows of the calibrations in ``decisions`` (one transaction)."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    rows = [(d["CALIBRATION"], int(d["NIGHT"]), d["CAMERA"], d["STATUS"], int(bool(d["USABLE"])), d["REASON"],
             d["SOURCE"], d.get("AUTO_STATUS", d["STATUS"]), now) for d in decisions]
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany("INSERT OR REPLACE INTO certification VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return len(rows)


def certification(conn, night=None, calibration=None):
    """Certification rows (CALIBRATION, NIGHT, CAMERA, STATUS, USABLE, REASON, SOURCE, AUTO_STATUS,
    DECIDED), by night, calibration and camera."""
    where, args = [], []
    for col, val in (("night", night), ("calibration", calibration)):
        if val is not None:
            where.append(f"{col} = ?")
            args.append(val)
    sql = "SELECT * FROM certification" + (" WHERE " + " AND ".join(where) if where else "")
    cols = ("CALIBRATION", "NIGHT", "CAMERA", "STATUS", "USABLE", "REASON", "SOURCE", "AUTO_STATUS", "DECIDED")
    return [dict(zip(cols, r), USABLE=bool(r[4])) for r in conn.execute(sql + " ORDER BY night, calibration, camera", args)]


def query(conn, metric=None, camera=None, step=None, kind=None, night_min=None, night_max=None, night=None,
          status=None, limit=None):
    """QC1 rows matching every given filter, oldest first (NIGHT, EXPID, CAMERA).

    Returns
    -------
    list of dict (PRODUCT plus :data:`COLUMNS`)
    """
    where, args = [], []
    for col, val in (("metric", metric), ("camera", camera), ("step", step), ("kind", kind), ("night", night),
                     ("status", status)):
        if val is not None:
            where.append(f"{col} = ?")
            args.append(val)
    if night_min is not None:
        where.append("night >= ?")
        args.append(night_min)
    if night_max is not None:
        where.append("night <= ?")
        args.append(night_max)
    sql = "SELECT product, " + ", ".join(c.lower() for c in COLUMNS) + " FROM qc1"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY night, expid, tileid, camera, step, metric"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return [dict(zip(("PRODUCT", *COLUMNS), r)) for r in conn.execute(sql, args)]


def products(conn, night=None):
    """The ingested products (PRODUCT, KIND, NIGHT, NROWS, INGESTED, SHA256)."""
    sql = "SELECT product, kind, night, nrows, ingested, sha256 FROM products"
    args = ()
    if night is not None:
        sql += " WHERE night = ?"
        args = (night,)
    return [dict(zip(("PRODUCT", "KIND", "NIGHT", "NROWS", "INGESTED", "SHA256"), r))
            for r in conn.execute(sql + " ORDER BY night, product", args)]
