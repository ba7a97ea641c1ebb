"""The production through a real Slurm: Debian's slurmctld + slurmd + munge started by
``scripts/local-slurm`` (single node, no cgroups, no accounting), the demo night (``fiberflow
demo``) simulated and reduced end to end with ``--profile profiles/testslurm``
(snakemake-executor-plugin-slurm, squeue polling, per-camera chains grouped into Slurm group
jobs, extraction as MPI ranks under ``srun --mpi=pmi2``), then exactly the daemons the test
started are stopped. It takes about 13 minutes on two cores, mostly the executor's polling and
the Snakemake process every job starts.

Skips (with the reason) when not root or when the Slurm packages cannot be installed.
"""

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import fitsio
import pytest
from _workflow import PROJECT

from fiberflow import paths

SCRIPT = os.path.join(PROJECT, "scripts", "local-slurm")


def _daemon_pids(state):
    files = [os.path.join(state, "slurmctld.pid"), os.path.join(state, "slurmd.pid")]
    if os.path.exists(os.path.join(state, "munge-dir")):
        files.append(os.path.join(open(os.path.join(state, "munge-dir")).read().strip(), "munged.pid"))
    return {os.path.basename(p): int(open(p).read().strip()) for p in files if os.path.exists(p)}


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _free_port_pair():
    """A port p with p and p + 1 free on 127.0.0.1 (slurmctld and slurmd of the test cluster)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free pair of ports")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("a local Slurm needs root (slurmd launches jobs as their users)")
    state = str(tmp_path_factory.mktemp("slurmstate"))
    env = {**os.environ, "FIBERFLOW_SLURM_DIR": state, "FIBERFLOW_SLURM_PORT": str(_free_port_pair())}
    res = subprocess.run([SCRIPT, "start"], env=env, capture_output=True, text=True)
    if res.returncode != 0 and not shutil.which("slurmctld"):
        pytest.skip(f"Slurm could not be installed here: {res.stderr.strip()[-300:]}")
    assert res.returncode == 0, res.stdout + res.stderr
    started = _daemon_pids(state)
    assert len(started) == 3 and all(_alive(p) for p in started.values()), started
    conf = os.path.join(state, "slurm.conf")
    yield {"state": state, "env": {**env, "SLURM_CONF": conf}, "pids": started}
    res = subprocess.run([SCRIPT, "stop"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for name, pid in started.items():
        for _ in range(50):
            if not _alive(pid):
                break
            time.sleep(0.1)
        assert not _alive(pid), f"{name} (pid {pid}) still runs after stop"


def _diagnosis(out, slurm):
    """What a failed or stuck Slurm run leaves to read: the queue, the executor's logs of jobs
    that did not complete, the step logs that report an error, the controller's last lines."""
    lines = []
    sq = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i %T %M %l %j %R"], env=slurm["env"],
                        capture_output=True, text=True)
    lines += ["== squeue --states=all", sq.stdout.strip() or sq.stderr.strip()]
    done = {ln.split()[0] for ln in sq.stdout.splitlines() if " COMPLETED " in ln}
    for log in sorted(glob.glob(str(out / ".snakemake" / "slurm_logs" / "**" / "*.log"), recursive=True)):
        if os.path.basename(log)[:-4] not in done:
            lines += [f"== {log}", open(log, errors="replace").read()[-1500:]]
    for log in sorted(glob.glob(str(out / "redux" / "*" / "logs" / "**" / "*.log"), recursive=True)):
        text = open(log, errors="replace").read()
        if "error" in text.lower() or "traceback" in text.lower():
            lines += [f"== {log}", text[-1500:]]
    ctld = os.path.join(slurm["state"], "slurmctld.log")
    if os.path.exists(ctld):
        lines += ["== slurmctld.log", "".join(open(ctld, errors="replace").readlines()[-30:])]
    return "\n".join(lines)[-12000:]


def test_sbatch_runs_on_the_local_cluster(slurm):
    res = subprocess.run(["sbatch", "--parsable", "--wait", "-t", "1", "--wrap", "echo fiberflow-ok"],
                         env=slurm["env"], capture_output=True, text=True, timeout=120, cwd=slurm["state"])
    assert res.returncode == 0, res.stderr
    jobid = res.stdout.strip().split(";")[0]
    assert open(os.path.join(slurm["state"], f"slurm-{jobid}.out")).read().strip() == "fiberflow-ok"


def test_demo_night_reduced_through_slurm(slurm, tmp_path):
    """`fiberflow demo --profile profiles/testslurm`: the demo night simulated and reduced end
    to end through the slurm executor, extraction under `srun --mpi=pmi2` with 2 MPI ranks."""
    out = tmp_path / "demo"
    env = {**os.environ, "SLURM_CONF": slurm["env"]["SLURM_CONF"],
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    t0 = time.time()
    cmd = [os.path.join(os.path.dirname(sys.executable), "fiberflow"), "demo", "--out", str(out),
           "--profile", os.path.join(PROJECT, "profiles", "testslurm"), "--flats", "1", "--tiles", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=3000)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate()
        pytest.fail(f"the demo through Slurm did not finish in 3000 s\n{stdout[-2000:]}\n{stderr[-2000:]}\n"
                    + _diagnosis(out, slurm))
    wall = time.time() - t0
    text = stdout + stderr
    assert proc.returncode == 0, text[-4000:] + "\n" + _diagnosis(out, slurm)
    assert "NOT RUN" not in text and "FAILED" not in text and "Look first at" in text
    done = re.search(r"fiberflow status: (\d+) of (\d+) jobs done", text)
    assert done and done.group(1) == done.group(2) and int(done.group(1)) > 100, text[-3000:]
    # jobs really went through Slurm: sbatch submissions, group jobs among them
    submitted = [ln for ln in text.splitlines() if "has been submitted with SLURM jobid" in ln]
    assert len(submitted) >= 10, text[-3000:]
    # (the frame QA of one exposure: group qa{expid}; the night and production QA: qasummary)
    for group in ("preproc", "calibchain", "healpix", "qa0", "qasummary"):
        assert f"group_{group}" in text, f"no {group} group job: " + text[-3000:]
    sq = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i %T"], env=slurm["env"], capture_output=True,
                        text=True)
    jobids = {int(m.group(1)) for m in (re.search(r"SLURM jobid (\d+)", ln) for ln in submitted)}
    states = dict(ln.split() for ln in sq.stdout.splitlines() if ln.strip())
    known = {j: states[str(j)] for j in jobids if str(j) in states}  # kept for MinJobAge (600 s)
    assert len(known) >= 5 and set(known.values()) == {"COMPLETED"}, (jobids, sq.stdout)
    # every frame was extracted by 2 MPI ranks that srun started inside its Slurm job
    prod = out / "redux" / "demo"
    frames = sorted(prod.glob("exposures/*/*/frame-*.fits"))
    assert len(frames) == 9, frames  # 1 flat (--flats 1) + 2 science exposures of one tile (--tiles 1) x b0, r0, z0
    for f in frames:
        assert fitsio.read_header(str(f), ext="FLUX")["NRANKS"] == 2, f
    logs = sorted((prod / "logs" / "extract").glob("*/*.log"))
    assert logs and all("2 rank(s) x 1 thread(s)" in p.read_text() for p in logs)
    # the science products exist and the QA pages were built
    assert len(sorted(prod.glob("exposures/*/*/cframe-*.fits"))) == 6
    assert list(prod.glob("healpix/*/*/*/*/coadd-*.fits"))
    assert os.path.exists(paths.findfile("qa_production_html", prod=str(prod)))
    assert "coadds of 2 exposure(s) vs truth" in text, text[-3000:]
    # redrock ran under srun on 2 MPI ranks beside every coadd, and the catalogs were made
    rr = sorted(prod.glob("healpix/*/*/*/*/redrock-*.fits")) + sorted(prod.glob("tiles/cumulative/*/*/redrock-*.fits"))
    assert len(rr) == len(list(prod.glob("healpix/*/*/*/*/coadd-*.fits")) + list(prod.glob("tiles/cumulative/*/*/coadd-*.fits")))
    assert all(fitsio.read_header(str(f), 0)["FFOPT000"] == "mpi=2" for f in rr), rr
    assert (prod / "zcatalog" / "zpix-main-dark.fits").exists() and (prod / "tiles-demo.fits").exists()
    assert "pipeline-induced redshift failures" in text
    print(f"demo night through Slurm: {len(submitted)} Slurm jobs, {int(done.group(1))} Snakemake jobs, "
          f"{wall:.0f} s")
