"""Workflow overheads at DESI size: Snakemake dry-run time and memory for 1 and 7 nights
(10 petals x b/r/z, 40 exposures a night), `fiberflow status` on the same production, and the
per-job overhead of a `fiberflow` step that does nothing but start.

    .venv/bin/python benchmarks/bench_workflow.py [--nights 1 7] [--exposures 40]

The production is synthetic: exposure tables (5 ZERO, 3 ARC, 3 FLAT, 29 SCIENCE a night),
empty raw files and tilepix maps of about 6 HEALPix pixels a petal, so only the workflow's
own cost is measured (goal: dry run under 15 s for one night and 90 s for seven; status under
5 s; step start under 1.5 s).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(PROJECT, "src"))

from fiberflow import paths  # noqa: E402
from fiberflow.workflow import exptable  # noqa: E402


def make_production(root, nnights, nexp, seed=1):
    """Exposure tables, empty raw files and tilepix maps for ``nnights`` DESI nights."""
    import healpy as hp

    rng = np.random.default_rng(seed)
    raw, prod = os.path.join(root, "raw"), os.path.join(root, "redux", "bench")
    nights = [20250101 + i for i in range(nnights)]
    kinds = ["ZERO"] * 5 + ["ARC"] * 3 + ["FLAT"] * 3 + ["SCIENCE"] * (nexp - 11)
    expid = 100000
    for night in nights:
        rows = []
        for kind in kinds:
            expid += 1
            sci = kind == "SCIENCE"
            tile = int(rng.integers(1000, 40000)) if sci else -1
            rows.append({"EXPID": expid, "NIGHT": night, "OBSTYPE": kind, "EXPTIME": 900.0 if sci else 1.0,
                         "TILEID": tile, "PROGRAM": "dark" if sci else "", "SURVEY": "main" if sci else "",
                         "MJD-OBS": 60000.0, "AIRMASS": 1.1, "CAMWORD": "a0123456789", "LASTSTEP": "all",
                         "BADCAMWORD": "", "BADAMPS": "", "COMMENTS": ""})
            for ft in ("raw", "fibermap"):
                p = paths.findfile(ft, raw=raw, night=night, expid=expid)
                os.makedirs(os.path.dirname(p), exist_ok=True)
                open(p, "w").close()
            if sci:
                ra, dec = rng.uniform(0, 360), rng.uniform(-10, 70)
                pixmap = {}
                for petal in range(10):
                    ang = np.radians(36 * petal + 18)
                    pra = ra + 0.8 * np.cos(ang) / np.cos(np.radians(dec))
                    pdec = dec + 0.8 * np.sin(ang)
                    vec = hp.ang2vec(pra, pdec, lonlat=True)
                    pixmap[petal] = sorted(int(x) for x in hp.query_disc(64, vec, np.radians(0.7), nest=True))
                from fiberflow.workflow.tilepix import write_tilepix

                write_tilepix(paths.findfile("tilepix", prod=prod, night=night, expid=expid, tileid=tile),
                              tile, pixmap, 64)
        exptable.write_table(paths.findfile("exposure_table", prod=prod, night=night), rows)
    calib = os.path.join(root, "calib")
    os.makedirs(calib, exist_ok=True)
    for arm in "brz":
        for sp in range(10):
            open(os.path.join(calib, f"psf-{arm}{sp}.fits"), "w").close()
    cfg = os.path.join(root, "config.yaml")
    with open(cfg, "w") as fh:
        fh.write(f"instrument: desi\nraw: {raw}\nredux: {os.path.join(root, 'redux')}\nspecprod: bench\n"
                 f"nights: {nights}\ncalibration: {{default_psf: {calib}}}\n")
    return cfg


def timed(cmd, cwd=None):
    """(wall seconds, peak RSS MB of the child, CompletedProcess)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024, res


def jobs_of(text):
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
            return int(parts[1])
    return -1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nights", type=int, nargs="+", default=[1, 7])
    ap.add_argument("--exposures", type=int, default=40)
    args = ap.parse_args(argv)
    py = sys.executable
    print(f"# workflow overheads (CPU: {os.cpu_count()} cores, python {sys.version.split()[0]})")
    for n in args.nights:
        with tempfile.TemporaryDirectory(prefix="ffbench-") as root:
            cfg = make_production(root, n, args.exposures)
            cmd = [py, "-m", "snakemake", "-s", os.path.join(PROJECT, "Snakefile"), "--configfile", cfg,
                   "--directory", root, "--cores", "1", "-n", "--quiet"]
            wall_q, rss, res = timed(cmd)
            wall, rss2, res = timed(cmd + ["rules"])
            if res.returncode != 0:
                print(res.stderr[-3000:])
                raise SystemExit(f"dry run of {n} night(s) failed")
            njobs = jobs_of(res.stdout + res.stderr)
            print(f"dry run, {n} night(s) x {args.exposures} exposures x 30 cameras, {njobs} jobs: "
                  f"{wall_q:.1f} s with -n --quiet ({1000 * wall_q / max(njobs, 1):.2f} ms/job), "
                  f"{wall:.1f} s with the job table (-n --quiet rules); peak RSS {max(rss, rss2):.0f} MB")
            wall, _, res = timed([py, "-m", "fiberflow.cli.main", "status", "--config", cfg, "--directory", root,
                                  "--json"])
            st = json.loads(res.stdout)
            total = sum(sum(v.values()) for v in st["steps"].values())
            print(f"fiberflow status, {n} night(s): {total} jobs in {wall:.2f} s (whole command)")
            target = paths.findfile("cframe", prod=os.path.join(root, "redux", "bench"), night=20250101,
                                    expid=100012, camera="r3")
            wall, _, res = timed(cmd[:-2] + ["-n", target])
            print(f"dry run of one cframe in that production: {wall:.1f} s")
    # per-job overhead: python start + imports of a step (numpy, fitsio, numba kernels from cache)
    steps = {"preproc": "fiberflow.cli.preproc", "extract": "fiberflow.cli.extract", "sky": "fiberflow.cli.sky",
             "fluxcalib": "fiberflow.cli.fluxcalib"}
    for step, mod in steps.items():
        code = (f"import {mod}, fiberflow.{'extract' if step == 'extract' else step}, fiberflow.io.frame, "
                f"fiberflow.io.psf")
        walls = [timed([py, "-c", code])[0] for _ in range(3)]
        print(f"start of a `fiberflow {step}` job that does nothing (imports incl. numba modules): "
              f"{min(walls):.2f} s (best of 3)")


if __name__ == "__main__":
    main()
