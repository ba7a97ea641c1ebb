"""One production, one writer: a second Snakemake invocation (another working directory) on
nights that a live invocation is writing stops before any job with a message naming that
invocation; disjoint nights run side by side (the README's recipe); a dead owner's lock is taken
over. The live invocation is this test process (a lock it holds, as onstart writes it)."""

import json
import os
import socket
import subprocess
import sys

import pytest
from _workflow import PROJECT

from fiberflow import paths, prodlock

NIGHT_A, NIGHT_B = 20250107, 20250108


@pytest.fixture(scope="module")
def prod(tmp_path_factory):
    from fiberflow.sim.night import simulate_night
    from fiberflow.sim.plan import parse_plan

    root = tmp_path_factory.mktemp("locks")
    for night, first in ((NIGHT_A, 500), (NIGHT_B, 600)):
        exps = [{"obstype": "ZERO", "count": 2}]
        if night == NIGHT_A:  # work for a real first invocation: biasnight and preproc jobs
            exps.append({"obstype": "SCIENCE", "tileid": 71, "exptime": 300.0})
        plan = parse_plan({"night": night, "first_expid": first, "exposures": exps})
        simulate_night(plan, "tiny", 1, str(root / "raw"), str(root / "truth"), cameras=["r0"])
    cfg = root / "config.yaml"
    cfg.write_text(f"instrument: tiny\nraw: {root / 'raw'}\nredux: {root / 'redux'}\nspecprod: lk\n")
    return {"root": root, "cfg": str(cfg), "prod": str(root / "redux" / "lk")}


def _table(prod, night):
    return paths.findfile("exposure_table", prod=prod["prod"], night=night)


def _cmd(prod, night, workdir, *targets):
    os.makedirs(workdir, exist_ok=True)
    return [sys.executable, "-m", "snakemake", "-s", os.path.join(PROJECT, "Snakefile"), "--configfile", prod["cfg"],
            "--directory", str(workdir), "--cores", "1", *(targets or (_table(prod, night),)), "--config",
            f"nights=[{night}]"]


def _run(prod, night, workdir):
    return subprocess.run(_cmd(prod, night, workdir), capture_output=True, text=True, check=False)


def test_two_real_invocations_on_one_night(prod, tmp_path):
    """A runs night A's preproc; while it runs (frozen with SIGSTOP right after it took its
    locks, so the test does not race it), B from another folder asks for the same night and is
    refused, naming A; A then finishes and releases its lock."""
    import signal
    import time

    preproc = paths.findfile("preproc", prod=prod["prod"], night=NIGHT_A, expid=502, camera="r0")
    lock = os.path.join(prod["prod"], prodlock.LOCK_DIR, f"night-{NIGHT_A}.lock")
    a = subprocess.Popen(_cmd(prod, NIGHT_A, tmp_path / "a", preproc), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        t0 = time.time()
        while not os.path.exists(lock) and a.poll() is None and time.time() - t0 < 120:
            time.sleep(0.02)
        assert os.path.exists(lock), "the first invocation took no lock"
        a.send_signal(signal.SIGSTOP)
        b = subprocess.run(_cmd(prod, NIGHT_A, tmp_path / "b", preproc), capture_output=True, text=True)
        assert b.returncode != 0
        assert f"night {NIGHT_A} is being written by snakemake pid {a.pid}" in b.stdout + b.stderr, b.stderr[-2000:]
        assert str(tmp_path / "a") in b.stdout + b.stderr
    finally:
        a.send_signal(signal.SIGCONT)
        out, _ = a.communicate(timeout=600)
    assert a.returncode == 0, out[-3000:]
    assert os.path.exists(preproc) and not os.path.exists(lock)


def _hold(prod, night, pid):
    folder = os.path.join(prod["prod"], prodlock.LOCK_DIR)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"night-{night}.lock")
    with open(path, "w") as fh:
        json.dump({"host": socket.gethostname(), "pid": pid, "cwd": "/somewhere/else", "started": "2026-12-03T08:00:00"},
                  fh)
    return path


def test_lock_keys():
    p = "/p"
    keys = prodlock.lock_keys(["/p/exposures/20250101/00000012/cframe-r0-00000012.fits",
                               "/p/healpix/main/dark/52/5261/coadd-main-dark-5261.fits",
                               "/p/calibnight/20250102/psfnight-b0-20250102.fits", "/elsewhere/x.fits"], p)
    assert keys == ["night-20250101", "night-20250102", "production"]


def test_overlapping_night_is_refused_and_disjoint_night_runs(prod, tmp_path):
    lock = _hold(prod, NIGHT_A, os.getpid())  # a live invocation writes night A
    try:
        res = _run(prod, NIGHT_A, tmp_path / "second")
        assert res.returncode != 0
        text = res.stdout + res.stderr
        assert f"night {NIGHT_A} is being written by snakemake pid {os.getpid()}" in text, text[-2000:]
        assert "/somewhere/else" in text and not os.path.exists(_table(prod, NIGHT_A))
        # side by side on another night: runs, and leaves the other invocation's lock alone
        res = _run(prod, NIGHT_B, tmp_path / "third")
        assert res.returncode == 0, res.stderr[-2000:]
        assert os.path.exists(_table(prod, NIGHT_B)) and os.path.exists(lock)
        assert sorted(os.listdir(os.path.dirname(lock))) == [os.path.basename(lock)]  # its own lock released
    finally:
        os.unlink(lock)


def test_dead_owner_lock_is_taken_over(prod, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = _hold(prod, NIGHT_A, int(dead.stdout))
    res = _run(prod, NIGHT_A, tmp_path / "w")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "taking over the stale lock" in res.stdout + res.stderr
    assert os.path.exists(_table(prod, NIGHT_A)) and not os.path.exists(lock)
