"""Nominal b/r/z PSFs derived from the real r0 PSF, for every preset."""

import numpy as np
import pytest

from fiberflow.instrument import load_instrument
from fiberflow.io.psf import read_psf
from fiberflow.models import psf as pm
from fiberflow.sim.optics import nominal_psf, nominal_psfs

RESOLUTION_RANGE = {"b": (2000, 3500), "r": (4000, 5500), "z": (4000, 5500)}


@pytest.mark.parametrize("preset", ["desi", "demo", "tiny"])
def test_nominal_psfs_fit_the_ccd_and_resolution(real_psf, preset):
    inst = load_instrument(preset)
    psfs = nominal_psfs(real_psf, inst)
    assert set(psfs) == {"b", "r", "z"}
    fibers = np.arange(inst.nfiber)
    for arm, psf in psfs.items():
        assert psf.nfiber == inst.nfiber and psf.npix_x == inst.ccd["nx"] and psf.npix_y == inst.ccd["ny"]
        grid = inst.wavegrid(arm)
        y = pm.trace_y(psf, grid[[0, -1]], fibers)
        x = pm.trace_x(psf, grid[::50], fibers)
        # the whole extraction grid of every fiber lands on the CCD with a full stamp around it
        assert y.min() > psf.hsizey and y.max() < psf.npix_y - 1 - psf.hsizey
        assert x.min() > psf.hsizex and x.max() < psf.npix_x - 1 - psf.hsizex
        # traces stay ordered (no crossing fibers)
        assert np.all(np.diff(x, axis=0) > 3)
        mid = grid[grid.size // 2]
        disp = 1.0 / np.diff(pm.trace_y(psf, [mid - 0.5, mid + 0.5], fibers), axis=1)[:, 0]
        sig = pm.param_values(psf, [mid], fibers, ["GHSIGY"])["GHSIGY"][:, 0]
        R = mid / (2.355 * sig * disp)
        lo, hi = RESOLUTION_RANGE[arm]
        assert lo < np.median(R) < hi, (arm, np.median(R))


def test_r_nominal_is_the_real_psf(real_psf):
    psf = nominal_psf(real_psf, load_instrument("desi"), "r")
    np.testing.assert_array_equal(psf.xtrace, real_psf.xtrace)
    np.testing.assert_array_equal(psf.ytrace, real_psf.ytrace)
    for k, v in real_psf.params.items():
        np.testing.assert_array_equal(psf.params[k], v)


def test_nominal_psf_roundtrip(tmp_path, real_psf):
    psf = nominal_psf(real_psf, load_instrument("demo"), "z")
    back = read_psf(psf.write(tmp_path / "psf-z0-nominal.fits"))
    w = np.linspace(7520, 9824, 9)
    np.testing.assert_allclose(pm.trace_x(back, w), pm.trace_x(psf, w))
    np.testing.assert_allclose(pm.trace_y(back, w), pm.trace_y(psf, w))
    st, _, _ = pm.spots(back, w, [0, 49])
    np.testing.assert_allclose(st.sum(axis=(-1, -2)), 1.0)


def test_too_narrow_ccd_is_refused(real_psf):
    inst = load_instrument("demo", overrides={"ccd": {"nx": 300}})
    with pytest.raises(ValueError, match="wider than nx=300"):
        nominal_psf(real_psf, inst, "b")
