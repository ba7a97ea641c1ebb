"""The ``fiberflow`` command line: cheap help, findfile/parsepath, describe, config, demo."""

import json
import os
import subprocess
import sys

import pytest

from fiberflow.cli.main import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_help_imports_no_numba():
    code = "import sys; from fiberflow.cli.main import build_parser; build_parser(); " \
           "print(json.dumps(sorted(m for m in ('numba', 'scipy', 'matplotlib', 'astropy') if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_findfile_and_parsepath(capsys):
    assert main(["findfile", "sframe", "--night", "20251205", "--expid", "7", "--camera", "b1", "--prod", "/p"]) == 0
    assert capsys.readouterr().out.strip() == "/p/exposures/20251205/00000007/sframe-b1-00000007.fits"
    assert main(["parsepath", "/p/calibnight/20251205/fiberflatnight-z2-20251205.fits"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec == {"path": "/p/calibnight/20251205/fiberflatnight-z2-20251205.fits", "filetype": "fiberflatnight",
                   "night": 20251205, "camera": "z2"}
    assert main(["findfile", "frame", "--night", "20251205", "--prod", "/p"]) == 1
    assert "needs expid, camera" in capsys.readouterr().err
    assert main(["parsepath", "/not/ours.txt"]) == 1



def test_findfile_takes_the_roots_of_a_config_and_prints_absolute_paths(tmp_path, capsys, monkeypatch):
    """A path findfile prints is a Snakemake target from anywhere: roots from --config resolved as
    the workflow does, a relative --prod made absolute (the rules' outputs are absolute)."""
    cfg = tmp_path / "prod.yaml"
    cfg.write_text(f"instrument: tiny\nraw: {tmp_path / 'raw'}\nredux: {tmp_path / 'redux'}\nspecprod: p1\n")
    assert main(["findfile", "certification", "--night", "20251205", "--calibration", "psfnight",
                 "--config", str(cfg)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "redux" / "p1" / "calibnight" / "20251205" /
                                                  "certification-psfnight-20251205.json")
    monkeypatch.chdir(tmp_path)
    assert main(["findfile", "psfnight", "--night", "20251205", "--camera", "r0", "--prod", "redux/p1"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "redux" / "p1" / "calibnight" / "20251205" /
                                                  "psfnight-r0-20251205.fits")


def test_describe(capsys):
    """Every file type fiberflow writes has a datamodel (finding 8 of the operator's first hour:
    describe covered 8 of them), with its place and its writer."""
    assert main(["describe", "frame"]) == 0
    out = capsys.readouterr().out
    assert "RESOLUTION" in out and out.startswith("frame: {prod}/exposures/{night}/{expid}/frame-{camera}-{expid}.fits")
    from fiberflow import paths
    from fiberflow.cli import describe

    for ft in paths.filetypes():
        assert main(["describe", ft]) == 0
        text = capsys.readouterr().out
        assert "no datamodel" not in text and len(text.strip().splitlines()) >= 2, (ft, text)
    for ft in ("psf", "fitpsf", "redrock", "cframe", "raw", "qa_night", "certification"):
        assert describe.expected_hdus(ft) or "keys" in describe.documented().get(ft, {}), ft
    assert main(["describe", "psfnight"]) == 0
    assert "Legendre coefficients" in capsys.readouterr().out  # "as fitpsf" resolved
    assert main(["describe", "nonsense"]) == 1
    assert "neither a file type" in capsys.readouterr().err


def test_config_command(tmp_path, capsys):
    assert main(["config", os.path.join(ROOT, "config", "config.yaml")]) == 0
    assert "instrument demo" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("instrument: demo\nhealpix:\n  nside: 63\n")
    assert main(["config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "healpix.nside" in err and str(bad) in err


def test_demo_runs_and_reports_honestly(tmp_path, capsys, real_psf_file):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    import re as _re

    # every stage ran (none NOT RUN / FAILED), with its seconds and where its products are
    stages = _re.findall(r"\[fiberflow demo\]   (ran|reused|NOT RUN|FAILED) +([\d.]+ s)? +(.+)", text)
    assert len(stages) >= 8 and all(st == "ran" for st, _, _ in stages), stages
    assert any("simulate raw night 20250101 (10 exposures)" in s for _, _, s in stages), stages
    assert any(s.startswith("Snakemake workflow") and "redux/demo" in s for _, _, s in stages), stages
    assert "Look first at" in text and "did NOT produce" not in text
    st = _re.findall(r"fiberflow status: (\d+) of (\d+) jobs done over (\d+) steps", text)
    from fiberflow.config import load_config
    from fiberflow.workflow.plan import Plan

    plan = Plan(load_config(str(out / "config.yaml")), str(out))
    steps = {j.step for j in plan.jobs}
    assert {"preproc", "extract", "cframe", "coadd", "cumulative_coadd", "qa_production"} <= steps, steps
    assert st and st[0][0] == st[0][1] == str(len(plan.jobs)) and int(st[0][2]) == len(steps), (st, len(steps))
    import re as _re

    cal = _re.findall(r"(\w\d) exposure \d+ vs truth: fiberflat rms ([\d.]+)%.*calibration vector rms ([\d.]+)%", text)
    assert sorted(c for c, _, _ in cal) == ["b0", "r0", "z0"], text[-2000:]
    # three 180 s flats: the fiberflat at the 0.3% (measured 0.25-0.29%); the calibration
    # vector of every exposure within the 1% RMS of truth (measured 0.47-0.89%)
    assert all(float(f) < 0.35 and float(v) < 1.0 for _, f, v in cal), cal
    # standard-star fits and calibrated point-source fluxes against truth (issue 7's figures)
    std = _re.findall(r"standard stars vs truth \((\d+) fits with S/N > 20\): max \|dTeff\| (\d+) K, max "
                      r"\|d\[Fe/H\]\| ([\d.]+); calibrated r-band flux of (\d+) non-standard point sources / truth: "
                      r"mean ([\d.]+) rms about 1 ([\d.]+)%", text)
    assert std, text[-3000:]
    nstar, dteff, dfeh, npoint, _mean, rms = std[0]
    # [Fe/H] is the loosest parameter: at S/N ~27 with chi2/dof ~1.4 the same star gave -1.27 and -1.50 in two
    # exposures (truth -1.30): 0.3 for the worst of ~8 fits. The excess chi2 is the fit's own model (stellar model
    # x degree-8 polynomial), which misses the noiseless truth by 2.6-4.6% rms a bin, mostly smooth (README, session 29)
    assert int(nstar) >= 3 and int(dteff) < 150 and float(dfeh) < 0.3, std
    assert int(npoint) >= 10 and float(rms) < 2.0, std
    # sky subtraction against truth: bright sky lines subtracted to a few %, unit pulls off them
    sky = _re.findall(r"(\w\d) sky vs truth \(3 exposures.*line residual max ([\d.]+)% in sky fibers, ([\d.]+)% in "
                      r"targets; target pulls off the lines mean ([-+\d.]+) std ([\d.]+) .* continuum residual "
                      r"([\d.]+)%", text)
    assert sorted(c for c, *_ in sky) == ["b0", "r0", "z0"], text[-3000:]
    for cam, rs, rt, pm, ps, rc in sky:
        assert float(rs) < 3.0 and float(rt) < 5.0 and float(rc) < 0.5, (cam, rs, rt, rc)
        assert abs(float(pm)) < 0.05 and abs(float(ps) - 1) < 0.05, (cam, pm, ps)
    assert "18 frames extracted" in text  # 3 flats + 3 science exposures x 3 cameras
    # the HEALPix stage: tile 1 observed twice -> two-exposure coadds against truth
    hpx = _re.findall(r"coadds of (\d) exposure\(s\) vs truth: pulls mean ([-+\d.]+) std ([\d.]+)", text)
    assert [n for n, _, _ in hpx] == ["1", "2"], text[-2000:]
    assert all(abs(float(m)) < 0.05 and abs(float(s) - 1) < 0.15 for _, m, s in hpx), hpx
    gain = _re.findall(r"median S/N gain over one exposure ([\d.]+)", text)
    assert len(gain) == 1 and abs(float(gain[0]) / 2 ** 0.5 - 1) < 0.1, gain
    assert len(list((out / "redux" / "demo" / "healpix" / "main" / "dark").glob("*/*/coadd-main-dark-*.fits"))) >= 3
    # QA of the clean demo night: scored, no alarm, pages written
    qa = _re.findall(r"QA of night 20250101: status (\w+), (\d+) of (\d+) scored metrics in alarm", text)
    assert qa and qa[0][0] in ("NORMAL", "WARNING") and qa[0][1] == "0" and int(qa[0][2]) > 100, qa
    assert (out / "redux" / "demo" / "qa" / "index.html").exists()
    import re

    found = re.findall(r"arc PSF (\w+) exposure \d+ vs truth: trace x rms ([\d.]+) px, wavelength rms ([\d.]+) A", text)
    assert sorted(c for c, _, _ in found) == ["b0", "r0", "z0"], text[-2000:]
    assert all(float(x) < 0.02 and float(w) < 0.01 for _, x, w in found), found
    for cam in ("b0", "r0", "z0"):
        assert (out / "redux" / "demo" / "calibnight" / "20250101" / f"psfnight-{cam}-20250101.fits").exists()
    # the demo night was simulated and reduced through preproc by Snakemake
    prep = out / "redux" / "demo" / "preproc" / "20250101"
    assert len(list(prep.glob("*/preproc-*.fits"))) == 21  # arc, 3 flats, 3 science x 3 cameras
    assert (out / "redux" / "demo" / "calibnight" / "20250101" / "biasnight-r0-20250101.fits").exists()
    assert (out / "qa" / "index.html").exists() and (out / "qa" / "psf-r0-spots.png").stat().st_size > 10000
    assert (out / "redux" / "demo" / "FILE-NAMES.txt").exists()
    from fiberflow.io.psf import read_psf

    for arm in "brz":
        assert read_psf(out / "calib" / "psf" / f"psf-{arm}0.fits").nfiber == 50
    _check_demo_redshifts(out / "redux" / "demo", text)
    _check_demo_depth_and_tile_qa(out / "redux" / "demo", text)
    _check_demo_moves(out, tmp_path, capsys)
    _check_demo_datamodel(out, capsys)


def _check_demo_datamodel(out, capsys):
    """Every FITS file of the demo holds exactly the HDUs its datamodel names (describe FILE)."""
    from fiberflow import paths
    from fiberflow.cli import describe

    checked = set()
    for path in sorted(out.rglob("*.fits*")):
        try:
            ft, _ids = paths.parse_path(str(path))
        except ValueError:
            continue
        assert describe.compare(ft, describe.file_hdus(str(path))) == ([], []), path
        checked.add(ft)
    assert {"raw", "fibermap", "psf", "fitpsf", "psfnight", "cframe", "coadd", "redrock", "ztile", "tile_qa",
            "truth"} <= checked, sorted(checked)
    cframe = next(out.rglob("cframe-r0-*.fits"))
    assert main(["describe", str(cframe)]) == 0
    text = capsys.readouterr().out
    assert "this file (" in text and "SCORES" in text and "against the datamodel" not in text


def _check_demo_moves(out, tmp_path, capsys):
    """The finished demo copied elsewhere (cp -a) plans no job; a second demo in place runs none."""
    import shutil

    from fiberflow.reference import workflow_dir

    assert str(out) not in (out / "config.yaml").read_text()  # paths relative to the config file
    copy = tmp_path / "copied" / "demo"
    shutil.copytree(out, copy, symlinks=True)
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", os.path.join(workflow_dir(), "Snakefile"),
                          "--configfile", str(copy / "config.yaml"), "--directory", str(copy), "--profile",
                          os.path.join(workflow_dir(), "profiles", "local"), "-n"], capture_output=True, text=True)
    assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr, res.stdout[-3000:]
    assert "Warning" not in res.stderr, res.stderr[-2000:]
    before = {p: p.stat().st_mtime_ns for p in (out / "redux" / "demo").rglob("*.fits")}
    assert main(["demo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Snakemake workflow" in text
    changed = [p for p, t in before.items() if p.stat().st_mtime_ns != t]
    assert changed == [], changed[:5]


def _check_demo_redshifts(prod, text):
    """redrock beside every tile and HEALPix coadd, both catalogs, the summaries, DESI's readers
    on them, and the success table with the pipeline-induced failures."""
    import re

    from astropy.table import Table

    coadds = sorted(prod.glob("healpix/main/dark/*/*/coadd-*.fits")) + sorted(prod.glob("tiles/cumulative/*/*/coadd-*.fits"))
    assert len(coadds) >= 5
    for c in coadds:
        rr = c.parent / c.name.replace("coadd-", "redrock-")
        assert len(Table.read(rr, "REDSHIFTS")) == len(Table.read(c, "FIBERMAP")), rr
    zpix = Table.read(prod / "zcatalog" / "zpix-main-dark.fits", "ZCATALOG")
    ztile = Table.read(prod / "zcatalog" / "ztile-main-dark-cumulative.fits", "ZCATALOG")
    # every target once in each catalog (one tile each, one pixel each)
    assert len(zpix) == len(ztile) == len(set(zpix["TARGETID"])) and set(zpix["TARGETID"]) == set(ztile["TARGETID"])
    assert zpix["ZCAT_PRIMARY"].all() and (zpix["ZCAT_NSPEC"] == 1).all()
    tiles = Table.read(prod / "tiles-demo.csv", format="ascii.csv")
    exps = Table.read(prod / "exposures-demo.fits", "EXPOSURES")
    assert sorted(tiles["NEXP"]) == [1, 2] and len(exps) == 3 and (exps["GOODFIBERS"] > 40).all()
    assert (tiles["NZGOOD"] > 0).all() and tiles["NZ"].sum() == len(ztile)
    desispec_io = __import__("pytest").importorskip("desispec.io")
    tile_coadd = sorted(prod.glob("tiles/cumulative/*/*/coadd-*.fits"))[0]
    assert desispec_io.read_spectra(str(tile_coadd)).num_spectra() == len(Table.read(tile_coadd, "FIBERMAP"))
    rows = dict(re.findall(r"\[fiberflow demo\]   (LRG|ELG|QSO|STD|ALL) +(\d+ +\d+ .*)", text))
    assert set(rows) >= {"LRG", "ELG", "QSO", "ALL"}, text[-3000:]
    pipe = re.findall(r"pipeline-induced redshift failures .*: (\d+) of (\d+) targets; (\d+) the other way", text)
    assert pipe and int(pipe[0][1]) == len(zpix) - (zpix["OBJTYPE"] == "SKY").sum(), pipe
    # redrock finds most of the demo's targets (faint ELGs are at the limit); the reduction
    # loses no more than the ideal reduction's own noise moves either way (McNemar, 2 sigma)
    n, nsucc = (int(v) for v in rows["ALL"].split()[:2])
    only_ff, only_ideal = int(pipe[0][0]), int(pipe[0][2])
    assert nsucc >= 0.8 * n, rows
    assert only_ff - only_ideal <= 2 * (only_ff + only_ideal) ** 0.5 + 1, pipe
    # the ideal reductions carry noise as large as each coadd's measured scatter, with the ivar of
    # that noise: their own pulls against the truth have unit robust width in every bin class
    import numpy as np

    from fiberflow.io.spectra import read_spectra
    from fiberflow.validation import TruthFluxes, expected_coadd, noise_scale

    ideals = sorted((prod / "validation").glob("healpix/main/dark/*/*/coadd-*.fits"))
    assert len(ideals) == len(list(prod.glob("healpix/main/dark/*/*/coadd-*.fits"))), ideals
    truth, widths = TruthFluxes(str(prod.parent.parent / "truth")), []
    for path in ideals:
        ideal = read_spectra(path)
        assert all(f"IDNOIS{b.upper()}" in ideal.header for b in "brz"), path
        rel = path.relative_to(prod / "validation")
        expect, _ = expected_coadd(read_spectra(prod / str(rel).replace("coadd-", "spectra-")), ideal, truth)
        for b, e in expect.items():
            iv = ideal.ivar[b].astype(float)
            widths += [(n, s) for _, _, n, s in noise_scale(ideal.flux[b], iv, (iv > 0) & (ideal.mask[b] == 0), e,
                                                             min_count=1000)[1] if n >= 1000]
    n, s = np.array(widths).T
    assert len(s) >= 8 and np.all(np.abs(s - 1) < 0.12) and abs(np.sum(n * s) / n.sum() - 1) < 0.03, widths


def test_demo_never_reports_work_it_did_not_do(tmp_path, capsys, monkeypatch):
    """A stage that cannot run is reported NOT RUN with its reason, nothing after it claims to
    have run, and the demo exits 1."""
    import fiberflow.reference as reference
    from fiberflow.errors import DataError

    def no_psf():
        raise DataError("/nowhere/psf-r0-00067784.fits", "reference data file missing from the fiberflow installation")

    monkeypatch.setattr(reference, "real_psf_path", no_psf)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert "NOT RUN: nominal PSFs from the real DESI r0 PSF: /nowhere/psf-r0-00067784.fits: reference data file " \
           "missing" in text, text
    assert "simulate" not in text and "Snakemake workflow" not in text and "did NOT produce its production" in text
    assert not list((out / "raw").glob("*")) and "not completed" in (out / "qa" / "index.html").read_text()

    # the workflow missing (an install without it): the PSF stages run, the rest is NOT RUN
    monkeypatch.undo()

    def no_workflow():
        raise DataError("/site/fiberflow/data/workflow/Snakefile", "the workflow is not installed with fiberflow")

    monkeypatch.setattr(reference, "workflow_dir", no_workflow)
    assert main(["demo", "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert "ran: nominal b/r/z PSFs of the demo instrument" in text
    assert "NOT RUN: Snakemake workflow: /site/fiberflow/data/workflow/Snakefile: the workflow is not installed" in text
    assert "simulate raw night" not in text and not list((out / "raw").glob("*"))


@pytest.mark.parametrize("argv", [["--version"]])
def test_console_script(argv):
    exe = os.path.join(os.path.dirname(sys.executable), "fiberflow")
    if not os.path.exists(exe):
        pytest.skip("console script not installed in this environment")
    out = subprocess.run([exe] + argv, capture_output=True, text=True)
    assert out.returncode == 0 and "fiberflow" in out.stdout


def test_a_command_imports_only_its_own_module():
    """`fiberflow findfile ...` runs with the findfile command imported and none of the others;
    parsing any command's arguments imports that command's module only (and the shared helpers)."""
    from fiberflow.cli.main import COMMANDS

    shared = ("fiberflow.cli.main", "fiberflow.cli.guard", "fiberflow.cli.common", "fiberflow.cli")
    code = ("import sys; from fiberflow.cli.main import main; main(['findfile', 'frame', '--night', '20250101', "
            "'--expid', '3', '--camera', 'r0', '--prod', '/p']); "
            f"print(sorted(m for m in sys.modules if m.startswith('fiberflow.cli') and m not in {shared!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "['fiberflow.cli.findfile']", out.stdout
    code = ("import sys, json; from fiberflow.cli.main import build_parser, COMMANDS; out = {}\n"
            "for name in COMMANDS:\n"
            "    before = set(sys.modules); build_parser(only=name)\n"
            f"    out[name] = sorted(m for m in set(sys.modules) - before if m.startswith('fiberflow.cli.') and m not in {shared!r})\n"
            "    [sys.modules.pop(m) for m in out[name]]\n"
            "print(json.dumps(out))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {name: [mod] for name, (mod, _) in COMMANDS.items()}, got


def _check_demo_depth_and_tile_qa(prod, text):
    """EFFTIME from TSNR2 follows the observing conditions of the demo's exposures (the first at
    about the simulator's nominal conditions); every cumulative tile has its tile QA without an
    alarm (a clean night), the night QA report links them, the tiles summary says which tile is
    done."""
    from astropy.table import Table

    exps = Table.read(prod / "exposures-demo.fits", "EXPOSURES")
    exps.sort("EXPID")
    eff = exps["EFFTIME_SPEC"] / exps["EXPTIME"]
    # 1: airmass 1.05, seeing 1.0, sky 1.0 (nominal: 1.0, 1.1, 1.0); 2: seeing 1.15; 3: sky 1.1, airmass 1.15
    assert 0.9 < eff[0] < 1.2 and eff[1] < eff[0] and eff[2] < eff[0], list(eff)  # measured 1.13, 0.89, 1.01
    tiles = Table.read(prod / "tiles-demo.csv", format="ascii.csv")
    two = tiles[tiles["NEXP"] == 2][0]
    assert two["DONE"] == 1 and two["NVALID"] >= 0.9 * two["GOODFIBERS"], dict(zip(tiles.colnames, two))
    qafiles = sorted(prod.glob("tiles/cumulative/*/*/tile-qa-*.fits"))
    assert len(qafiles) == len(list(prod.glob("tiles/cumulative/*/*/"))) == 2
    from fiberflow.io.tileqa import TileQA

    for f in qafiles:
        qa = TileQA.read(f)
        assert qa.status in ("NORMAL", "WARNING"), (f.name, qa.metrics)
        assert f.with_suffix(".png").stat().st_size > 20000
        assert f"tile QA {qa.header['TILEID']} thru" in text
    page = (prod / "qa" / "nights" / "20250101" / "nightqa-20250101.html").read_text()
    assert all(f.with_suffix(".png").name in page for f in qafiles)
