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
        plan = parse_plan({"night": night, "first_expid": first, "exposures": [{"obstype": "ZERO"}]})
        simulate_night(plan, "tiny", 1, str(root / "raw"), str(root / "truth"), cameras=["r0"])
    cfg = root / "config.yaml"
    cfg.write_text(f"instrument: tiny\nraw: {root / 'raw'}\nredux: {root / 'redux'}\nspecprod: lk\n")
    return {"root": root, "cfg": str(cfg), "prod": str(root / "redux" / "lk")}


def _table(prod, night):
    return paths.findfile("exposure_table", prod=prod["prod"], night=night)


def _run(prod, night, workdir):
    os.makedirs(workdir, exist_ok=True)
    cmd = [sys.executable, "-m", "snakemake", "-s", os.path.join(PROJECT, "Snakefile"), "--configfile", prod["cfg"],
           "--directory", str(workdir), "--cores", "1", _table(prod, night), "--config", f"nights=[{night}]"]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


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
