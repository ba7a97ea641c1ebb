"""Seconds and peak memory to regroup and coadd one dense HEALPix pixel.

Writes ``--nexp`` full-size cframes per band (desi instrument: 500 fibers, the b/r/z grids,
11 resolution diagonals) for petal 0, every fiber inside one nside-64 pixel (a dense pixel:
``--nexp / --repeats`` tiles, each observed ``--repeats`` times), then times in fresh processes
on one core:

    fiberflow spectra   (3 x nexp cframes -> one spectra file)
    fiberflow coadd     (that file -> one coadd file), with the default healpix.coadd_max_rows
                        (500 spectra in memory at a time), 2000, and the whole pixel at once

Usage: python benchmarks/bench_healpix.py [--nexp 20] [--repeats 4] [--workdir DIR] [--keep]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _child import run  # noqa: E402

from fiberflow import paths
from fiberflow.instrument import load_instrument  # noqa: E402
from fiberflow.io.fibermap import empty_fibermap  # noqa: E402
from fiberflow.io.frame import FLUX_UNITS, Frame  # noqa: E402
from fiberflow.models import resolution  # noqa: E402
from fiberflow.steps import regroup

NIGHT = 20250301
PIX = 26225


def make_cframes(prod, nexp, repeats, rng):
    import healpy

    inst = load_instrument("desi")
    nfib = inst.nfiber  # fibers per petal
    ra0, dec0 = healpy.pix2ang(64, PIX, nest=True, lonlat=True)
    files = []
    res = {}
    for arm in inst.arms:
        n = inst.wavegrid(arm).size
        res[arm] = np.ascontiguousarray(np.broadcast_to(
            resolution.gaussian_diags(np.full(n, 1.1), 11).astype("f4"), (nfib, 11, n)))
    for e in range(nexp):
        tile = 1000 + e // repeats
        fm = empty_fibermap(nfib, petal=0)
        trng = np.random.default_rng(tile)
        fm["TARGETID"] = 39627000000000000 + tile * 10000 + np.arange(nfib)
        fm["OBJTYPE"] = "TGT"
        fm["FIBERSTATUS"] = 0
        fm["TARGET_RA"] = ra0 + trng.uniform(-0.25, 0.25, nfib)
        fm["TARGET_DEC"] = dec0 + trng.uniform(-0.25, 0.25, nfib)
        assert (regroup.healpix_of(fm["TARGET_RA"], fm["TARGET_DEC"]) == PIX).all()
        expid = 5000 + e
        for arm in inst.arms:
            wave = inst.wavegrid(arm)
            flux = rng.normal(2.0, 1.0, (nfib, wave.size)).astype("f4")
            ivar = np.ones((nfib, wave.size), "f4")
            hdr = {"CAMERA": f"{arm}0", "NIGHT": NIGHT, "EXPID": expid, "TILEID": tile, "EXPTIME": 900.0,
                   "MJD-OBS": 60700.0 + e / 50, "OBSTYPE": "SCIENCE", "FLAVOR": "science", "BUNIT": FLUX_UNITS}
            path = paths.findfile("cframe", prod=prod, night=NIGHT, expid=expid, camera=f"{arm}0")
            Frame(wave, flux, ivar, np.zeros(flux.shape, "i4"), res[arm], fm, None, None, hdr, FLUX_UNITS).write(path)
            files.append(path)
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nexp", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=4, help="exposures per tile (targets repeat)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="bench_healpix_")
    prod = os.path.join(work, "prod")
    cfg = os.path.join(work, "config.yaml")
    with open(cfg, "w") as fh:
        fh.write("instrument: desi\n")
    t = time.time()
    files = make_cframes(prod, args.nexp, args.repeats, np.random.default_rng(1))
    gb = sum(os.path.getsize(f) for f in files) / 1e9
    print(f"wrote {len(files)} full-size cframes ({gb:.1f} GB) in {time.time() - t:.0f} s; "
          f"{args.nexp} exposures x 500 fibers in pixel {PIX}, {args.nexp // args.repeats * 500} targets")
    spectra = paths.findfile("spectra", prod=prod, survey="main", program="dark", pix=PIX)
    coadd = paths.findfile("coadd", prod=prod, survey="main", program="dark", pix=PIX)
    print(f"{'step':10s} {'seconds':>8s} {'peak MB':>8s} {'output GB':>9s}   (one core, fresh process incl. imports)")
    for name, cmd, out in (
        ("spectra", ["spectra", "--config", cfg, "--pix", str(PIX), "-o", spectra, *files], spectra),
        ("coadd", ["coadd", "--config", cfg, "-i", spectra, "-o", coadd], coadd),
        # healpix.coadd_max_rows: spectra held in memory at a time (default 500)
        ("coadd/2000", ["coadd", "--config", cfg, "-i", spectra, "--max-rows", "2000", "-o", coadd], coadd),
        ("coadd/all", ["coadd", "--config", cfg, "-i", spectra, "--max-rows", "1000000", "-o", coadd], coadd),
    ):
        dt, mb = run(cmd, 1)
        print(f"{name:10s} {dt:8.1f} {mb:8.0f} {os.path.getsize(out) / 1e9:9.2f}", flush=True)
    if not args.keep and not args.workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
