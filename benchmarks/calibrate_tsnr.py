"""EFFTIME calibration of the template signal-to-noise (TSNR2), and its check.

Simulates one night (demo instrument) whose science exposures are two at the simulator's nominal
conditions (1000 s, airmass 1.0, seeing 1.1 arcsec, dark sky level 1.0, transparency 1) and four
that each change one condition (500 s; sky level 2; airmass 1.3; transparency 0.7), reduces it
through the cframes with the Snakemake workflow, and prints, per tracer,
``SNR2TIME = EXPTIME / median TSNR2`` of the nominal exposures (TSNR2 of a fiber summed over
b, r, z; median over the good target fibers), then each exposure's EFFTIME / EXPTIME with that
calibration. ``--write`` stores the calibration in the shipped ensemble file
(``src/fiberflow/data/reference/tsnr/tsnr-ensemble.fits``, header and TRACERS.SNR2TIME).

Usage: python benchmarks/calibrate_tsnr.py [--cores N] [--workdir DIR] [--keep] [--write]
(about 10 minutes on 2 cores)
"""

import argparse
import glob
import os
import shutil
import sys
import tempfile

import numpy as np
from _simprod import calibration_exposures, reduce_simulated_night

NIGHT = 20250401
NOMINAL = {"exptime": 1000.0, "airmass": 1.0, "seeing": 1.1, "skylevel": 1.0, "transparency": 1.0}
CASES = [("nominal", {}, 3000), ("nominal", {}, 3001), ("500 s", {"exptime": 500.0}, 3002),
         ("sky x2", {"skylevel": 2.0}, 3003), ("airmass 1.3", {"airmass": 1.3}, 3004),
         ("transparency 0.7", {"transparency": 0.7}, 3005)]


def exposure_tsnr2(cframes):
    """{tracer: median over good target fibers of TSNR2 summed over the cameras} of one exposure."""
    from fiberflow.bitmasks import bad_fiberstatus
    from fiberflow.io.frame import read_frame

    tot, good = {}, None
    for path in cframes:
        fr = read_frame(path)
        band = fr.camera[0].upper()
        tgt = (np.char.strip(fr.fibermap["OBJTYPE"].astype(str)) == "TGT") & ~bad_fiberstatus(fr.fibermap, fr.nspec)
        good = tgt if good is None else good & tgt
        for n in fr.scores.dtype.names:
            if n.startswith("TSNR2_") and n.endswith("_" + band):
                t = n.split("_")[1]
                tot[t] = tot.get(t, 0) + np.asarray(fr.scores[n], float)
    return {t: float(np.median(v[good])) for t, v in tot.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--write", action="store_true", help="store SNR2TIME in the shipped ensemble file")
    args = ap.parse_args()
    root = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="calibrate-tsnr-"))
    os.makedirs(root, exist_ok=True)
    exps = calibration_exposures() + [{"obstype": "SCIENCE", "tileid": tile, **NOMINAL, **change}
                                      for _, change, tile in CASES]
    try:
        _, t_sim, t_red = reduce_simulated_night(root, NIGHT, exps, "tsnr", args.cores,
                                                 config={"redshift": {"enabled": False}}, check=False)
        print(f"simulated and reduced: {t_sim + t_red:.0f} s")
        expdirs = sorted(glob.glob(f"{root}/redux/tsnr/exposures/{NIGHT}/*/"))
        measured = []
        for d in expdirs:
            cfs = sorted(glob.glob(os.path.join(d, "cframe-*.fits")))
            if cfs:
                measured.append(exposure_tsnr2(cfs))
        if len(measured) != len(CASES):
            sys.exit(f"calibrate_tsnr: {len(measured)} exposures reached their cframes, expected {len(CASES)}")
        tracers = sorted(measured[0])
        snr2time = {t: float(np.mean([NOMINAL["exptime"] / m[t] for (name, _, _), m in zip(CASES, measured)
                                      if name == "nominal"])) for t in tracers}
        print("SNR2TIME [s per unit TSNR2] from the nominal exposures: "
              + ", ".join(f"{t} {snr2time[t]:.4g}" for t in tracers))
        print(f"{'exposure':18s} " + " ".join(f"{'EFF/EXP ' + t:>12s}" for t in tracers))
        for (name, change, _), m in zip(CASES, measured):
            exptime = change.get("exptime", NOMINAL["exptime"])
            print(f"{name:18s} " + " ".join(f"{snr2time[t] * m[t] / exptime:12.3f}" for t in tracers))
        if args.write:
            from fiberflow.io.tsnr import TsnrEnsemble

            path = os.path.join(os.path.dirname(__file__), "..", "src", "fiberflow", "data", "reference", "tsnr",
                                "tsnr-ensemble.fits")
            ens = TsnrEnsemble.read(path)
            for row in ens.tracers:
                row["SNR2TIME"] = snr2time[str(row["TRACER"]).strip()]
            hdr = {k: v for k, v in ens.header.items() if k in ("SMOOTH", "ESMOOTH")}
            hdr["SNR2CAL"] = ("simulator nominal: airmass 1.0, seeing 1.1, sky 1.0, transp. 1", "EFFTIME calibration")
            TsnrEnsemble(ens.wave, ens.dflux2, ens.tracers, hdr).write(path)
            print(f"SNR2TIME written into {os.path.abspath(path)}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
