"""Tile QA functions: FIBERQA from redrock rows, n(z) excess against a reference, petal success."""

import numpy as np
import pytest

from fiberflow.bitmasks import desi_target, fibermask
from fiberflow.errors import ConfigError
from fiberflow.qa import tileqa as T


def _redrock_rows(n, petal, z, zwarn=0, tracer="LRG", tsnr2=100.0, seed=0):
    rng = np.random.default_rng(seed)
    red = np.zeros(n, [("TARGETID", "i8"), ("Z", "f8"), ("ZERR", "f8"), ("ZWARN", "i8"), ("DELTACHI2", "f8"),
                       ("SPECTYPE", "U6")])
    red["TARGETID"] = 1000 * petal + np.arange(n)
    red["Z"], red["ZWARN"], red["DELTACHI2"] = z, zwarn, 100.0
    red["SPECTYPE"] = "QSO" if tracer == "QSO" else "GALAXY"
    fm = np.zeros(n, [("TARGETID", "i8"), ("PETAL_LOC", "i2"), ("FIBER", "i4"), ("TARGET_RA", "f8"),
                      ("TARGET_DEC", "f8"), ("MEAN_FIBER_X", "f4"), ("MEAN_FIBER_Y", "f4"), ("MEAN_DELTA_X", "f4"),
                      ("MEAN_DELTA_Y", "f4"), ("DESI_TARGET", "i8"), ("OBJTYPE", "U3"), ("COADD_FIBERSTATUS", "i4")])
    fm["TARGETID"], fm["PETAL_LOC"], fm["FIBER"] = red["TARGETID"], petal, 500 * petal + np.arange(n)
    fm["MEAN_FIBER_X"], fm["MEAN_FIBER_Y"] = rng.uniform(-400, 400, n), rng.uniform(-400, 400, n)
    fm["DESI_TARGET"], fm["OBJTYPE"] = desi_target.mask(tracer), "TGT"
    ts = np.zeros(n, [("TARGETID", "i8"), ("TSNR2_LRG", "f4"), ("TSNR2_BGS", "f4")])
    ts["TARGETID"], ts["TSNR2_LRG"] = red["TARGETID"], tsnr2
    return red, fm, ts


def _fqa(n, petal, z, **kw):
    red, fm, ts = _redrock_rows(n, petal, z, **{k: v for k, v in kw.items() if k in ("zwarn", "tracer", "tsnr2", "seed")})
    return T.fiber_qa(red, fm, ts, kw.get("snr2time", 10.0), "LRG", 1000.0)


def test_fiberqa_depth_and_validity():
    fqa = _fqa(4, 0, 0.7, tsnr2=np.array([100.0, 50.0, 76.0, 77.0]))
    np.testing.assert_allclose(fqa["EFFTIME_SPEC"], [1000, 500, 760, 770])
    low = (fqa["QAFIBERSTATUS"] & fibermask.mask("LOWEFFTIME")) != 0
    assert low.tolist() == [False, True, True, False]  # 0.85 x 0.9 x 1000 = 765 s
    assert T.valid(fqa).tolist() == [True, False, False, True]
    assert (fqa["TRACER"] == "LRG").all() and (fqa["GOODZ"] == 1).all()
    # without a calibration (or TSNR2) EFFTIME is unknown, not low
    unknown = _fqa(3, 0, 0.7, snr2time=0.0)
    assert np.isnan(unknown["EFFTIME_SPEC"]).all() and T.valid(unknown).all()


def _reference():
    rng = np.random.default_rng(5)
    parts = [_fqa(400, 0, rng.uniform(0.4, 1.0, 400), tracer="LRG", seed=1),
             _fqa(400, 1, rng.uniform(0.6, 3.0, 400), tracer="QSO", seed=2),
             _fqa(100, 2, 0.8, tracer="QSO", zwarn=4, seed=3)]
    return T.reference_tables(np.concatenate(parts))


def test_reference_tables():
    nz, success = _reference()
    frac = {str(r["TRACER"]).strip(): r for r in success}
    assert frac["LRG"]["SUCCESS"] == 1.0 and frac["QSO"]["NVALID"] == 500 and frac["QSO"]["SUCCESS"] == 0.8
    lrg = nz[nz["TRACER"] == "LRG"]
    assert lrg["FRAC"].sum() == pytest.approx(1.0) and lrg["FRAC"][lrg["ZLO"] >= 1.0].sum() == 0


def test_nz_excess_finds_the_false_high_z_quasars():
    nz, success = _reference()
    rng = np.random.default_rng(9)
    clean = np.concatenate([_fqa(40, 0, rng.uniform(0.4, 1.0, 40), tracer="LRG"),
                            _fqa(30, 1, rng.uniform(0.6, 3.0, 30), tracer="QSO")])
    ex = T.nz_excess(clean, nz, success)
    assert max(v["SIGMA"] for v in ex.values()) < 3.5
    # the red-LED walkthrough: a handful of QSOs at z ~ 4.3 where the reference has none
    bad = np.concatenate([clean, _fqa(5, 2, 4.33, tracer="QSO")])
    ex = T.nz_excess(bad, nz, success)
    assert ex["QSO"]["SIGMA"] > 5 and ex["QSO"]["ZLO"] == pytest.approx(4.3) and ex["QSO"]["N"] == 5
    assert ex["LRG"]["SIGMA"] < 3.5
    st = T.settings({})["metrics"]["NZ_EXCESS"]
    assert T.score_tile({"NZ_EXCESS": ex["QSO"]["SIGMA"]}, [], {"NZ_EXCESS": st})["STATUS"] == "ALARM"


def test_petal_success_deficit_and_scores():
    nz, success = _reference()
    rng = np.random.default_rng(2)
    good = _fqa(40, 0, rng.uniform(0.4, 1.0, 40), tracer="LRG")
    zw = np.where(np.arange(40) < 20, 0, 4)  # half the LRGs of petal 1 fail
    bad = _fqa(40, 1, rng.uniform(0.4, 1.0, 40), tracer="LRG", zwarn=zw)
    fqa = np.concatenate([good, bad])
    petals = T.petal_qa(fqa, success)
    assert petals["NGOODZ"].tolist() == [40, 20] and petals["NEXPECT"].tolist() == [40.0, 40.0]
    assert petals["SUCCESS_DEFICIT"][0] == 0 and petals["SUCCESS_DEFICIT"][1] < -5
    m = T.tile_metrics(fqa, petals, nz, success, 900.0, 1000.0)
    assert m["SUCCESS_DEFICIT_PETAL"] == 1 and m["EFFTIME_FRAC"] == 0.9 and m["VALID_FRAC"] == 1.0
    st = T.settings({})
    scored = T.score_tile(m, petals, st["metrics"])
    assert scored["SCORES"]["SUCCESS_DEFICIT"]["STATUS"] == "ALARM" and scored["STATUS"] == "ALARM"
    assert petals["STATUS"].tolist() == ["NORMAL", "ALARM"]
    assert scored["SCORES"]["NZ_EXCESS"]["STATUS"] == "NORMAL"


def test_sky_fibers_with_flux_left_in_their_coadd_flag_the_petal():
    """A sky fiber whose coadd carries a glow over ~200 A: SKY_RESID_SIG of that fiber, the
    petal's NSKY_RESID, SKY_RESID_FRAC at ALARM naming petal, fiber and wavelength; sky fibers
    with noise only stay below the threshold (and targets are not sky fibers)."""
    nz, success = _reference()
    rng = np.random.default_rng(4)
    wave = np.linspace(5800, 7600, 2250)
    parts = []
    for petal in (0, 1):
        fqa = _fqa(40, petal, rng.uniform(0.4, 1.0, 40), tracer="LRG")
        objtype = np.where(np.arange(40) % 10 == 0, "SKY", "TGT")
        fqa["OBJTYPE"] = objtype
        flux = rng.normal(0.0, 1.0, (40, wave.size))
        flux[objtype == "TGT"] += 3.0
        if petal == 1:
            flux[20] += 1.5 * np.exp(-0.5 * ((wave - 6600.0) / 60.0) ** 2)
        bands = {"r": (wave, flux, np.ones_like(flux), np.zeros(flux.shape, np.int32))}
        fqa["SKY_RESID_SIG"], fqa["SKY_RESID_WAVE"] = T.sky_residuals(objtype, bands)
        assert np.isnan(fqa["SKY_RESID_SIG"][objtype == "TGT"]).all()
        parts.append(fqa)
    fqa = np.concatenate(parts)
    petals = T.petal_qa(fqa, success)
    assert petals["NSKY"].tolist() == [4, 4] and petals["NSKY_RESID"].tolist() == [0, 1]
    sky = np.char.strip(fqa["OBJTYPE"].astype(str)) == "SKY"
    assert np.sort(np.abs(fqa["SKY_RESID_SIG"][sky]))[-2] < 5
    m = T.tile_metrics(fqa, petals, nz, success, 1000.0, 1000.0)
    assert m["SKY_RESID_FRAC"] == 0.25 and m["SKY_RESID_PETAL"] == 1 and m["SKY_RESID_FIBER"] == 520
    assert m["SKY_RESID_SIG"] > 10 and m["SKY_RESID_WAVE"] == pytest.approx(6600, abs=60)
    scored = T.score_tile(m, petals, T.settings({})["metrics"])
    assert scored["SCORES"]["SKY_RESID_FRAC"]["STATUS"] == "ALARM" and scored["STATUS"] == "ALARM"
    assert petals["STATUS"].tolist() == ["NORMAL", "ALARM"]
    # without coadds (no sky fiber measured) the metric is absent, not zero
    fqa["SKY_RESID_SIG"] = np.nan
    petals = T.petal_qa(fqa, success)
    assert "SKY_RESID_FRAC" not in T.tile_metrics(fqa, petals, nz, success, 1000.0, 1000.0)


def test_settings_refuse_unknown_metrics_and_bad_ranges():
    assert T.settings({"tile_qa": {"dchi2_min": 9}})["dchi2_min"] == 9.0
    with pytest.raises(ConfigError, match="unknown tile metric"):
        T.settings({"tile_qa": {"metrics": {"NZ_EXCESSS": {"normal": [None, 3]}}}})
    with pytest.raises(ConfigError, match="must contain the normal range"):
        T.settings({"tile_qa": {"metrics": {"NZ_EXCESS": {"normal": [None, 5], "warning": [None, 4]}}}})
    with pytest.raises(ConfigError, match="unknown key"):
        T.settings({"tile_qa": {"dchi2": 9}})


def test_history_reference_uses_only_normal_tiles_of_other_tiles_and_earlier_nights():
    from fiberflow.io.tileqa import TileQA

    rng = np.random.default_rng(8)

    def tile(tileid, night, status, z):
        return TileQA(_fqa(len(z), 0, z, tracer="LRG"), np.zeros(0, T.PETALQA_DTYPE), np.zeros(0),
                      {"TILEID": tileid, "LASTNIGHT": night, "QASTATUS": status})

    low, high = rng.uniform(0.4, 0.5, 30), rng.uniform(0.9, 1.0, 30)
    tiles = [tile(1, 20250101, "NORMAL", low), tile(2, 20250102, "NORMAL", low),
             tile(3, 20250102, "ALARM", high),  # a bad tile never enters the reference
             tile(9, 20250102, "NORMAL", high),  # the tile itself neither
             tile(4, 20250103, "NORMAL", high)]  # nor a later night
    assert T.history_reference(tiles, 9, 20250103, 3) is None  # only two good tiles
    nz, success, ntile = T.history_reference(tiles, 9, 20250103, 2)
    assert ntile == 2
    lrg = nz[np.char.strip(nz["TRACER"].astype(str)) == "LRG"]
    assert lrg["N"].sum() == 60 and lrg["N"][lrg["ZLO"] == np.float32(0.4)][0] == 60
    assert success[np.char.strip(success["TRACER"].astype(str)) == "LRG"]["SUCCESS"][0] == 1.0
    # an excess at z 0.9-1.0 against that history
    ex = T.nz_excess(_fqa(30, 0, high, tracer="LRG"), nz, success)
    assert ex["LRG"]["ZLO"] == pytest.approx(0.9) and ex["LRG"]["SIGMA"] > 5
    st = T.settings({"tile_qa": {"reference": "history", "history_min_tiles": 3}})
    assert st["reference"] == "history" and st["history_min_tiles"] == 3 and st["history_tiles"] == 200
    with pytest.raises(ConfigError, match="history_min_tiles"):
        T.settings({"tile_qa": {"history_min_tiles": 0}})
