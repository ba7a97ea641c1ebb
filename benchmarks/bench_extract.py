"""Extraction of one full-size DESI r0 science camera (500 fibers x 2326 wavelengths).

Usage: python benchmarks/bench_extract.py [--threads 1 2] [--mpi 2]

Simulates the night's two ZEROs and one science exposure with ``--projection grid`` (every
bin's light at the centre of an extraction bin, so the true deconvolved spectrum is known per
bin), builds the master bias and preprocesses the exposure (not timed), writes the simulator's
true PSF of the exposure, then runs `fiberflow extract` in a fresh process for each thread
count (and under `mpiexec -n N` with --mpi), after a warm-up on the tiny instrument that
compiles the numba kernels. Prints wall time, peak memory, the pulls (flux - R truth) sqrt(ivar)
over all good fibers and wavelengths against the truth, CHI2PIX and resolution row sums (with
the default model variance and with the preproc's variance for comparison), where the time
goes on one bundle and the floating-point operations per patch.
Targets (issue 6): < 60 s with 2 cores, < 4 GB; pulls mean within 0.02, std 1 +/- 0.03,
CHI2PIX median 1 +/- 0.1, rows summing to 1 within 1e-6. Issue 23: <= 35 s on one thread.
"""

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time

import numpy as np
from _child import run

NIGHT = 20250101
ZEROS = (182800, 182801)
SCIENCE = 182805


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--mpi", type=int, default=0, help="also run under mpiexec -n N (1 thread per rank)")
    ap.add_argument("--profile-fibers", type=int, default=25, help="fibers of the in-process profile")
    args = ap.parse_args()
    from fiberflow import paths
    from fiberflow.io.frame import read_frame
    from fiberflow.sim.night import Simulator
    from fiberflow.sim.truth import TruthFrame
    from fiberflow.validation import extraction_vs_truth

    with tempfile.TemporaryDirectory() as tmp:
        for inst in ("tiny", "desi"):
            cfg = os.path.join(tmp, f"{inst}.yaml")
            with open(cfg, "w") as fh:
                fh.write(f"instrument: {inst}\n")
            raw, truth = f"{tmp}/{inst}/raw", f"{tmp}/{inst}/truth"
            run(["simulate", "--night", str(NIGHT), "--instrument", inst, "--raw", raw, "--truth", truth,
                 "--projection", "grid", "--expid", *map(str, ZEROS + (SCIENCE,)), "--cameras", "r0"], 2)
            bias = f"{tmp}/{inst}/biasnight-r0.fits"
            run(["biasnight", "--config", cfg, "--camera", "r0", "-o", bias, "-i",
                 *[paths.findfile("raw", raw=raw, night=NIGHT, expid=e) for e in ZEROS]], 2)
            pre = f"{tmp}/{inst}/preproc-r0.fits"
            run(["preproc", "--config", cfg, "--camera", "r0", "--biasnight", bias, "-o", pre,
                 "-i", paths.findfile("raw", raw=raw, night=NIGHT, expid=SCIENCE),
                 "--fibermap", paths.findfile("fibermap", raw=raw, night=NIGHT, expid=SCIENCE)], 2)
            psf = Simulator(inst, 1).exposure_psf(NIGHT, SCIENCE, "r0")
            psf.write(f"{tmp}/{inst}/psf-r0.fits")
            frame = f"{tmp}/{inst}/frame-r0.fits"
            cmd = ["extract", "--config", cfg, "--camera", "r0", "-i", pre, "--psf", f"{tmp}/{inst}/psf-r0.fits",
                   "-o", frame]
            if inst == "tiny":
                run(cmd, 1)
                continue
            print("full-size DESI r0 science frame (500 fibers x 2326 wavelengths); target < 60 s with 2 cores, < 4 GB")
            walls = {}
            for nt in args.threads:
                dt, mem = run(cmd + ["--nthreads", str(nt)], 1)
                walls[nt] = dt
                print(f"  {nt} thread(s): {dt:6.1f} s wall (incl. start-up and I/O), peak RSS {mem:.0f} MB")
            if args.mpi:
                mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
                dt, mem = run(cmd + ["--nthreads", "1"], 1, launcher=(mpiexec, "-n", str(args.mpi)))
                print(f"  mpiexec -n {args.mpi}: {dt:6.1f} s wall, summed peak RSS {mem:.0f} MB")
            tr = TruthFrame.read(paths.findfile("truth", truth=truth, night=NIGHT, expid=SCIENCE, camera="r0"))
            pulls(extraction_vs_truth(read_frame(frame), tr), "model variance (default)")
            cfg_pre = os.path.join(tmp, "desi-preproc-variance.yaml")
            with open(cfg_pre, "w") as fh:
                fh.write("instrument: desi\nextract: {model_variance: false}\n")
            frame_pre = f"{tmp}/{inst}/frame-r0-prevar.fits"
            dt, _ = run(["extract", "--config", cfg_pre, "--camera", "r0", "-i", pre, "--psf",
                         f"{tmp}/{inst}/psf-r0.fits", "-o", frame_pre, "--nthreads", str(max(args.threads))], 1)
            pulls(extraction_vs_truth(read_frame(frame_pre), tr), f"preproc variance ({dt:.1f} s)")
            profile(pre, psf, args.profile_fibers, walls.get(1))


def pulls(res, label):
    print(f"  pulls vs truth, {label}: {res['ngood']} bins of {res['nfiber']} fibers, mean {res['pull_mean']:+.4f}, "
          f"std {res['pull_std']:.4f} (MAD {res['pull_mad_std']:.4f}), median CHI2PIX {res['chi2pix_median']:.3f}, "
          f"max |row sum - 1| {res['rowsum_maxdev']:.1e}")


def profile(pre, psf, nfib, wall1=None):
    """Where the time goes on the first ``nfib`` fibers, and FLOPs per patch vs the machine."""
    from threadpoolctl import threadpool_limits

    from fiberflow.instrument import load_instrument
    from fiberflow.io.image import PreprocImage
    from fiberflow.models import psf as psfmodel
    from fiberflow.steps import extract, preproc

    img = PreprocImage.read(pre)
    floor = preproc.image_variance_floor(img)
    wave = load_instrument("desi").wavegrid("r0")
    opts = extract.ExtractOptions()
    plan = [u for u in extract.patch_plan(psf.nfiber, 25, wave.size, opts) if u[0] == 0]
    plan = plan[: max(1, nfib // 5) * len(range(0, wave.size, opts.wavesize))]
    extract.extract_frame(img.image, img.ivar, psf, wave, 25, opts, units=plan[:1], var_floor=floor)  # compile
    prof = cProfile.Profile()
    prof.enable()
    extract.extract_frame(img.image, img.ivar, psf, wave, 25, opts, units=plan, var_floor=floor)
    prof.disable()
    st = pstats.Stats(prof)
    tot = st.total_tt
    print(f"  time on {len(plan)} patches in one thread ({tot:.1f} s under the profiler):")
    for name in ("spot_inputs", "stamps_from_inputs", "overlap_pairs", "normal_equations_band", "band_solve_packed",
                 "resolution_rows", "leverage", "stamp_sums", "model_image"):
        t = sum(v[3] for k, v in st.stats.items() if k[2] == name)
        print(f"    {name:24s} {t:6.2f} s ({100 * t / tot:4.1f}%)")
    # floating-point operations of one interior patch
    _, core, solved, w0, w1 = plan[len(plan) // 2]
    lo = w0 - opts.nwavepad
    pw = wave[0] + (wave[1] - wave[0]) * np.arange(lo, w1 + opts.nwavepad)
    stamps, x0, y0 = psfmodel.spots(psf, pw, psf.fibermin + solved)
    sy, sx = stamps.shape[-2:]
    x0, y0 = x0.ravel(), y0.ravel()
    n = x0.size
    m = len(pw)
    pi, pj = extract.overlap_pairs(x0, y0, sy, sx)
    ov = (np.clip(sy - np.abs(y0[pj] - y0[pi]), 0, None) * np.clip(sx - np.abs(x0[pj] - x0[pi]), 0, None)).sum()
    kd = extract._pair_band((pi, pj), extract.bin_major(len(solved), m))[4]  # first solve: wavelength-major band
    kd2 = max(int(np.abs(pi - pj).max()), m - 1)  # second solve: fiber-major band, >= a fiber's bins
    npass = 2 if opts.model_variance else 1  # a first solve sets the model variance
    f_ne = npass * 2.0 * ov     # A^T W A: a multiply-add per overlapping pixel of every pair
    f_lev = 3.0 * ov            # leverages (the first solve's: leave-one-out model and CHI2PIX): the same pairs
    # banded Cholesky + the band of the inverse (Takahashi), n kd^2 multiply-adds each
    # (+ the smooth model of the model variance: one more bin-major banded factor and solve, no inverse)
    # (the second solve's inverse from the first core fiber's bins on: the leverages are the first solve's)
    f_band = (npass - 1) * 4 * n * kd**2 + n * kd2**2 + 2 * (n - (m if npass == 2 else 0)) * kd2**2
    nd = 2 * psf.hsizey + 1
    f_res = len(core) * (9.0 * m**3 + 2.0 * (w1 - w0) * nd * (m + nd))  # eigh + the band of Q's rows, R C R^T
    total = f_ne + f_lev + f_band + f_res
    a = np.random.default_rng(0).normal(size=(1000, 1000))
    with threadpool_limits(limits=1):
        a @ a
        t0 = time.perf_counter()
        for _ in range(3):
            a @ a
        gflops = 3 * 2e9 / (time.perf_counter() - t0) / 1e9
    npatch = len(extract.patch_plan(psf.nfiber, 25, wave.size, opts))
    print(f"  one patch: {n} unknowns ({len(solved)} fibers x {m} bins, {len(pi)} overlapping pairs, bands {kd} "
          f"and {kd2}); normal equations {f_ne / 1e6:.1f} MFLOP, leverages {f_lev / 1e6:.1f}, banded solves "
          f"{f_band / 1e6:.1f}, resolution {f_res / 1e6:.1f}: "
          f"{total / 1e6:.0f} MFLOP; x {npatch} patches = {total * npatch / 1e9:.0f} GFLOP per frame")
    print(f"  this machine: {gflops:.1f} GFLOP/s per core on a 1000x1000 matmul (BLAS, 1 thread) -> "
          f"{total * npatch / 1e9 / gflops:.0f} s of pure arithmetic per frame on one core")
    if wall1:
        print(f"  achieved on 1 thread: {total * npatch / 1e9 / wall1:.1f} GFLOP/s over the whole command "
              f"({100 * total * npatch / 1e9 / wall1 / gflops:.0f}% of the matmul rate; the pair sums and small "
              f"eigen-decompositions cannot run at matmul speed)")


if __name__ == "__main__":
    main()
