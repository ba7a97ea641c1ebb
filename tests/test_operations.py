"""Operating a production: a real Snakemake run killed with SIGKILL and restarted, a corrupt raw
camera whose failure stays local, the operator marking it bad, calibration fallback across
nights, targeted rebuilds, config-driven reruns, ``fiberflow status`` and ``fiberflow dag``.

One tiny production of two nights (b0, r0): night A has a full calibration sequence and two
science tiles, night B has only a ZERO and a science tile (its PSF and fiberflat come from
night A). The r0 camera of night A's first science exposure is truncated in the raw file.
The tests run in file order on that production, as an operator's day would.
"""

import csv
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import fitsio
import pytest
from _workflow import LOCAL_PROFILE, PROJECT, snakemake, tiny_config

from fiberflow import paths

NIGHT_A, NIGHT_B = 20250801, 20250802
CAMERAS = ["b0", "r0"]
PLANS = [
    {"night": NIGHT_A, "first_expid": 2100, "exposures": [
        {"obstype": "ZERO", "count": 1}, {"obstype": "ARC", "exptime": 5.0}, {"obstype": "FLAT", "exptime": 120.0},
        {"obstype": "SCIENCE", "tileid": 80, "exptime": 900.0}, {"obstype": "SCIENCE", "tileid": 81, "exptime": 900.0}]},
    {"night": NIGHT_B, "first_expid": 2200, "exposures": [
        {"obstype": "ZERO", "count": 1}, {"obstype": "SCIENCE", "tileid": 82, "exptime": 900.0}]},
]
BAD_EXPID, BAD_CAMERA = 2103, "r0"  # night A's first science exposure
GOOD_EXPID = 2104



def _ff(*argv):
    return subprocess.run([sys.executable, "-m", "fiberflow.cli.main", *argv], capture_output=True, text=True)


def _job_counts(text):
    """Rule -> job count from Snakemake's 'Job stats' table (empty when nothing to do)."""
    counts = {}
    block = text.split("Job stats:", 1)
    if len(block) < 2:
        return counts
    for line in block[1].splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m or m.group(1) == "total":
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def _status(prod_root):
    res = _ff("status", "--config", str(prod_root / "config.yaml"), "--directory", str(prod_root), "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _products(prod):
    """Every product file of the production (logs, benchmarks and run markers excluded)."""
    skip = {"logs", "benchmarks", "run"}
    out = []
    for dirpath, dirs, files in os.walk(prod):
        dirs[:] = [d for d in dirs if not (os.path.relpath(os.path.join(dirpath, d), prod).split(os.sep)[0] in skip)]
        out += [os.path.join(dirpath, f) for f in files]
    return sorted(out)


@pytest.fixture(scope="module")
def ops(tmp_path_factory):
    from fiberflow.sim.night import simulate_night
    from fiberflow.sim.plan import parse_plan

    root = tmp_path_factory.mktemp("ops")
    for p in PLANS:
        simulate_night(parse_plan(p), "tiny", 11, str(root / "raw"), str(root / "truth"), cameras=CAMERAS)
    raw = paths.findfile("raw", raw=str(root / "raw"), night=NIGHT_A, expid=BAD_EXPID)
    with fitsio.FITS(raw) as fx:
        off = fx[BAD_CAMERA.upper()].get_offsets()
    os.truncate(raw, (off["data_start"] + off["data_end"]) // 2)  # half of r0's compressed data
    cfg = tiny_config(root, "ops")
    return {"root": root, "cfg": cfg, "prod": root / "redux" / "ops", "raw": raw, "state": {}}


def test_sigkill_mid_run_then_restart_finishes_and_failure_stays_local(ops):
    root, prod = ops["root"], ops["prod"]
    cmd = [sys.executable, "-m", "snakemake", "-s", os.path.join(PROJECT, "Snakefile"), "--configfile", ops["cfg"],
           "--directory", str(root), "--cores", "2", "--profile", LOCAL_PROFILE]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.time()
    try:  # kill the whole run (Snakemake and its jobs, as a node failure would) while frames are extracted
        while time.time() - t0 < 400 and proc.poll() is None:
            # at least 3 frames written and a job mid-write (its incomplete marker present): with 2 cores an
            # extraction may hold both, and killing between two jobs would leave nothing interrupted
            if len(glob.glob(str(prod / "exposures" / "*" / "*" / "frame-*.fits"))) >= 3 and \
                    any(files for _, _, files in os.walk(root / ".snakemake" / "incomplete")):
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the run finished before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # the killed run left jobs marked as being written; status tells them apart from failures
    st = _status(root)
    interrupted = sum(r["interrupted"] for r in st["steps"].values())
    assert interrupted >= 1 and st["snakemake_running"] is False and st["stale_lock"] is True, st
    assert st["steps"]["cframe"]["done"] == 0
    # the operator unlocks and restarts; --keep-going (profile) finishes everything but the
    # corrupt camera's chain and what needs it
    unlock = snakemake(root, ops["cfg"], "--unlock")
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    res = snakemake(root, ops["cfg"], "--profile", LOCAL_PROFILE)
    assert res.returncode != 0
    log = prod / "logs" / "preproc" / str(NIGHT_A) / f"{BAD_EXPID:08d}-{BAD_CAMERA}.log"
    text = log.read_text()
    assert os.path.basename(ops["raw"]) in text and "HDU R0 cannot be read" in text and "truncated" in text, text
    assert "Error in rule preproc" in res.stderr
    find = lambda t, **ids: paths.findfile(t, prod=str(prod), **ids)  # noqa: E731
    assert not os.path.exists(find("preproc", night=NIGHT_A, expid=BAD_EXPID, camera=BAD_CAMERA))
    # every other exposure is calibrated; in the bad exposure, the other camera gets its sframe,
    # but its flux calibration waits: stdstars fits the spectrograph's cameras together
    for night, expid in ((NIGHT_A, GOOD_EXPID), (NIGHT_B, 2201)):
        for cam in CAMERAS:
            assert os.path.exists(find("cframe", night=night, expid=expid, camera=cam)), (expid, cam)
    assert os.path.exists(find("sframe", night=NIGHT_A, expid=BAD_EXPID, camera="b0"))
    assert not os.path.exists(find("stdstars", night=NIGHT_A, expid=BAD_EXPID, spectrograph=0))
    # pixels not fed by the bad exposure are complete; the ones it feeds wait
    st = _status(root)
    assert st["steps"]["preproc"]["failed"] == 1 and st["failed"][0]["log"] == str(log)
    assert "HDU R0 cannot be read" in st["failed"][0]["reason"]
    assert st["steps"]["spectra"]["done"] >= 1 and st["steps"]["coadd"]["done"] >= 1
    assert st["steps"]["spectra"]["waiting"] >= 1
    assert st["steps"]["cframe"] == {"done": 4, "stale": 0, "running": 0, "interrupted": 0, "ready": 0, "waiting": 2, "failed": 0}
    assert st["steps"]["stdstars"]["waiting"] == 1 and st["stale_lock"] is False
    # no partial or corrupt file anywhere: every FITS opens and reads, every JSON parses, no temp file
    for path in _products(prod):
        assert not path.endswith(".tmp"), path
        if path.endswith(".fits"):
            with fitsio.FITS(path) as fx:
                for hdu in fx:
                    hdu.read_header()
                    if hdu.has_data():
                        hdu.read()
        elif path.endswith(".json"):
            with open(path) as fh:
                json.load(fh)


def test_marking_the_camera_bad_completes_without_touching_finished_work(ops):
    root, prod = ops["root"], ops["prod"]
    before = {p: os.stat(p).st_mtime_ns for p in _products(prod)}
    table = paths.findfile("exposure_table", prod=str(prod), night=NIGHT_A)
    with open(table) as fh:
        rows = list(csv.DictReader(fh))
        fields = list(rows[0].keys())
    for r in rows:
        if int(r["EXPID"]) == BAD_EXPID:
            r["BADCAMWORD"] = BAD_CAMERA
            r["COMMENTS"] = "r0 raw HDU truncated"
    with open(table, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    before.pop(table)
    res = snakemake(root, ops["cfg"], "--profile", LOCAL_PROFILE)
    assert res.returncode == 0, res.stderr[-3000:]
    changed = [p for p, t in before.items() if not os.path.exists(p) or os.stat(p).st_mtime_ns != t]
    assert changed == [], changed
    st = _status(root)
    assert all(r["done"] == sum(r.values()) for r in st["steps"].values()), st["steps"]
    assert os.path.exists(paths.findfile("qa_production_html", prod=str(prod)))


def test_night_without_calibrations_falls_back_to_the_previous_night(ops):
    prod = str(ops["prod"])
    for cam in CAMERAS:
        h = fitsio.read_header(paths.findfile("psfnight", prod=prod, night=NIGHT_B, camera=cam))
        assert h["FALLBACK"] is True and h["IN_PSF"] == f"psfnight-{cam}-{NIGHT_A}.fits"
        h = fitsio.read_header(paths.findfile("fiberflatnight", prod=prod, night=NIGHT_B, camera=cam))
        assert h["FALLBACK"] is True and h["IN_FLAT"] == f"fiberflatnight-{cam}-{NIGHT_A}.fits"
        h = fitsio.read_header(paths.findfile("cframe", prod=prod, night=NIGHT_B, expid=2201, camera=cam))
        assert h["IN_FFLAT"] == f"fiberflatnight-{cam}-{NIGHT_B}.fits"
    # night A used its own
    h = fitsio.read_header(paths.findfile("psfnight", prod=prod, night=NIGHT_A, camera="b0"))
    assert not h.get("FALLBACK", False)


def test_changing_a_sky_option_reruns_sky_and_downstream_only(ops):
    root, cfg = ops["root"], ops["cfg"]
    original = open(cfg).read()
    with open(cfg, "a") as fh:
        fh.write("sky: {nsig_clipping: 3.5}\n")
    try:
        res = snakemake(root, cfg, "-n")
    finally:
        with open(cfg, "w") as fh:
            fh.write(original)
    assert res.returncode == 0, res.stderr[-2000:]
    counts = _job_counts(res.stdout + res.stderr)
    upstream = {"exposure_table", "biasnight", "preproc", "psf", "psfnight", "traceshift", "extract", "fiberflat",
                "fiberflatnight", "tilepix"}
    # 5 science cameras (r0 of the bad exposure is marked bad) and what follows them
    assert counts["sky"] == 5 and counts["stdstars"] == 3 and counts["cframe"] == 5, counts
    assert counts["coadd"] >= 1 and counts["qa_production"] == 1, counts
    assert not upstream & set(counts), counts
    # with the original configuration, nothing is out of date
    res = snakemake(root, cfg, "-n")
    assert "Nothing to be done" in res.stdout + res.stderr, res.stdout[-2000:]


def test_targeted_rebuilds(ops):
    root, prod = ops["root"], str(ops["prod"])
    target = paths.findfile("cframe", prod=prod, night=NIGHT_A, expid=GOOD_EXPID, camera="b0")
    res = snakemake(root, ops["cfg"], "-n", target)
    assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr
    # missing ancestors only: hide the cframe and its flux calibration
    hidden = [target, paths.findfile("fluxcalib", prod=prod, night=NIGHT_A, expid=GOOD_EXPID, camera="b0")]
    for p in hidden:
        os.rename(p, p + ".hidden")
    try:
        res = snakemake(root, ops["cfg"], "-n", target)
        assert _job_counts(res.stdout + res.stderr) == {"fluxcalib": 1, "cframe": 1}, res.stdout[-2000:]
    finally:
        for p in hidden:
            os.rename(p + ".hidden", p)
    # --forcerun sky on that path: the spectrograph's sky jobs and what follows them toward it
    res = snakemake(root, ops["cfg"], "-n", target, "--forcerun", "sky")
    assert res.returncode == 0
    assert _job_counts(res.stdout + res.stderr) == {"sky": 2, "stdstars": 1, "fluxcalib": 1, "cframe": 1}
    # MPI over bundles when a profile names a launcher (profiles/nersc: srun, 20 tasks)
    frame = paths.findfile("frame", prod=prod, night=NIGHT_A, expid=GOOD_EXPID, camera="b0")
    res = snakemake(root, ops["cfg"], "-n", "-p", frame, "--forcerun", "extract",
                    "--set-resources", "extract:mpi='mpiexec'", "extract:tasks=2")
    assert re.search(r"^Shell command: mpiexec -n 2 fiberflow extract ", res.stdout, re.M), res.stdout[-2000:]
    res = snakemake(root, ops["cfg"], "-n", "-p", frame, "--forcerun", "extract")
    assert re.search(r"^Shell command: fiberflow extract ", res.stdout, re.M), res.stdout[-2000:]
    # the same by hand: `snakemake -p` prints a command anyone can paste
    res = snakemake(root, ops["cfg"], "-n", "-p", target, "--forcerun", "cframe")
    cmd = [ln.split(":", 1)[1].strip() for ln in (res.stdout + res.stderr).splitlines()
           if ln.startswith("Shell command: fiberflow cframe")]
    assert len(cmd) == 1, res.stdout[-2000:]
    before = os.stat(target).st_mtime_ns
    rerun = subprocess.run(cmd[0].split(">")[0], shell=True, capture_output=True, text=True,
                           env={**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]})
    assert rerun.returncode == 0, rerun.stderr
    assert os.stat(target).st_mtime_ns != before
    # Snakemake sees the hand-made product as updated: what reads it is out of date, nothing else
    res = snakemake(root, ops["cfg"], "-n")
    counts = _job_counts(res.stdout + res.stderr)
    assert "Updated input files" in res.stdout + res.stderr and counts.get("qa_frame") == 1, counts
    assert not {"sky", "stdstars", "fluxcalib", "cframe", "extract"} & set(counts), counts


def test_status_matches_snakemake_and_dag_is_drawn(ops, tmp_path):
    """The jobs `fiberflow status` knows are exactly the outputs Snakemake plans from scratch."""
    root = ops["root"]
    res = snakemake(root, ops["cfg"], "-n", "--forceall", "--quiet", "rules")
    planned = _job_counts(res.stdout + res.stderr)
    planned.pop("all", None)
    st = _status(root)
    assert {k: sum(v.values()) for k, v in st["steps"].items()} == planned
    # the human table
    res = _ff("status", "--config", ops["cfg"], "--directory", str(root))
    assert res.returncode == 0 and re.search(r"^cframe\s+5\s+5\s", res.stdout, re.M), res.stdout
    if not shutil.which("dot"):
        pytest.skip("graphviz (dot) is not installed: make test installs it")
    res = _ff("dag", "--config", ops["cfg"], "--directory", str(root), "--night", str(NIGHT_A), "-o", str(tmp_path))
    assert res.returncode == 0, res.stderr
    rule_svg = (tmp_path / "rulegraph.svg").read_text()
    dag_svg = (tmp_path / f"dag-{NIGHT_A}.svg").read_text()
    assert rule_svg.startswith("<?xml") and "<svg" in rule_svg
    for rule in ("preproc", "psfnight", "extract", "sky", "stdstars", "cframe", "coadd", "qa_night"):
        assert rule in rule_svg and rule in dag_svg, rule
    # one night's DAG: its exposures' jobs
    assert f"{BAD_EXPID:08d}" in dag_svg and f"{GOOD_EXPID:08d}" in dag_svg
    # one camera's chain of one exposure, from the plan: every node names its camera
    res = _ff("dag", "--config", ops["cfg"], "--directory", str(root), "--expid", str(GOOD_EXPID), "--camera", "b0",
              "-o", str(tmp_path))
    assert res.returncode == 0, res.stderr
    svg = (tmp_path / f"dag-{NIGHT_A}-{GOOD_EXPID:08d}-b0.svg").read_text()
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    for node in ("preproc", "psfnight", "traceshift", "extract", "fiberflatnight", "sky", "stdstars", "cframe"):
        assert node in texts, (node, texts)
    # b0's chain: its own jobs, the spectrograph's standard stars (which read r0's sframe too)
    assert texts.count("cframe") == 1 and "spectrograph 0" in texts and "r0" in texts and "b0" in texts
    n = int(re.search(r"\((\d+) jobs\)", res.stdout).group(1))
    assert svg.count('class="node"') == n
    res = _ff("dag", "--config", ops["cfg"], "--directory", str(root), "--camera", "b0", "-o", str(tmp_path))
    assert res.returncode == 1 and "--camera needs --expid" in res.stderr


def test_every_profile_plans_a_cframe_with_its_launcher(ops):
    """Each shipped profile is valid for Snakemake and its executor plugin, and plans the whole
    cone of one cframe; the Slurm profiles launch the extraction as MPI ranks under srun."""
    root, prod = ops["root"], str(ops["prod"])
    target = paths.findfile("cframe", prod=prod, night=NIGHT_A, expid=GOOD_EXPID, camera="b0")
    launch = {"local": "fiberflow extract", "slurm": "fiberflow extract", "nersc": "srun --kill-on-bad-exit=1 -n 20 fiberflow extract",
              "testslurm": "srun --mpi=pmi2 --kill-on-bad-exit=1 -n 2 fiberflow extract"}
    for name, prefix in launch.items():
        res = snakemake(root, ops["cfg"], "--profile", os.path.join(PROJECT, "profiles", name), "-n", "-p",
                        "--forceall", target)
        text = res.stdout + res.stderr
        assert res.returncode == 0, (name, text[-2000:])
        cmds = [ln.split("Shell command: ", 1)[1] for ln in text.splitlines() if "Shell command: " in ln]
        extract = [c for c in cmds if "fiberflow extract" in c]
        assert extract and all(c.startswith(prefix + " ") for c in extract), (name, extract[:1])
        assert {"preproc", "traceshift", "sky", "stdstars", "fluxcalib", "cframe"} <= set(_job_counts(text)), name


def test_exposure_and_tile_targets_and_laststep_skysub(ops):
    root, prod = ops["root"], str(ops["prod"])
    res = snakemake(root, ops["cfg"], "--profile", LOCAL_PROFILE)  # catch up with the cframe rerun by hand
    assert res.returncode == 0, res.stderr[-3000:]
    exp_done = paths.findfile("exposure_done", prod=prod, night=NIGHT_A, expid=GOOD_EXPID)
    tile_done = paths.findfile("tile_done", prod=prod, tileid=81)
    for target, rule in ((exp_done, "exposure"), (tile_done, "tile")):
        res = snakemake(root, ops["cfg"], "-n", target)
        assert res.returncode == 0 and _job_counts(res.stdout + res.stderr) == {rule: 1}, res.stderr[-2000:]
    # an operator stops night B's science exposure after sky subtraction (LASTSTEP skysub)
    from fiberflow.workflow.tilepix import read_tilepix

    def pixels(night, expid, tile):
        return {p for v in read_tilepix(paths.findfile("tilepix", prod=prod, night=night, expid=expid,
                                                       tileid=tile))[1].values() for p in v}

    only_b = pixels(NIGHT_B, 2201, 82) - pixels(NIGHT_A, 2103, 80) - pixels(NIGHT_A, 2104, 81)
    assert only_b and _status(root)["stale_products"] == []
    ovr = paths.findfile("exposure_override", prod=prod, night=NIGHT_B)
    with open(ovr, "w") as fh:
        fh.write("2201: {laststep: skysub, comments: bright sky}\n")
    res = snakemake(root, ops["cfg"], "-n")
    counts = _job_counts(res.stdout + res.stderr)
    assert counts.get("qa_frame") == 2 and not {"sky", "stdstars", "fluxcalib", "cframe"} & set(counts), counts
    res = snakemake(root, ops["cfg"], "--profile", LOCAL_PROFILE)
    assert res.returncode == 0, res.stderr[-3000:]
    st = _status(root)
    assert st["steps"]["cframe"]["done"] == sum(st["steps"]["cframe"].values()) == 3  # night A, r0 of 2103 bad
    assert sum(st["steps"]["stdstars"].values()) == 2
    assert all(r["done"] == sum(r.values()) for r in st["steps"].values()), st["steps"]
    # the pixels only night B fed keep their old files: status names them as stale, nothing else
    stale = sorted(st["stale_products"])
    assert {paths.parse_path(p)[1]["pix"] for p in stale} == only_b, stale
    assert {os.path.basename(p).split("-")[0] for p in stale} == {"spectra", "coadd"}
    res = _ff("status", "--config", ops["cfg"], "--directory", str(root), "--stale")
    assert res.returncode == 0 and res.stdout.split() == stale, res.stdout
    for p in stale:
        os.remove(p)
    assert _status(root)["stale_products"] == []
    with open(paths.findfile("qa_frame", prod=prod, night=NIGHT_B, expid=2201, camera="b0")) as fh:
        qa = json.load(fh)
    assert "SKY" in qa["METRICS"] and "FLUXCALIB" not in qa["METRICS"], sorted(qa["METRICS"])
    # the exposure target of the skysub exposure asks for its sframes only
    res = snakemake(root, ops["cfg"], "-n", "-p", paths.findfile("exposure_done", prod=prod, night=NIGHT_B, expid=2201))
    assert "sframe-b0-00002201.fits" in res.stdout and "cframe-b0-00002201" not in res.stdout


def _planned(root, cfg, *extra):
    res = snakemake(root, cfg, "-n", *extra)
    assert res.returncode == 0, res.stderr[-2000:]
    counts = _job_counts(res.stdout + res.stderr)
    counts.pop("all", None)
    return counts


def _stale_counts(root):
    st = _status(root)
    return {step: row["stale"] for step, row in st["steps"].items() if row["stale"]}, st


def test_status_knows_stale_as_snakemake_does(ops):
    """Finding 5 of the operator's first hour: a product that exists is not done when Snakemake
    would remake it (a newer input, changed options); status counts exactly the jobs a dry run plans."""
    root, prod, cfg = ops["root"], str(ops["prod"]), ops["cfg"]
    assert _planned(root, cfg) == {} and _stale_counts(root)[0] == {}
    sframe = paths.findfile("sframe", prod=prod, night=NIGHT_A, expid=GOOD_EXPID, camera="b0")
    st0 = os.stat(sframe)
    os.utime(sframe, (st0.st_atime, time.time() + 5))  # `touch` after its readers were made
    try:
        stale, st = _stale_counts(root)
        planned = _planned(root, cfg)
        assert stale and stale == planned, (stale, planned)
        assert {"stdstars", "fluxcalib", "cframe"} <= set(stale) and "sky" not in stale, stale
        why = {j["step"]: j["reason"] for j in st["stale"]}
        assert "is newer than the output" in why["stdstars"] and "will be remade first" in why["cframe"], why
        res = _ff("status", "--config", cfg, "--directory", str(root))
        assert re.search(r"^stdstars\s+\d+\s+\d+\s+1\s", res.stdout, re.M) and "stale job(s)" in res.stdout, res.stdout
    finally:
        os.utime(sframe, ns=(st0.st_atime_ns, st0.st_mtime_ns))
    assert _stale_counts(root)[0] == {}
    # a changed option of the sky section: its hash differs from the one Snakemake recorded
    original = open(cfg).read()
    with open(cfg, "a") as fh:
        fh.write("sky: {nsig_clipping: 3.5}\n")
    try:
        stale, st = _stale_counts(root)
        planned = _planned(root, cfg)
    finally:
        with open(cfg, "w") as fh:
            fh.write(original)
    assert stale == planned and stale["sky"] == 5, (stale, planned)
    assert any("configuration section(s) instrument, sky changed" in j["reason"] for j in st["stale"] if j["step"] == "sky")


def test_rebuild_by_path(ops, tmp_path):
    """Findings 1 and 3: a product named from anywhere, relative or absolute, is rebuilt alone or
    from an earlier step; the job count comes first; a production-wide force needs --all."""
    root, prod, cfg = ops["root"], str(ops["prod"]), ops["cfg"]
    target = paths.findfile("cframe", prod=prod, night=NIGHT_A, expid=GOOD_EXPID, camera="b0")
    # findfile with the production's configuration prints the path the rules write
    res = _ff("findfile", "cframe", "--config", cfg, "--night", str(NIGHT_A), "--expid", str(GOOD_EXPID),
              "--camera", "b0")
    assert res.returncode == 0 and res.stdout.strip() == target, res.stdout
    here = tmp_path / "elsewhere"
    here.mkdir()
    rel = os.path.relpath(target, here)

    def rebuild(*argv):
        return subprocess.run([sys.executable, "-m", "fiberflow.cli.main", "rebuild", *argv, "--config", cfg],
                              capture_output=True, text=True, cwd=here)

    res = rebuild(rel, "-n")
    assert res.returncode == 0 and "fiberflow rebuild: 1 job(s) to run (cframe 1)" in res.stdout, res.stdout + res.stderr
    res = rebuild(target, "--from", "sky", "-n")
    assert res.returncode == 0, res.stderr
    m = re.search(r"(\d+) job\(s\) to run \((.*)\)", res.stdout)
    assert m and dict((k, int(v)) for k, v in (x.split() for x in m.group(2).split(", "))) == \
        {"sky": 2, "stdstars": 1, "fluxcalib": 1, "cframe": 1}, res.stdout
    # what `snakemake --forcerun sky PATH` does by mistake is refused; --all says it is meant
    res = rebuild("--from", "sky")
    assert res.returncode == 1 and "would force all 5 sky job(s)" in res.stderr and "--all" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = rebuild("--from", "sky", "--all", "-n")
    assert res.returncode == 0 and re.search(r"\bsky 5\b", res.stdout), res.stdout
    for bad, msg in ((str(tmp_path / "x.fits"), "is not under the production"),
                     (os.path.join(prod, "exposures", "nothing.fits"), "is written by no job"),
                     (target, "no coadd job lies upstream of it (it is made by cframe)")):
        res = rebuild(bad, *(["--from", "coadd"] if bad == target else []), "-n")
        assert res.returncode == 1 and msg in res.stderr, (bad, res.stderr)
    # a real rebuild: only that product is remade; what reads it is then stale
    before = {p: os.stat(p).st_mtime_ns for p in _products(prod)}
    res = rebuild(rel, "--cores", "2")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "Warning" not in res.stdout + res.stderr, res.stderr[-2000:]  # a clean command prints no noise
    changed = {p for p, t in before.items() if os.stat(p).st_mtime_ns != t}
    assert target in changed and not {p for p in changed if p.endswith(".fits")} - {target}, sorted(changed)
    stale, _st = _stale_counts(root)
    assert stale and stale == _planned(root, cfg), stale
    res = snakemake(root, cfg, "--profile", LOCAL_PROFILE)
    assert res.returncode == 0, res.stderr[-3000:]


def test_a_copied_production_plans_nothing_new(ops, tmp_path):
    """Finding 2: a production folder holding its configuration (paths relative to it) can be
    copied or moved; Snakemake's records follow, so the copy plans nothing and an option change
    there still reruns what it changes."""
    root, cfg = ops["root"], ops["cfg"]
    copy = tmp_path / "moved"
    shutil.copytree(root, copy, symlinks=True)  # copy2: mtimes kept, as cp -a
    text = open(cfg).read().replace(str(root) + "/", "").replace(str(root), ".")
    assert str(root) not in text
    (copy / "config.yaml").write_text(text)
    ccfg = str(copy / "config.yaml")
    assert _planned(copy, ccfg) == {}
    with open(copy / ".snakemake" / "fiberflow-roots.json") as fh:
        assert json.load(fh)["workdir"] == str(copy)
    assert _status(copy)["steps"]["cframe"]["stale"] == 0
    with open(ccfg, "a") as fh:
        fh.write("sky: {nsig_clipping: 3.5}\n")
    counts = _planned(copy, ccfg)
    assert counts.get("sky") == 5 and "preproc" not in counts, counts
    (copy / "config.yaml").write_text(text)
    # the original is untouched by the copy's run
    assert _planned(root, cfg) == {}
    with open(root / ".snakemake" / "fiberflow-roots.json") as fh:
        assert json.load(fh)["workdir"] == str(root)
