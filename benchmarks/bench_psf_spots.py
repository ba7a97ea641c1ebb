"""Benchmark: pixel-integrated GAUSS-HERMITE spot evaluation on the real DESI r0 PSF.

Prints spots/second for the numba kernel (1 and all threads) and the numpy reference, and the
peak resident memory. Usage: .venv/bin/python benchmarks/bench_psf_spots.py [nfiber] [nwave]
"""

import resource
import sys
import time

import numpy as np


def main():
    from fiberflow.io.psf import read_psf
    from fiberflow.models import psf as pm
    from fiberflow.reference import real_psf_path

    path = real_psf_path()
    nfiber = int(sys.argv[1]) if len(sys.argv) > 1 else 25
    nwave = int(sys.argv[2]) if len(sys.argv) > 2 else 2326
    psf = read_psf(path)
    fibers = np.arange(nfiber)
    wave = np.linspace(5760, 7620, nwave)
    t = time.perf_counter()
    p = pm.spot_inputs(psf, wave, fibers)
    t_in = time.perf_counter() - t
    pm.spot_stamps(p["xc"][:10], p["yc"][:10], p["sigx"][:10], p["sigy"][:10], p["gh"][:10], p["tail"][:10],
                   psf.hsizex, psf.hsizey)  # compile / load cache
    import numba

    nspot = p["xc"].size
    print(f"PSF {path}: {nfiber} fibers x {nwave} wavelengths = {nspot} spots of "
          f"{2 * psf.hsizey + 1}x{2 * psf.hsizex + 1} pixels, GH degree {psf.ghdegx}x{psf.ghdegy}")
    print(f"parameter evaluation (Legendre, numpy): {t_in:.3f} s")
    for nthreads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        numba.set_num_threads(nthreads)
        times = []
        for _ in range(3):  # best of 3 (the first call with a new thread count starts the pool)
            t = time.perf_counter()
            pm.spot_stamps(p["xc"], p["yc"], p["sigx"], p["sigy"], p["gh"], p["tail"], psf.hsizex, psf.hsizey)
            times.append(time.perf_counter() - t)
        dt = min(times)
        print(f"numba kernel, {nthreads} thread(s): {dt:.3f} s  ({nspot / dt:,.0f} spots/s)")
    nref = min(nspot, 20000)
    t = time.perf_counter()
    pm.spot_stamps(p["xc"][:nref], p["yc"][:nref], p["sigx"][:nref], p["sigy"][:nref], p["gh"][:nref],
                   p["tail"][:nref], psf.hsizex, psf.hsizey, use_numba=False)
    dt = time.perf_counter() - t
    print(f"numpy reference ({nref} spots): {dt:.3f} s  ({nref / dt:,.0f} spots/s)")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
