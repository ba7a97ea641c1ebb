"""Trace shifts: injected offsets of the nightly PSF recovered on simulated flats and science frames."""

import numpy as np
import pytest

from fiberflow.models import psf as psfmodel
from fiberflow.steps import preproc, traceshift

NIGHT = 20250301


def test_cross_profile_derivative_and_normalisation(rng):
    n = 5
    xc = rng.uniform(10, 11, n)
    sig = rng.uniform(0.9, 1.3, n)
    gh = np.zeros((n, 4))
    gh[:, 0] = 1.0
    gh[:, 2] = rng.normal(0, 0.05, n)
    cols = np.floor(xc + 0.5).astype(int)[:, None] + np.arange(-8, 9)[None, :]
    p, dp = traceshift.cross_profile(xc, sig, gh, cols)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)  # higher Hermite terms integrate to 0
    h = 1e-6
    p2, _ = traceshift.cross_profile(xc + h, sig, gh, cols)
    np.testing.assert_allclose(dp, (p2 - p) / h, atol=1e-5)


def test_row_fit_sums_kernel_matches_numpy(rng):
    # every row position a trace takes: centred, half-pixel, at the image edges (weights 0 off
    # the image), bright (flat-like) and faint rows, GH degree 0 and 6
    n, hx = 400, 3
    for deg in (0, 6):
        xc = np.concatenate([rng.uniform(0.0, 2.0, n // 4), rng.uniform(4093.0, 4095.0, n // 4),
                             rng.uniform(100, 4000, n // 2)])
        xc[:10] = np.floor(xc[:10]) + 0.5
        sig = rng.uniform(0.8, 1.4, n)
        gh = np.concatenate([np.ones((n, 1)), rng.normal(0, 0.05, (n, deg))], axis=1)
        cols = np.floor(xc + 0.5).astype(int)[:, None] + np.arange(-hx, hx + 1)[None, :]
        scale = np.where(rng.uniform(size=n) < 0.5, 1e5, 10.0)
        d = rng.normal(size=cols.shape) * scale[:, None]
        w = np.where((cols >= 0) & (cols < 4096), rng.uniform(0.5, 2.0, cols.shape) / scale[:, None] ** 2, 0.0)
        ref = traceshift.row_fit_sums_numpy(xc, sig, gh, cols, d, w)
        got = traceshift.row_fit_sums(xc, sig, gh, cols, d, w)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("width", [1, 3, 31])
def test_running_median_kernel_matches_scipy(rng, width):
    from scipy import ndimage

    a = rng.normal(size=(6, 500))
    a[:, 200:260] = 5.0                # ties and a plateau
    a[1] = np.round(a[1])              # many equal values
    short = rng.normal(size=(2, 7))    # rows shorter than the window
    for x in (a, short):
        np.testing.assert_array_equal(traceshift.running_median(x, width),
                                      ndimage.median_filter(x, size=(1, width), mode="nearest"))
    x = a.copy()
    x[0, 3] = np.nan                   # non-finite input goes to scipy
    ref = ndimage.median_filter(x, size=(1, width), mode="nearest")
    np.testing.assert_array_equal(traceshift.running_median(x, width), ref)


def test_shift_surface_ignores_lone_blocks_and_extrapolation(rng):
    nfib = 50
    fib = np.repeat(np.arange(nfib), 3)
    u = np.tile([0.3, 0.5, 0.7], nfib)  # lines only in part of the range
    val = 1.5 + 0.01 * rng.standard_normal(fib.size)
    fib = np.append(fib, [3, 9])
    u = np.append(u, [-0.9, -0.8])   # two lone noisy blocks far away
    val = np.append(val, [2.5, 0.2])
    fn = traceshift.fit_shift_surface(fib, u, val, np.full(fib.size, 0.01), 2, 2, nfib, 4.0)
    uq = np.broadcast_to(np.linspace(-1, 1, 20), (nfib, 20))
    assert np.abs(fn(np.arange(nfib), uq) - 1.5).max() < 0.01


_BIAS = {}


def _master_bias(sim, cam):
    """The camera's master bias from three simulated ZEROs, as the workflow's biasnight makes it
    (without it the bias pattern's fixed column offsets, ~1 electron, stay in the image and pull
    the faint blue traces of a science frame by tenths of a pixel)."""
    from fiberflow.sim.plan import parse_plan

    if cam not in _BIAS:
        plan = parse_plan({"night": NIGHT, "first_expid": 90, "exposures": [{"obstype": "ZERO", "count": 3}]})
        zeros = [preproc.subtract_overscan(sim.simulate_camera(NIGHT, e, cam)[0])[0] for e in plan.exposures]
        _BIAS[cam] = preproc.master_bias(zeros)
    return _BIAS[cam]


def _frame(sim, cam, obstype, expid):
    from fiberflow.sim.plan import parse_plan

    spec_exp = {"FLAT": {"obstype": "FLAT", "exptime": 120.0},
                "SCIENCE": {"obstype": "SCIENCE", "tileid": 1001, "exptime": 900.0}}[obstype]
    plan = parse_plan({"night": NIGHT, "first_expid": expid, "exposures": [spec_exp]})
    exp = plan.exposures[0]
    raw, _, _ = sim.simulate_camera(NIGHT, exp, cam)
    spec = sim.instrument.camera(cam)
    bias, bmask = _master_bias(sim, cam)
    image, ivar, rn, mask, _ = preproc.preproc_camera(raw, gains=dict(zip(preproc.AMPS, spec.gain)), dark_rate=spec.dark,
                                                      bias=bias, bias_mask=bmask, bias_nzero=3)
    return image, ivar, sim.exposure_psf(NIGHT, exp.expid, cam)


@pytest.fixture(scope="module")
def demo_sim():
    from fiberflow.sim.night import Simulator

    return Simulator("demo", 5)


def _offsets(out, true, spec):
    w = np.linspace(spec.wavemin, spec.wavemax, 200)
    dx = psfmodel.trace_x(out, w) - psfmodel.trace_x(true, w)
    dy = psfmodel.trace_y(out, w) - psfmodel.trace_y(true, w)
    return np.sqrt(np.mean(dx**2)), np.sqrt(np.mean(dy**2)), np.abs(dx).max(), np.abs(dy).max()


@pytest.mark.parametrize("cam", ["b0", "r0", "z0"])
def test_traceshift_science_recovers_injected_shifts(demo_sim, cam):
    """The nightly PSF off by 0.9 px in x and ~1 Angstrom in wavelength; the exposure's truth is recovered."""
    from fiberflow.sim.night import Simulator

    image, ivar, true = _frame(demo_sim, cam, "SCIENCE", 40)
    night = demo_sim.night_psf(NIGHT, cam)
    spec = demo_sim.instrument.camera(cam)
    dy_1A = 1.0 / np.median(np.diff(psfmodel.wavelength(night, np.arange(1000, 3000), [0])[0]))  # rows per Angstrom
    start = Simulator.shifted_psf(night, 0.9, -dy_1A)
    out, meas = traceshift.trace_shift(image, ivar, start)
    assert out.meta["DYMETHOD"][0] == "sky" and len(meas["dy"]) > 50
    rx, ry, mx, my = _offsets(out, true, spec)
    # every fiber and wavelength within 0.03 px (measured: max dx 0.0005-0.0014, dy 0.008-0.020 px),
    # the faint blue corner of b included
    assert mx < 0.03 and my < 0.03, (rx, ry, mx, my)


def test_traceshift_flat_moves_x_only(demo_sim):
    from fiberflow.sim.night import Simulator

    image, ivar, true = _frame(demo_sim, "r0", "FLAT", 50)
    start = Simulator.shifted_psf(demo_sim.night_psf(NIGHT, "r0"), -1.0, 0.0)
    out, _ = traceshift.trace_shift(image, ivar, start, continuum_only=True)
    assert out.meta["DYMETHOD"][0] == "none"
    np.testing.assert_array_equal(out.ytrace[:, :start.ytrace.shape[1]], start.ytrace)
    w = np.linspace(5800, 7600, 100)
    dx = psfmodel.trace_x(out, w) - psfmodel.trace_x(true, w)
    assert np.abs(dx).max() < 0.03


def test_continuum_rows_leave_out_lines(rng):
    """Rows on a bright line (and the spots' extent around it) are not continuum; noise and a
    slow continuum slope are."""
    ny = 400
    cont = 100.0 + 0.1 * np.arange(ny)
    a = cont + rng.normal(0, 3.0, (2, ny))
    a[0, 200:203] += 400.0  # a sky line in fiber 0
    a[1, 300] -= 60.0       # an absorption line in fiber 1
    keep = traceshift.continuum_rows(a, np.full(a.shape, 9.0), np.ones(a.shape, bool), 4.0)
    assert not keep[0, 196:207].any() and keep[0, :195].all() and keep[0, 208:].all()
    assert not keep[1, 296:305].any() and keep[1, :295].all()


def test_shift_surface_degrees_follow_the_data(rng):
    """BIC degree selection: a constant shift measured with noise is fitted as a constant (no
    noise-fitting curvature at the edges); a real quadratic trend keeps its terms."""
    nfib = 50
    fib = np.repeat(np.arange(nfib), 12)
    u = np.tile(np.linspace(-0.95, 0.95, 12), nfib)
    err = np.full(fib.size, 0.02)
    keep = np.ones(fib.size, bool)
    # over 50 noise realisations the constant wins (chance of a spurious term: ~1% per term)
    chosen = [traceshift.select_degrees(fib, u, 0.9 + err * rng.standard_normal(fib.size), err, keep, 2, 2, nfib,
                                        None)[:2] for _ in range(50)]
    assert sum(c == (0, 0) for c in chosen) >= 44, chosen
    flat = 0.9 + err * np.random.default_rng(1).standard_normal(fib.size)
    t = 2.0 * fib / (nfib - 1) - 1.0
    curved = 0.9 + 0.2 * u**2 - 0.1 * t + err * rng.standard_normal(fib.size)
    df, du, _ = traceshift.select_degrees(fib, u, curved, err, keep, 2, 2, nfib, None)
    assert df >= 1 and du == 2
    fn = traceshift.fit_shift_surface(fib, u, flat, err, 2, 2, nfib, 4.0)
    uq = np.broadcast_to(np.linspace(-1, 1, 30), (nfib, 30))
    assert np.abs(fn(np.arange(nfib), uq) - 0.9).max() < 0.01
