"""Does the sky a fiber's extraction delivers depend on the fiber's own light? (issue 26)

Sky lines are narrower than the extraction's bins: the image of the sky is not a combination of
the extraction grid's spots, and how the fit spreads what it cannot represent depends on the
pixel weights. Weights that follow a fiber's own light (its object) then change the sky in its
extracted spectrum, and a sky model from the sky fibers leaves a residual on the targets that
grows with the object's brightness.

One bundle of the real DESI r0 PSF (25 fibers), 6900-7500 A, the UVES night sky on a 0.1 A grid
scaled to ``--sky`` e/A (median), every fourth fiber a sky fiber, the others with flat object
continua of 0, 20, 100, 500 and 3,000 e/A, projected as the simulator does (fine bins with
centroids), read noise 3 e. For each ``extract.variance_signal`` ("fiber": each fiber's own
model in its weights, the default before session 26; "patch": the patch's median fiber):
- noiseless: the sky model fitted to the sky fibers' extracted spectra (through each one's
  resolution matrix, as ``fiberflow sky`` does), subtracted from every fiber: the mean residual
  on continuum bins (sky below 3x its median) per object level, and the mean absolute residual
  over all bins (sky-line residuals);
- ``--nreal`` noisy draws: pulls against the noiseless extraction (is the ivar right on
  continuum and sky-line bins?) and the flux variance per level (does the weighting lose S/N?).

Usage: python benchmarks/sky_weights.py [--sky 250] [--nreal 6]
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sky", type=float, default=250.0, help="median sky [e/A]")
    ap.add_argument("--nreal", type=int, default=6)
    args = ap.parse_args()
    from test_extract import SKY_LEVELS as LEVELS
    from test_extract import _sky_residuals as sky_residuals
    from test_extract import _sky_scene

    from fiberflow.io.psf import read_psf
    from fiberflow.reference import real_psf_path
    from fiberflow.steps import extract

    psf = read_psf(real_psf_path()).select_fibers(0, 25)
    psf.meta["FIBERMIN"] = 0
    wave = np.arange(6900.0, 7500.0, 0.8)
    img, skyfib, obj = _sky_scene(psf, args.sky, wave[0], wave[-1])
    rn2 = 9.0
    rng = np.random.default_rng(1)
    noise = [rng.normal(size=img.shape) * np.sqrt(rn2 + img) for _ in range(args.nreal)]
    edge = slice(20, -20)
    print(f"25 fibers x {wave.size} bins, sky {args.sky:g} e/A (median), sky fibers {skyfib.tolist()}; "
          f"{args.nreal} noisy draws")
    for mode in ("fiber", "patch"):
        opts = extract.ExtractOptions(variance_signal=mode)
        t = time.time()

        def run(im):
            ivar = np.where(img > 0, 1.0 / (rn2 + np.clip(im, 0, None)), 0.0)
            return extract.extract_frame(im, ivar, psf, wave, 25, opts, var_floor=np.full(img.shape, rn2))

        ref = run(img)
        res, skym = sky_residuals(ref, skyfib, obj)
        line = skym > 3 * np.median(skym)
        cont = ~line
        for m in (line, cont):
            m[:20] = m[-20:] = False
        print(f"\nvariance_signal: {mode}")
        print("  noiseless, sky-subtracted continuum bins [e/A] by object level: "
              + ", ".join(f"{lv:g}: {np.mean([res[f][cont].mean() for f in range(len(obj)) if obj[f] == lv and f not in skyfib]):+.3f}"
                          for lv in LEVELS)
              + f"; sky fibers {res[skyfib][:, cont].mean():+.3f}")
        print(f"  noiseless, mean |residual| over all bins: {np.abs(res[:, edge]).mean():.3f} e/A "
              f"(sky-line bins {np.abs(res[:, line]).mean():.3f}, continuum {np.abs(res[:, cont]).mean():.3f})")
        dF, pulls = [], []
        for n in noise:
            o = run(img + n)
            dF.append(o["flux"] - ref["flux"])
            pulls.append(dF[-1] * np.sqrt(o["ivar"]))
        dF, pulls = np.array(dF), np.array(pulls)
        for name, sel in (("continuum", cont), ("sky lines", line)):
            print(f"  noisy, {name} bins: " + "; ".join(
                f"{lv:g}: pull {pulls[:, obj == lv][:, :, sel].mean():+.3f} / std {pulls[:, obj == lv][:, :, sel].std():.3f}, "
                f"var {dF[:, obj == lv][:, :, sel].var(axis=0).mean():.0f}" for lv in LEVELS))
        print(f"  ({time.time() - t:.0f} s)")


if __name__ == "__main__":
    main()
