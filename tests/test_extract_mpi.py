"""`fiberflow extract` on a simulated tiny-instrument science camera: the same frame with 1
or 3 threads and under a real `mpiexec -n 1/2/3` (3 ranks > 1 bundle), the boxcar quick-look
method and the optional model image."""

import os
import shutil
import subprocess
import sys

import fitsio
import numpy as np
import pytest

from fiberflow import paths
from fiberflow.sim.night import Simulator
from fiberflow.sim.plan import default_plan, parse_plan

#: the simulator's optics are built on the real DESI r0 PSF

NIGHT = 20250101
BIN = os.path.dirname(sys.executable)


def _fiberflow(*args, launcher=(), check=True, env=None):
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), **(env or {}))
    proc = subprocess.run([*launcher, os.path.join(BIN, "fiberflow"), *args], capture_output=True, text=True,
                          env=env)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def tiny_camera(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mpi")
    cfg = tmp / "tiny.yaml"
    cfg.write_text("instrument: tiny\n")
    plan = parse_plan(default_plan(NIGHT))
    expid = next(e.expid for e in plan.exposures if e.obstype == "SCIENCE")
    zeros = [str(e.expid) for e in plan.exposures if e.obstype == "ZERO"]
    _fiberflow("simulate", "--night", str(NIGHT), "--instrument", "tiny", "--raw", str(tmp / "raw"),
               "--truth", str(tmp / "truth"), "--expid", str(expid), *zeros, "--cameras", "r0")
    bias = tmp / "biasnight-r0.fits"
    _fiberflow("biasnight", "--config", str(cfg), "--camera", "r0", "-o", str(bias), "-i",
               *[paths.findfile("raw", raw=str(tmp / "raw"), night=NIGHT, expid=int(e)) for e in zeros])
    pre = tmp / "preproc-r0.fits"
    _fiberflow("preproc", "--config", str(cfg), "--camera", "r0", "--biasnight", str(bias), "-i",
               paths.findfile("raw", raw=str(tmp / "raw"), night=NIGHT, expid=expid), "-o", str(pre))
    psf = tmp / "psf-r0.fits"
    Simulator("tiny", 1).exposure_psf(NIGHT, expid, "r0").write(str(psf))
    return tmp, cfg, pre, psf


def _extract(tiny_camera, out, *extra, launcher=(), **kw):
    tmp, cfg, pre, psf = tiny_camera
    return _fiberflow("extract", "--config", str(cfg), "--camera", "r0", "-i", str(pre), "--psf", str(psf),
                      "-o", str(tmp / out), *extra, launcher=launcher, **kw)


def _same(a, b):
    for ext in ("FLUX", "IVAR", "MASK", "RESOLUTION", "CHI2PIX"):
        x, y = fitsio.read(a, ext=ext), fitsio.read(b, ext=ext)
        assert np.array_equal(x, y), f"{ext} differs between {a} and {b}"


def test_threads_and_mpi_ranks_give_identical_frames(tiny_camera):
    tmp = tiny_camera[0]
    p = _extract(tiny_camera, "frame-t1.fits", "--nthreads", "1", "--model", str(tmp / "model-r0.fits"))
    assert "1 rank(s) x 1 thread(s)" in p.stdout
    _extract(tiny_camera, "frame-t3.fits", "--nthreads", "3")
    _same(tmp / "frame-t1.fits", tmp / "frame-t3.fits")
    mpiexec = shutil.which("mpiexec", path=BIN) or shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("no mpiexec: install the extra fiberflow[mpi] (mpi4py + mpich)")
    pytest.importorskip("mpi4py", reason="mpi4py not installed (extra fiberflow[mpi])")
    for n in (1, 2, 3):
        p = _extract(tiny_camera, f"frame-mpi{n}.fits", "--nthreads", "1", launcher=(mpiexec, "-n", str(n)))
        if n > 1:
            assert f"{n} rank(s)" in p.stdout
            assert fitsio.read_header(tmp / f"frame-mpi{n}.fits", ext="FLUX")["NRANKS"] == n
        _same(tmp / "frame-t1.fits", tmp / f"frame-mpi{n}.fits")
    # the model image describes the preprocessed image: residual pulls are noise
    model = fitsio.read(tmp / "model-r0.fits", ext="MODEL")
    img = fitsio.read(tiny_camera[2], ext="IMAGE")
    ivar = fitsio.read(tiny_camera[2], ext="IVAR")
    lit = (model > 50) & (ivar > 0)
    assert lit.sum() > 10000
    assert np.median(np.abs((img - model) * np.sqrt(ivar))[lit]) == pytest.approx(0.674, abs=0.07)


def test_boxcar_method_and_its_errors(tiny_camera):
    tmp = tiny_camera[0]
    p = _extract(tiny_camera, "frame-box.fits", "--method", "boxcar")
    assert "boxcar" in p.stdout
    hdr = fitsio.read_header(tmp / "frame-box.fits", ext="FLUX")
    assert hdr["EXTRACT"] == "boxcar"
    box = fitsio.read(tmp / "frame-box.fits", ext="FLUX")
    if not (tmp / "frame-t1.fits").exists():
        _extract(tiny_camera, "frame-t1.fits", "--nthreads", "2")
    sp = fitsio.read(tmp / "frame-t1.fits", ext="FLUX")
    # per-bin ratio on bins both extractions measured: sums would be dominated by the sky lines,
    # where the columns of R (unlike its rows) need not sum to 1
    good = ((fitsio.read(tmp / "frame-box.fits", ext="IVAR") > 0) & (fitsio.read(tmp / "frame-t1.fits", ext="IVAR") > 0)
            & (fitsio.read(tmp / "frame-t1.fits", ext="MASK") == 0) & (sp > 0))
    good[:, :200] = good[:, -200:] = False
    ratio = np.median([np.median(box[f][good[f]] / sp[f][good[f]]) for f in range(len(sp))])
    assert ratio == pytest.approx(1.0, abs=0.02)  # both in electron/Angstrom of the whole spot
    _, cfg, pre, psf = tiny_camera
    proc = _fiberflow("extract", "--config", str(cfg), "--camera", "r0", "-i", str(pre), "--psf", str(psf),
                      "-o", str(tmp / "frame-x.fits"), "--method", "boxcar", "--model", str(tmp / "m.fits"), check=False)
    assert proc.returncode == 1 and "no model image" in proc.stderr
    assert not (tmp / "frame-x.fits").exists() and not (tmp / "m.fits").exists()


def test_srun_tasks_without_mpi_process_management_are_refused(tiny_camera):
    """`srun -n 2 fiberflow extract` on a cluster whose MpiDefault is none starts two
    independent copies: each task sees SLURM_STEP_NUM_TASKS=2 and no MPI rank. The step says
    how to launch it instead of extracting twice into the same file."""
    tmp = tiny_camera[0]
    env = {"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1"}
    p = _extract(tiny_camera, "frame-srun.fits", "--nthreads", "1", env=env, check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "srun started 2 tasks" in p.stderr and "--mpi=pmi2" in p.stderr, p.stderr
    assert not (tmp / "frame-srun.fits").exists()
    # one task, or ranks that do see MPI (PMI_RANK from srun --mpi=pmi2), are fine
    from fiberflow.parallel import check_task_launch

    check_task_launch({"SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"})
    check_task_launch({"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "0", "PMI_RANK": "0"})
