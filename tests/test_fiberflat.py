"""Fiberflat: throughputs recovered through per-fiber resolution matrices, clipping, dead
fibers, the banded normal equations against a dense solve, and the nightly average."""

import numpy as np
import pytest

from fiberflow import linalg
from fiberflow.models import resolution
from fiberflow.steps import fiberflat


def _flat_frame(rng, nspec=40, nwave=900, level=2.0e5, dead=(), cosmics=0):
    wave = 5800.0 + 0.8 * np.arange(nwave)
    u = np.linspace(-1, 1, nwave)
    lamp = level * (0.6 + 0.4 * np.exp(-0.5 * (u / 0.8) ** 2))
    lamp *= 1 - 0.3 * np.exp(-0.5 * ((wave - 6200.0) / 1.5) ** 2)  # a narrow feature R must describe
    a = 1 + 0.03 * rng.standard_normal(nspec)
    b = 0.015 * rng.standard_normal(nspec)
    c = 0.008 * rng.standard_normal(nspec)
    T = a[:, None] * (1 + b[:, None] * u + c[:, None] * (u**2 - 1 / 3))
    T /= np.median(T, axis=0)
    for f in dead:
        T[f] = 0.002
    rdata = np.array([resolution.gaussian_diags(np.full(nwave, 1.0 + 0.3 * f / nspec), 11) for f in range(nspec)])
    clean = np.array([T[f] * resolution.apply(rdata[f], lamp) for f in range(nspec)])
    var = clean + 10.0**2
    flux = clean + rng.standard_normal(clean.shape) * np.sqrt(var)
    ivar = 1.0 / var
    for _ in range(cosmics):
        f, k = rng.integers(nspec), rng.integers(5, nwave - 5)
        flux[f, k:k + 2] += 0.2 * clean[f, k]
    return wave, flux, ivar, np.zeros(flux.shape, np.int32), rdata, T


def test_banded_normal_equations_match_dense(rng):
    nspec, nwave = 3, 30
    rdata = np.array([resolution.gaussian_diags(np.full(nwave, 1.2), 7) for _ in range(nspec)])
    rows = fiberflat.diags_to_rows(rdata)
    x = rng.normal(size=nwave)
    dense = [resolution.diags_to_dense(r) for r in rdata]
    np.testing.assert_allclose(fiberflat.apply_rows(rows, x), [R @ x for R in dense], rtol=1e-12, atol=1e-12)
    w, d = rng.random((nspec, nwave)), rng.normal(size=(nspec, nwave))
    ab, b = linalg.banded_normal_equations(rows, w, d)
    A = sum(R.T @ np.diag(w[f]) @ R for f, R in enumerate(dense))
    np.testing.assert_allclose(b, sum(R.T @ (w[f] * d[f]) for f, R in enumerate(dense)), rtol=1e-12)
    u = ab.shape[0] - 1
    for i in range(nwave):
        for j in range(i, min(nwave, i + u + 1)):
            assert ab[u + i - j, j] == pytest.approx(A[i, j], rel=1e-12, abs=1e-14)


def test_fiberflat_recovers_true_throughput(rng):
    wave, flux, ivar, mask, rdata, T = _flat_frame(rng, dead=(7,), cosmics=15)
    out = fiberflat.compute_fiberflat(wave, flux, ivar, mask, rdata)
    good = np.ones(len(T), bool)
    good[7] = False
    err = (out["fiberflat"] - T)[good][:, 10:-10]
    assert np.sqrt(np.mean(err**2)) < 0.003  # issue 7: <= 0.3% on high-S/N flats
    # the smooth model is far better than the per-bin noise
    assert np.sqrt(np.mean((out["smooth"] - T)[good][:, 10:-10] ** 2)) < 0.001
    pulls = (err * np.sqrt(out["ivar"][good][:, 10:-10]))
    assert np.std(pulls[np.abs(pulls) < 10]) == pytest.approx(1.0, abs=0.1)
    assert np.all(out["mask"][7] & fiberflat.BADFIBERFLAT) and np.all(out["mask"][7] & fiberflat.LOWFLAT)
    assert not np.any(out["mask"][good] & fiberflat.BADFIBERFLAT)
    assert out["nclipped"] >= 15  # the cosmic-ray hits were clipped
    np.testing.assert_allclose(np.median(out["smooth"][good], axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.median(out["fiberflat"][good], axis=0), 1.0, atol=0.01)


def test_nightly_average_rejects_an_outlier_flat(rng):
    flats = [fiberflat.compute_fiberflat(*_flat_frame(np.random.default_rng(s))[:5]) for s in (1, 1, 1)]
    ff = np.array([f["fiberflat"] for f in flats])
    iv = np.array([f["ivar"] for f in flats])
    mk = np.array([f["mask"] for f in flats])
    ff[1, 3, 100:200] *= 1.2  # a bad stretch in one flat
    avg, ivar, mask = fiberflat.average_fiberflats(ff, iv, mk)
    np.testing.assert_allclose(avg[3, 100:200], ff[0, 3, 100:200], rtol=1e-6)
    assert np.all(ivar[3, 100:200] == pytest.approx(iv[0, 3, 100:200] + iv[2, 3, 100:200]))
    assert np.all(ivar[0] > iv[0, 0] * 2.9)
