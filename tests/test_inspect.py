"""The inspection tools on a spectra file written by DESI's own writer (desispec.io.write_spectra)
and on frames: selection by TARGETID / FIBER, errors, the focal-plane residuals."""

import os

import numpy as np
import pytest

from fiberflow.cli.main import main


@pytest.fixture(scope="module")
def desi_spectra(tmp_path_factory):
    desispec_io = pytest.importorskip("desispec.io", reason="desispec (DESI's writer) is not installed")
    from astropy.table import Table
    from desispec.spectra import Spectra

    rng = np.random.default_rng(3)
    n = 6
    fm = Table({"TARGETID": np.arange(100, 100 + n, dtype=np.int64), "FIBER": np.arange(20, 20 + n, dtype=np.int32),
                "PETAL_LOC": np.zeros(n, np.int16), "OBJTYPE": np.array(["TGT"] * n), "TARGET_RA": np.zeros(n),
                "TARGET_DEC": np.zeros(n)})
    wave = {"b": np.arange(3600.0, 5800.0, 0.8), "r": np.arange(5760.0, 7620.0, 0.8), "z": np.arange(7520.0, 9824.0, 0.8)}
    flux = {b: rng.normal(1.0, 0.1, (n, w.size)).astype("f4") for b, w in wave.items()}
    ivar = {b: np.full((n, w.size), 100.0, "f4") for b, w in wave.items()}
    sp = Spectra(bands=list(wave), wave=wave, flux=flux, ivar=ivar, fibermap=fm)
    path = str(tmp_path_factory.mktemp("desi") / "spectra-0-1234-thru20250101.fits")
    desispec_io.write_spectra(path, sp)
    return path


def test_plot_spectra_of_a_desispec_file(desi_spectra, tmp_path, capsys):
    png = tmp_path / "a.png"
    assert main(["plot-spectra", "-i", desi_spectra, "--fiber", "21", "23", "--rebin", "4", "-o", str(png)]) == 0
    assert png.stat().st_size > 5000 and "2 spectra" in capsys.readouterr().out
    assert main(["plot-spectra", "-i", desi_spectra, "--targetid", "100", "-o", str(tmp_path / "b.png")]) == 0
    assert main(["plot-spectra", "-i", desi_spectra, "--max", "3", "-o", str(tmp_path / "c.png")]) == 0
    assert "(first 3 of 6)" in capsys.readouterr().out
    # errors: one line naming the file and the problem, nothing written
    for extra, msg in ((["--fiber", "99"], "has no FIBER 99"), (["--targetid", "7"], "has no TARGETID 7"),
                       (["--spectype", "QSO"], "--spectype needs the coadd's redrock file")):
        out = tmp_path / "bad.png"
        assert main(["plot-spectra", "-i", desi_spectra, *extra, "-o", str(out)]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and desi_spectra in err and msg in err and "Traceback" not in err
        assert not out.exists()


def test_select_rows_by_the_first_exposure_fiber_of_a_coadd():
    from fiberflow.cli.inspect import select_rows

    fm = np.zeros(3, [("TARGETID", "i8")])
    fm["TARGETID"] = [5, 6, 7]
    exp = np.zeros(4, [("TARGETID", "i8"), ("FIBER", "i4")])
    exp["TARGETID"], exp["FIBER"] = [5, 6, 7, 5], [40, 41, 42, 40]
    rows, note = select_rows(fm, fiber=[42, 40], exp_fibermap=exp)
    assert rows.tolist() == [0, 2] and note == ""
    with pytest.raises(ValueError, match="has no FIBER 43"):
        select_rows(fm, fiber=[43], exp_fibermap=exp)


def test_focalplane_values_localize_a_glow():
    """Fibers near one focal-plane position with extra light in the window stand out in the
    residuals of the frame (fiberflat applied) and of the sframe."""
    from fiberflow.cli.inspect import focalplane_values
    from fiberflow.io.calib import FiberFlat
    from fiberflow.io.frame import Frame

    rng = np.random.default_rng(1)
    n, wave = 40, np.arange(6400.0, 6800.0, 1.0)
    fm = np.zeros(n, [("FIBER", "i4"), ("FIBER_X", "f8"), ("FIBER_Y", "f8"), ("OBJTYPE", "U3")])
    fm["FIBER"], fm["FIBER_X"], fm["FIBER_Y"], fm["OBJTYPE"] = np.arange(n), rng.uniform(0, 300, n), \
        rng.uniform(0, 300, n), "SKY"
    near = np.hypot(fm["FIBER_X"] - 100, fm["FIBER_Y"] - 100) < 60
    ff = rng.uniform(0.9, 1.1, (n, 1)) * np.ones((1, wave.size))
    glow = np.where(near[:, None], 50.0, 0.0) * np.exp(-0.5 * ((wave - 6600) / 40) ** 2)[None, :]
    sky = 100.0
    flux = (sky + glow) * ff + rng.normal(0, 1, (n, wave.size))
    res = np.zeros((n, 1, wave.size), "f4")
    common = dict(resolution=res, fibermap=fm, chi2pix=None, scores=None)
    frame = Frame(wave, flux.astype("f4"), np.ones_like(flux, "f4"), np.zeros(flux.shape, "i4"),
                  header={"CAMERA": "r0", "EXPID": 5}, **common)
    sframe = Frame(wave, (flux / ff - sky - glow[near].mean(axis=0) * near.mean()).astype("f4"),
                   np.ones_like(flux, "f4"), np.zeros(flux.shape, "i4"), header={"CAMERA": "r0", "EXPID": 5}, **common)
    fiberflat = FiberFlat(wave, ff.astype("f4"), np.ones_like(ff, "f4"), np.zeros(ff.shape, "i4"),
                          np.ones(wave.size, "f4"), header={"CAMERA": "r0"})
    rows = focalplane_values([("/x/frame-r0-00000005.fits", frame), ("/x/sframe-r0-00000005.fits", sframe)],
                             {"r0": fiberflat}, 6500.0, 6700.0)
    for kind in ("frame", "sframe"):
        r = np.array([x["residual"] for x in rows if x["kind"] == kind])
        assert r[near].min() > 10 * np.abs(r[~near]).max() / 2 and np.abs(np.median(r[~near])) < 10
    assert os.path.basename("/x/frame-r0-00000005.fits").startswith("frame")
