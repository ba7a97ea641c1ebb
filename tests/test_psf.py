"""PSF fit from arcs and nightly PSF, against the simulator's true PSF."""

import os
import subprocess
import sys

import numpy as np
import pytest

from fiberflow import bitmasks, linalg
from fiberflow.models import arclines
from fiberflow.models import psf as psfmodel
from fiberflow.steps import preproc, psffit

NIGHT = 20250301


def _ff(*args):
    return subprocess.run([sys.executable, "-m", "fiberflow.cli.main", *args], capture_output=True, text=True)


# ---------------------------------------------------------------------------- pure functions
def test_render_and_paint_place_stamps_consistently(rng):
    stamps = rng.random((3, 5, 7))
    sx0 = np.array([10, 20, 3])
    sy0 = np.array([4, 8, 0])
    canvas = paint((30, 40), stamps, sx0, sy0, np.array([1.0, 2.0, 3.0]))
    assert canvas.sum() == pytest.approx((stamps * np.array([1, 2, 3])[:, None, None]).sum())
    # a window one pixel right/down of the stamp sees the stamp shifted, zeros where it ends
    win = psffit.render_windows(stamps, sx0, sy0, sx0 + 1, sy0 + 1, 7, 5)
    np.testing.assert_array_equal(win[:, :-1, :-1], stamps[:, 1:, 1:])
    assert np.all(win[:, -1, :] == 0) and np.all(win[:, :, -1] == 0)
    got = psffit.gather_windows(canvas, sx0[:1], sy0[:1], 7, 5)
    np.testing.assert_allclose(got[0], stamps[0])


def paint(shape, stamps, sx0, sy0, w):
    return psffit.paint(shape, stamps, sx0, sy0, w)


def test_robust_lstsq_clips_outliers(rng):
    x = np.linspace(-1, 1, 40)
    A = np.stack([np.ones_like(x), x], axis=1)
    d = 0.3 + 0.1 * x + rng.normal(0, 0.01, x.size)
    d[[5, 17]] += 1.0
    coef, keep = linalg.robust_lstsq(A, d, np.full(x.size, 0.01), 4.0)
    assert not keep[5] and not keep[17] and keep.sum() >= 36
    np.testing.assert_allclose(coef, [0.3, 0.1], atol=0.01)


def test_line_lists():
    r = arclines.lines_for_camera("r", 5600, 7700)
    assert 15 < r.size < 40 and np.all(np.diff(r) >= 6.0)
    assert 6404.018 in r and 5461.0 not in r  # R tag, inside range
    ref = arclines.refinement_lines(5600, 7700)
    assert ref.size > r.size


def test_combine_psfs_rejects_outliers_and_bad_fibers(real_psf):
    base = real_psf.select_fibers(0, 50)
    psfs = []
    for k in range(4):
        p = base.copy()
        p.xtrace[:, 0] += 0.001 * k
        p.fiberstatus = np.zeros(50, dtype=[("FIBER", "i4"), ("STATUS", "i4"), ("NLINE", "i4"), ("RMSX", "f4"),
                                             ("RMSY", "f4")])
        psfs.append(p)
    psfs[2].xtrace[7, 0] += 3.0                     # one wild fiber in one arc
    psfs[1].fiberstatus["STATUS"][9] = psffit.BADARC  # a flagged fiber
    psfs[1].xtrace[9, 0] += 5.0
    psfs[3].meta["B01RCHI2"] = 50.0                   # a badly fitted bundle
    psfs[3].xtrace[25:50, 0] += 2.0
    for p in psfs[:3]:
        p.meta["B01RCHI2"] = 1.1
    out = psffit.combine_psfs(psfs, 25, nsig=3.0)
    mean = base.xtrace[:, 0] + 0.0015
    assert abs(out.xtrace[7, 0] - base.xtrace[7, 0]) < 0.01
    assert abs(out.xtrace[9, 0] - base.xtrace[9, 0]) < 0.01
    np.testing.assert_allclose(out.xtrace[25:, 0], base.xtrace[25:, 0] + 0.001, atol=1e-9)
    assert abs(out.xtrace[0, 0] - mean[0]) < 1e-9
    assert (out.status() == 0).all() and out.meta["NPSF"][0] == 4


# ---------------------------------------------------------------------------- on simulated arcs
def _arc(sim, cam, expid=10, exptime=5.0, faults=None, badamps=()):
    from fiberflow.sim.plan import parse_plan

    plan = parse_plan({"night": NIGHT, "first_expid": expid,
                       "exposures": [{"obstype": "ARC", "exptime": exptime, "faults": faults or {}}]})
    exp = plan.exposures[0]
    raw, truth, _ = sim.simulate_camera(NIGHT, exp, cam)
    spec = sim.instrument.camera(cam)
    image, ivar, rn, mask, _ = preproc.preproc_camera(raw, gains=dict(zip(preproc.AMPS, spec.gain)),
                                                     dark_rate=spec.dark, badamps=badamps)
    return image, ivar, rn, mask, sim.exposure_psf(NIGHT, exp.expid, cam)


def _perturbed(sim, cam):
    start = sim.nominal_psf(cam).copy()
    start.xtrace[:, 0] += 0.8
    start.ytrace[:, 0] -= 1.7
    if start.ytrace.shape[1] > 1:
        start.ytrace[:, 1] += 0.4  # a stretch of the wavelength scale
    for name in ("GHSIGX", "GHSIGY"):
        start.params[name] = start.params[name] * 1.06
    return start


def _fit(sim, cam, image, ivar, rn, start):
    wmin, wmax = psfmodel.wavelength_range(start)
    lines = arclines.lines_for_camera(cam[0], wmin.max(), wmax.min())
    ref = arclines.refinement_lines(wmin.max(), wmax.min())
    return psffit.fit_psf(image, ivar, rn, start, cam[0], lines, sim.instrument.bundlesize, refine_lines=ref)


def _errors(fit, true_psf, spec, fibers):
    w = np.linspace(spec.wavemin, spec.wavemax, 300)
    dx = (psfmodel.trace_x(fit, w) - psfmodel.trace_x(true_psf, w))[fibers]
    wfit = psfmodel.wavelength(fit, psfmodel.trace_y(true_psf, w))
    dw = (wfit - w[None, :])[fibers]
    widths = {}
    for name in ("GHSIGX", "GHSIGY"):
        a = psfmodel.param_values(fit, w, None, [name])[name]
        b = psfmodel.param_values(true_psf, w, None, [name])[name]
        widths[name] = np.abs(a / b - 1)[fibers].max()
    return np.sqrt(np.mean(dx**2)), np.sqrt(np.mean(dw**2)), widths


@pytest.fixture(scope="module")
def demo_sim():
    from fiberflow.sim.night import Simulator

    return Simulator("demo", 5)


@pytest.mark.parametrize("cam", ["b0", "r0", "z0"])
def test_psf_fit_recovers_truth(demo_sim, cam):
    """From a start off by (0.8, -1.7) px, a stretch and 6% wider spots: the issue's accuracy."""
    image, ivar, rn, _, true_psf = _arc(demo_sim, cam)
    fit = _fit(demo_sim, cam, image, ivar, rn, _perturbed(demo_sim, cam))
    good = fit.status() == 0
    assert good.all()
    xrms, wrms, widths = _errors(fit, true_psf, demo_sim.instrument.camera(cam), good)
    assert xrms < 0.02, f"trace x rms {xrms:.4f} px"
    assert wrms < 0.01, f"wavelength rms {wrms:.4f} A"
    assert widths["GHSIGX"] < 0.02 and widths["GHSIGY"] < 0.02, widths
    assert fit.meta["NLINES"][0] >= 10 and fit.meta["RMSX"][0] < 0.1
    # the spots table holds the measured positions; used spots scatter about the traces as their errors say
    sp = fit.spots[fit.spots["USED"]]
    pull = (sp["X"] - np.array([psfmodel.trace_x(fit, [w], [f])[0, 0] for w, f in zip(sp["WAVE"], sp["FIBER"])])) / sp["X_ERR"]
    assert 0.7 < np.std(pull) < 1.5


def test_psf_fit_measures_higher_order_gauss_hermite_terms(demo_sim):
    """An arc whose true PSF differs from the start in its shear / coma-like / triangular GH terms
    and has a tail (simulator psf_shape): the fit recovers each term to a few 1e-4 of the core
    amplitude (the offsets are ~0.03), the spots' chi2 drops to ~1, and the traces get better,
    not worse."""
    from fiberflow.sim.night import SHAPE_TERMS, Simulator

    sim = Simulator("demo", 5, psf_shape=0.03)
    cam = "r0"
    image, ivar, rn, _, true_psf = _arc(sim, cam)
    start = _perturbed(sim, cam)
    wmin, wmax = psfmodel.wavelength_range(start)
    lines = arclines.lines_for_camera(cam[0], wmin.max(), wmax.min())
    ref = arclines.refinement_lines(wmin.max(), wmax.min())
    w = np.linspace(true_psf.psf_wavemin + 50, true_psf.psf_wavemax - 50, 50)
    terms = list(SHAPE_TERMS) + ["TAILAMP"]
    truth = psfmodel.param_values(true_psf, w, None, terms)
    out = {}
    for fitted in ((), terms):
        fit = psffit.fit_psf(image, ivar, rn, start, cam[0], lines, sim.instrument.bundlesize, refine_lines=ref,
                             opts=psffit.PSFFitOptions(shape_terms=fitted))
        vals = psfmodel.param_values(fit, w, None, terms)
        err = {k: float(np.sqrt(np.mean((vals[k] - truth[k]) ** 2))) for k in terms}
        xrms, wrms, _ = _errors(fit, true_psf, sim.instrument.camera(cam), fit.status() == 0)
        out[bool(fitted)] = (err, float(np.mean(fit.spots["CHI2"][fit.spots["USED"]])), xrms, wrms)
    (e0, chi0, x0, _w0), (e1, chi1, x1, w1) = out[False], out[True]
    # measured: GH start errors 0.011-0.055, fitted 0.0002-0.0006; TAILAMP 0.0030 -> 0.0003;
    # spot chi2 2.9 -> 1.28; x rms 0.0058 -> 0.0018 px; core widths 1.7-2.0% -> 0.6-0.8% off
    assert min(e0[k] for k in SHAPE_TERMS) > 0.005 and e0["TAILAMP"] > 0.0025
    assert max(e1[k] for k in SHAPE_TERMS) < 0.002 and e1["TAILAMP"] < 0.001, e1
    assert chi1 < 1.5 < chi0
    assert x1 < x0 and x1 < 0.02 and w1 < 0.01
    with pytest.raises(ValueError, match="degenerate with the spots"):
        psffit.shape_term_keys(start, ["GH-2-0"])
    with pytest.raises(ValueError, match="not a GH-i-j term or TAILAMP"):
        psffit.shape_term_keys(start, ["TAILCORE"])


def test_psf_fit_robust_to_dead_fiber_dead_amp_and_saturation(demo_sim):
    cam = "r0"
    # a nearly dead fiber (0.2% throughput), amplifier D (top right) dead and masked, bad
    # columns over fiber 20's trace, and a 60 s arc that saturates the brightest lines
    image, ivar, rn, mask, true_psf = _arc(demo_sim, cam, expid=20, exptime=60.0,
                                           faults={"broken_fibers": [12], "dead_amp": {"camera": cam, "amp": "D"}},
                                           badamps=("D",))
    assert (mask & bitmasks.ccdmask.mask("SATURATED")).any()
    rows = np.arange(ivar.shape[0])
    x20 = np.round(psfmodel.trace_x(true_psf, psfmodel.wavelength(true_psf, rows, [20])[0], [20])[0]).astype(int)
    ivar = ivar.copy()
    for dx in range(-2, 3):
        ivar[rows, x20 + dx] = 0
    fit = _fit(demo_sim, cam, image, ivar, rn, _perturbed(demo_sim, cam))
    status = fit.status()
    assert status[20] & psffit.BADARC
    # fibers on the dead amplifier's columns have lines on half the CCD only
    nx = image.shape[1]
    dead = psfmodel.trace_x(true_psf, [psfmodel.wavelength(true_psf, [3 * image.shape[0] // 4], [0])[0, 0]])[:, 0] > nx / 2
    assert dead.sum() > 15 and np.all(status[dead] & psffit.BADARC)
    good = status == 0
    assert good.sum() == 50 - dead.sum() - 1
    spec = demo_sim.instrument.camera(cam)
    xrms, wrms, _ = _errors(fit, true_psf, spec, good)
    assert xrms < 0.02 and wrms < 0.01, (xrms, wrms)
    # the fiber without data is interpolated from its bundle; the dim fiber is measured; the
    # fibers under the dead amplifier are extrapolated with the camera-wide model
    for f in (12, 20):
        xr, wr, _ = _errors(fit, true_psf, spec, np.array([f]))
        assert xr < 0.03 and wr < 0.02, (f, xr, wr)
    xr, wr, _ = _errors(fit, true_psf, spec, np.nonzero(dead)[0])
    assert xr < 0.05 and wr < 0.05, (xr, wr)
    # saturated spots are not used
    sat = fit.spots["FLUX"] > 0
    assert (fit.spots["USED"] & sat).sum() < sat.sum()


def test_psf_and_psfnight_cli(demo_sim, tmp_path):
    """CLI on preprocessed arcs: errors leave no file; psfnight combines and falls back."""
    from fiberflow.io.image import PreprocImage
    from fiberflow.io.psf import read_psf

    cfg = tmp_path / "config.yaml"
    cfg.write_text("instrument: demo\n")
    cam = "b0"
    start = tmp_path / "start.fits"
    _perturbed(demo_sim, cam).write(start)
    fits = []
    for expid in (31, 32):
        image, ivar, rn, mask, _ = _arc(demo_sim, cam, expid=expid)
        pre = tmp_path / f"preproc-{cam}-{expid}.fits"
        PreprocImage(image, ivar, mask, rn, None, {"CAMERA": cam, "OBSTYPE": "ARC", "EXPID": expid, "NIGHT": NIGHT}).write(pre)
        out = tmp_path / f"fit-psf-{cam}-{expid}.fits"
        res = _ff("psf", "--config", str(cfg), "--camera", cam, "-i", str(pre), "--start", str(start), "-o", str(out))
        assert res.returncode == 0, res.stderr
        fits.append(str(out))
    p = read_psf(fits[0])
    assert p.header["IN_PSF"] == "start.fits" and p.meta["ARCEXP"] == 31 and p.spots is not None
    night = tmp_path / "psfnight.fits"
    res = _ff("psfnight", "--config", str(cfg), "--camera", cam, "--night", str(NIGHT), "-i", *fits, "-o", str(night))
    assert res.returncode == 0, res.stderr
    pn = read_psf(night)
    assert pn.meta["NPSF"] == 2 and pn.header["FALLBACK"] is False
    a, b = read_psf(fits[0]), read_psf(fits[1])
    np.testing.assert_allclose(pn.xtrace, 0.5 * (a.xtrace + b.xtrace), atol=1e-9)
    # no arc: the fallback is copied and says so
    res = _ff("psfnight", "--config", str(cfg), "--camera", cam, "--night", str(NIGHT), "--fallback", str(start),
              "-o", str(tmp_path / "fb.fits"))
    assert res.returncode == 0 and read_psf(tmp_path / "fb.fits").header["FALLBACK"] is True
    res = _ff("psfnight", "--config", str(cfg), "--camera", cam, "--night", str(NIGHT), "-o", str(tmp_path / "none.fits"))
    assert res.returncode == 1 and "no usable arc PSF" in res.stderr and not (tmp_path / "none.fits").exists()
    # bad input: not an arc, all pixels masked, no lines at all
    image, ivar, rn, mask, _ = _arc(demo_sim, cam, expid=33)
    cases = {
        "flat": (image, ivar, "FLAT", "a PSF is fitted on ARC exposures"),
        "masked": (image, np.zeros_like(ivar), "ARC", "every pixel is masked"),
        "dark": (np.random.default_rng(1).normal(0, 3, image.shape).astype("f4"), ivar, "ARC", "arc lines not found"),
    }
    for name, (img, iv, obstype, message) in cases.items():
        pre = tmp_path / f"bad-{name}.fits"
        PreprocImage(img, iv, mask, rn, None, {"CAMERA": cam, "OBSTYPE": obstype, "EXPID": 33}).write(pre)
        out = tmp_path / f"out-{name}.fits"
        res = _ff("psf", "--config", str(cfg), "--camera", cam, "-i", str(pre), "--start", str(start), "-o", str(out))
        assert res.returncode == 1, (name, res.stderr)
        assert str(pre) in res.stderr and message in res.stderr, (name, res.stderr)
        assert not out.exists() and not [f for f in os.listdir(tmp_path) if f.startswith(f".out-{name}")]


def test_psf_start_previous_chains_the_nights(tmp_path):
    """psf.start: previous starts each arc fit from the nearest earlier night's psfnight (the
    first night, without one, from the nominal PSF); nominal never looks at other nights."""
    import re

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    from _workflow import snakemake
    from bench_workflow import make_production

    from fiberflow import paths

    cfg = make_production(str(tmp_path), 3, 12)  # 3 nights, each with 3 arcs
    nights = [20250101, 20250102, 20250103]
    prod = str(tmp_path / "redux" / "bench")

    def starts(extra):
        with open(cfg) as fh:
            text = fh.read()
        cfg2 = tmp_path / f"config-{extra or 'default'}.yaml"
        # (no certification: its history would plan every earlier arc of every camera, which is
        # not what this test counts)
        assert text.count("calibration: {") == 1
        text = text.replace("calibration: {", "calibration: {certify: false, ")
        cfg2.write_text(text + (f"psf: {{start: {extra}}}\n" if extra else ""))
        target = paths.findfile("psfnight", prod=prod, night=nights[2], camera="b3")
        res = snakemake(tmp_path, cfg2, "-n", "-p", target)
        assert res.returncode == 0, res.stderr[-3000:]
        return re.findall(r"fiberflow psf .*?--start (\S+)", res.stdout + res.stderr)

    # default (nominal): only night 3's three arc fits are needed, from the nominal PSF
    got = starts(None)
    assert len(got) == 3 and all(s.endswith(os.path.join("calib", "psf-b3.fits")) for s in got), got
    # previous: night 3 starts from night 2's psfnight, night 2 from night 1's, night 1 from nominal
    got = starts("previous")
    assert len(got) == 9, got
    for night, prev in ((nights[1], nights[0]), (nights[2], nights[1])):
        want = paths.findfile("psfnight", prod=prod, night=prev, camera="b3")
        assert sum(s == want for s in got) == 3, (night, got)
    assert sum(s.endswith(os.path.join("calib", "psf-b3.fits")) for s in got) == 3


def test_nominal_psfs_number_the_fibers_of_their_petal(tmp_path):
    """calibinit's nominal PSF of petal p covers fibers p*nfiber .. (p+1)*nfiber - 1 (DESI's
    numbering), so frames extracted with the PSFs fitted from it get the right SPECMIN/SPECMAX."""
    from fiberflow.io.psf import read_psf

    (tmp_path / "twopetal.yaml").write_text("inherit: tiny\nname: twopetal\nnpetal: 2\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"instrument: {tmp_path / 'twopetal.yaml'}\nraw: {tmp_path / 'raw'}\nredux: {tmp_path}\n"
                   f"specprod: p\ncalibration: {{default_psf: {tmp_path / 'calib'}}}\n")
    res = _ff("calibinit", "--config", str(cfg))
    assert res.returncode == 0, res.stderr
    for cam, first in (("b0", 0), ("r1", 25), ("z1", 25)):
        psf = read_psf(tmp_path / "calib" / f"psf-{cam}.fits")
        assert (psf.fibermin, psf.nfiber, psf.meta["FIBERMAX"]) == (first, 25, first + 24), cam
        assert psf.header["CAMERA"] == cam
