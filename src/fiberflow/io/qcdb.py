"""The QC1 database: every scored metric of every product, with where it was measured and how it
was judged (rows from :mod:`fiberflow.qa.qc1`).

Embedded SQLite under the production by default (``{prod}/qa/qc1.sqlite``), or a shared site
database on a PostgreSQL server (``qa.database`` / ``--db`` a ``postgresql://`` URL; needs the
``postgres`` extra, psycopg). The same SQL runs on both (:class:`Database` translates the
placeholders and serialises writers). Tables:

- ``products``: one row per ingested product (PRODUCT = its path relative to the production,
  KIND, NIGHT, NROWS, INGESTED UTC time, SHA256 of the file);
- ``qc1``: the parameters, keyed to their product;
- ``certification``: the state of each nightly calibration (:mod:`fiberflow.qa.certify`).

Ingestion is idempotent (re-ingesting a product replaces its rows), transactional (one
transaction per product: a crash leaves the old rows or the new ones, never a mix) and safe with
several writers at once (SQLite: its write lock, taken at the start of the transaction, with a
busy timeout, and a WAL journal so readers never block; PostgreSQL: a transaction-level advisory
lock per product, so two writers of one product serialise and others run side by side).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import sqlite3

from ..errors import DataError

SCHEMA_VERSION = "1"

#: columns of a QC1 row (:mod:`fiberflow.qa.qc1` makes them), in database order
COLUMNS = ("KIND", "NIGHT", "EXPID", "TILEID", "CAMERA", "OBSTYPE", "MJD", "STEP", "METRIC", "VALUE", "UNIT", "STATUS",
           "SCORE", "SOURCE", "NORMAL_LO", "NORMAL_HI", "WARNING_LO", "WARNING_HI", "THRESHOLDS")

# REAL is 8 bytes in SQLite but 4 in PostgreSQL: DOUBLE PRECISION for both (SQLite: REAL affinity)
_TYPES = {"KIND": "TEXT NOT NULL", "NIGHT": "INTEGER", "EXPID": "INTEGER", "TILEID": "INTEGER", "CAMERA": "TEXT",
          "OBSTYPE": "TEXT", "MJD": "DOUBLE PRECISION", "STEP": "TEXT NOT NULL", "METRIC": "TEXT NOT NULL",
          "VALUE": "DOUBLE PRECISION", "UNIT": "TEXT", "STATUS": "TEXT", "SCORE": "INTEGER", "SOURCE": "TEXT",
          "NORMAL_LO": "DOUBLE PRECISION", "NORMAL_HI": "DOUBLE PRECISION", "WARNING_LO": "DOUBLE PRECISION",
          "WARNING_HI": "DOUBLE PRECISION", "THRESHOLDS": "TEXT"}

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


def is_url(db):
    """Whether ``db`` names a PostgreSQL server (``postgresql://...``) rather than a SQLite file."""
    return str(db).startswith(("postgresql://", "postgres://"))


def redacted(db):
    """``db`` with any password in its URL hidden (for messages)."""
    return re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", str(db))


def _lock_key(name):
    """A signed 64-bit advisory-lock key for a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class Database:
    """One connection to the QC1 database, SQLite or PostgreSQL, in autocommit mode with explicit
    transactions. SQL is written once with ``?`` placeholders.

    Attributes
    ----------
    kind : str
        "sqlite" or "postgresql".
    where : str
        The file or the (redacted) URL, for messages.
    """

    def __init__(self, raw, kind, where):
        self.raw, self.kind, self.where = raw, kind, where

    def _sql(self, sql):
        return sql.replace("?", "%s") if self.kind == "postgresql" else sql

    def execute(self, sql, args=()):
        return self.raw.execute(self._sql(sql), args)

    def executemany(self, sql, rows):
        if self.kind == "postgresql":
            with self.raw.cursor() as cur:
                cur.executemany(self._sql(sql), rows)
        else:
            self.raw.executemany(sql, rows)

    def begin(self, lock=None):
        """Start a write transaction; ``lock`` names what it writes (PostgreSQL: an advisory lock
        on it until the end of the transaction; SQLite: the database's write lock)."""
        if self.kind == "postgresql":
            self.raw.execute("BEGIN")
            if lock:
                self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(lock),))
        else:
            self.raw.execute("BEGIN IMMEDIATE")

    def commit(self):
        self.raw.execute("COMMIT")

    def rollback(self):
        self.raw.execute("ROLLBACK")

    def close(self):
        self.raw.close()


def connect(path, timeout=120.0):
    """Open (creating it and its schema when new) the QC1 database: a SQLite file, or a
    PostgreSQL server's database given as a ``postgresql://`` URL.

    Returns
    -------
    Database

    Raises
    ------
    DataError
        The file is not a database, the server cannot be reached, or the database is of another
        schema version.
    """
    if is_url(path):
        try:
            import psycopg
        except ImportError:
            raise DataError(redacted(path), "a PostgreSQL QC1 database needs psycopg "
                                            "(pip install 'fiberflow[postgres]')") from None
        try:
            raw = psycopg.connect(path, autocommit=True, connect_timeout=int(timeout))
        except psycopg.Error as exc:
            raise DataError(redacted(path), f"cannot open the PostgreSQL QC1 database ({str(exc).strip()})") from None
        db, errors = Database(raw, "postgresql", redacted(path)), psycopg.Error
    else:
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        db, errors = None, sqlite3.DatabaseError
    try:
        if db is None:
            raw = sqlite3.connect(path, timeout=timeout, isolation_level=None)
            raw.execute("PRAGMA journal_mode=WAL")
            raw.execute("PRAGMA busy_timeout = %d" % int(timeout * 1000))
            db = Database(raw, "sqlite", path)
        db.begin(lock="schema")
        for stmt in SCHEMA:
            db.execute(stmt)
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        db.commit()
    except errors as exc:
        raise DataError(db.where if db else path, f"is not a QC1 database ({str(exc).strip()})") from None
    if row is not None and row[0] != SCHEMA_VERSION:
        db.close()
        raise DataError(db.where, f"is a QC1 database of schema version {row[0]}, this fiberflow reads {SCHEMA_VERSION}")
    return db


def ingest(conn, product, kind, night, rows, sha256=""):
    """Replace the rows of ``product`` by ``rows`` in one transaction.

    Parameters
    ----------
    conn : Database from :func:`connect`
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
    conn.begin(lock=f"product:{product}")  # the lock first: two writers of one product serialise
    try:
        conn.execute("DELETE FROM qc1 WHERE product = ?", (product,))
        conn.execute("DELETE FROM products WHERE product = ?", (product,))
        conn.executemany(f"INSERT INTO qc1 VALUES ({', '.join('?' * (len(COLUMNS) + 1))})", values)
        conn.execute("INSERT INTO products VALUES (?, ?, ?, ?, ?, ?)", (product, kind, night, len(values), now, sha256))
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    return len(values)


def store_certification(conn, decisions):
    """Replace the certification rows of the calibrations in ``decisions`` (one transaction)."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    rows = [(d["CALIBRATION"], int(d["NIGHT"]), d["CAMERA"], d["STATUS"], int(bool(d["USABLE"])), d["REASON"],
             d["SOURCE"], d.get("AUTO_STATUS", d["STATUS"]), now) for d in decisions]
    conn.begin(lock="certification")
    try:
        conn.executemany("INSERT INTO certification VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                         "ON CONFLICT (calibration, night, camera) DO UPDATE SET status = excluded.status, "
                         "usable = excluded.usable, reason = excluded.reason, source = excluded.source, "
                         "auto_status = excluded.auto_status, decided = excluded.decided", rows)
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
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
    sql += " ORDER BY " + ", ".join(f"{c} NULLS FIRST" for c in ("night", "expid", "tileid", "camera")) + ", step, metric"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return [dict(zip(("PRODUCT", *COLUMNS), r)) for r in conn.execute(sql, args)]


def values(conn, night_min=None, night_max=None):
    """(KIND, STEP, METRIC, CAMERA, NIGHT, VALUE) of every QC1 row in a night range: the light
    form the health check and trend plots read (a tuple a row, no dictionaries)."""
    where, args = [], []
    if night_min is not None:
        where.append("night >= ?")
        args.append(int(night_min))
    if night_max is not None:
        where.append("night <= ?")
        args.append(int(night_max))
    sql = "SELECT kind, step, metric, camera, night, value FROM qc1"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [tuple(r) for r in conn.execute(sql, args)]


def nights(conn):
    """The nights the database has QC1 rows of, in order."""
    return [int(r[0]) for r in conn.execute("SELECT DISTINCT night FROM qc1 WHERE night IS NOT NULL ORDER BY night")]


def products(conn, night=None):
    """The ingested products (PRODUCT, KIND, NIGHT, NROWS, INGESTED, SHA256)."""
    sql = "SELECT product, kind, night, nrows, ingested, sha256 FROM products"
    args = ()
    if night is not None:
        sql += " WHERE night = ?"
        args = (night,)
    return [dict(zip(("PRODUCT", "KIND", "NIGHT", "NROWS", "INGESTED", "SHA256"), r))
            for r in conn.execute(sql + " ORDER BY night, product", args)]
