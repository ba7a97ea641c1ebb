"""preproc and psf of one full-size DESI r0 arc camera: wall time and peak memory, one core.

Usage: python benchmarks/bench_psf.py [--threads N]

Simulates the arc (not timed), then runs `fiberflow preproc` and `fiberflow psf` each in a
fresh process (a warm-up run compiles the numba kernels first, so the timings exclude JIT
compilation) and prints seconds and peak resident memory. Targets (issue 5): preproc < 10 s,
psf < 60 s. Also prints the fit's accuracy against the simulator's true PSF.
"""

import argparse
import os
import tempfile

from _child import run

NIGHT = 20250101
ARC = 182803  # the arc of the default plan of this night


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import numpy as np

    from fiberflow import paths
    from fiberflow.io.psf import read_psf
    from fiberflow.models import psf as psfmodel
    from fiberflow.sim.night import Simulator

    with tempfile.TemporaryDirectory() as tmp:
        for inst in ("tiny", "desi"):
            cfg = os.path.join(tmp, f"{inst}.yaml")
            with open(cfg, "w") as fh:
                fh.write(f"instrument: {inst}\ncalibration: {{default_psf: {tmp}/{inst}/calib}}\n")
            raw, truth = f"{tmp}/{inst}/raw", f"{tmp}/{inst}/truth"
            run(["simulate", "--night", str(NIGHT), "--instrument", inst, "--raw", raw, "--truth", truth,
                 "--expid", str(ARC), "--cameras", "r0"], args.threads)
            run(["calibinit", "--config", cfg], args.threads)
            rawf = paths.findfile("raw", raw=raw, night=NIGHT, expid=ARC)
            pre = f"{tmp}/{inst}/preproc-r0.fits"
            fit = f"{tmp}/{inst}/fit-psf-r0.fits"
            t_pre, m_pre = run(["preproc", "--config", cfg, "--camera", "r0", "-i", rawf, "-o", pre], args.threads)
            t_psf, m_psf = run(["psf", "--config", cfg, "--camera", "r0", "-i", pre, "--start",
                                f"{tmp}/{inst}/calib/psf-r0.fits", "-o", fit], args.threads)
            if inst == "tiny":
                continue  # warm-up: numba compilation
            print(f"full-size DESI r0 arc (500 fibers, 4128x4114), {args.threads} thread(s):")
            print(f"  preproc: {t_pre:.1f} s, peak RSS {m_pre:.0f} MB (target < 10 s)")
            print(f"  psf:     {t_psf:.1f} s, peak RSS {m_psf:.0f} MB (target < 60 s)")
            psf = read_psf(fit)
            sim = Simulator("desi", 1)
            true = sim.exposure_psf(NIGHT, ARC, "r0")
            good = psf.status() == 0
            w = np.linspace(5800, 7600, 300)
            dx = (psfmodel.trace_x(psf, w) - psfmodel.trace_x(true, w))[good]
            dw = (psfmodel.wavelength(psf, psfmodel.trace_y(true, w)) - w[None, :])[good]
            print(f"  accuracy vs truth over {good.sum()} good fibers: trace x rms {np.sqrt(np.mean(dx**2)):.4f} px, "
                  f"wavelength rms {np.sqrt(np.mean(dw**2)):.4f} A, {psf.meta['NLINES']} lines")


if __name__ == "__main__":
    main()
