"""The PSF model on the real DESI r0 PSF: spots, numba vs numpy, centroids, trace inversion."""

import numpy as np
import pytest

from fiberflow.models import psf as pm

FIBERS = np.array([0, 1, 24, 25, 137, 250, 374, 475, 499])
WAVES = np.linspace(5700.0, 7700.0, 23)


def test_spots_unit_sum_and_numba_matches_numpy(real_psf):
    st, x0, y0 = pm.spots(real_psf, WAVES, FIBERS, use_numba=True)
    ref, rx0, ry0 = pm.spots(real_psf, WAVES, FIBERS, use_numba=False)
    assert st.shape == (FIBERS.size, WAVES.size, 11, 17)
    np.testing.assert_allclose(st.sum(axis=(-1, -2)), 1.0, atol=1e-12)
    assert np.all(st >= 0)
    np.testing.assert_array_equal(x0, rx0)
    np.testing.assert_array_equal(y0, ry0)
    assert np.max(np.abs(st - ref)) < 1e-10


def test_kernel_matches_reference_with_tails_and_random_params(rng):
    n = 50
    xc = rng.uniform(10, 20, n)
    yc = rng.uniform(-3, 40, n)
    sigx = rng.uniform(0.8, 1.6, n)
    sigy = rng.uniform(0.8, 1.6, n)
    gh = rng.normal(0, 0.05, (n, 5, 4))
    gh[:, 0, 0] = 1.0
    tail = np.column_stack([rng.uniform(0, 0.02, n), rng.uniform(0.5, 2, n), rng.uniform(0.5, 1.5, n),
                            rng.uniform(0.5, 1.5, n), rng.uniform(1.5, 3, n)])
    a = pm.spot_stamps(xc, yc, sigx, sigy, gh, tail, 6, 4, use_numba=True)
    b = pm.spot_stamps(xc, yc, sigx, sigy, gh, tail, 6, 4, use_numba=False)
    assert np.max(np.abs(a[0] - b[0])) < 1e-10
    np.testing.assert_array_equal(a[1], b[1])


def test_gaussian_spot_is_exact_pixel_integral():
    # a pure Gaussian (GH-0-0 only) integrates to erf differences: check one pixel by quadrature
    from scipy import integrate

    st, x0, y0 = pm.spot_stamps([10.3], [20.8], [1.1], [0.9], np.ones((1, 1, 1)), np.array([[0, 1, 1, 1, 2.0]]), 8, 5)
    g = lambda y, x: np.exp(-0.5 * ((x - 10.3) / 1.1) ** 2 - 0.5 * ((y - 20.8) / 0.9) ** 2)
    tot = 2 * np.pi * 1.1 * 0.9
    val, _ = integrate.dblquad(g, 10.5, 11.5, lambda x: 20.5, lambda x: 21.5)
    # pixel (x=11, y=21): stamp indices (21 - y0, 11 - x0); the stamp covers >99.9999% of the flux
    assert st[0, 21 - y0[0], 11 - x0[0]] == pytest.approx(val / tot, rel=1e-6)


def test_centroid_on_trace_when_odd_terms_vanish(real_psf):
    sym = real_psf.copy()
    for (i, j) in sym.gh_terms():
        if i % 2 or j % 2:
            sym.params[f"GH-{i}-{j}"] = np.zeros_like(sym.params[f"GH-{i}-{j}"])
    fibers = np.arange(0, 500, 2)
    waves = np.linspace(5760.0, 7620.0, 40)
    x = pm.trace_x(sym, waves, fibers)
    y = pm.trace_y(sym, waves, fibers)
    # the model is centred on the trace (stamp one pixel larger than the file's, so no truncation bias)
    st, x0, y0 = pm.spots(sym, waves, fibers, hsize=(sym.hsizex + 1, sym.hsizey + 1))
    cx, cy = pm.spot_centroid(st, x0, y0)
    assert np.max(np.abs(cx - x)) < 0.002
    assert np.max(np.abs(cy - y)) < 0.002
    # with the file's 17x11 stamps, truncation of the wings moves centroids of spots centred
    # near a pixel edge by at most ~0.002 px (measured 0.0021 over 500 fibers x 60 wavelengths)
    st, x0, y0 = pm.spots(sym, waves, fibers)
    cx, cy = pm.spot_centroid(st, x0, y0)
    assert np.max(np.abs(cx - x)) < 0.002
    assert np.max(np.abs(cy - y)) < 0.0025
    assert np.mean(np.abs(cy - y) < 0.002) > 0.99
    x = pm.trace_x(real_psf, WAVES, FIBERS)
    y = pm.trace_y(real_psf, WAVES, FIBERS)
    # with the odd terms, the real PSF's centroids move (physics): by up to a few 0.01 px
    st, x0, y0 = pm.spots(real_psf, WAVES, FIBERS)
    cx, cy = pm.spot_centroid(st, x0, y0)
    shift = max(np.max(np.abs(cx - x)), np.max(np.abs(cy - y)))
    assert 0.003 < shift < 0.05


def test_trace_and_wavelength_invert_each_other(real_psf):
    fibers = np.arange(0, 500, 7)
    y = pm.trace_y(real_psf, WAVES, fibers)
    w = pm.wavelength(real_psf, y, fibers)
    y2 = pm.trace_y(real_psf, w, fibers)
    assert np.max(np.abs(y2 - y)) < 1e-6
    assert np.max(np.abs(w - WAVES[None, :])) < 1e-6 * 0.6  # 1e-6 px at ~0.55 A/px
    rows = np.linspace(0, real_psf.npix_y - 1, 50)
    w = pm.wavelength(real_psf, rows, fibers)
    assert np.max(np.abs(pm.trace_y(real_psf, w, fibers) - rows[None, :])) < 1e-6
    assert np.all(np.diff(w, axis=1) > 0)


def test_real_psf_geometry(real_psf):
    # the facts the reference digest gives for this PSF
    x = pm.trace_x(real_psf, [6700.0], [0, 499])[:, 0]
    assert 100 < x[0] < 140 and 3930 < x[1] < 3960
    w = np.array([6700.0])
    dy = (pm.trace_y(real_psf, w + 0.5, [250]) - pm.trace_y(real_psf, w - 0.5, [250]))[0, 0]
    assert 0.5 < 1.0 / dy < 0.6  # about 0.53 A/pixel at mid band
    p = pm.param_values(real_psf, w, [250], ["GHSIGX", "GHSIGY"])
    assert 0.95 < p["GHSIGX"][0, 0] < 1.15 and 1.0 < p["GHSIGY"][0, 0] < 1.25
    wmin, wmax = pm.wavelength_range(real_psf, [0, 250, 499])
    assert np.all(wmin < 5760) and np.all(wmax > 7620)


def test_fiber_outside_psf_raises(real_psf):
    with pytest.raises(IndexError, match="outside"):
        pm.trace_x(real_psf, WAVES, [500])
