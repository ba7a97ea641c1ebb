"""Seconds and peak memory of the calibration steps on full-size DESI cameras.

Builds one petal's frames (500 fibers, the desi b/r/z grids, 11-diagonal Gaussian resolution)
for a flat and a science exposure (50 sky fibers, 10 standard stars made from the shipped
stellar model, smooth calibration with Poisson + read noise), then times each command in a
fresh process on one core:

    fiberflat (r), fiberflatnight (r), sky (r), stdstars (b+r+z), fluxcalib (r), cframe (r)

Usage: python benchmarks/bench_calib.py [--workdir DIR]
"""

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _child import run  # noqa: E402

from fiberflow.bitmasks import desi_target  # noqa: E402
from fiberflow.instrument import load_instrument  # noqa: E402
from fiberflow.io.fibermap import empty_fibermap  # noqa: E402
from fiberflow.io.frame import Frame  # noqa: E402
from fiberflow.models import resolution, stellar  # noqa: E402
from fiberflow.models.photometry import ab_nanomaggies  # noqa: E402
from fiberflow.models.resolution import rows_to_diags  # noqa: E402
from fiberflow.steps import stdstars


def gaussian_rows(sig, nwave, ndiag=11):
    h = ndiag // 2
    k = np.arange(-h, h + 1)
    rows = np.exp(-0.5 * (k[None, None, :] / sig[:, None, None]) ** 2) * np.ones((1, nwave, 1))
    return rows / rows.sum(axis=2, keepdims=True)


def make_frames(workdir, rng):
    inst = load_instrument("desi")
    nspec = 500
    fm = empty_fibermap(nspec, petal=0)
    fm["OBJTYPE"] = "TGT"
    fm["FIBERSTATUS"] = 0
    sky = np.arange(5, nspec, 10)
    std = np.arange(23, nspec, 50)
    fm["OBJTYPE"][sky] = "SKY"
    fm["DESI_TARGET"][std] = desi_target.mask("STD_FAINT")
    teffs = rng.uniform(5900, 6700, std.size)
    models = np.stack([stellar.stellar_spectrum(stdstars.MODEL_WAVE, t, 4.2, -0.6) for t in teffs])
    phot = ab_nanomaggies(stdstars.MODEL_WAVE, models)
    mag = rng.uniform(16.5, 17.5, std.size)
    scale = 10 ** (-0.4 * (mag - 22.5)) / phot[:, 1]
    phot *= scale[:, None]
    fm["FLUX_G"][std], fm["FLUX_R"][std], fm["FLUX_Z"][std] = phot[:, 0], phot[:, 1], phot[:, 2]
    paths = {}
    for cam in ("b0", "r0", "z0"):
        wave = inst.wavegrid(cam)
        nwave = wave.size
        rows = gaussian_rows(rng.uniform(1.0, 1.6, nspec), nwave)
        rdata = rows_to_diags(rows).astype("f4")
        thr = 1 + 0.03 * rng.normal(size=(nspec, 1)) * (1 + 0.1 * np.sin(wave / 500.0))[None]
        lamp = 2e5 * np.exp(-0.5 * ((wave - 6000) / 2500) ** 2)
        flat = thr * resolution.apply_rows_each(rows, np.broadcast_to(lamp, (nspec, nwave)))
        var = 9 + flat
        hdr = {"CAMERA": cam, "NIGHT": 20250101, "EXPID": 1, "OBSTYPE": "FLAT", "EXPTIME": 120.0}
        p = os.path.join(workdir, f"frame-{cam}-flat.fits")
        Frame(wave, (flat + rng.normal(size=flat.shape) * np.sqrt(var)).astype("f4"), (1 / var).astype("f4"),
              np.zeros((nspec, nwave), np.int32), rdata, fm, None, None, hdr).write(p)
        paths[(cam, "flat")] = p
        skyspec = 300 + 50 * np.sin(wave / 300.0)
        for lam in rng.uniform(wave[20], wave[-20], 80):
            skyspec = skyspec + rng.uniform(100, 5000) * np.exp(-0.5 * ((wave - lam) / 0.4) ** 2)
        calib = 20.0 * np.exp(-0.5 * ((wave - 6500) / 3000) ** 2)
        obj = np.zeros((nspec, nwave))
        fine = resolution.fine_grid(wave)
        for k, f in enumerate(std):
            m = stellar.stellar_spectrum(fine, teffs[k], 4.2, -0.6) * scale[k] / 1e-17
            obj[f] = resolution.bin_average(wave, fine, m) * calib
        sci = thr * (resolution.apply_rows_each(rows, obj) + resolution.apply_rows_each(rows, np.broadcast_to(skyspec, (nspec, nwave))))
        var = 9 + sci
        hdr = dict(hdr, OBSTYPE="SCIENCE", EXPID=2, EXPTIME=900.0)
        p = os.path.join(workdir, f"frame-{cam}-sci.fits")
        Frame(wave, (sci + rng.normal(size=sci.shape) * np.sqrt(var)).astype("f4"), (1 / var).astype("f4"),
              np.zeros((nspec, nwave), np.int32), rdata, fm, None, None, hdr).write(p)
        paths[(cam, "sci")] = p
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="bench-calib-")
    os.makedirs(work, exist_ok=True)
    cfg = os.path.join(work, "config.yaml")
    with open(cfg, "w") as fh:
        fh.write("instrument: desi\n")
    paths = make_frames(work, np.random.default_rng(3))
    j = lambda name: os.path.join(work, name)  # noqa: E731
    steps = []
    for cam in ("b0", "r0", "z0"):
        steps += [
            (f"fiberflat {cam}", ["fiberflat", "--config", cfg, "--camera", cam, "-i", paths[(cam, "flat")], "-o", j(f"ff-{cam}.fits")]),
            (f"fiberflatnight {cam}", ["fiberflatnight", "--config", cfg, "--camera", cam, "--night", "20250101", "-i",
                                       j(f"ff-{cam}.fits"), "-o", j(f"ffn-{cam}.fits")]),
            (f"sky {cam}", ["sky", "--config", cfg, "--camera", cam, "-i", paths[(cam, "sci")], "--fiberflat", j(f"ffn-{cam}.fits"),
                            "-o", j(f"sky-{cam}.fits"), "--sframe", j(f"sframe-{cam}.fits")]),
        ]
    steps.append(("stdstars (b+r+z, 10 stars)", ["stdstars", "--config", cfg, "--spectrograph", "0", "--sframes",
                                                 *[j(f"sframe-{c}.fits") for c in ("b0", "r0", "z0")], "-o", j("stdstars.fits")]))
    for cam in ("b0", "r0", "z0"):
        steps += [
            (f"fluxcalib {cam}", ["fluxcalib", "--config", cfg, "--camera", cam, "-i", j(f"sframe-{cam}.fits"), "--stdstars",
                                  j("stdstars.fits"), "-o", j(f"fluxcalib-{cam}.fits")]),
            (f"cframe {cam}", ["cframe", "--config", cfg, "--camera", cam, "-i", j(f"sframe-{cam}.fits"), "--fluxcalib",
                               j(f"fluxcalib-{cam}.fits"), "-o", j(f"cframe-{cam}.fits")]),
        ]
    print(f"{'step':32s} {'seconds':>8s} {'peak MB':>8s}   (500 fibers, one core, fresh process incl. imports)")
    for name, cmd in steps:
        dt, mb = run(cmd, 1)
        print(f"{name:32s} {dt:8.1f} {mb:8.0f}", flush=True)


if __name__ == "__main__":
    main()
