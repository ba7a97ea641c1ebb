"""Redshift validation on a larger simulated production: success and pipeline-induced failures.

Simulates one night of ``--tiles`` tiles (one 900 s exposure each, the first ``--repeats`` times)
with the given instrument (default demo: one petal of 50 fibers, ~44 targets a tile; ``desi``
for full-size petals), reduces it with the Snakemake workflow (tile coadds, redrock, ztile; or
``--flavour healpix``: HEALPix coadds and zpix),
then runs ``fiberflow validate-redshifts --ideal``: the success table per class against the
simulator's truth and the pipeline-induced failures (targets that fail on fiberflow's coadd
but succeed on the ideal reduction of the same targets). Prints the time of each stage.

Usage: python benchmarks/validate_redshifts.py [--tiles 24] [--instrument demo] [--petals N] [--cores N]
       [--workdir DIR] [--keep]
(the default: ~1,050 targets; about an hour on 2 cores, most of it redrock;
``--instrument desi --petals 1 --tiles 3 --repeats 1``: ~1,400 targets on one full-size petal)
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from _simprod import calibration_exposures, reduce_simulated_night

NIGHT = 20250301


def ff(*args):
    subprocess.run([sys.executable, "-m", "fiberflow.cli.main", *args], check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2, help="exposures of the first tile")
    ap.add_argument("--instrument", default="demo")
    ap.add_argument("--petals", type=int, default=None,
                    help="simulate and reduce only the first N petals (e.g. --instrument desi --petals 1: one full-size petal)")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--flavour", choices=("cumulative", "healpix"), default="cumulative",
                    help="coadds to fit and validate: tile petals (ztile; one redrock file a tile) or HEALPix pixels (zpix)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    group = "ztile" if args.flavour == "cumulative" else "zpix"
    root = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="validate-redshifts-"))
    os.makedirs(root, exist_ok=True)
    exps = calibration_exposures()
    for t in range(args.tiles):
        for r in range(args.repeats if t == 0 else 1):
            exps.append({"obstype": "SCIENCE", "tileid": 2000 + t, "exptime": 900.0, "airmass": round(1.05 + 0.01 * t, 3),
                         "seeing": 1.0 + 0.1 * r, "skylevel": 1.0})
    print(f"production in {root}: {args.instrument} instrument, {args.tiles} tiles, {args.cores} cores")
    try:
        cfg, t_sim, t_red = reduce_simulated_night(root, NIGHT, exps, "zval", args.cores, args.instrument,
                                                   {"coadds": {"flavours": [args.flavour]},
                                                    "redshift": {"enabled": True}}, petals=args.petals)
        print(f"simulated: {t_sim:.0f} s")
        print(f"reduced through redrock and {group}: {t_red:.0f} s")
        t = time.time()
        ff("validate-redshifts", "--config", cfg, "--group", group, "--ideal", "--ncpu", str(args.cores),
           "--json", os.path.join(root, "redshift-validation.json"))
        print(f"validation (redrock on the ideal coadds): {time.time() - t:.0f} s")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
