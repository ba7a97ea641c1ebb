"""What a DESI night and a five-year survey would cost with fiberflow, from a measured night.

    .venv/bin/python benchmarks/bench_night.py --json night.json      # a full-size petal, measured
    .venv/bin/python benchmarks/survey_cost.py night.json [--nights-per-year 300] [--years 5]

The model (every assumption is printed with the table):

- **Jobs of a DESI night**: the production plan of a synthetic DESI night (10 petals x b/r/z, 40
  exposures: 5 ZERO, 3 ARC, 3 FLAT, 29 SCIENCE; ``bench_workflow.make_production``), counted
  per rule from Snakemake's own dry run, whose time is the planning time of one invocation.
- **Cost of a job**: the measured night's core-seconds (Snakemake's ``cpu_time``) per job of the
  rule. Rules whose work grows with the targets (spectra, coadds, redrock, catalogs) are scaled
  by the night's science spectra: 29 exposures x 10 petals x 500 fibers against the measured
  night's.
- **Nodes**: Perlmutter CPU nodes, 128 cores and 512 GB; node-hours = core-hours / 128 (jobs
  packed one per core, which the measured peak RSS must allow: 4 GB a core).
- **Slurm jobs**: the shipped ``profiles/nersc`` groups: a group of connected jobs (one
  exposure's camera chain, one spectrograph's calibration chain) is one unit, and
  ``group-components`` units travel in one Slurm job; ungrouped rules are one Slurm job each.
- **DESI's own figure** for comparison: about 140 camera-frames per node-hour on Perlmutter's
  GPU nodes (4 A100s a node).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(PROJECT, "src"))

#: rules whose work scales with the number of science spectra rather than with cameras
TARGET_SCALED = ("spectra", "coadd", "cumulative_spectra", "cumulative_coadd", "pernight_spectra", "pernight_coadd",
                 "redrock", "cumulative_redrock", "pernight_redrock", "ztile", "zpix", "summary", "tile_qa")
DESI = {"petals": 10, "cameras": 30, "science": 29, "exposures": 40, "fibers": 500}
NODE_CORES, NODE_GB = 128, 512
DESI_GPU_FRAMES_PER_NODE_HOUR = 140.0


def desi_night_jobs():
    """(jobs per rule of a synthetic DESI night from Snakemake's dry run, planning seconds)."""
    from bench_workflow import make_production

    with tempfile.TemporaryDirectory(prefix="ffcost-") as root:
        cfg = make_production(root, 1, DESI["exposures"])
        cmd = [sys.executable, "-m", "snakemake", "-s", os.path.join(PROJECT, "Snakefile"), "--configfile", cfg,
               "--directory", root, "--cores", "1", "-n", "--quiet", "rules"]
        t = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"dry run of the synthetic DESI night failed: {res.stderr[-2000:]}")
    counts = {}
    text = res.stdout + res.stderr
    block = text.split("Job stats:", 1)[1]
    for line in block.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m or m.group(1) == "total":
            break
        counts[m.group(1)] = int(m.group(2))
    counts.pop("all", None)
    return counts, wall


def slurm_jobs(counts, profile):
    """Slurm jobs of a night under a profile's groups (see the module docstring)."""
    import yaml

    with open(os.path.join(profile, "config.yaml")) as fh:
        prof = yaml.safe_load(fh)
    groups = dict(g.split("=", 1) for g in prof.get("groups") or [])
    comps = {k: int(v) for k, v in (g.split("=", 1) for g in prof.get("group-components") or [])}
    # connected units: the calibration chain of one spectrograph of one exposure joins its
    # cameras' sky / fluxcalib / cframe and the spectrograph's stdstars
    units = {}
    for rule, n in counts.items():
        g = groups.get(rule)
        if g is None:
            units[("", rule)] = n
            continue
        if "{" in g:  # one group per value of a wildcard (e.g. qa{expid}: one per exposure)
            units[(g, rule)] = DESI["exposures"] if "expid" in g else 1
            continue
        per_unit = {"sky": 3, "fluxcalib": 3, "cframe": 3, "stdstars": 1}.get(rule, 1) if g == "calibchain" else 1
        units[(g, rule)] = n / per_unit
    total = 0.0
    seen = set()
    for (g, rule), n in units.items():
        if g == "":
            total += n
        elif "{" in g:
            if g not in seen:
                total += n
                seen.add(g)
        elif g not in seen:
            size = max(u for (gg, _r), u in units.items() if gg == g)
            total += math.ceil(size / comps.get(g, 1))
            seen.add(g)
    return int(round(total))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("night_json", help="figures of benchmarks/bench_night.py --json")
    ap.add_argument("--nights-per-year", type=float, default=300.0)
    ap.add_argument("--years", type=float, default=5.0)
    args = ap.parse_args(argv)
    with open(args.night_json) as fh:
        bench = json.load(fh)
    if bench["instrument"] != "desi":
        print(f"note: the measured night is of the {bench['instrument']} instrument, not full size: "
              f"the figures below are not DESI's")
    counts, plan_s = desi_night_jobs()
    scale = DESI["science"] * DESI["petals"] / max(bench["science"] * bench["petals"], 1)
    rows = []
    missing = []
    for rule, n in sorted(counts.items()):
        meas = bench["rules"].get(rule)
        if meas is None:
            missing.append(rule)
            continue
        if rule in TARGET_SCALED:
            core_s = meas["cpu"] * scale
        else:
            core_s = meas["cpu"] / meas["jobs"] * n
        rows.append((rule, n, core_s, meas["rss"]))
    night_core_h = sum(r[2] for r in rows) / 3600
    node_h = night_core_h / NODE_CORES
    frames = DESI["science"] * DESI["cameras"]
    survey_nights = args.nights_per_year * args.years
    nslurm = slurm_jobs(counts, os.path.join(PROJECT, "profiles", "nersc"))
    peak = max(r[3] for r in rows)
    print(f"# survey cost from {args.night_json}: {bench['instrument']} x {bench['petals']} petal(s), "
          f"{bench['science']} science exposures, measured on {bench['cores']} cores")
    print(f"{'rule':20s} {'jobs/night':>10s} {'core-h/night':>13s} {'peak RSS MB':>12s}")
    for rule, n, core_s, rss in sorted(rows, key=lambda r: -r[2]):
        print(f"{rule:20s} {n:10d} {core_s / 3600:13.2f} {rss:12.0f}")
    if missing:
        print(f"(not measured, left out: {', '.join(missing)})")
    print(f"\nDESI night ({DESI['exposures']} exposures, {DESI['science']} science x {DESI['cameras']} cameras = "
          f"{frames} science camera-frames, {sum(counts.values())} jobs):")
    print(f"  {night_core_h:.1f} core-hours = {node_h:.2f} Perlmutter CPU node-hours "
          f"({NODE_CORES} cores, {NODE_GB} GB; largest job {peak:.0f} MB, "
          f"{'fits' if peak * NODE_CORES / 1024 <= NODE_GB else 'does NOT fit'} one job per core)")
    print(f"  {frames / node_h:.0f} science camera-frames per CPU node-hour (DESI: about "
          f"{DESI_GPU_FRAMES_PER_NODE_HOUR:.0f} per GPU node-hour)")
    print(f"  Slurm jobs with profiles/nersc's groups: about {nslurm} (against {sum(counts.values())} Snakemake jobs)")
    print(f"  Snakemake planning of one night's invocation: {plan_s:.0f} s (dry run, 1 core)")
    print(f"survey ({args.years:g} years x {args.nights_per_year:g} nights = {survey_nights:.0f} nights): "
          f"{night_core_h * survey_nights / 1e6:.2f} million core-hours = "
          f"{node_h * survey_nights / 1e3:.1f} thousand node-hours")
    return 0


if __name__ == "__main__":
    sys.exit(main())
