"""Template signal-to-noise (TSNR2) and EFFTIME: the ensembles, the per-fiber sums, coadding."""

import numpy as np
import pytest

from fiberflow.io.tsnr import read_ensemble
from fiberflow.models import tsnr
from fiberflow.models.scores import coadd_tsnr2, with_columns
from fiberflow.steps.fluxcalib import tsnr_scores


def test_shipped_ensembles_are_what_the_builder_makes():
    from fiberflow.cli.tsnr import SPECS, WAVE, build

    ens = read_ensemble()
    assert ens.names == list(SPECS)
    np.testing.assert_allclose(ens.wave, WAVE)
    dflux2, tab = build(["LRG", "ELG"])
    for k, name in enumerate(("LRG", "ELG")):
        np.testing.assert_allclose(ens.dflux2[ens.names.index(name)], dflux2[k], rtol=1e-5, atol=1e-12)
        assert tab["ZMIN"][k] == pytest.approx(SPECS[name]["zmin"])
    # every tracer is calibrated (benchmarks/calibrate_tsnr.py --write)
    assert all(ens.snr2time(t) > 0 for t in ens.names)


def test_ensembles_hold_the_features_a_fitter_uses():
    ens = read_ensemble()
    w = ens.wave

    def mean(name, lo, hi):
        sel = (w >= lo) & (w < hi)
        return ens.dflux2[ens.names.index(name)][sel].mean()

    # ELG: [OII] at z 0.6-1.6 lands in 5963-9690 A, nothing of the lines below 4800 A
    assert mean("ELG", 6000, 9600) > 1e4 * mean("ELG", 3700, 4700)
    # LRG features (4000 A break, Ca H&K, G band) at z 0.4-1.0 redward of 5000 A, weaker in the blue
    assert mean("LRG", 5600, 9000) > 2 * mean("LRG", 3700, 4800)
    # the delta flux has no continuum: a flat spectrum gives nothing
    flat = np.ones((1, w.size))
    assert np.abs(tsnr.delta_flux(w, flat)).max() < 1e-12


def _camera(nspec=20, nwave=400, rn_var=4.0, sky=30.0, seed=1):
    """A synthetic camera: calibration, sframe ivar of background + source, sky fibers."""
    rng = np.random.default_rng(seed)
    wave = np.linspace(6000, 6320, nwave)
    calib = np.full((nspec, nwave), 2.0) * (1 + 0.1 * np.sin(wave / 50))[None, :]
    src = np.zeros((nspec, nwave))
    src[5] = 500.0  # a bright star: its own photon noise dominates its ivar
    src[6] = 0.5  # a faint galaxy
    var = rn_var + sky + src
    ivar = 1 / var * (1 + 0.01 * rng.standard_normal((nspec, nwave)))
    sky_fibers = np.zeros(nspec, bool)
    sky_fibers[[0, 9, 18]] = True
    return wave, calib, ivar, sky_fibers


def test_tsnr2_is_the_depth_not_the_targets_brightness():
    wave, calib, ivar, sky = _camera()
    good = np.ones_like(ivar, bool)
    dflux2 = np.full(wave.size, 0.01)
    var_bg = tsnr.background_variance(ivar, good, sky)
    t = tsnr.tsnr2(dflux2, calib, good, var_bg)
    expect = np.sum(dflux2 * calib[0] ** 2 / 34.0)
    np.testing.assert_allclose(t, expect, rtol=0.01)  # star, galaxy and sky fibers alike
    # masked bins (a bad column, a cosmic) contribute nothing
    good[7, 100:200] = False
    t2 = tsnr.tsnr2(dflux2, calib, good, tsnr.background_variance(ivar, good, sky))
    lost = np.sum(dflux2[100:200] * calib[7, 100:200] ** 2 / 34.0)
    assert t2[7] == pytest.approx(t[7] - lost, rel=0.01)
    # without sky fibers each fiber's own variance is the noise model (the star loses depth)
    own = tsnr.tsnr2(dflux2, calib, good, tsnr.background_variance(ivar, good, np.zeros(len(sky), bool)))
    assert own[5] < 0.1 * own[6]


def test_tsnr2_scales_with_exposure_time_and_sky():
    """Sky-limited: calib ~ t, background variance ~ t (electrons): TSNR2 ~ t / sky."""
    dflux2 = np.full(400, 0.01)
    ref = None
    for t_exp, sky_level in ((1.0, 1.0), (2.0, 1.0), (1.0, 2.0)):
        wave, calib, ivar, sky = _camera(rn_var=0.0, sky=300.0 * t_exp * sky_level)
        calib = calib * t_exp
        good = np.ones_like(ivar, bool)
        val = np.median(tsnr.tsnr2(dflux2, calib, good, tsnr.background_variance(ivar, good, sky)))
        ref = ref or val
        assert val / ref == pytest.approx(t_exp / sky_level, rel=0.02)


def test_cframe_scores_name_every_tracer_per_band():
    wave, calib, ivar, sky = _camera()
    fm = np.zeros(len(sky), dtype=[("OBJTYPE", "U3"), ("FIBERSTATUS", "i4")])
    fm["OBJTYPE"] = np.where(sky, "SKY", "TGT")
    cols = tsnr_scores(wave, calib, ivar, ivar > 0, fm, "r", read_ensemble())
    assert sorted(cols) == ["TSNR2_BGS_R", "TSNR2_ELG_R", "TSNR2_LRG_R", "TSNR2_QSO_R"]
    assert all(v.dtype == np.float32 and v.shape == (len(sky),) and np.all(v > 0) for v in cols.values())
    # a sky fiber flagged bad does not enter the noise model
    fm["FIBERSTATUS"][0] = 1 << 17  # BADTRACE
    assert tsnr_scores(wave, calib, ivar, ivar > 0, fm, "r", read_ensemble())["TSNR2_LRG_R"][3] == pytest.approx(
        cols["TSNR2_LRG_R"][3], rel=0.02)


def test_coadd_sums_exposures_then_bands():
    scores = np.zeros(4, dtype=[("TARGETID", "i8"), ("TSNR2_LRG_B", "f4"), ("TSNR2_LRG_R", "f4"),
                                ("TSNR2_ELG_R", "f4"), ("MEDIAN_CALIB_SNR_R", "f4")])
    scores["TARGETID"] = [7, 8, 7, 7]
    scores["TSNR2_LRG_B"] = [1, 10, 2, 3]
    scores["TSNR2_LRG_R"] = [4, 40, 5, 6]
    scores["TSNR2_ELG_R"] = [0.5, 5, 0.5, 0.5]
    out = coadd_tsnr2(scores, [np.array([0, 2, 3]), np.array([1])])
    np.testing.assert_allclose(out["TSNR2_LRG_B"], [6, 10])
    np.testing.assert_allclose(out["TSNR2_LRG_R"], [15, 40])
    np.testing.assert_allclose(out["TSNR2_LRG"], [21, 50])
    np.testing.assert_allclose(out["TSNR2_ELG"], [1.5, 5])
    assert "MEDIAN_CALIB_SNR_R" not in out and "TSNR2_MEDIAN" not in out
    assert coadd_tsnr2(None, [np.array([0])]) == {}
    tab = with_columns(scores[:2][["TARGETID"]].copy(), {"TSNR2_LRG": np.array([1.0, 2.0], "f4")})
    assert tab.dtype.names == ("TARGETID", "TSNR2_LRG")


def test_efftime_is_snr2time_times_tsnr2():
    ens = read_ensemble()
    assert tsnr.efftime(np.array([0.0, 2.0]), ens.snr2time("LRG"))[1] == pytest.approx(2 * ens.snr2time("LRG"))
