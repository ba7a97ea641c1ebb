"""The flux bias of model-variance weights and where it comes from (issue 23), on one interior patch of
the real DESI r0 PSF (25 fibers, light on the extraction grid, read noise 3 e).

Usage: python benchmarks/bias_extract.py [--levels 60 600 3000] [--nreal 300]

For each brightness [e/A] the same noisy images are extracted by fiberflow's own code with the true
pixel variance (fixed weights: a linear, unbiased estimator) and with model-variance weights: the
default (the smooth model wherever the leave-one-out model lies within ``extract.variance_nsig``
of its own noise from it) and the leave-one-out model everywhere (``extract.variance_smooth: 0``).
Printed, in units of the output (R-space) flux error:
- ``paired``: mean of (model-variance flux - true-weight flux) / sigma, precise to ~1e-3 because the
  noise cancels; it is the flux bias the data-derived weights add;
- ``pull``: the mean pull (flux - R truth) sqrt(ivar) and its std, which also carry the correlation
  of the extraction's own ivar with the noise;
- for the leave-one-out model, ``R b``: the first-order flux bias ``b = C A^T beta``,
  ``beta_i = w_i h_i`` (a pixel's weight follows its neighbours' noise through the leave-one-out
  model), mapped to R space with the mean resolution matrix; ``MC`` / ``b`` (deconvolved): the same
  bias in the deconvolved unknowns from a dense replica of the two solves (Monte Carlo) and from the
  formula; ``R follows noise``: paired - R b, the part from the resolution matrix (computed from the
  noisy weights' covariance) correlating with the flux errors.
"""

import argparse
import os
import sys

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", type=float, nargs="+", default=[60.0, 600.0, 3000.0])
    ap.add_argument("--nreal", type=int, default=300)
    args = ap.parse_args()
    from test_extract import _project

    from fiberflow.io.psf import read_psf
    from fiberflow.models import resolution
    from fiberflow.reference import real_psf_path
    from fiberflow.steps import extract

    nf = 25
    psf = read_psf(real_psf_path()).select_fibers(0, nf)
    psf.meta["FIBERMIN"] = 0
    wave = 6000.0 + 0.8 * np.arange(600)
    opts = extract.ExtractOptions()
    plan = extract.patch_plan(nf, 25, wave.size, opts)
    unit = [u for u in plan if u[1][0] == 10 and u[3] == 250][0]  # interior sub-bundle and wavelengths
    core_f, solved = list(unit[1]), list(unit[2])
    out_bins = slice(unit[3], unit[4])

    class NoNoise:
        def normal(self, size):
            return np.zeros(size)

    print(f"one patch: fibers {core_f[0]}-{core_f[-1]} (solved {solved[0]}-{solved[-1]}), bins {unit[3]}-{unit[4]}; "
          f"{args.nreal} noise draws per brightness")
    for level in args.levels:
        rng = np.random.default_rng(3)
        truth = level * (1 + 0.3 * np.sin(wave / 40.0))[None, :] * rng.uniform(0.8, 1.2, (nf, 1))
        clean, ivar = _project(psf, truth, wave, NoNoise(), np.arange(nf))
        floor = np.full(clean.shape, 9.0)
        sd = np.where(ivar > 0, 1 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), 0.0)
        ys, xs = np.nonzero(ivar > 0)
        box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        variants = {"default": opts, "leave-one-out only": extract.ExtractOptions(variance_smooth=0.0)}
        paired = {k: [] for k in variants}
        pulls = {k: [] for k in variants}
        sl = (slice(core_f[0], core_f[-1] + 1), out_bins)
        for _ in range(args.nreal):
            img = clean.copy()
            img[box] += rng.normal(size=sd[box].shape) * sd[box]
            lin = extract.extract_frame(img, ivar, psf, wave, 25, extract.ExtractOptions(model_variance=False),
                                        units=[unit], var_floor=floor)
            for name, o in variants.items():
                mv = extract.extract_frame(img, ivar, psf, wave, 25, o, units=[unit], var_floor=floor)
                paired[name].append((mv["flux"] - lin["flux"])[sl] * np.sqrt(lin["ivar"][sl]))
                rt = np.array([resolution.apply(mv["resolution"][f], truth[f]) for f in core_f])[:, out_bins]
                pulls[name].append((mv["flux"][sl] - rt) * np.sqrt(mv["ivar"][sl]))
        first = first_order(extract, psf, wave, unit, clean, ivar, floor, args.nreal, rng)
        for name in variants:
            pa, pu = np.array(paired[name]), np.array(pulls[name])
            line = (f"  {level:7.0f} e/A {name:18s}: paired {pa.mean():+.4f} +- {pa.std() / np.sqrt(pa.size):.4f}, "
                    f"pull mean {pu.mean():+.4f} +- {pu.std() / np.sqrt(pu.size):.4f}, std {pu.std():.4f}")
            if name != "default":
                line += (f"; R b {first['Rb']:+.4f}, R follows noise {pa.mean() - first['Rb']:+.4f}; deconvolved: "
                         f"MC {first['mc']:+.4f} +- {first['mc_err']:.4f}, b {first['b']:+.4f}")
            print(line)


def first_order(extract, psf, wave, unit, clean, ivar, floor, nreal, rng):
    """Dense replica of the patch's two solves: Monte Carlo bias of the deconvolved unknowns, the
    first-order formula, and the formula mapped to R space (per core fiber, sigma of R space)."""
    cap = {}
    solve_band = extract._solve_band

    def grab(st, lx, ly, data, weight, *a):
        cap.setdefault("args", (st.copy(), lx.copy(), ly.copy(), data.copy(), weight.copy()))
        return solve_band(st, lx, ly, data, weight, *a)

    extract._solve_band = grab
    try:
        extract.extract_frame(clean, ivar, psf, wave, 25, extract.ExtractOptions(), units=[unit], var_floor=floor)
    finally:
        extract._solve_band = solve_band
    st, lx, ly, c, w0 = cap["args"]
    Ad = extract._dense_columns(st, lx, ly, c.shape)
    A = sp.csr_matrix(Ad)
    c, w0 = c.ravel(), w0.ravel()
    good = w0 > 0
    fl = floor[0, 0]
    n = A.shape[1]
    nw = n // len(unit[2])

    def cov(w):
        m = (A.T @ sp.diags(w) @ A).toarray()
        m[np.diag_indices(n)] += 1e-8 * np.median(np.diag(m))
        return np.linalg.inv(m)

    C0 = cov(w0)
    h0 = np.clip(w0 * np.einsum("pi,ij,pj->p", Ad, C0, Ad), 0.0, 0.99)
    wbar = np.where(good, 1.0 / (fl + np.clip(c, 0.0, None)), 0.0)
    Cb = cov(wbar)
    hb = wbar * np.einsum("pi,ij,pj->p", Ad, Cb, Ad)
    b = Cb @ (A.T @ (wbar * hb * (c > 0)))
    sig = np.where(good, 1.0 / np.sqrt(np.where(good, w0, 1.0)), 0.0)
    acc, acc2 = np.zeros(n), np.zeros(n)
    for _ in range(nreal):
        d = c + rng.normal(size=c.size) * sig
        f0 = C0 @ (A.T @ (w0 * d))
        loo = d - (d - A @ f0) / (1.0 - h0)
        w = np.where(good, 1.0 / (fl + np.clip(loo, 0.0, None)), 0.0)
        x = cov(w) @ (A.T @ (w * d)) - f0
        acc += x
        acc2 += x * x
    mc = acc / nreal
    err = np.sqrt(np.maximum(acc2 / nreal - mc**2, 0.0) / nreal)
    s = np.sqrt(np.diag(Cb))
    k = [list(unit[2]).index(f) for f in unit[1]]
    pad = extract.ExtractOptions().nwavepad
    core = (np.array(k)[:, None] * nw + pad + np.arange(unit[4] - unit[3])[None, :]).ravel()
    rb = []
    for kk in k:
        blk = Cb[kk * nw:(kk + 1) * nw, kk * nw:(kk + 1) * nw]
        rows = slice(pad, pad + unit[4] - unit[3])
        R = extract.fiber_resolution(blk, 11, rows, slice(0, nw))
        rb.append(R @ b[kk * nw:(kk + 1) * nw] / np.sqrt(np.sum((R @ blk) * R, axis=1)))
    return {"mc": float((mc / s)[core].mean()), "mc_err": float(np.sqrt(np.sum((err / s)[core] ** 2)) / core.size),
            "b": float((b / s)[core].mean()), "Rb": float(np.mean(rb))}


if __name__ == "__main__":
    main()
