"""QA metrics and scoring on synthetic products with known faults."""

import math
import os

import numpy as np
import pytest

from fiberflow.errors import ConfigError
from fiberflow.qa import metrics as M
from fiberflow.qa import scoring as S
from fiberflow.qa import tables as T


def _ccd(rng, dead=None, noisy=None, rn=3.0, sky=40.0):
    """A preproc-like image: sky light on traces + read noise; a dead amp has no signal and
    almost no noise, a noisy amp 4x the read noise (and its overscan says so)."""
    ny, nx = 400, 200
    x = np.arange(nx)
    prof = sky * (1 + np.cos(2 * np.pi * x / 8.0)) / 2
    img = rng.poisson(np.broadcast_to(prof, (ny, nx))).astype(float)
    hdr = {}
    for amp, (sy, sx) in M.amp_slices((ny, nx)).items():
        r = rn * (4 if amp == noisy else 1)
        img[sy, sx] += r * rng.standard_normal(img[sy, sx].shape)
        if amp == dead:
            img[sy, sx] = 0.5 * rng.standard_normal(img[sy, sx].shape)
        hdr.update({f"OBSRDN{amp}": r, f"OVERSCN{amp}": 2000.0, f"OSTEP{amp}": 0.5})
    hdr.update(CRFRAC=0.001, SATFRAC=0.0)
    return img, np.zeros((ny, nx), np.int16), hdr


def test_preproc_metrics_find_dead_and_noisy_amplifiers():
    rng = np.random.default_rng(1)
    m = M.preproc_metrics(*_ccd(rng))
    assert all(v > 1.0 for v in m["NOISE_RATIO_AMP"].values())
    m = M.preproc_metrics(*_ccd(rng, dead="B", noisy="D"))
    assert m["NOISE_RATIO_AMP"]["B"] < 0.3 < min(m["NOISE_RATIO_AMP"][a] for a in "ACD")
    assert m["READNOISE_AMP"]["D"] == pytest.approx(12.0)
    assert m["LITFRAC_AMP"]["B"] < 0.01 < m["LITFRAC_AMP"]["A"]
    assert m["LITFRAC_REL_AMP"]["B"] < 0.05 and m["LITFRAC_REL_AMP"]["A"] > 0.5


def test_pixel_noise_is_the_read_noise_without_light():
    rng = np.random.default_rng(2)
    img = 2.5 * rng.standard_normal((300, 300))
    assert M.pixel_noise(img, np.ones(img.shape, bool)) == pytest.approx(2.5, rel=0.03)


def _frame(rng, nspec=50, nwave=400, broken=(), skyfib=(0, 10, 20, 30, 40)):
    wave = np.linspace(6000, 6400, nwave)
    sky = 100.0 + 2000.0 * np.exp(-0.5 * ((wave - 6200) / 1.0) ** 2)
    obj = rng.uniform(0, 200, nspec)[:, None] * np.ones(nwave)
    obj[list(skyfib)] = 0
    thr = 1 + 0.02 * rng.standard_normal(nspec)
    thr[list(broken)] = 0.01
    flux = (sky[None, :] + obj) * thr[:, None]
    ivar = np.full(flux.shape, 0.01)
    fm = np.zeros(nspec, dtype=[("FIBER", "i4"), ("OBJTYPE", "U3"), ("FIBERSTATUS", "i4"), ("DESI_TARGET", "i8"),
                                ("FLUX_R", "f4"), ("FIBER_X", "f4"), ("FIBER_Y", "f4")])
    fm["FIBER"] = np.arange(nspec)
    fm["OBJTYPE"] = "TGT"
    fm["OBJTYPE"][list(skyfib)] = "SKY"
    return wave, sky, flux, ivar, fm, thr


def test_frame_metrics_count_broken_fibers():
    rng = np.random.default_rng(3)
    wave, sky, flux, ivar, fm, thr = _frame(rng, broken=(7, 33))
    mask = np.zeros(flux.shape, np.int32)
    m, fib = M.frame_metrics(flux, ivar, mask, np.ones(flux.shape), fm, "SCIENCE")
    assert m["NLOWTHRU"] == 2 and m["LOWTHRU_FIBERS"] == [7, 33]
    assert m["CHI2PIX_MEDIAN"] == 1.0
    wave, sky, flux, ivar, fm, thr = _frame(rng)
    m, _ = M.frame_metrics(flux, ivar, mask, np.ones(flux.shape), fm, "SCIENCE")
    assert m["NLOWTHRU"] == 0


def test_fiberflat_metrics_measure_a_tilted_lamp():
    rng = np.random.default_rng(4)
    nspec, nwave = 50, 300
    thr = 1 + 0.02 * rng.standard_normal(nspec)
    ok = np.ones((nspec, nwave))
    m, _ = M.fiberflat_metrics(thr[:, None] * ok, ok, np.zeros((nspec, nwave), int), {"CHI2DOF": 1.0})
    assert abs(m["GRADIENT"]) < 0.03
    tilt = thr * (1 + 0.10 * np.linspace(-1, 1, nspec))
    m, fib = M.fiberflat_metrics(tilt[:, None] * ok, ok, np.zeros((nspec, nwave), int), {})
    assert m["GRADIENT"] == pytest.approx(0.20, abs=0.03)
    assert m["MAX_RMS"] == pytest.approx(0.0, abs=1e-6)
    assert len(fib["FLAT"]) == nspec


def test_sky_metrics_find_a_contaminated_sky_fiber_and_line_residuals():
    rng = np.random.default_rng(5)
    wave, sky, flux, ivar, fm, thr = _frame(rng, skyfib=(0, 10, 20, 30, 40))
    skym = thr[:, None] * sky[None, :]
    # perfect model: residual = object light + noise; a star in sky fiber 20
    sflux = flux - skym + rng.normal(0, 10, flux.shape)
    sflux[20] += 50.0
    good = np.zeros(flux.shape, int)
    m, fib = M.sky_metrics(wave, sflux, np.full(flux.shape, 0.01), good, skym, fm)
    assert m["NSKY_OUTLIER"] == 1 and m["SKY_OUTLIER_FIBERS"] == [20]
    assert m["SKYLINE_WAVE"] == pytest.approx(6200, abs=2)
    assert np.all(np.abs(np.array(fib["LINERESID"], float)) < 0.03)
    # a sky model 10% low on the line: every fiber, targets included, shows +10% line residual
    sflux2 = sflux + 0.10 * (skym - thr[:, None] * 100.0)
    m2, fib2 = M.sky_metrics(wave, sflux2, np.full(flux.shape, 0.01), good, skym, fm)
    lr = np.array(fib2["LINERESID"], float)
    assert np.all(np.abs(lr - 0.10) < 0.03)
    assert m2["SKYLINE_RESID_MAX"] == pytest.approx(0.10, abs=0.02)


def test_sky_chi2_counts_a_lone_cosmic_ray_as_a_tail_and_a_model_error_in_full():
    """RESID_CHI2DOF says whether the sky model is as good as its variance: unit-Gaussian sky
    fibers give 1; a few unmasked cosmic rays in one fiber (30-200 sigma over 2-3 bins) would
    double a plain mean of chi2 but are lone defects (RESID_TAIL_FRAC); a model error shared
    by the fibers (lines 30% under-subtracted) keeps its full size."""
    rng = np.random.default_rng(11)
    nspec, skyfib = 40, list(range(0, 40, 4))
    wave = np.linspace(5800, 7600, 2000)
    lines = sum(800.0 * np.exp(-0.5 * ((wave - w) / 1.2) ** 2) for w in (6000, 6300, 6800, 7300))
    sky = 100.0 + lines
    sig = np.sqrt(sky)
    skym = np.repeat(sky[None, :], nspec, axis=0)
    ivar = np.repeat(1.0 / sig[None, :] ** 2, nspec, axis=0)
    mask = np.zeros((nspec, wave.size), np.int32)
    fm = np.zeros(nspec, [("FIBER", "i4"), ("OBJTYPE", "U3"), ("FIBERSTATUS", "i4")])
    fm["FIBER"], fm["OBJTYPE"] = np.arange(nspec), "TGT"
    fm["OBJTYPE"][skyfib] = "SKY"
    sflux = rng.normal(0.0, 1.0, (nspec, wave.size)) * sig
    m, _ = M.sky_metrics(wave, sflux, ivar, mask, skym, fm)
    assert m["RESID_CHI2DOF"] == pytest.approx(1.0, abs=0.03) and m["RESID_TAIL_FRAC"] < 1e-4
    hit = sflux.copy()
    for k, col in enumerate(rng.choice(wave.size - 3, 8, replace=False)):
        hit[skyfib[3], col:col + 2 + k % 2] += rng.uniform(30, 200) * sig[col:col + 2 + k % 2]
    plain = np.mean((hit[skyfib] ** 2 * ivar[skyfib]))
    assert plain > 2.0  # what the plain mean said: a red alarm on a clean exposure
    m, _ = M.sky_metrics(wave, hit, ivar, mask, skym, fm)
    assert m["RESID_CHI2DOF"] == pytest.approx(1.0, abs=0.05)
    assert m["RESID_TAIL_FRAC"] == pytest.approx(20 / (len(skyfib) * wave.size), rel=0.2)
    # the model 20% low over 600 A in every sky fiber (2 sigma a bin): chi2 above the warning range, as
    # the plain mean says
    bad = sflux + np.where(np.abs(wave - 6700) < 300, 0.2 * sky, 0.0)[None, :]
    m, _ = M.sky_metrics(wave, bad, ivar, mask, skym, fm)
    full = np.mean(bad[skyfib] ** 2 * ivar[skyfib])
    assert m["RESID_CHI2DOF"] > 2.0 and m["RESID_CHI2DOF"] == pytest.approx(full, rel=0.03)


def test_a_glow_over_a_limited_wavelength_range_in_one_sky_fiber_is_an_outlier():
    """Light entering one sky fiber over ~200 A (the scattered-light walkthrough) hardly moves the
    fiber's whole-band median, but its 100 A windows find it; noise alone never does, even where
    the sky is faint."""
    rng = np.random.default_rng(7)
    nspec, skyfib = 50, (0, 10, 20, 30, 40)
    wave = np.linspace(5800, 7600, 2250)
    sky = 250.0 + 20.0 * np.sin(wave / 50.0)
    sig = np.sqrt(sky)
    skym = np.repeat(sky[None, :], nspec, axis=0)
    sflux = rng.normal(0.0, 1.0, (nspec, wave.size)) * sig
    sflux[[k for k in range(nspec) if k not in skyfib]] += 50.0  # the targets' own light
    ivar = np.repeat(1.0 / sig[None, :] ** 2, nspec, axis=0)
    mask = np.zeros(sflux.shape, np.int32)
    fm = np.zeros(nspec, [("FIBER", "i4"), ("OBJTYPE", "U3"), ("FIBERSTATUS", "i4")])
    fm["FIBER"], fm["OBJTYPE"] = 100 + np.arange(nspec), "TGT"
    fm["OBJTYPE"][list(skyfib)] = "SKY"
    m, _ = M.sky_metrics(wave, sflux, ivar, mask, skym, fm)
    assert m["NSKY_OUTLIER"] == 0 and m["SKY_WINDOW_RESID_MAX"] == 0 and m["SKY_WINDOW_WAVE"] is None
    # a quarter of the sky over a few bins is noise-like: the faint-sky ends do not trip it
    glow = 0.6 * sky * np.exp(-0.5 * ((wave - 6600.0) / 60.0) ** 2)
    sflux[30] += glow
    m, _ = M.sky_metrics(wave, sflux, ivar, mask, skym, fm)
    assert m["MED_RESID_FRAC"] < 0.01  # the band median does not see it
    assert m["NSKY_OUTLIER"] == 1 and m["SKY_OUTLIER_FIBERS"] == [130] and m["SKY_WINDOW_FIBER"] == 130
    assert m["SKY_WINDOW_WAVE"] == pytest.approx(6600, abs=60) and 0.4 < m["SKY_WINDOW_RESID_MAX"] < 0.65
    # the windows of each fiber: its significance and where
    win = M.window_residuals(wave, sflux[list(skyfib)], ivar[list(skyfib)], mask[list(skyfib)])
    assert np.isnan(win["FRAC"]).all() and abs(win["SIG"][3]) > 50 and np.all(np.abs(np.delete(win["SIG"], 3)) < 5)
    assert win["SIG_WAVE"][3] == pytest.approx(6600, abs=60)


def test_zero_point_is_the_magnitude_giving_one_electron_per_second_per_angstrom():
    wave = np.linspace(6000, 7000, 500)
    exptime = 900.0
    # a 20th-magnitude AB source: f_nu = 10**(-0.4 (20 + 48.6)); C chosen so it gives 1 e/s/A
    fnu = 10 ** (-0.4 * (20 + 48.6))
    flam = fnu * M.C_ANGSTROM / wave ** 2
    calib = np.broadcast_to(exptime / (flam / 1e-17), (3, wave.size))
    assert M.zero_point(wave, calib, exptime, "r") == pytest.approx(20.0, abs=1e-3)


def test_fit_snr_mag_recovers_the_relation():
    rng = np.random.default_rng(6)
    mag = rng.uniform(21, 24, 40)
    snr = 10 ** (0.2 - 0.4 * (mag - 23.0)) * (1 + 0.03 * rng.standard_normal(40))
    fit = M.fit_snr_mag(snr, mag, 23.0)
    assert fit["FIDSNR"] == pytest.approx(10 ** 0.2, rel=0.03)
    assert fit["SLOPE"] == pytest.approx(-0.4, abs=0.03)
    assert M.fit_snr_mag(snr[:2], mag[:2], 23.0)["FIDSNR"] is None


def test_efftime_scales_with_throughput_squared_and_inverse_sky():
    assert M.efftime(900, 18.5, 3.0, 18.5, 3.0) == 900
    assert M.efftime(900, 18.5, 6.0, 18.5, 3.0) == pytest.approx(450)
    assert M.efftime(900, 18.5 - 2.5 * math.log10(2), 3.0, 18.5, 3.0) == pytest.approx(225, rel=1e-4)
    assert M.efftime(900, None, 3.0, 18.5, 3.0) is None


THR = {"metrics": {
    "PREPROC": {"NOISE_RATIO_AMP": {"normal": [0.7, None], "warning": [0.5, None]},
                "BIAS_AMP": {"normal": [100, 5000], "dynamic": True}},
    "FIBERFLAT": {"GRADIENT": {"normal": [-0.03, 0.03], "warning": [-0.05, 0.05]}},
    "SKY": {"NSKY_OUTLIER": {"normal": [0, 0]},
            "MED_RESID_FRAC": {"normal": [-0.01, 0.01], "warning": [-0.02, 0.02],
                               "cameras": {"z": {"normal": [-0.03, 0.03], "warning": [-0.05, 0.05]}}}},
    "STDSTARS": {"NSTARS": {"normal": [3, None], "obstypes": ["SCIENCE"]}},
}}


def test_threshold_validation_names_the_problem():
    S.validate_thresholds(THR)
    with pytest.raises(ConfigError, match="unknown step 'SKYY'"):
        S.validate_thresholds({"metrics": {"SKYY": {}}})
    with pytest.raises(ConfigError, match="metrics.SKY.X: needs at least 'normal"):
        S.validate_thresholds({"metrics": {"SKY": {"X": {"warning": [0, 1]}}}})
    with pytest.raises(ConfigError, match="must contain the normal range"):
        S.validate_thresholds({"metrics": {"SKY": {"X": {"normal": [0, 2], "warning": [0, 1]}}}})
    with pytest.raises(ConfigError, match="low 3.0 is above high 1.0"):
        S.validate_thresholds({"metrics": {"SKY": {"X": {"normal": [3, 1]}}}})
    with pytest.raises(ConfigError, match="petal_bits.BADSKY: not a petal-level FIBERSTATUS bit"):
        S.validate_thresholds(dict(THR, petal_bits={"BADSKY": ["SKY"]}))
    with pytest.raises(ConfigError, match="petal_bits.BADPETALSKY: SKY.NOPE has no thresholds"):
        S.validate_thresholds(dict(THR, petal_bits={"BADPETALSKY": ["SKY.NOPE"]}))
    with pytest.raises(ConfigError, match="petal_bits.snr_frac: low 2.0 is above high 1.0"):
        S.validate_thresholds(dict(THR, petal_bits={"snr_frac": [2, 1]}))


def test_scores_per_camera_override_mapping_and_history():
    thr = S.validate_thresholds(THR)
    spec = thr["metrics"]["SKY"]["MED_RESID_FRAC"]
    assert S.score_metric(0.015, spec, "r3")["STATUS"] == "WARNING"
    assert S.score_metric(0.025, spec, "r3")["STATUS"] == "ALARM"
    assert S.score_metric(0.025, spec, "z3")["STATUS"] == "NORMAL"
    sc = S.score_metric({"A": 1.1, "B": 0.2, "C": 0.6}, thr["metrics"]["PREPROC"]["NOISE_RATIO_AMP"], "r0")
    assert sc["STATUS"] == "ALARM" and sc["WORST"] == ["B"] and sc["SCORE"] == 1
    assert S.score_metric(None, spec, "r0")["STATUS"] == "NA"
    bias = thr["metrics"]["PREPROC"]["BIAS_AMP"]
    # no history: static; with history the same value 2000 -> 2100 becomes an alarm
    assert S.score_metric(2100.0, bias, "b0", history=[2000.0] * 3, hist_cfg=thr["history"])["SOURCE"] == "static"
    hist = list(2000.0 + np.random.default_rng(0).normal(0, 5, 20))
    sc = S.score_metric(2100.0, bias, "b0", history=hist, hist_cfg=thr["history"])
    assert sc["SOURCE"] == "history" and sc["STATUS"] == "ALARM"
    assert S.score_metric(2003.0, bias, "b0", history=hist, hist_cfg=thr["history"])["STATUS"] == "NORMAL"
    # per-amplifier values: each amplifier against its own history (levels differ by amp)
    amp_hist = {"A": hist, "B": [h - 500 for h in hist]}
    sc = S.score_metric({"A": 2001.0, "B": 1502.0}, bias, "b0", history=amp_hist, hist_cfg=thr["history"])
    assert sc["STATUS"] == "NORMAL" and sc["SOURCE"] == "history"
    sc = S.score_metric({"A": 2001.0, "B": 1600.0}, bias, "b0", history=amp_hist, hist_cfg=thr["history"])
    assert sc["STATUS"] == "ALARM" and sc["WORST"] == ["B"]


def _frame_qa(expid, cam, obstype, **metrics):
    return {"NIGHT": 20250101, "EXPID": expid, "CAMERA": cam, "OBSTYPE": obstype, "MJD": 60000 + expid / 1e4,
            "EXPTIME": 900.0, "METRICS": metrics}


def test_night_rollup_and_first_bad_step_follow_the_data_flow():
    thr = S.validate_thresholds(THR)
    good_pre = {"NOISE_RATIO_AMP": {"A": 1.2, "B": 1.1}}
    frames = []
    for cam in ("b0", "r0", "b1", "r1"):
        frames.append(_frame_qa(10, cam, "FLAT", PREPROC=good_pre, FIBERFLAT={"GRADIENT": 0.01}))
        # exposure 11: sky fiber contaminated on petal 1 only
        frames.append(_frame_qa(11, cam, "SCIENCE", PREPROC=good_pre,
                                SKY={"NSKY_OUTLIER": 1 if cam.endswith("1") else 0, "MED_RESID_FRAC": 0.0},
                                STDSTARS={"NSTARS": 5}))
        # exposure 12: dead amplifier on r1, then (consequence) sky alarms too
        frames.append(_frame_qa(12, cam, "SCIENCE",
                                PREPROC={"NOISE_RATIO_AMP": {"A": 1.2, "B": 0.2 if cam == "r1" else 1.1}},
                                SKY={"NSKY_OUTLIER": 2 if cam == "r1" else 0}, STDSTARS={"NSTARS": 5}))
    rec = T.score_night(20250101, frames, thr)
    byexp = {e["EXPID"]: e for e in rec["EXPOSURES"]}
    assert byexp[10]["STATUS"] == "NORMAL" and byexp[10]["FIRST_BAD"] is None
    assert byexp[11]["PETALS"] == {"0": "NORMAL", "1": "ALARM"}
    assert byexp[11]["FIRST_BAD"] == {"STEP": "SKY", "CAMERAS": ["b1", "r1"], "METRICS": ["NSKY_OUTLIER"],
                                      "SOURCE": "this exposure"}
    assert byexp[12]["FIRST_BAD"]["STEP"] == "PREPROC" and byexp[12]["FIRST_BAD"]["CAMERAS"] == ["r1"]
    assert rec["FIRST_BAD"]["STEP"] == "PREPROC" and rec["FIRST_BAD"]["EXPIDS"] == [12]
    assert rec["STATUS"] == "ALARM" and rec["NEXP_ALARM"] == 2
    # a bad flat: the science exposures name FIBERFLAT (from the flat) as their first bad step
    for fr in frames:
        if fr["EXPID"] == 10 and fr["CAMERA"] == "b0":
            fr["METRICS"]["FIBERFLAT"]["GRADIENT"] = 0.2
    rec = T.score_night(20250101, frames, thr)
    byexp = {e["EXPID"]: e for e in rec["EXPOSURES"]}
    assert byexp[11]["FIRST_BAD"]["STEP"] == "FIBERFLAT" and byexp[11]["FIRST_BAD"]["SOURCE"] == "flat 10"
    assert byexp[12]["FIRST_BAD"]["STEP"] == "PREPROC"
    # production table: one row per frame, with values and statuses
    rows = T.production_rows([rec])
    assert len(rows) == 12
    assert {"PREPROC_NOISE_RATIO_AMP_B", "SKY_NSKY_OUTLIER_STATUS", "STATUS", "FIRST_BAD_STEP"} <= set().union(*rows)


def test_petal_qa_bits_follow_the_alarms_and_the_petal_snr():
    """DESI's petal-level QAFIBERSTATUS bits: from the configured step / metric alarms of each
    petal's cameras, and BADPETALSNR from the petal's S/N against the exposure's other petals."""
    from fiberflow.bitmasks import fibermask

    thr = S.validate_thresholds(dict(THR, petal_bits={"BADPETALSKY": ["SKY"], "BADPETALSTDSTAR": ["STDSTARS.NSTARS"],
                                                      "snr_frac": [0.7, 1.3]}))
    frames, snr = [], {}
    for p in range(4):
        for arm in "br":
            cam = f"{arm}{p}"
            frames.append(_frame_qa(20, cam, "SCIENCE", SKY={"NSKY_OUTLIER": int(cam == "r1")},
                                    STDSTARS={"NSTARS": 1 if p == 2 else 6}))
            snr[cam] = 5.0 * (0.5 if cam == "b3" else 1.0)
            frames[-1]["METRICS"]["CFRAME"] = {"MEDIAN_SNR": snr[cam]}
    rec = T.score_night(20250101, frames, thr)
    exp = rec["EXPOSURES"][0]
    assert exp["QAFIBERSTATUS"] == {"0": 0, "1": fibermask.mask("BADPETALSKY"),
                                    "2": fibermask.mask("BADPETALSTDSTAR"), "3": fibermask.mask("BADPETALSNR")}
    assert exp["PETAL_QA"]["1"]["WHY"] == {"BADPETALSKY": ["r1 SKY.NSKY_OUTLIER"]}
    assert exp["PETAL_QA"]["2"]["WHY"] == {"BADPETALSTDSTAR": ["b2 STDSTARS.NSTARS", "r2 STDSTARS.NSTARS"]}
    assert "b3 S/N 0.50" in exp["PETAL_QA"]["3"]["WHY"]["BADPETALSNR"][0]
    rows = {r["CAMERA"]: r for r in T.production_rows([rec])}
    assert rows["r1"]["QABITS"] == rows["b1"]["QABITS"] == "BADPETALSKY" and rows["r0"]["QAFIBERSTATUS"] == 0
    # S/N fractions need three petals of an arm to compare with
    two = [f for f in frames if f["CAMERA"][1] in "01"]
    for f in two:
        f["METRICS"]["CFRAME"]["MEDIAN_SNR"] = 1.0 if f["CAMERA"] == "b0" else 5.0
    assert T.score_night(20250101, two, thr)["EXPOSURES"][0]["QAFIBERSTATUS"]["0"] == 0


def test_zero_and_dark_qa_against_the_master_bias(tmp_path):
    """ZERO / DARK exposures of a simulated night: a clean ZERO and a DARK are NORMAL against the
    night's master bias, the DARK's measured dark current matches the instrument's, and a ZERO
    with a noisy amplifier turns READNOISE_AMP red on that amplifier."""
    import json
    import subprocess
    import sys

    from fiberflow import paths
    from fiberflow.instrument import load_instrument
    from fiberflow.sim.night import simulate_night
    from fiberflow.sim.plan import parse_plan

    night, cam = 20250801, "r0"
    plan = parse_plan({"night": night, "first_expid": 100, "exposures": [
        {"obstype": "ZERO", "count": 3}, {"obstype": "DARK", "exptime": 3600.0},
        {"obstype": "ZERO", "faults": {"noisy_amp": {"camera": cam, "amp": "C"}}}]})
    raw, truth = tmp_path / "raw", tmp_path / "truth"
    simulate_night(plan, "tiny", 5, str(raw), str(truth), cameras=[cam])
    cfg = tmp_path / "config.yaml"
    cfg.write_text("instrument: tiny\n")
    ff = [sys.executable, "-m", "fiberflow.cli.main"]
    rawf = {e.expid: paths.findfile("raw", raw=str(raw), night=night, expid=e.expid) for e in plan.exposures}
    bias = tmp_path / "biasnight.fits"
    res = subprocess.run(ff + ["biasnight", "--config", str(cfg), "--camera", cam, "-o", str(bias), "-i",
                               *(rawf[e] for e in (100, 101, 102))], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    thr = S.load_thresholds(os.path.join(os.path.dirname(__file__), "..", "config", "qa.yaml"))
    recs = {}
    for expid in (100, 103, 104):
        out = tmp_path / f"qa-{expid}.json"
        res = subprocess.run(ff + ["qa-frame", "--night", str(night), "--expid", str(expid), "--camera", cam,
                                   "--prod", str(tmp_path), "--config", str(cfg), "--raw", rawf[expid],
                                   "--biasnight", str(bias), "-o", str(out), "--png", str(tmp_path / f"{expid}.png"),
                                   "--blink", str(tmp_path / f"b{expid}.png")], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        recs[expid] = json.loads(out.read_text())
        assert (tmp_path / f"{expid}.png").stat().st_size > 10000
    zero, dark, noisy = recs[100], recs[103], recs[104]
    assert zero["OBSTYPE"] == "ZERO" and dark["OBSTYPE"] == "DARK" and zero["METRICS"]["BIAS"]["NZERO"] == 3
    for amp in "ABCD":  # in the master (residual below the read noise) or not (above): both as expected
        assert abs(zero["METRICS"]["BIAS"]["NOISE_RATIO_AMP"][amp] - 1) < 0.03
        assert abs(dark["METRICS"]["BIAS"]["NOISE_RATIO_AMP"][amp] - 1) < 0.03
        assert abs(noisy["METRICS"]["BIAS"]["NOISE_RATIO_AMP"].get("A") - 1) < 0.03
    # the simulator's dark current is the instrument's nominal one [electron / hour / pixel]
    rate = load_instrument("tiny").camera(cam).dark
    measured = dark["METRICS"]["BIAS"]["DARK_RATE_AMP"]
    assert all(abs(v - rate) < 0.5 for v in measured.values()), (measured, rate)
    assert "DARK_RATE_AMP" not in zero["METRICS"]["BIAS"]
    for rec in (zero, dark):
        sc = S.score_frame(rec, thr)
        assert sc["STATUS"] == "NORMAL" and sc["STEP_STATUS"]["BIAS"] == "NORMAL", sc["SCORES"]
    sc = S.score_frame(noisy, thr)
    assert sc["SCORES"]["PREPROC"]["READNOISE_AMP"]["STATUS"] == "ALARM"
    assert sc["SCORES"]["PREPROC"]["READNOISE_AMP"]["WORST"] == ["C"]
    # its image area is as noisy as its overscan: the residual from the master is as expected
    assert abs(noisy["METRICS"]["BIAS"]["NOISE_RATIO_AMP"]["C"] - 1) < 0.1
    # a science-type exposure is refused with a clear message
    res = subprocess.run(ff + ["qa-frame", "--night", str(night), "--expid", "100", "--camera", cam, "--prod",
                               str(tmp_path), "--config", str(cfg), "--raw", rawf[100], "-o", str(tmp_path / "x.json"),
                               "--png", str(tmp_path / "x.png")], capture_output=True, text=True)
    assert res.returncode != 0 and "needs both --raw and --biasnight" in res.stderr
    assert not (tmp_path / "x.json").exists()


def test_bright_sky_lines_ignore_unmeasured_bins():
    """A spike of an unconstrained sky model where no sky fiber has data (a bad CCD row masked in
    every fiber) is no sky line: with the measured bins given, the real lines are picked."""
    wave = 5000.0 + 0.8 * np.arange(500)
    sky = 100.0 + 0 * wave
    for w0, a in ((5050.0, 400.0), (5150.0, 300.0), (5300.0, 200.0)):
        sky += a * np.exp(-0.5 * ((wave - w0) / 1.0) ** 2)
    good = np.ones(wave.size, bool)
    good[250:253] = False
    sky[249:254] = [500.0, 1200.0, 1300.0, 1200.0, 500.0]  # the spike, wings on measured bins
    assert any(abs(w - wave[251]) < 3 for w in M.bright_sky_lines(wave, sky, nline=3))
    picked = M.bright_sky_lines(wave, sky, nline=3, good=good)
    assert np.allclose(picked, [5050.0, 5150.0, 5300.0], atol=0.8), picked


def test_running_median_at_equals_the_full_median_filter():
    """The sky-line residual's continuum, computed at the line windows only, is scipy's
    median filter (mode nearest) at those columns, edges included."""
    from scipy.ndimage import median_filter

    from fiberflow.qa.metrics import running_median_at

    rng = np.random.default_rng(3)
    a = rng.normal(size=(20, 400)) + np.linspace(0, 5, 400)
    cols = np.array([0, 1, 24, 25, 26, 200, 373, 374, 398, 399])
    for width in (51, 7, 1):
        ref = median_filter(a, size=(1, width), mode="nearest")[:, cols]
        assert np.array_equal(running_median_at(a, cols, width), ref), width
    assert running_median_at(a, np.array([], int), 51).shape == (20, 0)


def test_production_index_names_every_root_cause_before_downstream_alarms(tmp_path):
    """A night of 4 faulty exposures whose root causes make 6 summary lines and whose downstream
    alarms make more: the index row shows every root cause (its first bad step's metrics),
    the downstream alarms after them, cut at 5 lines in all only when the roots take fewer."""
    from fiberflow.qa import html

    def score(status):
        return {"STATUS": status, "VALUE": 1.0, "NORMAL": [0, 0], "WARNING": [0, 0]}

    down = {"SKY": {"NSKY_OUTLIER": score("ALARM")}, "FLUXCALIB": {"FLUXFLAG": score("ALARM"), "ZP": score("ALARM")},
            "CFRAME": {"SNR": score("WARNING")}}
    roots = [("PREPROC", ["LITFRAC_REL_AMP"]), ("EXTRACT", ["NLOWTHRU"]),
             ("SKY", ["MED_RESID_FRAC", "RESID_CHI2DOF"]), ("STDSTARS", ["NSTARS"])]
    exps = []
    for k, (step, metrics) in enumerate(roots):
        scores = {s: dict(v) for s, v in down.items()}
        scores.setdefault(step, {}).update({m: score("ALARM") for m in metrics})
        exps.append({"EXPID": 100 + k, "OBSTYPE": "SCIENCE", "FRAMES": {"r0": {"SCORES": scores}},
                     "FIRST_BAD": {"STEP": step, "CAMERAS": ["r0"], "METRICS": metrics}})
    rec = {"NIGHT": 20250702, "EXPOSURES": exps, "STATUS": "ALARM", "NEXP": 4, "NEXP_ALARM": 4, "NALARM": 20,
           "NSCORED": 40, "FIRST_BAD": {"STEP": "PREPROC", "EXPIDS": [100]}}
    items, nroot = html.root_causes_first(rec, html.out_of_range(rec))
    lines = html.out_of_range_summary(items)
    assert nroot == 5 and [ln.split()[1:3] for ln in lines[:5]] == [
        ["PREPROC", "LITFRAC_REL_AMP"], ["EXTRACT", "NLOWTHRU"], ["SKY", "MED_RESID_FRAC"],
        ["SKY", "RESID_CHI2DOF"], ["STDSTARS", "NSTARS"]], lines
    assert [ln.split()[:3] for ln in lines[5:]] == [["ALARM", "SKY", "NSKY_OUTLIER"], ["ALARM", "FLUXCALIB", "FLUXFLAG"],
                                                    ["ALARM", "FLUXCALIB", "ZP"], ["WARNING", "CFRAME", "SNR"]], lines
    # one more root cause: all 6 on the index row, the 3 downstream lines left to the night page
    exps[2]["FIRST_BAD"]["METRICS"] = ["MED_RESID_FRAC", "NSKY_OUTLIER", "RESID_CHI2DOF"]
    page = tmp_path / "index.html"
    html.production_page(str(page), [rec], {20250702: str(tmp_path / "night.html")}, [], str(tmp_path / "table.fits"))
    row = page.read_text()
    for step, metrics in roots:
        for m in metrics:
            assert f"ALARM {step} {m} r0" in row, (m, row)
    assert "ALARM SKY NSKY_OUTLIER r0" in row and "... 3 more on the night page" in row and "FLUXFLAG" not in row
