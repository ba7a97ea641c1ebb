"""Extraction of one full-size DESI r0 science camera (500 fibers x 2326 wavelengths).

Usage: python benchmarks/bench_extract.py [--threads N] [--fibers N]

Simulates the exposure and preprocesses it (not timed), writes the simulator's true PSF of
the exposure, then runs `fiberflow extract` in a fresh process (after a warm-up on the tiny
instrument that compiles the numba kernels) and prints wall time, peak memory and where the
time goes (spots, normal equations, solve + resolution, leverages) on one bundle, plus the
frame's median CHI2PIX. Target (issue 6): < 60 s with 2 cores, < 4 GB.
"""

import argparse
import cProfile
import os
import pstats
import tempfile

from _child import run

NIGHT = 20250101
SCIENCE = 182805


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile-fibers", type=int, default=25, help="fibers of the in-process profile")
    args = ap.parse_args()
    from fiberflow import extract, paths
    from fiberflow.instrument import load_instrument
    from fiberflow.io.image import PreprocImage
    from fiberflow.sim.night import Simulator

    with tempfile.TemporaryDirectory() as tmp:
        for inst in ("tiny", "desi"):
            cfg = os.path.join(tmp, f"{inst}.yaml")
            with open(cfg, "w") as fh:
                fh.write(f"instrument: {inst}\n")
            raw, truth = f"{tmp}/{inst}/raw", f"{tmp}/{inst}/truth"
            run(["simulate", "--night", str(NIGHT), "--instrument", inst, "--raw", raw, "--truth", truth,
                 "--expid", str(SCIENCE), "--cameras", "r0"], args.threads)
            pre = f"{tmp}/{inst}/preproc-r0.fits"
            run(["preproc", "--config", cfg, "--camera", "r0", "-i",
                 paths.findfile("raw", raw=raw, night=NIGHT, expid=SCIENCE), "-o", pre], args.threads)
            psf = Simulator(inst, 1).exposure_psf(NIGHT, SCIENCE, "r0")
            psf.write(f"{tmp}/{inst}/psf-r0.fits")
            frame = f"{tmp}/{inst}/frame-r0.fits"
            dt, mem = run(["extract", "--config", cfg, "--camera", "r0", "-i", pre, "--psf", f"{tmp}/{inst}/psf-r0.fits",
                           "-o", frame], args.threads)
            if inst == "tiny":
                continue
            print(f"full-size DESI r0 science frame (500 fibers x 2326 wavelengths), {args.threads} thread(s): "
                  f"{dt:.1f} s, peak RSS {mem:.0f} MB (target < 60 s with 2 cores, < 4 GB)")
            import fitsio

            print(f"  median CHI2PIX {fitsio.read_header(frame, ext='FLUX')['CHI2PIX']:.3f}")
            # where the time goes, on one bundle in this process
            img = PreprocImage.read(pre)
            wave = load_instrument("desi").wavegrid("r0")
            plan = [u for u in extract.patch_plan(psf.nfiber, 25, wave.size, extract.ExtractOptions())
                    if u[0] == 0][: max(1, args.profile_fibers // 5) * 47]
            prof = cProfile.Profile()
            prof.enable()
            extract.extract_frame(img.image, img.ivar, psf, wave, 25, units=plan)
            prof.disable()
            st = pstats.Stats(prof)
            tot = st.total_tt
            for name in ("spots", "normal_equations", "_solve", "fiber_resolution", "leverage", "model_image"):
                t = sum(v[3] for k, v in st.stats.items() if k[2] == name)
                print(f"  {name:18s} {t:6.2f} s ({100 * t / tot:4.1f}% of one bundle's {tot:.1f} s)")


if __name__ == "__main__":
    main()
