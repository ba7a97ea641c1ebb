"""`fiberflow redrock`: DESI's redrock (pinned, from PyPI) with the templates shipped in fiberflow,
on a coadd of simulated targets whose redshifts are known (the simulator's LRG, ELG, QSO and
standard stars on the instrument's grids, through a Gaussian resolution, two exposures with
noise), made with fiberflow's own coadd; and its refusals of bad input.
"""

import os
import subprocess
import sys

import pytest

from fiberflow.steps import coadd

C_KMS = 299792.458


def _ff(*args):
    return subprocess.run([sys.executable, "-m", "fiberflow.cli.main", *args], capture_output=True, text=True)


def simulated_coadd(nfiber=16, sigma=0.05, seed=3):
    """Spectra (2 exposures) of 16 fibers of simulated targets (2 SKY, 3 STD, 4 LRG, 5 ELG, 2 QSO) and
    their truth (class, z)."""
    from fiberflow.validation import simulated_spectra

    return simulated_spectra("tiny", nfiber, 2, sigma, seed)


@pytest.fixture(scope="module")
def redshifts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rr")
    sp, fm, info = simulated_coadd()
    co = coadd.coadd_spectra(sp, coadd.CoaddOptions())
    co.write(tmp / "coadd-0-1234-thru20250301.fits")
    sp.write(tmp / "spectra-0-1234-thru20250301.fits")
    cfg = tmp / "config.yaml"
    cfg.write_text("instrument: tiny\n")
    out = tmp / "redrock-0-1234-thru20250301.fits"
    res = _ff("redrock", "--config", str(cfg), "-i", str(tmp / "coadd-0-1234-thru20250301.fits"), "-o", str(out),
              "--ncpu", "2")
    return {"tmp": tmp, "cfg": cfg, "out": out, "res": res, "fm": fm, "info": info}


def test_redrock_finds_the_true_redshifts(redshifts):
    from astropy.table import Table

    res = redshifts["res"]
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    z = Table.read(redshifts["out"], "REDSHIFTS")
    truth = {int(t): m for t, m in zip(redshifts["fm"]["TARGETID"], redshifts["info"])}
    assert sorted(int(t) for t in z["TARGETID"]) == sorted(truth)
    good = bad = 0
    for row in z:
        m = truth[int(row["TARGETID"])]
        if m["CLASS"] == "SKY":
            continue
        dv = abs(row["Z"] - m["Z"]) / (1 + m["Z"]) * C_KMS
        if dv < 1000 and row["ZWARN"] == 0:
            good += 1
        else:
            bad += 1
    assert {m["CLASS"] for m in truth.values()} == {"SKY", "STD", "LRG", "ELG", "QSO"}
    assert good >= 0.9 * (good + bad), (good, bad)
    spectype = {int(t): s.strip() for t, s in zip(z["TARGETID"], z["SPECTYPE"])}
    for tid, m in truth.items():
        if m["CLASS"] == "STD":
            assert spectype[tid] == "STAR", (tid, spectype[tid])
    for hdu in ("FIBERMAP", "EXP_FIBERMAP", "TSNR2"):
        assert len(Table.read(redshifts["out"], hdu)) > 0


def test_redrock_file_records_its_templates_and_version(redshifts):
    import fitsio
    import redrock

    hdr = fitsio.read_header(str(redshifts["out"]), 0)
    assert hdr["RRVER"] == redrock.__version__ and hdr["FFSTEP"] == "redrock"
    shipped = sorted(f for f in os.listdir(_template_dir()) if f.startswith("rrtemplate-"))
    assert [hdr[f"RRTMP{k:02d}"] for k in range(len(shipped))] == shipped
    assert "coadd-0-1234-thru20250301.fits" in hdr["FFIN000"]


def _template_dir():
    from fiberflow.reference import redrock_template_dir

    return redrock_template_dir()


def test_redrock_refuses_what_it_cannot_fit(redshifts, tmp_path):
    tmp, cfg = redshifts["tmp"], str(redshifts["cfg"])
    out = tmp_path / "rr.fits"
    res = _ff("redrock", "--config", cfg, "-i", str(tmp / "spectra-0-1234-thru20250301.fits"), "-o", str(out))
    assert res.returncode == 1 and "not on spectra files" in res.stderr and "Traceback" not in res.stderr
    assert not out.exists() and not list(tmp_path.glob(".rr.fits.*"))
    (tmp_path / "empty").mkdir()
    bad = tmp_path / "badcfg.yaml"
    bad.write_text(f"instrument: tiny\nredshift: {{templates: {tmp_path / 'empty'}}}\n")
    res = _ff("redrock", "--config", str(bad), "-i", str(tmp / "coadd-0-1234-thru20250301.fits"), "-o", str(out))
    assert res.returncode == 1 and "no redrock template" in res.stderr and not out.exists()


def test_redrock_under_mpi_gives_the_same_redshifts(redshifts, tmp_path):
    """`mpiexec -n 2 fiberflow redrock`: targets spread over two ranks, rank 0 writes, the
    redshifts are those of the single-process run."""
    import shutil

    import fitsio

    bin_ = os.path.dirname(sys.executable)
    mpiexec = shutil.which("mpiexec", path=bin_) or shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("no mpiexec: install the extra fiberflow[mpi] (mpi4py + mpich)")
    out = tmp_path / "redrock-mpi.fits"
    res = subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "fiberflow.cli.main", "redrock", "--config",
                          str(redshifts["cfg"]), "-i", str(redshifts["tmp"] / "coadd-0-1234-thru20250301.fits"),
                          "-o", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert fitsio.read_header(str(out), 0)["FFOPT000"] == "mpi=2"
    one = fitsio.read(str(redshifts["out"]), "REDSHIFTS")
    two = fitsio.read(str(out), "REDSHIFTS")
    assert list(one["TARGETID"]) == list(two["TARGETID"])
    for col in ("Z", "ZWARN", "SPECTYPE", "CHI2"):
        assert list(one[col]) == list(two[col]), col


def test_redrock_in_slices_writes_what_one_call_writes(redshifts, tmp_path):
    """A coadd of more than redshift.max_targets targets is fitted in slices, one after the other
    (redrock's memory grows with the targets of a call); the merged file has the rows, units and
    keywords of the one-call file, and the merged details file reads with redrock's own reader."""
    import fitsio
    import numpy as np
    from redrock.results import read_zscan

    from fiberflow.io.zcatalog import read_redrock

    out, det = tmp_path / "redrock-sliced.fits", tmp_path / "rrdetails-sliced.h5"
    res = _ff("redrock", "--config", str(redshifts["cfg"]), "-i", str(redshifts["tmp"] / "coadd-0-1234-thru20250301.fits"),
              "-o", str(out), "--details", str(det), "--max-targets", "6")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "(slice 3 of 3)" in res.stdout and not list(tmp_path.glob(".rrslices-*"))
    one, sliced = read_redrock(redshifts["out"]), read_redrock(out)
    for name in ("redshifts", "fibermap", "exp_fibermap", "tsnr2"):
        a, b = getattr(one, name), getattr(sliced, name)
        assert a.dtype.names == b.dtype.names and len(a) == len(b), name
        for col in a.dtype.names:
            if a[col].dtype.kind == "f":
                np.testing.assert_allclose(b[col], a[col], rtol=1e-6, atol=1e-12, err_msg=f"{name} {col}")
            else:
                assert np.array_equal(a[col], b[col]), f"{name} {col}"
    h1, h2 = fitsio.read_header(str(redshifts["out"]), "REDSHIFTS"), fitsio.read_header(str(out), "REDSHIFTS")
    assert {k: h1[k] for k in h1.keys() if k.startswith(("TTYPE", "TUNIT"))} == \
        {k: h2[k] for k in h2.keys() if k.startswith(("TTYPE", "TUNIT"))}
    assert sliced.header["RRVER"] == one.header["RRVER"] and sliced.header["SPGRP"] == one.header["SPGRP"]
    zscan, zfit = read_zscan(str(det))
    tids = [int(t) for t in sliced.redshifts["TARGETID"]]
    assert sorted(zscan) == sorted(tids) and sorted(set(int(t) for t in zfit["targetid"])) == sorted(tids)
    best = zfit[zfit["znum"] == 0]
    zbest = {int(t): z for t, z in zip(best["targetid"], best["z"])}
    np.testing.assert_allclose([zbest[t] for t in tids], sliced.redshifts["Z"], rtol=1e-6)
