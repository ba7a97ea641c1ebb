"""DESI's own readers (desispec 0.70, installed in the test environment) open fiberflow's files.

This is the standing proof that fiberflow speaks the DESI data model.
"""

import os
import warnings

import _factories as fac
import numpy as np
import pytest

from fiberflow.models import psf as pm
from fiberflow.models import resolution

pytestmark = pytest.mark.interop

desispec_io = pytest.importorskip("desispec.io", reason="desispec (DESI's reader) is not installed")
os.environ.setdefault("DESI_LOGLEVEL", "WARNING")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_desispec_reads_frame(tmp_path):
    fr = fac.frame(nspec=5, nwave=60)
    path = str(fr.write(tmp_path / "frame-r0-00000101.fits"))
    d = desispec_io.read_frame(path)
    assert d.flux.shape == (5, 60) and d.nspec == 5
    np.testing.assert_allclose(d.flux, fr.flux)
    np.testing.assert_allclose(d.ivar, fr.ivar)
    np.testing.assert_array_equal(d.mask, fr.mask)
    np.testing.assert_allclose(d.wave, fr.wave)
    assert d.meta["CAMERA"] == "r0" and d.meta["BUNIT"] == "electron/Angstrom"
    np.testing.assert_array_equal(np.asarray(d.fibermap["TARGETID"]), fr.fibermap["TARGETID"])
    np.testing.assert_allclose(d.chi2pix, fr.chi2pix)
    # DESI's Resolution objects reproduce our resolution convolution
    rng = np.random.default_rng(3)
    for i in range(d.nspec):
        truth = rng.normal(size=60)
        ours = resolution.apply(fr.resolution[i].astype(float), truth)
        np.testing.assert_allclose(d.R[i].dot(truth), ours, rtol=1e-6, atol=1e-6)


def test_desispec_reads_fiberflat_and_sky(tmp_path):
    ff = fac.fiberflat()
    d = desispec_io.read_fiberflat(str(ff.write(tmp_path / "fiberflat-r0-00000100.fits")))
    np.testing.assert_allclose(d.fiberflat, ff.fiberflat)
    np.testing.assert_allclose(d.ivar, ff.ivar)
    np.testing.assert_allclose(d.meanspec, ff.meanspec)
    np.testing.assert_allclose(d.wave, ff.wave)
    sky = fac.sky()
    d = desispec_io.read_sky(str(sky.write(tmp_path / "sky-r0-00000101.fits")))
    np.testing.assert_allclose(d.flux, sky.flux)
    np.testing.assert_allclose(d.ivar, sky.ivar)
    np.testing.assert_allclose(d.wave, sky.wave)
    np.testing.assert_allclose(d.stat_ivar, sky.stat_ivar)


def test_desispec_reads_fluxcalib_and_stdstars(tmp_path):
    fc = fac.fluxcalib()
    d = desispec_io.read_flux_calibration(str(fc.write(tmp_path / "fluxcalib-r0-00000101.fits")))
    np.testing.assert_allclose(d.calib, fc.calib)
    st = fac.stdstars()
    flux, wave, fibers, meta = desispec_io.read_stdstar_models(str(st.write(tmp_path / "stdstars-0-00000101.fits")))
    np.testing.assert_allclose(flux, st.flux)
    np.testing.assert_array_equal(fibers, st.fibers)
    np.testing.assert_allclose(meta["TEFF"], st.metadata["TEFF"])


def _ensure_traceset(monkeypatch):
    """desispec's XYTraceSet evaluates Legendre series with desihub's ``specter.util.traceset``.

    desihub/specter is not on PyPI (the PyPI package named ``specter`` is an unrelated BDD
    library and must never be installed), so when it is absent this test provides the one
    class desispec needs: a Legendre evaluator over a wavelength domain, with ``invert``. What
    the test checks is desispec's own reading of fiberflow's PSF file (HDU names, WAVEMIN/WAVEMAX,
    NPIX_Y, coefficient layout); the Legendre arithmetic is numpy's.
    """
    import sys
    import types

    try:
        import specter.util.traceset  # noqa: F401  (the real desihub package)
        return
    except ImportError:
        pass
    from numpy.polynomial import legendre

    class TraceSet:
        def __init__(self, coeff, domain):
            self._coeff = np.atleast_2d(np.asarray(coeff, float))
            self._xmin, self._xmax = float(domain[0]), float(domain[1])

        def eval(self, fiber, x):
            u = 2 * (np.asarray(x, float) - self._xmin) / (self._xmax - self._xmin) - 1
            if fiber is None:
                return np.array([legendre.legval(u, c) for c in self._coeff])
            return legendre.legval(u, self._coeff[fiber])

        def invert(self, xmin=None, xmax=None, deg=None):
            xs = np.linspace(self._xmin, self._xmax, 1000)
            ys = np.array([self.eval(i, xs) for i in range(len(self._coeff))])
            ymin, ymax = ys.min(), ys.max()
            deg = deg or self._coeff.shape[1] + 2
            coeffs = [legendre.legfit(2 * (y - ymin) / (ymax - ymin) - 1, xs, deg) for y in ys]
            return TraceSet(np.array(coeffs), [ymin, ymax])

    mod = types.ModuleType("specter.util.traceset")
    mod.TraceSet = TraceSet
    for name in ("specter", "specter.util"):
        if name not in sys.modules:
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "specter.util.traceset", mod)


def test_desispec_reads_psf_traces(tmp_path, real_psf, monkeypatch):
    _ensure_traceset(monkeypatch)
    path = str(real_psf.write(tmp_path / "psf-r0-00000101.fits"))
    tset = desispec_io.read_xytraceset(path)
    assert tset.nspec == 500
    fibers = np.array([0, 100, 499])
    w = np.array([5800.0, 6700.0, 7600.0])
    ours_x = pm.trace_x(real_psf, w, fibers)
    ours_y = pm.trace_y(real_psf, w, fibers)
    for k, f in enumerate(fibers):
        np.testing.assert_allclose(tset.x_vs_wave(f, w), ours_x[k], atol=1e-8)
        np.testing.assert_allclose(tset.y_vs_wave(f, w), ours_y[k], atol=1e-8)
        np.testing.assert_allclose(tset.wave_vs_y(f, ours_y[k]), w, atol=1e-3)


def test_desispec_reads_spectra_and_coadd(tmp_path):
    for coadd in (False, True):
        sp = fac.spectra(coadd=coadd)
        path = str(sp.write(tmp_path / f"{'coadd' if coadd else 'spectra'}-main-dark-5261.fits"))
        d = desispec_io.read_spectra(path)
        assert sorted(d.bands) == ["b", "r", "z"] and d.num_spectra() == 4
        for b in "brz":
            np.testing.assert_allclose(d.flux[b], sp.flux[b])
            np.testing.assert_allclose(d.ivar[b], sp.ivar[b])
            np.testing.assert_allclose(d.wave[b], sp.wave[b])
            np.testing.assert_allclose(d.resolution_data[b], sp.resolution[b])
        assert d.meta["HPXPIXEL"] == 5261
        if coadd:
            assert d.exp_fibermap is not None and len(d.exp_fibermap) == 8


def test_desispec_reads_fibermap(tmp_path):
    from desispec.io.fibermap import read_fibermap

    from fiberflow.io.fibermap import write_fibermap

    fm = fac.fibermap(30, petal=2)
    path = str(tmp_path / "fibermap-00000101.fits")
    write_fibermap(path, fm, {"TILEID": 1000, "EXPID": 101})
    d = read_fibermap(path)
    assert len(d) == 30
    np.testing.assert_array_equal(np.asarray(d["FIBER"]), fm["FIBER"])
    np.testing.assert_array_equal(np.asarray(d["OBJTYPE"]).astype(str), fm["OBJTYPE"])


def test_desispec_coadd_of_our_spectra_agrees_with_ours(tmp_path):
    """desispec.coaddition.coadd run on our spectra file gives our coadd to 1e-5 (cosmic-ray
    rejection off in both), including FIBERSTATUS rules, masked bins and resolution rows."""
    from desispec.coaddition import coadd as desi_coadd
    from desispec.resolution import Resolution

    from fiberflow.bitmasks import fibermask, specmask
    from fiberflow.io.spectra import read_spectra
    from fiberflow.steps import coadd

    sp, _ = fac.healpix_spectra(ntarget=6, nexp=3)
    sp.fibermap["FIBERSTATUS"][6] = fibermask.mask("BROKENFIBER")
    sp.fibermap["FIBERSTATUS"][13] = fibermask.mask("BADAMPR")
    sp.mask["b"][1, 40] = specmask.mask("COSMIC")
    sp.mask["r"][2, 30] = sp.mask["r"][8, 30] = sp.mask["r"][14, 30] = specmask.mask("BADFIBERFLAT")
    path = str(sp.write(tmp_path / "spectra-main-dark-5261.fits"))
    ours = coadd.coadd_spectra(read_spectra(path), coadd.CoaddOptions(cosmics_nsig=0))
    theirs = desispec_io.read_spectra(path)
    desi_coadd(theirs, cosmics_nsig=0)
    np.testing.assert_array_equal(np.asarray(theirs.fibermap["TARGETID"]), ours.fibermap["TARGETID"])
    np.testing.assert_array_equal(np.asarray(theirs.fibermap["COADD_NUMEXP"]), ours.fibermap["COADD_NUMEXP"])
    np.testing.assert_array_equal(np.asarray(theirs.fibermap["COADD_FIBERSTATUS"]), ours.fibermap["COADD_FIBERSTATUS"])
    for b in "brz":
        scale = np.abs(ours.flux[b]).max()
        np.testing.assert_allclose(theirs.flux[b], ours.flux[b], rtol=1e-5, atol=1e-5 * scale)
        np.testing.assert_allclose(theirs.ivar[b], ours.ivar[b], rtol=1e-5)
        np.testing.assert_array_equal(theirs.mask[b], ours.mask[b])
        for i in range(ours.nspec):
            np.testing.assert_allclose(Resolution(theirs.resolution_data[b][i]).toarray(),
                                       Resolution(ours.resolution[b][i]).toarray(), rtol=1e-5, atol=1e-6)
    # and it reads our coadd file
    c = desispec_io.read_spectra(str(ours.write(tmp_path / "coadd-main-dark-5261.fits")))
    assert c.num_targets() == 6 and len(c.exp_fibermap) == 18 and c.bands == ["b", "r", "z"]
