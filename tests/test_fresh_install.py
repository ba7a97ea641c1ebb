"""fiberflow on a machine that has never seen the project: a copy of the repository with no
``../shared`` anywhere above it, built into a wheel and installed (not editable) into a new
virtualenv, then a small production reduced end to end through Snakemake from a folder outside
the source tree, using only what the wheel installed (reference data, workflow, profiles).

The new virtualenv borrows the third-party packages of the test environment through a ``.pth``
line (no download at test time); fiberflow itself comes only from the wheel. A reference file or
workflow file that the wheel does not carry, or an install step that the project lacks, fails
here.
"""

import json
import os
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NIGHT = 20250301
CAMERAS = ["b0", "r0"]


def _run(cmd, cwd, env, timeout=900):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} exited {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def _copy_of_repository(dest):
    """What a clone of the working tree holds: tracked files plus untracked ones git does not
    ignore (so a data file that .gitignore would drop is missing here too)."""
    res = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=False)
    if res.returncode != 0:
        pytest.skip("the project is not a git checkout: nothing to clone")
    import shutil

    for rel in res.stdout.decode().split("\0"):
        if not rel or not os.path.exists(os.path.join(ROOT, rel)):
            continue  # deleted in the working tree
        os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), os.path.join(dest, rel))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("fresh")
    for parent in [base, *base.parents]:
        assert not os.path.isdir(os.path.join(parent, "shared", "data")), f"{parent}/shared/data exists"
    clone = base / "fiberflow"
    _copy_of_repository(clone)
    env = {k: v for k, v in os.environ.items() if k not in ("FIBERFLOW_SHARED_DATA", "PYTHONPATH", "VIRTUAL_ENV")}
    env["NUMBA_CACHE_DIR"] = str(base / "numba-cache")
    # the wheel, built from the copy with the project's own build backend (no network)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(clone),
          "-w", str(base / "wheel")], cwd=base, env=env)
    wheels = list((base / "wheel").glob("fiberflow-*.whl"))
    assert len(wheels) == 1, wheels
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=base, env=env)
    vpy = venv / "bin" / "python"
    site = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # third-party packages from the test environment (its .pth files, such as the editable
    # fiberflow, are not processed from a path line, so fiberflow comes from the wheel only)
    with open(os.path.join(site, "zz-borrowed-deps.pth"), "w") as fh:
        fh.write(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(vpy), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", "--no-index", str(wheels[0])],
         cwd=base, env=env)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    work = base / "work"
    work.mkdir()
    return {"base": base, "venv": venv, "python": str(vpy), "fiberflow": str(venv / "bin" / "fiberflow"),
            "env": env, "work": work, "site": site}


def test_everything_comes_from_the_wheel(installed):
    code = ("import json, fiberflow, fiberflow.reference as r; print(json.dumps({'pkg': fiberflow.__file__, "
            "'psf': r.real_psf_path(), 'ref': r.reference_dir(), 'wf': r.workflow_dir(), "
            "'rr': sorted(__import__('os').listdir(r.redrock_template_dir()))}))")
    res = _run([installed["python"], "-c", code], cwd=installed["work"], env=installed["env"])
    info = json.loads(res.stdout)
    for key in ("pkg", "psf", "ref", "wf"):
        assert info[key].startswith(installed["site"]), (key, info[key])
    assert os.path.exists(os.path.join(info["wf"], "Snakefile"))
    # the night-time quick-look's workflow and the monitor's page script
    assert os.path.exists(os.path.join(info["wf"], "Snakefile.quicklook"))
    assert os.path.exists(os.path.join(info["wf"], "config", "qa-quicklook.yaml"))
    assert os.path.exists(os.path.join(info["pkg"].rsplit("/", 1)[0], "data", "monitor", "monitor.js"))
    assert "rrtemplate-galaxy.fits" in info["rr"] and "rrtemplate-QSO-HIZ-v1.1.fits" in info["rr"]
    # every reference file the README beside the data lists is installed
    readme = open(os.path.join(info["ref"], "README.md")).read()
    assert "BSD-3-Clause" in readme
    for rel in ("psf/psf-r0-00067784.fits", "arc_lines/goodlines_vacuum.ascii", "spectra/sky-uves.fits",
                "spectra/spec-sky.dat.gz", "spectra/ZenExtinct-KPNO.fits", "spectra/flat-3100K-quartz-iodine.fits",
                "spectra/arc-lines-average-in-vacuum.fits", "templates/lrg_templates_v2.0-lite.fits",
                "templates/qso_templates_v2.0-lite.fits"):
        assert os.path.exists(os.path.join(info["ref"], rel)), rel
        assert f"`{os.path.dirname(rel)}/" in readme
    # the workflow helper points at the installed copy
    res = _run([installed["fiberflow"], "workflow", "--profile", "local"], cwd=installed["work"], env=installed["env"])
    assert res.stdout.strip().startswith(installed["site"])


def test_small_production_end_to_end_from_the_wheel(installed):
    """zeros, an arc, a flat and two science exposures of one tile, b0 and r0 of the tiny
    instrument: simulated, then reduced by the installed workflow through HEALPix coadds and QA."""
    import yaml

    env, work, ff = installed["env"], installed["work"], installed["fiberflow"]
    plan = {"night": NIGHT, "first_expid": 300, "exposures": [
        {"obstype": "ZERO", "count": 2}, {"obstype": "ARC", "exptime": 5.0}, {"obstype": "FLAT", "exptime": 120.0},
        {"obstype": "SCIENCE", "tileid": 91, "exptime": 900.0, "count": 2}]}
    (work / "plan.yaml").write_text(yaml.safe_dump(plan))
    _run([ff, "simulate", "--plan", "plan.yaml", "--instrument", "tiny", "--raw", "raw", "--truth", "truth",
          "--cameras", *CAMERAS], cwd=work, env=env)
    (work / "prod.yaml").write_text("instrument: tiny\nraw: raw\nredux: redux\nspecprod: fresh\ntruth: truth\n"
                                    "calibration: {default_psf: calib}\n")
    _run([ff, "calibinit", "--config", "prod.yaml"], cwd=work, env=env)
    snakefile = _run([ff, "workflow", "--snakefile"], cwd=work, env=env).stdout.strip()
    profile = _run([ff, "workflow", "--profile", "local"], cwd=work, env=env).stdout.strip()
    res = _run([installed["python"], "-m", "snakemake", "-s", snakefile, "--configfile", "prod.yaml",
                "--profile", profile, "--cores", "2", "--quiet"], cwd=work, env=env, timeout=1500)
    prod = work / "redux" / "fresh"
    cframes = sorted(prod.glob(f"exposures/{NIGHT}/*/cframe-*.fits"))
    assert len(cframes) == 2 * len(CAMERAS), cframes
    coadds = list(prod.glob("healpix/*/*/*/*/coadd-*.fits"))
    assert coadds, "no HEALPix coadd"
    # redshifts are on by default: redrock with the templates installed from the wheel
    for c in coadds:
        assert (c.parent / c.name.replace("coadd-", "redrock-")).exists(), c
    assert (prod / "zcatalog" / "zpix-main-dark.fits").exists() and (prod / "tiles-fresh.csv").exists()
    assert (prod / "qa" / "index.html").exists()
    # every job of the plan is done, as `fiberflow status` sees it
    res = _run([ff, "status", "--config", "prod.yaml", "--json"], cwd=work, env=env)
    status = json.loads(res.stdout)
    assert status["steps"] and not status["failed"], res.stdout
    for step, row in status["steps"].items():
        assert row["done"] > 0 and all(v == 0 for k, v in row.items() if k != "done"), (step, row)
    # provenance names the installed package, and no product path leads into the source copy
    import fitsio

    hdr = fitsio.read_header(str(cframes[0]), ext="FLUX")
    text = repr(hdr)
    assert str(installed["base"] / "fiberflow") not in text
