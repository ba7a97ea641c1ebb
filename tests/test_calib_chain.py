"""Sky, standard stars and flux calibration against known truth on synthetic frames
(Gaussian resolution matrices, known spectra, Gaussian noise from a variance model)."""

import numpy as np
import pytest

from fiberflow import linalg
from fiberflow.models import atmosphere, resolution, stellar
from fiberflow.models.resolution import apply_rows, diags_to_dense, rows_to_diags
from fiberflow.steps import fluxcalib, sky, stdstars

NDIAG = 11


def _band(A, u):
    n = A.shape[0]
    ab = np.zeros((u + 1, n))
    for d in range(u + 1):
        i = np.arange(n - d)
        ab[u - d, i + d] = A[i, i + d]
    return ab


def _fast_rows(sigma_bins, nspec, nwave):
    """Gaussian resolution rows (nspec, nwave, NDIAG), sigma per fiber (in bins), rows sum to 1."""
    h = NDIAG // 2
    k = np.arange(-h, h + 1)
    rows = np.exp(-0.5 * (k[None, None, :] / np.asarray(sigma_bins)[:, None, None]) ** 2) * np.ones((1, nwave, 1))
    rows[:, :h] *= (np.arange(h)[:, None] + k[None, :] >= 0)[None]
    rows[:, nwave - h:] *= (np.arange(nwave - h, nwave)[:, None] + k[None, :] < nwave)[None]
    return rows / rows.sum(axis=2, keepdims=True)


def test_banded_inverse_band_matches_dense(rng):
    n, u = 60, 6
    B = rng.normal(size=(n, n)) * (np.abs(np.subtract.outer(np.arange(n), np.arange(n))) <= 3)
    A = B @ B.T + 0.1 * np.eye(n)
    ab = _band(A, u)
    cb = linalg.banded_inverse_band(ab)
    np.testing.assert_allclose(cb, linalg.banded_inverse_band_numpy(ab), rtol=1e-9, atol=1e-12)
    C = np.linalg.inv(A)
    np.testing.assert_allclose(cb[2, : n - 2], np.diagonal(C, 2), rtol=1e-9)


def test_model_variance_and_curvature_penalty_match_dense(rng):
    nwave, nspec = 40, 3
    rows = _fast_rows(rng.uniform(1.0, 1.6, nspec), nspec, nwave)
    B = rng.normal(size=(nwave, nwave)) * (np.abs(np.subtract.outer(np.arange(nwave), np.arange(nwave))) <= 4)
    A = B @ B.T + np.eye(nwave)
    u = NDIAG - 1
    cb = linalg.banded_inverse_band(_band(A, u))
    C = np.linalg.inv(A)
    rd = rows_to_diags(rows)
    for f in range(nspec):
        R = diags_to_dense(rd[f])
        band = np.abs(np.subtract.outer(np.arange(nwave), np.arange(nwave))) <= u
        want = np.diag(R @ (C * band) @ R.T)
        np.testing.assert_allclose(linalg.model_variance(rows[f:f + 1], cb)[0], want, rtol=1e-9)
    lam = rng.uniform(0, 2, nwave)
    ab = np.zeros((u + 1, nwave))
    fluxcalib.curvature_penalty(ab, lam)
    D = np.zeros((nwave, nwave))
    for k in range(1, nwave - 1):
        D[k, k - 1:k + 2] = [1, -2, 1]
    np.testing.assert_allclose(ab, _band(D.T @ np.diag(lam) @ D, u), atol=1e-12)


def _sky_spectrum(wave, rng):
    s = 200.0 + 30.0 * np.sin(wave / 300.0)
    for lam in rng.uniform(wave[10], wave[-10], 25):
        s = s + rng.uniform(200, 3000) * np.exp(-0.5 * ((wave - lam) / 0.5) ** 2)
    return s


def test_sky_fit_against_truth(rng):
    """Sky fibers' chi2/dof ~ 1, sky-subtracted targets have unit pulls against their truth,
    and the fit is not biased by noise-following ivar (variance from the data)."""
    nspec, nwave = 40, 600
    wave = 5800.0 + 0.8 * np.arange(nwave)
    rows = _fast_rows(rng.uniform(1.1, 1.5, nspec), nspec, nwave)
    S = _sky_spectrum(wave, rng)
    obj = np.zeros((nspec, nwave))
    skyf = np.arange(0, nspec, 5)
    targets = np.setdiff1d(np.arange(nspec), skyf)
    obj[targets] = rng.uniform(5, 50, targets.size)[:, None] * (1 + 0.2 * np.cos(wave / 100.0))[None]
    truth = apply_rows(rows, S) + apply_rows_each(rows, obj)
    var_true = 9.0 + truth
    flux = truth + rng.normal(size=truth.shape) * np.sqrt(var_true)
    # an extraction's ivar follows the data a little (smoothed data instead of the truth)
    from scipy.ndimage import uniform_filter1d

    ivar = 1.0 / (9.0 + np.clip(uniform_filter1d(flux, 3, axis=1), 1, None))
    mask = np.zeros((nspec, nwave), np.int32)
    res = sky.fit_sky(wave, flux, ivar, mask, rows_to_diags(rows), skyf)
    # 8 sky fibers x 600 bins: the mean chi2/dof has a scatter of ~0.02
    assert np.mean(res["chi2dof"]) == pytest.approx(1.0, abs=0.06), res["chi2dof"]
    sub, siv, _ = sky.subtract_sky(flux, ivar, mask, res["sky"], res["var"])
    pull = (sub - apply_rows_each(rows, obj))[targets] * np.sqrt(siv[targets])
    assert abs(pull.mean()) < 0.03 and pull.std() == pytest.approx(1.0, abs=0.04)
    # the sky model is unbiased: mean error well below 0.1% of the sky
    err = (res["sky"] - apply_rows(rows, S))[targets]
    assert abs(err.mean()) < 1e-3 * S.mean()
    # and its statistical variance describes its error
    z = err / np.sqrt(res["stat_var"][targets])
    assert z.std() == pytest.approx(1.0, abs=0.1)


def test_sky_throughput_corrections_follow_fiber_throughputs(rng):
    """Fibers whose throughput on the sky differs from the flat's by a few per cent, targets with
    absorption and emission features of their own: with ``throughput_correction`` each sky
    fiber's and each significantly-off target's correction is its true relative throughput within
    the stated error, and the targets' sky-subtracted pulls on the sky lines become unit again."""
    nspec, nwave = 60, 800
    wave = 5800.0 + 0.8 * np.arange(nwave)
    rows = _fast_rows(rng.uniform(1.1, 1.5, nspec), nspec, nwave)
    S = _sky_spectrum(wave, rng)
    thr = 1.0 + 0.03 * rng.standard_normal(nspec)
    skyf = np.arange(0, nspec, 4)
    targets = np.setdiff1d(np.arange(nspec), skyf)
    obj = np.zeros((nspec, nwave))
    for f in targets:
        o = rng.uniform(5, 60) * (1 + 0.2 * np.cos(wave / rng.uniform(80, 200)))
        for lam in rng.uniform(wave[0], wave[-1], 12):  # absorption lines, some under sky lines
            o = o * (1 - 0.3 * np.exp(-0.5 * ((wave - lam) / 1.5) ** 2))
        if f % 3 == 0:  # an emission line
            o = o + 300.0 * np.exp(-0.5 * ((wave - rng.uniform(wave[50], wave[-50])) / 1.0) ** 2)
        obj[f] = o
    truth = thr[:, None] * apply_rows(rows, S) + apply_rows_each(rows, obj)
    var_true = 9.0 + truth
    flux = truth + rng.normal(size=truth.shape) * np.sqrt(var_true)
    ivar = 1.0 / var_true
    mask = np.zeros((nspec, nwave), np.int32)
    on_lines = sky.highpass(apply_rows(rows, S), 51) > 200.0
    assert on_lines.sum() > 50
    pulls, resid = {}, {}
    for corr in (False, True):
        res = sky.fit_sky(wave, flux, ivar, mask, rows_to_diags(rows), skyf, sky.SkyOptions(throughput_correction=corr))
        sub, siv, _ = sky.subtract_sky(flux, ivar, mask, res["sky"], res["var"])
        r = (sub - apply_rows_each(rows, obj))[targets]
        pulls[corr] = (r * np.sqrt(siv[targets]))[on_lines[targets]]
        true_sky = thr[:, None] * apply_rows(rows, S)
        resid[corr] = np.sqrt(np.mean(((res["sky"] - true_sky) / true_sky)[targets][on_lines[targets]] ** 2))
    a, err = res["throughput"], res["throughput_err"]
    # the sky model's level is the sky fibers' (median) throughput: compare up to one factor
    rel = thr / np.median(thr[skyf])
    k = np.median(a[skyf] / rel[skyf])
    # sky fibers: every one corrected; 3% throughput errors recovered to 0.5-1.1% (12 seeds)
    assert np.sqrt(np.mean((a[skyf] / (k * rel[skyf]) - 1) ** 2)) < 0.013
    zs = (a[skyf] - k * rel[skyf]) / err[skyf]
    assert np.abs(zs).max() < 4.0, zs
    # targets: corrected where significant, to their throughput within the stated error (which
    # includes the scatter the targets' own features add to the line ratios)
    fixed = targets[a[targets] != 1.0]
    assert set(targets[np.abs(k * rel[targets] - 1) > 0.04]) <= set(fixed)
    assert np.sqrt(np.mean((a[fixed] / (k * rel[fixed]) - 1) ** 2)) < 0.015
    z = (a[fixed] - k * rel[fixed]) / err[fixed]
    assert np.abs(z).max() < 4.0 and z.std() < 1.5, z
    # the targets' sky lines: the sky model's error 2.6-3.6% -> 1.25-1.6% (12 seeds; what is left
    # are the targets whose 1-2% is not significant), unit pulls (1.01-1.06)
    assert resid[True] < 0.6 * resid[False], resid
    assert abs(np.std(pulls[True]) - 1.0) < 0.08, np.std(pulls[True])


def apply_rows_each(rows, x):
    return resolution.apply_rows_each(rows, x)


def test_apply_fiberflat_propagates_errors():
    flux = np.array([[100.0, 200.0]])
    ivar = np.array([[0.01, 0.0]])
    ff = np.array([[0.5, 1.0]])
    ffiv = np.array([[1e4, 1e4]])
    out, oiv, m = sky.apply_fiberflat(flux, ivar, np.zeros((1, 2), np.int32), ff, ffiv, np.zeros((1, 2), np.int32))
    assert out[0, 0] == 200.0 and oiv[0, 1] == 0.0
    assert 1.0 / oiv[0, 0] == pytest.approx(100.0 / 0.25 + 200.0**2 / (1e4 * 0.25))


@pytest.fixture(scope="module")
def star_setup():
    """A standard star of known parameters seen by three Gaussian-LSF cameras at S/N ~ 30."""
    rng = np.random.default_rng(5)
    truth = {"TEFF": 6310.0, "LOGG": 4.2, "FEH": -0.8, "RV": 63.0}
    cams, calib = [], []
    for lo, hi in ((3600.0, 5800.0), (5760.0, 7620.0), (7520.0, 9820.0)):
        wave = np.arange(lo, hi, 0.8)
        rows = _fast_rows([1.3], 1, wave.size)[0]
        model = stdstars.convolved_model(stdstars.CameraData(wave, wave * 0, wave * 0, rows), truth["TEFF"],
                                         truth["LOGG"], truth["FEH"], truth["RV"])
        thr = 800.0 * np.exp(-0.5 * ((wave - 0.5 * (lo + hi)) / (hi - lo)) ** 2)  # smooth "calibration"
        data = thr * model
        var = 4.0 + (data / 30.0) ** 2
        flux = data + rng.normal(size=wave.size) * np.sqrt(var)
        cams.append(stdstars.CameraData(wave, flux, 1.0 / var, rows))
        calib.append(thr)
    gr = stdstars.model_color(truth["TEFF"], truth["LOGG"], truth["FEH"])
    return truth, cams, gr


def test_optical_depth_bisection_matches_masks():
    """The metal lines found by bisection on an ascending grid equal those of the general
    (any order) path; the cached model colour equals a fresh one."""
    wave = np.arange(3600.0, 9800.0, 0.1)
    for t, g, f in ((5200.0, 4.5, 0.3), (6900.0, 3.2, -1.8)):
        up = stellar.optical_depth(wave, t, g, f)
        down = stellar.optical_depth(wave[::-1], t, g, f)[::-1]
        np.testing.assert_allclose(up, down, rtol=1e-12, atol=1e-15)
    fresh = stdstars._model_color.__wrapped__(6100.0, 4.0, -0.5)
    assert stdstars.model_color(6100.0, 4.0, -0.5) == fresh == stdstars.model_color(6100.0000001, 4.0, -0.5)


def test_stdstar_fit_recovers_parameters(star_setup):
    truth, cams, gr = star_setup
    res = stdstars.fit_star(cams, gr + 0.01, 0.02)
    assert abs(res["TEFF"] - truth["TEFF"]) < 150.0
    assert abs(res["FEH"] - truth["FEH"]) < 0.2
    assert abs(res["RV"] - truth["RV"]) < 10.0
    assert res["CHI2DOF"] == pytest.approx(1.0, abs=0.2)
    # normalised to the photometry: synthetic r flux of the stored model equals FLUX_R
    from fiberflow.models.photometry import ab_nanomaggies

    m = stdstars.normalised_model(res["TEFF"], res["LOGG"], res["FEH"], res["RV"], 12.5)
    assert ab_nanomaggies(stdstars.MODEL_WAVE, m[None] * 1e-17)[0, 1] == pytest.approx(12.5, rel=1e-6)


def test_flux_calibration_recovers_vector(rng):
    """Ten stars through a smooth calibration with a telluric band: C within 1% RMS off the
    band, star scales recovered, an outlier star rejected."""
    nwave = 1500
    wave = 5760.0 + 0.8 * np.arange(nwave)
    nstd = 10
    rows = _fast_rows(rng.uniform(1.1, 1.5, nstd), nstd, nwave)
    C = 50.0 * (1 + 0.3 * np.sin((wave - wave[0]) / 600.0))
    tell = atmosphere.telluric_mask(wave)
    C = C * np.where(tell, 0.7 + 0.3 * np.cos(wave / 3.0) ** 2, 1.0)
    models = np.stack([stellar.stellar_spectrum(wave, t, 4.2, -0.5) * s for t, s in
                       zip(rng.uniform(5800, 6700, nstd), rng.uniform(5, 20, nstd))])
    scale = 1.0 + rng.normal(0, 0.03, nstd)
    scale[3] = 1.6  # a mis-centred fiber or wrong photometry
    data = scale[:, None] * resolution.apply_rows_each(rows, models * C[None])
    var = 4.0 + data
    flux = data + rng.normal(size=data.shape) * np.sqrt(var)
    res = fluxcalib.fit_calibration(flux, 1.0 / var, np.zeros(flux.shape, np.int32), rows, models, telluric=tell)
    assert not res["used"][3] and res["used"].sum() == nstd - 1
    good = ~tell
    good[:20] = good[-20:] = False
    # C and the star scales are degenerate in one common factor: the fit's median star has scale 1
    used = res["used"]
    k = np.median(scale[used] / res["scale"][used])
    ratio = res["calib"][good] / (C[good] * k)
    assert np.sqrt(np.mean((ratio - 1) ** 2)) < 0.01
    assert k == pytest.approx(np.median(scale[used]), rel=0.03)
    assert np.std(res["scale"][used] * k / scale[used]) < 0.01


def _shifted_rows(sigma_bins, shift_bins, nwave):
    """Gaussian resolution rows centred ``shift_bins`` off each bin (the fiber's true wavelength
    solution differs from the extraction's), sigma per fiber, rows summing to 1."""
    h = NDIAG // 2
    k = np.arange(-h, h + 1)
    s = np.asarray(sigma_bins)[:, None, None]
    rows = np.exp(-0.5 * ((k[None, None, :] - np.asarray(shift_bins)[:, None, None]) / s) ** 2) * np.ones((1, nwave, 1))
    rows[:, :h] *= (np.arange(h)[:, None] + k[None, :] >= 0)[None]
    rows[:, nwave - h:] *= (np.arange(nwave - h, nwave)[:, None] + k[None, :] < nwave)[None]
    return rows / rows.sum(axis=2, keepdims=True)


def test_sky_wavelength_and_lsf_adjustments_follow_smooth_fiber_errors(rng):
    """Fibers whose true wavelength solution is off by -0.1 .. +0.25 A and whose lines are up to 8%
    wider than the extraction's resolution says, smoothly across the petal: without adjustments
    the bright sky lines leave excess residuals in the targets; with them the targets' pulls
    are unit again and each fiber's fitted shift is the true one."""
    nspec, nwave = 60, 700
    wave = 5800.0 + 0.8 * np.arange(nwave)
    u = np.arange(nspec) / (nspec - 1)
    shift = (0.20 * (u - 0.5) + 0.15 * u**2) / 0.8  # bins; -0.10 .. +0.25 A
    sig_model = np.full(nspec, 1.2)
    sig_true = sig_model * (1.0 + 0.08 * u)
    S = _sky_spectrum(wave, rng)
    skyf = np.arange(0, nspec, 4)
    targets = np.setdiff1d(np.arange(nspec), skyf)
    obj = np.zeros((nspec, nwave))
    obj[targets] = rng.uniform(5, 30, targets.size)[:, None]
    true_rows = _shifted_rows(sig_true, shift, nwave)
    truth = apply_rows(true_rows, S) + obj
    var = 9.0 + truth
    flux = truth + rng.normal(size=truth.shape) * np.sqrt(var)
    ivar = 1.0 / var
    mask = np.zeros((nspec, nwave), np.int32)
    rdiag = rows_to_diags(_fast_rows(sig_model, nspec, nwave))
    lines = S > 500.0
    out = {}
    for adjust in (False, True):
        opts = sky.SkyOptions(adjust_wavelength=adjust, adjust_lsf=adjust, model_error=False)
        res = sky.fit_sky(wave, flux, ivar, mask, rdiag, skyf, opts)
        sub, siv, _ = sky.subtract_sky(flux, ivar, mask, res["sky"], res["var"])
        pull = (sub - obj) * np.sqrt(siv)
        out[adjust] = (pull[targets][:, lines].std(), pull[targets][:, ~lines].std(), res)
    # measured: on the lines 1.49 without, 1.006 with; elsewhere 1.11 without, 0.999 with
    assert out[False][0] > 1.3 and out[False][1] > 1.05, out[False][:2]
    assert out[True][0] == pytest.approx(1.0, abs=0.03), out[True][0]
    assert out[True][1] == pytest.approx(1.0, abs=0.03)
    # the wavelength term's constant coefficient is the shift [A] (data(w) = model(w + c)),
    # relative to the mean the deconvolved sky absorbed; the smooth fit across fibers recovers
    # it for every fiber
    c0 = out[True][2]["adjustments"][:, 0]
    dw = shift * 0.8
    err = (c0 - c0.mean()) - (dw - dw.mean())
    assert np.std(err) < 0.005, np.std(err)


def test_sky_model_error_ignores_one_fibers_defects_and_keeps_a_shared_mismatch(rng):
    """A few unmasked cosmic-ray hits in single sky fibers are that fiber's defect, not an error
    of the model: they leave the model error at 0 (every target's sky variance stays its
    statistical one; before, each hit raised it over +-5 bins in every fiber). Lines wider than
    the resolution says, more so across the petal, are an error of the model: it is measured,
    and the targets' pulls on the lines stay unit."""
    nspec, nwave = 60, 700
    wave = 5800.0 + 0.8 * np.arange(nwave)
    S = _sky_spectrum(wave, rng)
    skyf = np.arange(0, nspec, 4)
    targets = np.setdiff1d(np.arange(nspec), skyf)
    obj = np.zeros((nspec, nwave))
    obj[targets] = rng.uniform(5, 30, targets.size)[:, None]
    mask = np.zeros((nspec, nwave), np.int32)
    lines = S > 500.0
    # 1. right resolution, 12 hits of 30-200 sigma over 2-3 bins in single sky fibers
    rows = _fast_rows(np.full(nspec, 1.2), nspec, nwave)
    truth = apply_rows(rows, S) + obj
    var = 9.0 + truth
    flux = truth + rng.normal(size=truth.shape) * np.sqrt(var)
    hit = np.zeros(nwave, bool)
    for f, j in zip(rng.choice(skyf, 12), rng.choice(np.arange(20, nwave - 20), 12, replace=False)):
        n = int(rng.integers(2, 4))
        flux[f, j:j + n] += rng.uniform(30, 200) * np.sqrt(var[f, j:j + n])
        hit[j - 5:j + n + 5] = True
    res = sky.fit_sky(wave, flux, 1.0 / var, mask, rows_to_diags(rows), skyf)
    assert np.all(res["model_frac"] == 0.0), (np.flatnonzero(res["model_frac"]), hit.sum())
    np.testing.assert_allclose(res["var"], res["stat_var"])
    # 2. lines up to 30% wider than the resolution says, across the petal: measured
    true_rows = _fast_rows(1.2 * (1.0 + 0.3 * np.arange(nspec) / (nspec - 1)), nspec, nwave)
    truth = apply_rows(true_rows, S) + obj
    var = 9.0 + truth
    flux = truth + rng.normal(size=truth.shape) * np.sqrt(var)
    res = sky.fit_sky(wave, flux, 1.0 / var, mask, rows_to_diags(rows), skyf, sky.SkyOptions(adjust_lsf=False))
    sub, siv, _ = sky.subtract_sky(flux, 1.0 / var, mask, res["sky"], res["var"])
    pull = ((sub - obj) * np.sqrt(siv))[targets]
    bare = ((sub - obj) / np.sqrt(var))[targets]  # the same residuals against the data's variance only
    # measured: the model error on 80% of the line bins, pulls 1.02 (1.53 without it)
    assert (res["model_frac"][lines] > 0).mean() > 0.7
    assert bare[:, lines].std() > 1.3 and pull[:, lines].std() == pytest.approx(1.0, abs=0.08), (
        bare[:, lines].std(), pull[:, lines].std())
