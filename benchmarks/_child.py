"""Run a `fiberflow` command in a fresh process and measure its wall time and peak memory."""

import os
import subprocess
import sys
import time

CHILD = ("import resource, sys; from fiberflow.cli.main import main; rc = main(sys.argv[1:]); "
         "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)")


def run(args, threads, launcher=()):
    """(seconds, peak RSS in MB) of ``fiberflow *args`` with ``threads`` numba/BLAS threads.

    With an MPI ``launcher`` (e.g. ``("mpiexec", "-n", "2")``) the RSS is the sum over ranks."""
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.time()
    res = subprocess.run([*launcher, sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True)
    dt = time.time() - t0
    if res.returncode != 0:
        raise SystemExit(res.stderr)
    rss = [int(line.split()[1]) for line in res.stderr.splitlines() if line.startswith("MAXRSS")]
    return dt, (sum(rss) if launcher else rss[-1]) / 1024.0
