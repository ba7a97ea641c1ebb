"""The production through a real Slurm: Debian's slurmctld + slurmd + munge started by
``scripts/local-slurm`` (single node, no cgroups, no accounting), a simulated night reduced
end to end with ``--profile profiles/testslurm`` (snakemake-executor-plugin-slurm, squeue
polling, per-camera chains grouped into one Slurm job), then exactly the daemons the test
started are stopped.

Skips (with the reason) when not root or when the Slurm packages cannot be installed.
"""

import os
import shutil
import subprocess
import time

import pytest
from _workflow import PROJECT, snakemake, tiny_config
from conftest import needs_shared_data

from fiberflow import paths

SCRIPT = os.path.join(PROJECT, "scripts", "local-slurm")
NIGHT = 20250901
pytestmark = needs_shared_data


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


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("a local Slurm needs root (slurmd launches jobs as their users)")
    state = str(tmp_path_factory.mktemp("slurmstate"))
    env = {**os.environ, "FIBERFLOW_SLURM_DIR": state, "FIBERFLOW_SLURM_PORT": "17817"}
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


def test_sbatch_runs_on_the_local_cluster(slurm):
    res = subprocess.run(["sbatch", "--parsable", "--wait", "-t", "1", "--wrap", "echo fiberflow-ok"],
                         env=slurm["env"], capture_output=True, text=True, timeout=120, cwd=slurm["state"])
    assert res.returncode == 0, res.stderr
    jobid = res.stdout.strip().split(";")[0]
    assert open(os.path.join(slurm["state"], f"slurm-{jobid}.out")).read().strip() == "fiberflow-ok"


def test_night_reduced_through_slurm(slurm, tmp_path):
    from fiberflow.sim.night import simulate_night
    from fiberflow.sim.plan import parse_plan

    plan = {"night": NIGHT, "first_expid": 3100, "exposures": [
        {"obstype": "ZERO", "count": 1}, {"obstype": "ARC", "exptime": 5.0}, {"obstype": "FLAT", "exptime": 120.0},
        {"obstype": "SCIENCE", "tileid": 70, "exptime": 900.0}]}
    simulate_night(parse_plan(plan), "tiny", 5, str(tmp_path / "raw"), str(tmp_path / "truth"), cameras=["b0"])
    cfg = tiny_config(tmp_path, "slurm")
    t0 = time.time()
    env_keys = ("SLURM_CONF",)
    old = {k: os.environ.get(k) for k in env_keys}
    os.environ["SLURM_CONF"] = slurm["env"]["SLURM_CONF"]
    try:
        res = snakemake(tmp_path, cfg, "--profile", os.path.join(PROJECT, "profiles", "testslurm"), "--jobs", "4")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    wall = time.time() - t0
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-4000:]
    # jobs really went through Slurm: sbatch submissions, several of them group jobs
    submitted = [ln for ln in text.splitlines() if "has been submitted with SLURM jobid" in ln]
    assert len(submitted) >= 8, text[-3000:]
    assert "group job calibchain" in text.lower(), text[-3000:]
    prod = str(tmp_path / "redux" / "slurm")
    assert os.path.exists(paths.findfile("cframe", prod=prod, night=NIGHT, expid=3103, camera="b0"))
    assert os.path.exists(paths.findfile("qa_production_html", prod=prod))
    assert list((tmp_path / "redux" / "slurm" / "healpix").glob("*/*/*/*/coadd-*.fits"))
    # Slurm's own record of the jobs (squeue keeps finished jobs for MinJobAge)
    sq = subprocess.run(["squeue", "--states=all", "-h", "-o", "%T %j"], env=slurm["env"], capture_output=True, text=True)
    states = [ln.split()[0] for ln in sq.stdout.splitlines() if ln.strip()]
    assert states.count("COMPLETED") >= len(submitted), sq.stdout
    print(f"night through Slurm: {len(submitted)} Slurm jobs, {wall:.0f} s")
