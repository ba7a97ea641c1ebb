"""HEALPix regrouping and coadds on synthetic spectra with known truth.

Spectra are made the way the pipeline sees them: a known deconvolved spectrum seen through a
per-exposure Gaussian resolution matrix, plus Gaussian noise of known variance.
"""

import subprocess
import sys

import _factories as fac
import numpy as np
import pytest

from fiberflow.bitmasks import fibermask, specmask
from fiberflow.io.frame import FLUX_UNITS
from fiberflow.io.spectra import read_spectra
from fiberflow.models import resolution
from fiberflow.steps import coadd, regroup

GRIDS = fac.HPX_GRIDS
make_spectra = fac.healpix_spectra


# --------------------------------------------------------------------------- healpix mapping
def test_healpix_mapping_and_petal_pixels():
    fm = fac.fibermap(40, rng=np.random.default_rng(3))
    fm["PETAL_LOC"][20:] = 4
    fm["TARGET_RA"][5] = np.nan
    pix = regroup.healpix_of(fm["TARGET_RA"], fm["TARGET_DEC"])
    assert pix[5] == -1 and (np.delete(pix, 5) >= 0).all()
    import healpy

    theta, phi = healpy.pix2ang(64, pix[0], nest=True)
    assert abs(np.degrees(phi) - fm["TARGET_RA"][0]) < 1.0 and abs(90 - np.degrees(theta) - fm["TARGET_DEC"][0]) < 1.0
    pp = regroup.petal_pixels(fm)
    assert sorted(pp) == [0, 4]
    assert set(pp[0]) == set(np.unique(pix[:20][pix[:20] >= 0]))
    assert regroup.in_pixel(fm, pp[4][0]).sum() == (pix == pp[4][0]).sum()


def test_exposure_rows_fill_missing_cameras_and_or_fiberstatus():
    grids = {"b": GRIDS["b"][:40], "r": 5760.0 + 0.8 * np.arange(40)}
    r = fac.frame(nspec=6, nwave=40, units=FLUX_UNITS, camera="r0")
    r.fibermap["TARGET_RA"] = 150.0
    r.fibermap["TARGET_DEC"] = 2.0
    r.fibermap["TARGET_DEC"][0] = -30.0  # elsewhere on the sky
    r.fibermap["FIBERSTATUS"][2] = fibermask.mask("BADAMPR")
    pix = int(regroup.healpix_of(150.0, 2.0)[0])
    out = regroup.exposure_rows({"r": r}, pix, grids, {"b": 11, "r": 11})
    fm = out["fibermap"]
    assert len(fm) == 5 and (fm["NIGHT"] == 20251205).all() and (fm["EXPID"] == 101).all() and (fm["TILEID"] == 1000).all()
    assert fm["FIBERSTATUS"][1] == fibermask.mask("BADAMPR")
    np.testing.assert_array_equal(out["r"]["flux"], r.flux[1:])
    assert (out["b"]["ivar"] == 0).all() and (out["b"]["mask"] == specmask.mask("NODATA")).all()
    assert out["b"]["resolution"].shape == (5, 11, 40)
    assert regroup.exposure_rows({"r": r}, pix + 1, grids, {"b": 11, "r": 11}) is None


# --------------------------------------------------------------------------- cosmic rays
def test_cosmic_mask_matches_loop_reference():
    rng = np.random.default_rng(4)
    flux = rng.normal(10, 1, (4, 60))
    ivar = np.ones((4, 60))
    ivar[2, 10:15] = 0
    flux[1, 20] += 30
    flux[1, 21] += 4
    flux[3, 40] += 12
    flux[0, 40] += 15
    for nsig in (4.0, 2.5):
        np.testing.assert_array_equal(coadd.cosmic_mask(flux, ivar, nsig), coadd.cosmic_mask_loop(flux, ivar, nsig))


def test_cosmic_mask_finds_cosmics_spares_clean_data_and_bright_lines():
    rng = np.random.default_rng(8)
    nexp, nw = 3, 3000
    false = 0
    for _ in range(20):
        f = rng.normal(5, 1, (nexp, nw))
        false += coadd.cosmic_mask(f, np.ones((nexp, nw))).sum()
    assert false / (20 * nexp * nw) < 2e-4
    # a cosmic in one of two exposures is found (positive outliers only)
    f = rng.normal(5, 1, (2, nw))
    f[1, 1000:1002] += [25, 9]
    rej = coadd.cosmic_mask(f, np.ones((2, nw)))
    assert rej[1, 1000] and rej[1, 1001] and not rej[0].any() and rej.sum() == 2
    # a bright line whose exposures differ by 4 % in scale (aperture losses) is not a cosmic
    wave = np.arange(nw, dtype=float)
    line = 3000.0 * np.exp(-0.5 * ((wave - 1500) / 2.0) ** 2)
    f = np.array([s * (5 + line) for s in (0.98, 1.0, 1.02)]) + rng.normal(0, 1, (3, nw)) * np.sqrt(1 + line / 10)
    iv = 1 / (1 + line / 10) * np.ones((3, 1))
    assert not coadd.cosmic_mask(f, iv)[:, 1490:1510].any()


# --------------------------------------------------------------------------- coadds
def test_coadd_is_exact_for_noise_free_spectra():
    """coadd flux = R_coadd . truth exactly, every coadded resolution row sums to 1."""
    sp, truth = make_spectra(ntarget=3, nexp=3, sigma_noise=1.0)
    for b in sp.bands:  # noise-free flux
        ntar = 3
        for k in range(sp.nspec):
            sp.flux[b][k] = resolution.apply(sp.resolution[b][k].astype(float), truth[b][k % ntar])
    out = coadd.coadd_spectra(sp, coadd.CoaddOptions(cosmics_nsig=0))
    for b in sp.bands:
        for i in range(3):
            model = resolution.apply(out.resolution[b][i].astype(float), truth[b][i])
            inner = slice(6, -6)
            np.testing.assert_allclose(out.flux[b][i][inner], model[inner], rtol=2e-5, atol=1e-4)
            np.testing.assert_allclose(resolution.row_sums(out.resolution[b][i].astype(float))[inner], 1.0, atol=1e-5)


def test_coadd_pulls_against_truth_and_sqrt_n_growth():
    rng = np.random.default_rng(21)
    sn = {}
    pulls = []
    for nexp in (1, 4):
        sp, truth = make_spectra(ntarget=40, nexp=nexp, sigma_noise=1.0, rng=rng)
        out = coadd.coadd_spectra(sp, coadd.CoaddOptions())
        assert out.nspec == 40 and (out.fibermap["COADD_NUMEXP"] == nexp).all()
        ratios = []
        for b in sp.bands:
            for i in range(40):
                model = resolution.apply(out.resolution[b][i].astype(float), truth[b][i])
                iv = out.ivar[b][i].astype(float)
                pulls.append(((out.flux[b][i] - model) * np.sqrt(iv))[6:-6])
                ratios.append(np.median(out.flux[b][i] * np.sqrt(iv)))
        sn[nexp] = np.median(ratios)
        if nexp > 1:
            p = np.concatenate(pulls[-120:])
            assert abs(p.mean()) < 0.03 and abs(p.std() - 1) < 0.05, (p.mean(), p.std())
    assert abs(sn[4] / sn[1] / 2.0 - 1) < 0.1, sn


def test_coadd_fiberstatus_rules_and_fibermaps():
    sp, _ = make_spectra(ntarget=5, nexp=3)
    fs = sp.fibermap["FIBERSTATUS"]
    fs[5 + 0] = fibermask.mask("BROKENFIBER")   # target 0, exposure 1: out everywhere
    fs[10 + 1] = fibermask.mask("BADAMPB")      # target 1, exposure 2: out of b only
    fs[2] = fibermask.mask("UNASSIGNED")        # still coadds (DESI's rule)
    sp.flux["b"][11] += 1e4                     # would show if used
    sp.flux["r"][5] += 1e4
    sp.flux["r"][11] += 1e4                     # BADAMPB: r of that exposure still counts
    out = coadd.coadd_spectra(sp, coadd.CoaddOptions(cosmics_nsig=0))
    tf, ex = out.fibermap, out.exp_fibermap
    assert list(tf["TARGETID"]) == list(1000 + np.arange(5))
    assert list(tf["COADD_NUMEXP"]) == [2, 3, 3, 3, 3]
    assert tf["COADD_EXPTIME"][0] == 1800.0 and tf["COADD_NUMNIGHT"][1] == 2 and tf["COADD_NUMTILE"][1] == 1
    assert tf["MIN_MJD"][1] == 60000.0 and tf["MAX_MJD"][1] == 60002.0
    # AND over the exposures used: one UNASSIGNED exposure does not mark the coadd
    assert tf["COADD_FIBERSTATUS"][2] == 0 and ex["IN_COADD_R"][2] and tf["COADD_FIBERSTATUS"][0] == 0
    assert "NIGHT" not in tf.dtype.names and "FIBER" not in tf.dtype.names and "MEAN_FIBER_X" in tf.dtype.names
    assert len(ex) == 15 and not ex["IN_COADD_B"][11] and ex["IN_COADD_R"][11] and not ex["IN_COADD_R"][5]
    assert out.flux["b"][1].max() < 1e3 and out.flux["r"][0].max() < 1e3 and out.flux["r"][1].max() > 1e3 / 3
    assert "MEDIAN_COADD_SNR_R" in out.scores.dtype.names


def test_coadd_masked_bins_and_merged_bands():
    sp, _ = make_spectra(ntarget=2, nexp=2)
    sp.mask["r"][0, 50] = specmask.mask("COSMIC")
    sp.mask["r"][0, 60] = sp.mask["r"][2, 60] = specmask.mask("BADFIBERFLAT")
    out = coadd.coadd_spectra(sp, coadd.CoaddOptions(cosmics_nsig=0))
    assert out.flux["r"][0, 50] == pytest.approx(sp.flux["r"][2, 50], rel=1e-6) and out.mask["r"][0, 50] == 0
    assert out.mask["r"][0, 60] == specmask.mask("BADFIBERFLAT") and out.ivar["r"][0, 60] > 0
    merged = coadd.coadd_spectra(sp, coadd.CoaddOptions(cosmics_nsig=0, merge_bands=True))
    assert merged.bands == ["brz"] and len(merged.wave["brz"]) == 351 + 299 + 350
    w = merged.wave["brz"]
    i = int(np.flatnonzero(np.isclose(w, GRIDS["r"][10]))[0])  # b/r overlap bin
    ib, ir = int(np.flatnonzero(np.isclose(GRIDS["b"], GRIDS["r"][10]))[0]), 10
    ivb, ivr = out.ivar["b"][1, ib], out.ivar["r"][1, ir]
    assert merged.ivar["brz"][1, i] == pytest.approx(ivb + ivr, rel=1e-5)
    expect = (ivb * out.flux["b"][1, ib] + ivr * out.flux["r"][1, ir]) / (ivb + ivr)
    assert merged.flux["brz"][1, i] == pytest.approx(expect, rel=1e-5)
    rs = resolution.row_sums(merged.resolution["brz"][1].astype(float))
    inner = np.ones(len(w), bool)
    for g in GRIDS.values():  # band edges: extraction rows are truncated there
        for edge in (int(np.argmin(np.abs(w - g[0]))), int(np.argmin(np.abs(w - g[-1]))) + 1):
            inner[max(0, edge - 6):edge + 6] = False
    np.testing.assert_allclose(rs[inner], 1.0, atol=1e-5)


# --------------------------------------------------------------------------- CLI
def _ff(*args):
    return subprocess.run([sys.executable, "-m", "fiberflow.cli.main", *args], capture_output=True, text=True)


def test_spectra_and_coadd_cli_errors(tmp_path):
    from fiberflow.io.fibermap import write_fibermap

    # a sframe (electron units) is not a cframe
    fr = fac.frame(nspec=25, nwave=40)
    bad = tmp_path / "cframe-r0-00000101.fits"
    fr.write(bad)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("instrument: tiny\n")
    res = _ff("spectra", "--config", str(cfg), "--pix", "5", "-o", str(tmp_path / "s.fits"), str(bad))
    assert res.returncode == 1 and str(bad) in res.stderr and not (tmp_path / "s.fits").exists()
    res = _ff("spectra", "--config", str(cfg), "--pix", "5", "-o", str(tmp_path / "s.fits"), str(tmp_path / "frame.fits"))
    assert res.returncode == 1 and "not a cframe" in res.stderr
    # a coadd is not coadded again
    c = tmp_path / "coadd.fits"
    fac.spectra(coadd=True).write(c)
    res = _ff("coadd", "-i", str(c), "-o", str(tmp_path / "c2.fits"))
    assert res.returncode == 1 and "already a coadd" in res.stderr and not (tmp_path / "c2.fits").exists()
    # tilepix from a fibermap; a fibermap without TILEID is refused
    fm = fac.fibermap(30, petal=2)
    write_fibermap(tmp_path / "fibermap-00000101.fits", fm, {"TILEID": 1000, "EXPID": 101})
    out = tmp_path / "tilepix-1000.json"
    res = _ff("tilepix", "--fibermap", str(tmp_path / "fibermap-00000101.fits"), "-o", str(out))
    assert res.returncode == 0, res.stderr
    from fiberflow.workflow import tilepix

    tile, pixmap, nside = tilepix.read_tilepix(out)
    assert tile == 1000 and nside == 64 and pixmap == regroup.petal_pixels(fm)
    write_fibermap(tmp_path / "fm2.fits", fm, {"EXPID": 101})
    res = _ff("tilepix", "--fibermap", str(tmp_path / "fm2.fits"), "-o", str(tmp_path / "t2.json"))
    assert res.returncode == 1 and "TILEID" in res.stderr and not (tmp_path / "t2.json").exists()


def test_spectra_file_roundtrip_keeps_scores(tmp_path):
    sp, _ = make_spectra(ntarget=3, nexp=2)
    out = coadd.coadd_spectra(sp)
    back = read_spectra(out.write(tmp_path / "coadd-main-dark-5261.fits"))
    assert back.nspec == 3 and len(back.exp_fibermap) == 6
    np.testing.assert_array_equal(back.scores["TARGETID"], out.scores["TARGETID"])
    assert back.header["HPXPIXEL"] == 5261


def test_coadd_cli_band_by_band_equals_in_memory_coadd(tmp_path):
    sp, _ = make_spectra(ntarget=4, nexp=3)
    sp.flux["r"][5, 100] += 50.0  # a cosmic in one exposure
    path = sp.write(tmp_path / "spectra-main-dark-5261.fits")
    res = _ff("coadd", "-i", str(path), "-o", str(tmp_path / "c.fits"))
    assert res.returncode == 0, res.stderr
    cli = read_spectra(tmp_path / "c.fits")
    mem = coadd.coadd_spectra(read_spectra(path), coadd.CoaddOptions())
    assert cli.header["NCOSMICR"] == mem.header["NCOSMICR"][0] >= 1
    for b in sp.bands:
        np.testing.assert_array_equal(cli.flux[b], mem.flux[b])
        np.testing.assert_array_equal(cli.resolution[b], mem.resolution[b])
    np.testing.assert_array_equal(cli.exp_fibermap, mem.exp_fibermap)
    memm = coadd.coadd_spectra(read_spectra(path), coadd.CoaddOptions(merge_bands=True))
    # targets' rows are scattered over the file (exposure-major); chunks of one target (3 rows),
    # of two targets (7 rows), and the whole pixel give the in-memory coadd bit for bit
    for max_rows in (2, 7, 2000):
        for merge in (False, True):
            out = tmp_path / f"c{max_rows}{merge}.fits"
            res = _ff("coadd", "-i", str(path), "--max-rows", str(max_rows), "-o", str(out),
                      *(["--merge-bands"] if merge else []))
            assert res.returncode == 0, res.stderr
            nchunk = {2: 4, 7: 2, 2000: 1}[max_rows]
            assert f"in {nchunk} chunk(s)" in res.stdout
            got, want = read_spectra(out), (memm if merge else mem)
            assert got.bands == (["brz"] if merge else sp.bands)
            assert got.header["NCOSMICR"] == want.header["NCOSMICR"][0]
            for b in got.bands:
                for name in ("flux", "ivar", "mask", "resolution"):
                    np.testing.assert_array_equal(getattr(got, name)[b], getattr(want, name)[b], err_msg=name)
            np.testing.assert_array_equal(got.scores, want.scores)
            np.testing.assert_array_equal(got.fibermap["TARGETID"], want.fibermap["TARGETID"])


def test_row_runs_and_target_chunks():
    from fiberflow.io.spectra import row_runs

    assert row_runs([]) == []
    assert row_runs([3, 4, 5, 9, 11, 12]) == [(3, 6), (9, 10), (11, 13)]
    with pytest.raises(ValueError):
        row_runs([2, 2])
    rows = [np.array([0, 5]), np.array([1, 6, 9]), np.array([2]), np.array([3, 4, 7, 8])]
    assert coadd.target_chunks(rows, 5) == [(0, 2), (2, 4)]
    assert coadd.target_chunks(rows, 4) == [(0, 1), (1, 3), (3, 4)]
    assert coadd.target_chunks(rows, 1) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert coadd.target_chunks(rows, 100) == [(0, 4)]
    assert coadd.target_chunks([], 10) == []
