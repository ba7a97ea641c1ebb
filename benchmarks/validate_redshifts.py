"""Redshift validation on a larger simulated production: success and pipeline-induced failures.

Simulates one night of ``--tiles`` tiles (one 900 s exposure each, the first ``--repeats`` times)
with the given instrument (default demo: one petal of 50 fibers, ~44 targets a tile; ``desi``
for full-size petals), reduces it with the Snakemake workflow (tile coadds, redrock, ztile; or
``--flavour healpix``: HEALPix coadds and zpix),
then runs ``fiberflow validate-redshifts --ideal``: the success table per class against the
simulator's truth and the pipeline-induced failures (targets that fail on fiberflow's coadd
but succeed on the ideal reduction of the same targets). Prints the time of each stage.

Usage: python benchmarks/validate_redshifts.py [--tiles 24] [--instrument demo] [--cores N]
       [--workdir DIR] [--keep]
(the default: ~1,050 targets; about an hour on 2 cores, most of it redrock)
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

NIGHT = 20250301


def ff(*args):
    subprocess.run([sys.executable, "-m", "fiberflow.cli.main", *args], check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2, help="exposures of the first tile")
    ap.add_argument("--instrument", default="demo")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--flavour", choices=("cumulative", "healpix"), default="cumulative",
                    help="coadds to fit and validate: tile petals (ztile; one redrock file a tile) or HEALPix pixels (zpix)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    group = "ztile" if args.flavour == "cumulative" else "zpix"
    from fiberflow.reference import workflow_dir

    root = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="validate-redshifts-"))
    os.makedirs(root, exist_ok=True)
    exps = [{"obstype": "ZERO", "count": 2}, {"obstype": "ARC", "exptime": 5.0},
            {"obstype": "FLAT", "exptime": 180.0, "count": 3}]
    for t in range(args.tiles):
        for r in range(args.repeats if t == 0 else 1):
            exps.append({"obstype": "SCIENCE", "tileid": 2000 + t, "exptime": 900.0, "airmass": round(1.05 + 0.01 * t, 3),
                         "seeing": 1.0 + 0.1 * r, "skylevel": 1.0})
    plan = os.path.join(root, "plan.yaml")
    with open(plan, "w") as fh:
        yaml.safe_dump({"night": NIGHT, "exposures": exps}, fh)
    cfg = os.path.join(root, "config.yaml")
    with open(cfg, "w") as fh:
        yaml.safe_dump({"instrument": args.instrument, "raw": f"{root}/raw", "redux": f"{root}/redux",
                        "specprod": "zval", "truth": f"{root}/truth", "nights": [NIGHT],
                        "calibration": {"default_psf": f"{root}/calib"},
                        "simulate": {"rule": True, "plan": plan}, "coadds": {"flavours": [args.flavour]},
                        "redshift": {"enabled": True}}, fh, sort_keys=False)
    print(f"production in {root}: {args.instrument} instrument, {args.tiles} tiles, {args.cores} cores")
    try:
        t = time.time()
        ff("calibinit", "--config", cfg)
        snake = [sys.executable, "-m", "snakemake", "-s", os.path.join(workflow_dir(), "Snakefile"), "--configfile", cfg,
                 "--directory", root, "--cores", str(args.cores), "--quiet", "--keep-going"]
        subprocess.run(snake + ["simulate"], check=True)
        print(f"simulated: {time.time() - t:.0f} s")
        t = time.time()
        subprocess.run(snake, check=True)
        print(f"reduced through redrock and {group}: {time.time() - t:.0f} s")
        t = time.time()
        ff("validate-redshifts", "--config", cfg, "--group", group, "--ideal", "--ncpu", str(args.cores),
           "--json", os.path.join(root, "redshift-validation.json"))
        print(f"validation (redrock on the ideal coadds): {time.time() - t:.0f} s")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
