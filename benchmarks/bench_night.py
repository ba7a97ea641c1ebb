"""A full-size night through the workflow, measured end to end (issue 31).

    .venv/bin/python benchmarks/bench_night.py [--petals 1] [--cores 2] [--science 4] [--tiles 2]
                                               [--no-redshifts] [--keep DIR] [--json OUT]
    make bench-night

Simulates a night of the DESI instrument preset for ``--petals`` petals (500 fibers x b, r, z
each): 2 zeros, a dark, an arc, 3 flats and ``--science`` science exposures on ``--tiles`` tiles
(not timed), then reduces it with Snakemake and the local profile on ``--cores`` cores, every
stage the default configuration runs (tile and HEALPix coadds, redrock and the catalogs unless
``--no-redshifts``, QA). It prints:

- the wall time of the night, and per rule: jobs, job-seconds (wall), core-seconds (cpu) and
  the peak RSS of its largest job (Snakemake's benchmark files); jobs above 2 GB are flagged
  (a 128-core, 512 GB node runs one job per core only below 4 GB, 2 GB leaves the margin);
- science camera-frames per hour end to end: from the start to the last cframe (preproc to
  cframe; calibrations included, as a night has them), and to the end of the run (with coadds,
  redshifts, QA); and the steady-state figure of the science chain alone (its core-seconds per
  camera-frame on these cores);
- the critical path: start -> the night's calibrations (last psfnight / fiberflatnight) -> the
  first cframe;
- the fraction of job time spent starting Python (a Python that only imports what a step's job
  imports, timed here per rule, times the rule's jobs).

``--json`` writes the figures for ``benchmarks/survey_cost.py`` (the survey-cost model).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _simprod import simulate_cameras

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(PROJECT, "src"))

NIGHT = 20250301
#: rules of the per-camera science chain (preproc to cframe) and the standard stars
SCIENCE_CHAIN = ("preproc", "traceshift", "extract", "sky", "stdstars", "fluxcalib", "cframe")
RSS_LIMIT_MB = 2000.0


def night_plan(science, tiles):
    exps = [{"obstype": "ZERO", "count": 2}, {"obstype": "DARK", "exptime": 300.0}, {"obstype": "ARC", "exptime": 5.0},
            {"obstype": "FLAT", "exptime": 180.0, "count": 3}]
    for k in range(science):
        exps.append({"obstype": "SCIENCE", "tileid": 3000 + k % tiles, "exptime": 900.0})
    return {"night": NIGHT, "first_expid": 300, "exposures": exps}


def read_benchmarks(prod):
    """Every job's benchmark row: list of dict step, ident, s, cpu_time, max_rss."""
    rows = []
    for path in glob.glob(os.path.join(prod, "benchmarks", "**", "*.tsv"), recursive=True):
        rel = os.path.relpath(path, os.path.join(prod, "benchmarks"))
        step = rel.split(os.sep)[0]
        with open(path) as fh:
            recs = list(csv.DictReader(fh, delimiter="\t"))
        if not recs:
            continue
        r = recs[-1]

        def num(key):
            try:
                return float(r.get(key) or 0.0)
            except ValueError:
                return 0.0

        rows.append({"step": step, "ident": os.path.splitext(os.path.basename(path))[0], "s": num("s"),
                     "cpu": num("cpu_time"), "rss": num("max_rss")})
    return rows


def startup_seconds(steps, repeat=3):
    """Median wall time, per step, of a Python that only imports what the step's job imports
    (its command-line module, numpy, fitsio, scipy, numba and fiberflow's numba kernels from
    their cache): the part of every job that is not the step's work."""
    from fiberflow.cli.main import COMMANDS

    out = {}
    for step in steps:
        mod = COMMANDS.get(step.replace("_", "-"), ("fiberflow.cli.main", ""))[0]
        code = f"import {mod}, numpy, fitsio, scipy.linalg, numba, fiberflow._kernels, fiberflow.io.frame, fiberflow.io.psf"
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], capture_output=True)
            times.append(time.perf_counter() - t)
        out[step] = statistics.median(times)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--petals", type=int, default=1)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--science", type=int, default=4, help="science exposures (default 4)")
    ap.add_argument("--tiles", type=int, default=2)
    ap.add_argument("--instrument", default="desi", help="desi (500 fibers a petal; default) or demo (50, a quick check)")
    ap.add_argument("--no-redshifts", action="store_true")
    ap.add_argument("--keep", default=None, help="folder to keep (and reuse the simulated night from)")
    ap.add_argument("--json", default=None, help="write the figures here (for benchmarks/survey_cost.py)")
    args = ap.parse_args(argv)

    import yaml

    from fiberflow import paths
    from fiberflow.reference import workflow_dir

    root = os.path.abspath(args.keep) if args.keep else tempfile.mkdtemp(prefix="bench-night-")
    os.makedirs(root, exist_ok=True)
    cameras = [f"{arm}{p}" for p in range(args.petals) for arm in "brz"]
    plan = os.path.join(root, "plan.yaml")
    with open(plan, "w") as fh:
        yaml.safe_dump(night_plan(args.science, args.tiles), fh)
    cfg = os.path.join(root, "config.yaml")
    with open(cfg, "w") as fh:
        yaml.safe_dump({"instrument": args.instrument, "raw": "raw", "redux": "redux", "specprod": "night",
                        "truth": "truth", "nights": [NIGHT], "calibration": {"default_psf": "calib"},
                        "redshift": {"enabled": not args.no_redshifts}}, fh, sort_keys=False)
    prod = os.path.join(root, "redux", "night")
    ff = [sys.executable, "-m", "fiberflow.cli.main"]
    if not glob.glob(os.path.join(root, "raw", str(NIGHT), "*", "desi-*.fits.fz")):
        t = time.time()
        subprocess.run(ff + ["calibinit", "--config", cfg], check=True, capture_output=True)
        nproc = simulate_cameras(cfg, plan, cameras, args.cores)
        from fiberflow.sim.plan import load_plan

        nexp = len(load_plan(plan).expids())
        print(f"simulated night {NIGHT}: {args.instrument}, {len(cameras)} cameras, {nexp} exposures in "
              f"{time.time() - t:.0f} s with {nproc} processes (not timed below)", flush=True)
    elif os.path.isdir(prod):
        shutil.rmtree(prod)  # a kept night is reduced again from scratch
        shutil.rmtree(os.path.join(root, ".snakemake"), ignore_errors=True)
    snake = [sys.executable, "-m", "snakemake", "-s", os.path.join(workflow_dir(), "Snakefile"), "--configfile", cfg,
             "--directory", root, "--profile", os.path.join(workflow_dir(), "profiles", "local"),
             "--cores", str(args.cores), "--quiet"]
    t0 = time.time()
    res = subprocess.run(snake, capture_output=True, text=True)
    wall = time.time() - t0
    if res.returncode != 0:
        print(res.stderr[-3000:])
        print(f"snakemake failed (exit {res.returncode}) after {wall:.0f} s; logs under {prod}/logs")
        return 1

    rows = read_benchmarks(prod)
    with open(paths.findfile("exposure_table", prod=prod, night=NIGHT)) as fh:
        obstype = {int(r["EXPID"]): r["OBSTYPE"] for r in csv.DictReader(fh)}

    def is_science(row):
        head = row["ident"].split("-")[0]
        return head.isdigit() and obstype.get(int(head)) == "SCIENCE"

    per_rule = {}
    for r in rows:
        d = per_rule.setdefault(r["step"], {"jobs": 0, "s": 0.0, "cpu": 0.0, "rss": 0.0})
        d["jobs"] += 1
        d["s"] += r["s"]
        d["cpu"] += r["cpu"]
        d["rss"] = max(d["rss"], r["rss"])
    cframes = sorted(glob.glob(os.path.join(prod, "exposures", str(NIGHT), "*", "cframe-*.fits")))
    nsci = len(cframes)
    t_cframes = sorted(os.stat(p).st_mtime for p in cframes)
    calib = glob.glob(os.path.join(prod, "calibnight", str(NIGHT), "psfnight-*.fits")) + \
        glob.glob(os.path.join(prod, "calibnight", str(NIGHT), "fiberflatnight-*.fits"))
    t_calib = max(os.stat(p).st_mtime for p in calib) if calib else float("nan")
    sci_cpu = sum(r["cpu"] for r in rows if r["step"] in SCIENCE_CHAIN and is_science(r))
    starts = startup_seconds(sorted(per_rule))
    start_total = sum(starts[s] * d["jobs"] for s, d in per_rule.items())
    job_total = sum(d["s"] for d in per_rule.values())

    print(f"\nnight {NIGHT}, {args.instrument} x {args.petals} petal(s) ({len(cameras)} cameras), "
          f"{args.science} science exposures on {args.tiles} tiles, redshifts {'off' if args.no_redshifts else 'on'}, "
          f"{args.cores} cores: {len(rows)} jobs in {wall:.0f} s wall")
    print(f"{'rule':20s} {'jobs':>5s} {'job-s':>9s} {'core-s':>9s} {'s/job':>8s} {'peak RSS MB':>12s}")
    for step, d in sorted(per_rule.items(), key=lambda kv: -kv[1]["s"]):
        flag = "  > 2 GB" if d["rss"] > RSS_LIMIT_MB else ""
        print(f"{step:20s} {d['jobs']:5d} {d['s']:9.1f} {d['cpu']:9.1f} {d['s'] / d['jobs']:8.1f} {d['rss']:12.0f}{flag}")
    print(f"{'all':20s} {len(rows):5d} {job_total:9.1f} {sum(d['cpu'] for d in per_rule.values()):9.1f}")
    over = [s for s, d in per_rule.items() if d["rss"] > RSS_LIMIT_MB]
    print(f"jobs above {RSS_LIMIT_MB:.0f} MB peak RSS: {', '.join(over) if over else 'none'}; largest "
          f"{max(d['rss'] for d in per_rule.values()):.0f} MB")
    if nsci:
        to_cframe = t_cframes[-1] - t0
        print(f"science camera-frames: {nsci}; per hour end to end (start to the last cframe, calibrations "
              f"included): {3600 * nsci / to_cframe:.1f}; to the end of the run (coadds, "
              f"{'redshifts, ' if not args.no_redshifts else ''}QA): {3600 * nsci / wall:.1f}")
        print(f"science chain alone (preproc .. cframe incl. standard stars): {sci_cpu / nsci:.1f} core-s per "
              f"camera-frame = {3600 * args.cores * nsci / sci_cpu:.1f} camera-frames per hour on {args.cores} cores")
        print(f"critical path: calibrations of the night done at {t_calib - t0:.0f} s, first cframe at "
              f"{t_cframes[0] - t0:.0f} s, last at {to_cframe:.0f} s")
    print(f"Python start (imports of a step's job: median {statistics.median(starts.values()):.2f} s, "
          f"{min(starts.values()):.2f}-{max(starts.values()):.2f} s by step) x {len(rows)} jobs = "
          f"{start_total:.0f} s = {100 * start_total / max(job_total, 1e-9):.0f}% of the job-seconds")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"instrument": args.instrument, "petals": args.petals, "cores": args.cores,
                       "science": args.science, "tiles": args.tiles, "redshifts": not args.no_redshifts,
                       "wall_s": wall, "rules": per_rule, "science_frames": nsci,
                       "science_chain_core_s": sci_cpu, "startup_s": starts,
                       "t_calib_s": t_calib - t0, "t_first_cframe_s": (t_cframes[0] - t0) if nsci else None,
                       "t_last_cframe_s": (t_cframes[-1] - t0) if nsci else None,
                       "jobs": rows}, fh, indent=1)
        print(f"figures -> {args.json}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
