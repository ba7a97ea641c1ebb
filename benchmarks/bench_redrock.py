"""Seconds and peak memory of DESI's redrock (through `fiberflow redrock`) per 500 targets.

Builds a coadd of ``--ntarget`` simulated targets of one full-size DESI petal (desi instrument
grids: b 2751, r 2326, z 2881 bins; the simulator's LRG, ELG, QSO and standard stars, two
exposures at the high S/N of fiberflow's redshift test) with fiberflow's coadd, then times in
fresh processes:

    fiberflow redrock --ncpu 1        (one core)
    mpiexec -n 2 fiberflow redrock    (two MPI ranks)

on a 5-fiber and a ``--ntarget``-fiber coadd, and prints the seconds per target, the fixed
cost per file, their sum for a 500-target petal, and the peak memory (summed over ranks). The shipped redrock templates are used, as in production.

Usage: python benchmarks/bench_redrock.py [--ntarget 100] [--workdir DIR] [--keep]
"""

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from _child import run  # noqa: E402

from fiberflow.steps import coadd  # noqa: E402
from fiberflow.validation import simulated_spectra  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ntarget", type=int, default=100, help="fibers of the coadd (sky fibers included)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--no-mpi", action="store_true", help="skip the two-rank run")
    ap.add_argument("--max-targets", type=int, default=150, help="slice size to predict (redshift.max_targets)")
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="bench-redrock-")
    os.makedirs(work, exist_ok=True)
    try:
        sizes = sorted({5, args.ntarget})
        paths_ = {}
        for n in sizes:
            sp = simulated_spectra("desi", n, 2, 0.05, 3)[0]
            paths_[n] = os.path.join(work, f"coadd-0-{1234 + n}-thru20250301.fits")
            coadd.coadd_spectra(sp, coadd.CoaddOptions()).write(paths_[n])
        print(f"coadds of {' and '.join(map(str, sizes))} fibers (simulated targets and sky) on the desi grids "
              f"[{os.cpu_count()} CPUs here]")
        runs = [("1 process", [])]
        mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
        if not args.no_mpi and mpiexec:
            runs.append(("2 MPI ranks", [mpiexec, "-n", "2"]))
        for name, launcher in runs:
            t, mem = {}, {}
            for n in sizes:
                out = os.path.join(work, f"redrock-{n}-{len(launcher)}.fits")
                # one redrock call per file here (--max-targets 0): the per-target cost and memory
                t[n], mem[n] = run(["redrock", "-i", paths_[n], "-o", out, "--ncpu", "1", "--max-targets", "0"],
                                   1, launcher)
                print(f"redrock, {name}: {n} fibers {t[n]:.1f} s, peak memory {mem[n]:.0f} MB")
            if len(sizes) == 2:
                lo, hi = sizes
                per = (t[hi] - t[lo]) / (hi - lo)
                fixed = t[lo] - lo * per
                mper = (mem[hi] - mem[lo]) / (hi - lo)
                print(f"redrock, {name}: {per:.2f} s per target + {fixed:.0f} s per file (templates, set-up): "
                      f"{fixed + 500 * per:.0f} s per 500-target petal; memory {mem[lo] - lo * mper:.0f} MB "
                      f"+ {mper:.2f} MB per target: {mem[lo] + (500 - lo) * mper:.0f} MB for 500 targets in one call")
                if not launcher:
                    nsl = -(-500 // args.max_targets)
                    per_call = -(-500 // nsl)
                    print(f"redrock, {name}, in slices of at most {args.max_targets} targets (redshift.max_targets): "
                          f"{nsl} calls of {per_call}: {fixed * nsl + 500 * per:.0f} s and "
                          f"{mem[lo] + (per_call - lo) * mper:.0f} MB per 500-target petal")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
