"""Simulator speed and memory: the demo night on one core, and one full-size DESI camera.

Usage: python benchmarks/bench_simulate.py [--threads N] [--skip-full]

Each measurement runs in a fresh subprocess (`fiberflow simulate`) so the numba JIT cache,
thread count and peak resident memory are those of a real job; numba kernels are compiled
once beforehand so the timings exclude compilation.
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time


def run(cmd, threads):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    t0 = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return time.time() - t0, max(after, before) / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-full", action="store_true")
    args = ap.parse_args()
    exe = [sys.executable, "-m", "fiberflow.cli.main"]
    with tempfile.TemporaryDirectory() as tmp:
        # warm the numba cache
        run(exe + ["simulate", "--night", "20250101", "--instrument", "tiny", "--raw", f"{tmp}/w/raw",
                   "--truth", f"{tmp}/w/truth", "--expid", "182803", "--cameras", "r0"], args.threads)
        dt, mem = run(exe + ["simulate", "--night", "20250101", "--instrument", "demo", "--raw", f"{tmp}/d/raw",
                             "--truth", f"{tmp}/d/truth"], args.threads)
        print(f"demo night (1 petal x 3 cameras, 50 fibers, 2 zeros + dark + arc + flat + 3 science), "
              f"{args.threads} thread(s): {dt:.1f} s, peak RSS {mem:.0f} MB")
        if not args.skip_full:
            dt, mem = run(exe + ["simulate", "--night", "20250101", "--instrument", "desi", "--raw", f"{tmp}/f/raw",
                                 "--truth", f"{tmp}/f/truth", "--expid", "182805", "--cameras", "r0"], args.threads)
            print(f"full-size DESI r0 science exposure (500 fibers, 4128x4114 CCD), {args.threads} thread(s): "
                  f"{dt:.1f} s, peak RSS {mem:.0f} MB")


if __name__ == "__main__":
    main()
