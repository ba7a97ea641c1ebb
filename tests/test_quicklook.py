"""Night-time quick-look: `fiberflow watch` takes each exposure of a replayed night as its files
complete and runs the quick-look chain through Snakefile.quicklook; `fiberflow serve` shows it
live. Real processes throughout: the replay, the watcher, Snakemake, the waitress server and
Debian's chromium."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from _workflow import PROJECT, tiny_config

NIGHT = 20250903
PLAN = f"""night: {NIGHT}
first_expid: 30
exposures:
  - {{obstype: FLAT, exptime: 10.0}}
  - {{obstype: SCIENCE, tileid: 90, exptime: 300.0}}
  - {{obstype: SCIENCE, tileid: 91, exptime: 300.0, faults: {{noisy_amp: {{camera: r0, amp: B}}}}}}
"""
GREEN, RED = "rgb(46, 125, 50)", "rgb(198, 40, 40)"


def _ff(*args):
    return [sys.executable, "-m", "fiberflow.cli.main", *[str(a) for a in args]]


def _ql(tmp_path):
    return tmp_path / "redux" / "ql" / "quicklook"


def _table(tmp_path):
    from fiberflow.cli.watch import read_table

    return read_table(str(_ql(tmp_path) / str(NIGHT) / f"qlexposures-{NIGHT}.csv"))


def _serve(cfg, token, *extra):
    """A real `fiberflow serve` on a free port; returns (process, host, port)."""
    proc = subprocess.Popen(_ff("serve", "--config", cfg, "--port", "0", "--token", token, "--refresh", "0.5", *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    assert "monitor of" in line, line + proc.stdout.read() if proc.poll() is not None else line
    hostport = line.split("http://", 1)[1].split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    return proc, host, int(port)


def _request(port, method, path, headers=None, host="127.0.0.1"):
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.putrequest(method, path, skip_accept_encoding=True)  # the path as given: no client normalisation
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    conn.putheader("Content-Length", "0")
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


def _stop(proc, timeout=60):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_replayed_night_seen_live_in_a_browser(tmp_path):
    """A night replayed into an empty raw folder with `watch` and `serve` running: the browser's
    exposures table shows each exposure as it comes (no reload), green for the clean ones and red
    for the one with a noisy amplifier, the API says the same, the monitor's CCD wheel marks r0,
    and the stop action (with the token) ends the watcher cleanly."""
    from _browser import browser_or_skip

    driver = browser_or_skip(tmp_path / "chrome")
    cfg = tiny_config(tmp_path, "ql")
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    (tmp_path / "raw").mkdir()
    token = "s3cret-token"
    wlog = open(tmp_path / "watch.out", "w")
    watcher = subprocess.Popen(_ff("watch", "--config", cfg, "--waittime", "0.5"), stdout=wlog,
                               stderr=subprocess.STDOUT)
    server, host, port = _serve(cfg, token)
    replay = subprocess.Popen(_ff("simulate", "--config", cfg, "--plan", plan, "--replay", "60"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://{host}:{port}"
    try:
        assert host == "127.0.0.1"
        driver.get(f"{base}/night/{NIGHT}")
        driver.execute_script("window.__same_page = 42;")
        history = []
        t0 = time.time()
        while time.time() - t0 < 900:
            rows = driver.execute_script(
                "return Array.from(document.querySelectorAll('#exposures tr[id^=exp-]')).map(r => [r.id, "
                "r.dataset.state, r.dataset.status, getComputedStyle(r.querySelector('td[data-family=STATUS]'))"
                ".backgroundColor]);")
            history.append(rows)
            if len(rows) == 3 and all(r[1] in ("done", "failed") for r in rows):
                break
            assert watcher.poll() is None, open(tmp_path / "watch.out").read()
            time.sleep(0.3)
        final = {r[0]: r for r in history[-1]}
        assert sorted(final) == ["exp-00000030", "exp-00000031", "exp-00000032"], (history[-1],
                                                                                  open(tmp_path / "watch.out").read())
        assert driver.execute_script("return window.__same_page;") == 42  # updated in place, never reloaded
        # each exposure appeared while the night went on: a look with the first row but not the last
        assert any(any(r[0] == "exp-00000030" for r in rows) and not any(r[0] == "exp-00000032" for r in rows)
                   for rows in history)
        assert [final[k][1:] for k in sorted(final)] == [["done", "NORMAL", GREEN], ["done", "NORMAL", GREEN],
                                                        ["done", "ALARM", RED]], history[-1]
        # the API returns the same statuses, and names the camera, the family and the metric
        status, body = _request(port, "GET", f"/api/nights/{NIGHT}/exposures")
        api = {e["EXPID"]: e for e in json.loads(body)}
        assert status == 200 and {e: api[e]["STATUS"] for e in api} == {30: "NORMAL", 31: "NORMAL", 32: "ALARM"}
        assert (api[32]["CCD"], api[32]["FIBERS"], api[32]["SPECTRA"]) == ("ALARM", "NORMAL", "NORMAL")
        status, body = _request(port, "GET", f"/api/exposures/{NIGHT}/32")
        exp = json.loads(body)
        assert exp["CAMERAS"]["r0"]["STATUS"] == "ALARM" and exp["CAMERAS"]["b0"]["STATUS"] == "NORMAL"
        assert "PREPROC.READNOISE_AMP" in exp["CAMERAS"]["r0"]["ALARMS"]
        # the monitor page: the latest exposure's CCD wheel has r0 red and the others green
        driver.get(base + "/")
        time.sleep(1.5)
        wheel = driver.execute_script(
            "const w = document.querySelector('svg[data-family=CCD]'); return w && Object.fromEntries("
            "Array.from(w.querySelectorAll('path[data-status]')).filter(p => p.dataset.status)"
            ".map(p => [p.dataset.camera, p.dataset.status]));")
        assert wheel == {"b0": "NORMAL", "r0": "ALARM", "z0": "NORMAL"}, wheel
        steps = driver.execute_script("return document.querySelectorAll('#steps tr').length;")
        assert steps == 4  # header + 3 cameras with their step durations
        # the exposure page draws a spectrum of the spectra viewer
        driver.get(f"{base}/exposure/{NIGHT}/31")
        time.sleep(2.5)
        assert driver.execute_script("return document.querySelectorAll('#specplot svg path').length;") >= 1
        # stop the watcher from the monitor: refused without the token, done with it
        assert _request(port, "POST", "/api/watcher/stop")[0] == 403
        assert watcher.poll() is None and not (_ql(tmp_path) / "STOP").exists()
        assert _request(port, "POST", "/api/watcher/stop", {"Authorization": f"Bearer {token}"})[0] == 200
        assert watcher.wait(60) == 0
        assert "stop file seen: stopped" in open(tmp_path / "watch.out").read()
        assert replay.wait(120) == 0
    finally:
        driver.quit()
        for p in (replay, watcher, server):
            _stop(p)
        wlog.close()


@pytest.mark.slow
def test_watcher_killed_mid_exposure_loses_nothing_and_redoes_nothing(tmp_path):
    """A crash in the middle of an exposure (the watcher and its Snakemake killed with SIGKILL):
    the restarted watcher finishes it, keeps every file already made (the first exposure's and
    the cameras of the interrupted one that had finished) and takes the rest."""
    cfg = tiny_config(tmp_path, "ql")
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    res = subprocess.run(_ff("simulate", "--config", cfg, "--plan", plan, "--replay", "100000"),
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    night = _ql(tmp_path) / str(NIGHT)
    watcher = subprocess.Popen(_ff("watch", "--config", cfg, "--catchup", "--waittime", "0.2"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    exp31 = night / "00000031"
    sm_log = _ql(tmp_path) / "logs" / "snakemake" / f"{NIGHT}-00000031.log"

    def finished_cameras():
        """cameras whose job wrote its last word (the record with the QUICKLOOK block, rewritten last)"""
        cams = []
        for p in exp31.glob("qa-[brz]0-00000031.json"):
            try:
                if "QUICKLOOK" in json.loads(p.read_text()):
                    cams.append(p.name.split("-")[1])
            except (OSError, ValueError):
                pass
        return cams

    t0 = time.time()
    while time.time() - t0 < 600 and not finished_cameras():
        assert watcher.poll() is None, watcher.stdout.read()
        time.sleep(0.02)
    done_cams = finished_cameras()
    # wait until Snakemake has recorded those jobs as finished (not a fixed sleep: CI machines are slow);
    # the exposure is not done (its last camera takes seconds)
    while time.time() - t0 < 600 and sm_log.read_text().count("(Rule: quicklook_camera)") < len(done_cams):
        time.sleep(0.02)
    done_before = {p for c in done_cams for p in exp31.glob(f"qa-{c}-00000031.*")}
    assert not (exp31 / "qa-00000031.json").exists() and len(list(exp31.glob("qa-[brz]0-00000031.json"))) < 3
    row = _table(tmp_path)[31]
    assert row["STATE"] == "running" and row["PID"]
    os.kill(watcher.pid, signal.SIGKILL)
    try:
        os.killpg(int(row["PID"]), signal.SIGKILL)  # the node went down: its Snakemake too
    except ProcessLookupError:
        pass
    watcher.wait()
    before = {p: p.stat().st_mtime_ns for p in night.rglob("*") if p.is_file() and not p.name.startswith(".")}
    finished = [p for p in before if p.parent.name == "00000030" or p in done_before]
    assert any(p.parent.name == "00000030" for p in finished) and any(p.parent == exp31 for p in finished)
    profile = os.path.join(PROJECT, "profiles", "quicklook")  # as the scron job runs it
    res = subprocess.run(_ff("watch", "--config", cfg, "--once", "--profile", profile), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "00000031 SCIENCE: quick-look of 3 camera(s) resumed" in res.stdout, res.stdout
    table = _table(tmp_path)
    assert {e: table[e]["STATE"] for e in table} == {30: "done", 31: "done", 32: "done"}, table
    assert table[32]["STATUS"] == "ALARM" and table[31]["STATUS"] == "NORMAL"
    for p in finished:  # nothing finished was redone
        assert p.stat().st_mtime_ns == before[p], p
    assert "00000030" not in res.stdout  # the finished exposure is not even looked at again


def test_second_watcher_refused_and_stale_pid_replaced(tmp_path):
    cfg = tiny_config(tmp_path, "ql")
    (tmp_path / "raw").mkdir()
    ql = _ql(tmp_path)
    ql.mkdir(parents=True)
    (ql / "watch.pid").write_text(f"{os.getpid()}\n")  # a live process holds it
    res = subprocess.run(_ff("watch", "--config", cfg, "--once"), capture_output=True, text=True)
    err = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(err) == 1 and f"another watcher (pid {os.getpid()})" in err[0], res.stderr
    dead = subprocess.Popen(["true"])
    dead.wait()
    (ql / "watch.pid").write_text(f"{dead.pid}\n")  # a watcher that died without cleaning up
    res = subprocess.run(_ff("watch", "--config", cfg, "--once"), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert not (ql / "watch.pid").exists()


def _non_loopback_address():
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("192.0.2.1", 9))  # no packet is sent: only the route's source address is looked up
        addr = s.getsockname()[0]
        s.close()
    except OSError:
        return None
    return None if addr.startswith("127.") else addr


def test_monitor_security(tmp_path):
    """127.0.0.1 by default; files only from the QA trees, traversal attempts refused; a state
    change without the token (or with a wrong one) refused and without effect."""
    cfg = tiny_config(tmp_path, "ql")
    ql = _ql(tmp_path)
    (ql / str(NIGHT)).mkdir(parents=True)
    (ql / str(NIGHT) / "note.txt").write_text("quick-look file\n")
    (tmp_path / "redux" / "ql" / "secret.txt").write_text("not served\n")
    token = "tok-123"
    server, host, port = _serve(cfg, token)
    try:
        assert host == "127.0.0.1"
        other = _non_loopback_address()
        if other:
            with pytest.raises(OSError):
                socket.create_connection((other, port), timeout=5).close()
        assert _request(port, "GET", f"/files/quicklook/{NIGHT}/note.txt") == (200, b"quick-look file\n")
        for path in ("/files/secret.txt", "/files/quicklook/../secret.txt", "/files/quicklook/%2e%2e/secret.txt",
                     "/files/quicklook/..%2fsecret.txt", f"/files/quicklook/{NIGHT}/../../../../config.yaml",
                     "/files/qa/../../../config.yaml", "/files/%2fetc%2fpasswd", "/files/quicklook/../../../../etc/passwd"):
            status, body = _request(port, "GET", path)
            assert status in (404, 308) and b"not served" not in body and b"instrument" not in body, (path, status)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Fiberflow-Token": "tok-12"}):
            assert _request(port, "POST", "/api/watcher/stop", headers)[0] == 403
            assert _request(port, "POST", f"/api/exposures/{NIGHT}/30/rerun", headers)[0] == 403
        assert not (ql / "STOP").exists() and not (ql / "requests").exists()
        assert _request(port, "GET", "/api/watcher/stop")[0] == 405  # not a read
        assert _request(port, "POST", "/api/watcher/stop", {"X-Fiberflow-Token": token})[0] == 200
        assert (ql / "STOP").exists()
        assert _request(port, "GET", "/api/nights")[0] == 200
    finally:
        _stop(server)


def test_calibrations_chosen_at_arrival(tmp_path):
    """Tonight's nightly calibration when the production has made it, else the nearest earlier
    night's (not a REJECTED one, not across a breakpoint, within fallback_nights), else the
    default; for the fiberflat the quick-look's own flat of the night first."""
    from fiberflow.config import load_config
    from fiberflow.io.datamodel import write_json
    from fiberflow.workflow.quicklook import QuickLook

    cfg = tiny_config(tmp_path, "ql", "calibration: {default_psf: %s, breakpoints: [20250820], fallback_nights: 10}\n"
                      % (tmp_path / "calib"))
    ql = QuickLook(load_config(cfg), cfg)
    prod = tmp_path / "redux" / "ql"

    def make(kind, night, cam="r0"):
        p = prod / "calibnight" / str(night) / f"{kind}-{cam}-{night}.fits"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
        return str(p)

    assert ql.choose("psfnight", NIGHT, "r0") == {"PATH": str(tmp_path / "calib" / "psf-r0.fits"), "NIGHT": None,
                                                 "SOURCE": "default"}
    assert ql.choose("biasnight", NIGHT, "r0")["SOURCE"] == "none"
    make("psfnight", 20250815)  # before the breakpoint
    assert ql.choose("psfnight", NIGHT, "r0")["SOURCE"] == "default"
    p = make("psfnight", 20250901)
    assert ql.choose("psfnight", NIGHT, "r0") == {"PATH": p, "NIGHT": 20250901, "SOURCE": "earlier"}
    assert ql.choose("psfnight", NIGHT, "b0")["SOURCE"] == "default"
    make("psfnight", 20250902)
    write_json(str(prod / "calibnight" / "20250902" / "certification-psfnight-20250902.json"), "certification",
               {"NIGHT": 20250902, "DECISIONS": [{"CAMERA": "r0", "CALIBRATION": "psfnight", "USABLE": False}]})
    assert ql.choose("psfnight", NIGHT, "r0")["NIGHT"] == 20250901  # the rejected one is skipped
    p = make("psfnight", NIGHT)
    assert ql.choose("psfnight", NIGHT, "r0") == {"PATH": p, "NIGHT": NIGHT, "SOURCE": "tonight"}
    assert ql.choose("psfnight", 20250925, "r0")["SOURCE"] == "default"  # more than fallback_nights away
    # the quick-look's own flat comes first for the fiberflat, unless its quick-look was an ALARM
    ff = make("fiberflatnight", NIGHT)
    qflat = _ql(tmp_path) / str(NIGHT) / "00000030" / "qfiberflat-r0-00000030.fits"
    qflat.parent.mkdir(parents=True)
    qflat.write_bytes(b"x")
    assert ql.choose("fiberflatnight", NIGHT, "r0")["PATH"] == ff  # its quick-look is not done
    rec = qflat.parent / "qa-00000030.json"
    write_json(str(rec), "ql_qa", {"CAMERAS": {"r0": {"STATUS": "NORMAL"}}})
    assert ql.choose("fiberflatnight", NIGHT, "r0") == {"PATH": str(qflat), "NIGHT": NIGHT, "SOURCE": "quicklook-flat"}
    write_json(str(rec), "ql_qa", {"CAMERAS": {"r0": {"STATUS": "ALARM"}}})
    assert ql.choose("fiberflatnight", NIGHT, "r0")["PATH"] == ff


def test_stable_completeness_rule(tmp_path):
    from fiberflow.io.delivery import exposure_complete

    folder = tmp_path / str(NIGHT) / "00000030"
    folder.mkdir(parents=True)
    (folder / "desi-00000030.fits.fz").write_bytes(b"abc")
    ok, why = exposure_complete(str(tmp_path), NIGHT, 30, "stable", settle=0.0)
    assert not ok and "fibermap-00000030.fits not there yet" in why
    (folder / "fibermap-00000030.fits").write_bytes(b"abc")
    ok, why = exposure_complete(str(tmp_path), NIGHT, 30, "stable", settle=60.0)
    assert not ok and "waiting for 60 s without change" in why
    old = time.time() - 120
    for f in folder.iterdir():
        os.utime(f, (old, old))
    assert exposure_complete(str(tmp_path), NIGHT, 30, "stable", settle=60.0) == (True, "")
    ok, why = exposure_complete(str(tmp_path), NIGHT, 30)  # the default rule wants the checksum file
    assert not ok and why == "no checksum file yet"


def test_quicklook_threshold_overrides(tmp_path):
    from fiberflow.errors import ConfigError
    from fiberflow.qa.scoring import load_thresholds, thresholds_version
    from fiberflow.reference import workflow_dir

    base = os.path.join(workflow_dir(), "config", "qa.yaml")
    over = os.path.join(workflow_dir(), "config", "qa-quicklook.yaml")
    thr = load_thresholds(base, over)
    plain = load_thresholds(base)
    assert thr["metrics"]["SKY"]["NSKY_OUTLIER"]["normal"] == [0, 3] and plain["metrics"]["SKY"]["NSKY_OUTLIER"]["normal"] == [0, 0]
    assert thr["metrics"]["PREPROC"] == plain["metrics"]["PREPROC"]  # the CCD checks keep qa.yaml's ranges
    assert thresholds_version(base, over) != thresholds_version(base)
    bad = tmp_path / "bad.yaml"
    bad.write_text("history: {nights: 3}\n")
    with pytest.raises(ConfigError, match="threshold overrides hold only"):
        load_thresholds(base, str(bad))
    bad.write_text("metrics: {SKY: {NSKY_OUTLIER: {normal: [0, 5], warning: [0, 1]}}}\n")
    with pytest.raises(ConfigError, match="warning range must contain"):
        load_thresholds(base, str(bad))
