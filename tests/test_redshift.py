"""`fiberflow redrock`: DESI's redrock (pinned, from PyPI) with the templates shipped in fiberflow,
on a coadd of simulated targets whose redshifts are known (the simulator's LRG, ELG, QSO and
standard stars on the instrument's grids, through a Gaussian resolution, two exposures with
noise), made with fiberflow's own coadd; and its refusals of bad input.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from fiberflow.instrument import load_instrument
from fiberflow.io.frame import FLUX_UNITS
from fiberflow.io.spectra import Spectra
from fiberflow.models import resolution
from fiberflow.steps import coadd, regroup

C_KMS = 299792.458


def _ff(*args):
    return subprocess.run([sys.executable, "-m", "fiberflow.cli.main", *args], capture_output=True, text=True)


def simulated_coadd(nfiber=16, sigma=0.05, seed=3):
    """Spectra (2 exposures) of 16 fibers of simulated targets (2 SKY, 3 STD, 4 LRG, 5 ELG, 2 QSO) and
    their truth (class, z)."""
    from fiberflow.sim import targets

    inst = load_instrument("tiny")
    rng = np.random.default_rng(seed)
    tile = targets.Tile(1234, 150.0, 2.0, "dark", "main")
    fm0, flux, info = targets.tile_targets(seed, tile, 0, nfiber)
    grids = {arm: inst.wavegrid(arm) for arm in inst.arms}
    rows, fl, iv, res = [], {b: [] for b in grids}, {b: [] for b in grids}, {b: [] for b in grids}
    for e in range(2):
        rows.append(regroup.exposure_fibermap(fm0, {"NIGHT": 20250301, "EXPID": 500 + e, "MJD-OBS": 60700.0 + e,
                                                   "TILEID": 1234, "EXPTIME": 1000.0}))
        for b, w in grids.items():
            diags = resolution.gaussian_diags(np.full(w.size, 1.0), 11)
            fine = resolution.fine_grid(w)  # the true flux averaged over each bin, then through R
            true = np.array([resolution.bin_average(w, fine, np.interp(fine, targets.MODEL_WAVE, f))
                             for f in flux]) * 1e17
            rows_ = np.broadcast_to(resolution.diags_to_rows(diags[None])[0], (nfiber, w.size, diags.shape[0]))
            seen = resolution.apply_rows_each(rows_, true)
            fl[b].append(seen + rng.normal(0, sigma, seen.shape))
            iv[b].append(np.full(seen.shape, 1 / sigma**2))
            res[b].append(np.broadcast_to(diags, (nfiber,) + diags.shape))
    fm = np.concatenate(rows)
    cat = {b: np.concatenate(v).astype("f4") for b, v in fl.items()}
    sp = Spectra(list(grids), grids, cat, {b: np.concatenate(v).astype("f4") for b, v in iv.items()},
                 {b: np.zeros(cat[b].shape, "i4") for b in grids},
                 {b: np.concatenate(v).astype("f4") for b, v in res.items()}, fm, None, None,
                 {"TILEID": 1234, "PETAL": 0, "SPGRP": "cumulative", "SPGRPVAL": 20250301}, FLUX_UNITS)
    return sp, fm0, info


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
