"""The QC1 database: rows out of the QA records, idempotent and transactional ingestion, two
writers at once, queries, and the command's refusals."""

import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from fiberflow.io import qcdb
from fiberflow.qa import qc1


def _night(night, nexp=3, alarm_expid=None, version="abc123"):
    exps = []
    for k in range(nexp):
        expid = night % 10000 * 100 + k
        frames = {}
        for cam in ("b0", "r0"):
            st = "ALARM" if (expid == alarm_expid and cam == "r0") else "NORMAL"
            frames[cam] = {"SCORES": {
                "SKY": {"NSKY_OUTLIER": {"VALUE": int(st == "ALARM"), "NORMAL": [0.0, 0.0], "WARNING": [0.0, 0.0],
                                         "SOURCE": "static", "STATUS": st, "SCORE": int(st == "ALARM")},
                        "SKYCHI2": {"VALUE": 1.0 + 0.01 * k, "NORMAL": [0, 2], "WARNING": [0, 4], "SOURCE": "history",
                                    "STATUS": "NORMAL", "SCORE": 0},
                        "SKY_OUTLIER_FIBERS": {"VALUE": [13], "STATUS": "NA"}},  # not a number: not QC1
                "EXTRACT": {"CHI2PIX_MEDIAN": {"VALUE": float("nan"), "STATUS": "NA"}}}}  # nor a NaN
        exps.append({"NIGHT": night, "EXPID": expid, "TILEID": 80 + k, "OBSTYPE": "SCIENCE", "MJD": 60000.0 + k,
                     "EFFTIME": 1000.0 + k, "FRAMES": frames})
    return {"NIGHT": night, "EXPOSURES": exps, "THRESHOLDS_VERSION": version}


def test_night_rows_keep_numbers_where_and_how_judged():
    rows = qc1.night_rows(_night(20250101, alarm_expid=10101))
    assert len(rows) == 3 * (1 + 2 * 2)  # EFFTIME + 2 cameras x (NSKY_OUTLIER, SKYCHI2)
    eff = [r for r in rows if r["METRIC"] == "EFFTIME"]
    assert [r["VALUE"] for r in eff] == [1000.0, 1001.0, 1002.0] and eff[0]["UNIT"] == "s"
    assert {r["KIND"] for r in eff} == {"exposure"} and all(r["CAMERA"] is None for r in eff)
    bad = [r for r in rows if r["STATUS"] == "ALARM"]
    assert len(bad) == 1 and bad[0]["EXPID"] == 10101 and bad[0]["CAMERA"] == "r0" and bad[0]["STEP"] == "SKY"
    assert bad[0]["NORMAL_LO"] == 0.0 and bad[0]["WARNING_HI"] == 0.0 and bad[0]["THRESHOLDS"] == "abc123"
    assert {r["SOURCE"] for r in rows if r["METRIC"] == "SKYCHI2"} == {"history"}
    assert set(qc1.COLUMNS) == set(rows[0])


def _write_nights(tmp_path, nights, **kw):
    files = []
    for n in nights:
        d = tmp_path / "qa" / "nights" / str(n)
        d.mkdir(parents=True, exist_ok=True)
        f = d / f"qa-night-{n}.json"
        f.write_text(json.dumps(_night(n, **kw)))
        files.append(str(f))
    return files


def test_ingestion_is_idempotent_and_transactional(qc_database, tmp_path):
    """SQLite and PostgreSQL alike: re-ingesting replaces, a failed re-ingestion leaves the old
    rows, a database of another schema version is refused."""
    conn = qcdb.connect(qc_database)
    rows = qc1.night_rows(_night(20250101))
    assert qcdb.ingest(conn, "qa/nights/20250101/qa-night-20250101.json", "night", 20250101, rows) == 15
    assert qcdb.ingest(conn, "qa/nights/20250101/qa-night-20250101.json", "night", 20250101, rows) == 15
    assert len(qcdb.query(conn)) == 15 and len(qcdb.products(conn)) == 1
    # a re-ingestion that fails half way (an unstorable value in its last row) leaves the old rows
    broken = [dict(r) for r in rows[:3]] + [dict(rows[3], VALUE={"not": "a number"})]
    with pytest.raises(Exception) as exc:
        qcdb.ingest(conn, "qa/nights/20250101/qa-night-20250101.json", "night", 20250101, broken)
    assert "sqlite3" in type(exc.value).__module__ or "psycopg" in type(exc.value).__module__, exc.value
    assert len(qcdb.query(conn)) == 15 and qcdb.products(conn)[0]["NROWS"] == 15
    hist = qcdb.query(conn, metric="SKYCHI2", camera="r0")
    assert [r["VALUE"] for r in hist] == pytest.approx([1.0, 1.01, 1.02])
    conn.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(qcdb.DataError, match="schema version 0"):
        qcdb.connect(qc_database)


def test_a_file_that_is_not_a_database_or_a_server_that_is_not_there(tmp_path):
    (tmp_path / "junk.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(qcdb.DataError, match="not a QC1 database"):
        qcdb.connect(str(tmp_path / "junk.sqlite"))
    c = sqlite3.connect(str(tmp_path / "other.sqlite"))
    c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    c.execute("INSERT INTO meta VALUES ('schema_version', '7')")
    c.commit()
    c.close()
    with pytest.raises(qcdb.DataError, match="schema version 7"):
        qcdb.connect(str(tmp_path / "other.sqlite"))
    pytest.importorskip("psycopg")
    with pytest.raises(qcdb.DataError, match="cannot open the PostgreSQL QC1 database") as exc:
        qcdb.connect("postgresql://qc:secret@127.0.0.1:1/qc1", timeout=5)
    assert "secret" not in str(exc.value) and "qc:***@127.0.0.1" in str(exc.value)


def test_two_processes_ingesting_at_once_lose_no_row(qc_database, tmp_path):
    """Two ``fiberflow qc ingest`` processes, each with 40 nights (10 of them the same), into one
    database (SQLite, PostgreSQL) at once: every product once, every row there."""
    nights_a = list(range(20250101, 20250141))
    nights_b = list(range(20250131, 20250171))
    fa = _write_nights(tmp_path, nights_a)
    fb = _write_nights(tmp_path, nights_b)
    db = qc_database
    cmd = [sys.executable, "-m", "fiberflow.cli.main", "qc", "ingest", "--db", db]
    procs = [subprocess.Popen(cmd + files, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for files in ([f for f in fa for _ in range(3)], [f for f in fb for _ in range(3)])]  # each 3 times
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    conn = qcdb.connect(db)
    nights = sorted(set(nights_a) | set(nights_b))
    assert [p["NIGHT"] for p in qcdb.products(conn)] == nights
    assert len(qcdb.query(conn)) == 15 * len(nights)
    assert len(qcdb.query(conn, metric="EFFTIME", night_min=20250131, night_max=20250140)) == 30
    conn.close()


def test_qc_commands_refuse_bad_input_before_writing(tmp_path, capsys):
    from fiberflow.cli.main import main

    good = _write_nights(tmp_path, [20250101])[0]
    bad = tmp_path / "qa" / "nights" / "20250102" / "qa-night-20250102.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{truncated")
    db = tmp_path / "qc1.sqlite"
    assert main(["qc", "ingest", "--db", str(db), good, str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0]
    assert not db.exists()  # nothing written: the good file waits for the bad one to be fixed
    other = tmp_path / "notes.txt"
    other.write_text("x")
    assert main(["qc", "ingest", "--db", str(db), str(other)]) == 1
    assert "is not a night QA record" in capsys.readouterr().err
    assert main(["qc", "history", "--db", str(db), "--metric", "SKYCHI2"]) == 1
    assert "not found" in capsys.readouterr().err
    assert main(["qc", "ingest", "--db", str(db), good]) == 0
    capsys.readouterr()
    out = tmp_path / "h.csv"
    assert main(["qc", "history", "--db", str(db), "--metric", "SKYCHI2", "--camera", "b0", "-o", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("PRODUCT,KIND,NIGHT,EXPID") and len(lines) == 4
    assert "3 rows" in capsys.readouterr().out
    assert main(["qc", "products", "--db", str(db), "--format", "json"]) == 0
    prods = json.loads(capsys.readouterr().out)
    assert len(prods) == 1 and prods[0]["NROWS"] == 15 and len(prods[0]["SHA256"]) == 64
    assert np.isclose(float(lines[1].split(",")[10]), 1.0)
    assert os.path.getsize(db) > 0


def _rows(night, values, metric="SKYCHI2", camera="r0", step="SKY"):
    base = dict.fromkeys(qcdb.COLUMNS)
    return [dict(base, KIND="frame", NIGHT=night, EXPID=night % 10000 * 10 + k, CAMERA=camera, OBSTYPE="SCIENCE",
                 STEP=step, METRIC=metric, VALUE=v, STATUS="NORMAL") for k, v in enumerate(values)]


def test_health_check_judges_the_last_night_against_its_history(qc_database, tmp_path, capsys):
    """40 nights of a sky chi2 (r0 ~1.00, b0 ~1.00); on the last night r0 jumps to 1.3: ALARM, b0
    NORMAL. A breakpoint cuts the history (4 nights left; on the night before: too few values,
    NA). The command writes the table, the page and a trend plot per parameter."""
    from fiberflow.cli.main import main
    from fiberflow.qa import health

    rng = np.random.default_rng(3)
    conn = qcdb.connect(qc_database)
    nights = [20250101 + k for k in range(31)] + [20250201 + k for k in range(9)]
    for n in nights:
        rows = []
        for cam in ("b0", "r0"):
            vals = list(1.0 + 0.01 * rng.normal(size=3))
            if n == nights[-1] and cam == "r0":
                vals = [1.3, 1.0, 1.01]
            rows += _rows(n, vals, camera=cam)
        qcdb.ingest(conn, f"qa/nights/{n}/qa-night-{n}.json", "night", n, rows)
    hist = {"min_values": 5, "warning_nsig": 4, "alarm_nsig": 6}
    vals = qcdb.values(conn)
    assert qcdb.nights(conn) == nights
    conn.close()
    got = {r["CAMERA"]: r for r in health.health_check(vals, nights[-1], hist, window=30)}
    assert got["r0"]["STATUS"] == "ALARM" and got["r0"]["WORST_VALUE"] == 1.3 and got["r0"]["PULL"] > 15
    assert got["b0"]["STATUS"] == "NORMAL" and got["r0"]["HIST_NIGHTS"] == 30 and got["r0"]["HIST_N"] == 90
    assert got["r0"]["HIST_FIRST"] == nights[-31] and abs(got["r0"]["HIST_MEDIAN"] - 1.0) < 0.005
    cut = {r["CAMERA"]: r for r in health.health_check(vals, nights[-1], hist, window=30, since=nights[-5])}
    assert cut["r0"]["HIST_NIGHTS"] == 4 and cut["r0"]["HIST_FIRST"] == nights[-5] and cut["r0"]["STATUS"] == "ALARM"
    na = {r["CAMERA"]: r for r in health.health_check(vals, nights[-1], hist, window=30, since=nights[-2])}
    assert na["r0"]["STATUS"] == "NA" and na["r0"]["HIST_N"] == 3
    # the command: table, page, trend plots
    thr = os.path.join(os.path.dirname(__file__), "..", "config", "qa.yaml")
    html = tmp_path / "health" / "index.html"
    out = tmp_path / "health.csv"
    assert main(["qc", "health", "--db", qc_database, "--thresholds", thr, "--breakpoints", str(nights[-5]),
                 "-o", str(out), "--html", str(html)]) == 0
    assert "2 parameters, 1 ALARM, 1 NORMAL (history since 20250205)" in capsys.readouterr().err
    lines = out.read_text().splitlines()
    assert lines[0].startswith("KIND,STEP,METRIC,CAMERA,NIGHT,STATUS") and lines[1].split(",")[3:6] == [
        "r0", str(nights[-1]), "ALARM"]
    page = html.read_text()
    assert "trends/trend-SKY-SKYCHI2.png" in page and page.index(">ALARM<") < page.index(">NORMAL<")
    assert (html.parent / "trends" / "trend-SKY-SKYCHI2.png").stat().st_size > 2000
    assert main(["qc", "health", "--db", qc_database, "--thresholds", thr, "--night", "20240101"]) == 1
    assert "not in the QC1 database" in capsys.readouterr().err
