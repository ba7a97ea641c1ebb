"""Where a simulated production's flux differs from the truth, per target class: sky subtraction on
target fibers against sky fibers, and the tile coadds against the truth.

For every camera frame with a truth file it compares the sky-subtracted, flat-fielded frame
(sframe) with the true object electrons divided by the true fiberflat, on the frame's "continuum"
bins (true sky below 3x its median) and its sky-line bins, and splits the frame into the extraction
part (``frame / fiberflat`` minus the true electrons) and the sky-model part (the fiber's sky model
minus the true sky): a sky model that depends on the fiber's own brightness shows as a sky-model error
that differs between sky fibers, targets and standards. Then, for every tile coadd, the coadd
against the truth's expected coadd (:func:`fiberflow.validation.expected_coadd`): the ivar-weighted
flux ratio and the mean pull per class and band (what redrock's DELTACHI2 feels: it scales as the
square of the flux).

Usage: python benchmarks/flux_residuals.py --prod PROD/redux/SPECPROD --truth PROD/truth [--cameras z0 ...]
(a production kept by e.g. ``validate_redshifts.py --keep``; reads files only, a minute for 10 demo tiles)
"""

import argparse
import glob
import os

import fitsio
import numpy as np


def classes(truth_root):
    from fiberflow.validation import load_truth_targets

    t = load_truth_targets(truth_root)
    return {int(tid): str(c).strip() for tid, c in zip(t["TARGETID"], t["CLASS"])}


def group(c):
    return "TARGET" if c in ("LRG", "ELG", "QSO") else c


def frame_residuals(prod, truth_root, cls, cameras):
    """{(camera arm, group): lists of per-fiber means} of the sframe residual and its two parts."""
    from fiberflow.io.frame import read_frame
    from fiberflow.sim.truth import TruthFrame

    out = {}
    for sf in sorted(glob.glob(os.path.join(prod, "exposures", "*", "*", "sframe-*.fits"))):
        cam, expid = os.path.basename(sf).split("-")[1], os.path.basename(sf).split("-")[2][:8]
        if cameras and cam not in cameras:
            continue
        night = os.path.basename(os.path.dirname(os.path.dirname(sf)))
        tp = os.path.join(truth_root, night, expid, f"truth-{cam}-{expid}.fits")
        skyp, framep = sf.replace("sframe-", "sky-"), sf.replace("sframe-", "frame-")
        if not (os.path.exists(tp) and os.path.exists(skyp) and os.path.exists(framep)):
            continue
        t = TruthFrame.read(tp)
        s, f = read_frame(sf), read_frame(framep)
        sky = fitsio.read(skyp, "SKY").astype(float)
        tobj = (t.electrons.astype(float) - t.sky) / t.fiberflat
        tsky = t.sky / t.fiberflat
        flux = s.flux.astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            ff = f.flux / (flux + sky)  # the fiberflat the sky step divided by
        skym = np.median(t.sky, axis=0)
        nw = skym.size
        inner = np.zeros(nw, bool)
        inner[nw // 10: nw - nw // 10] = True
        cont = inner & (skym < 3 * np.median(skym))
        line = inner & ~(skym < 3 * np.median(skym))
        for i, tid in enumerate(s.fibermap["TARGETID"]):
            ok = s.mask[i] == 0
            if np.count_nonzero(ok & cont) < 50:
                continue
            g = out.setdefault((cam[0], group(cls.get(int(tid), "?"))), {k: [] for k in
                                                                          ("cont", "line", "ext", "skym", "obj", "sky")})
            r = flux[i] - tobj[i]
            g["cont"].append(r[ok & cont].mean())
            g["line"].append(r[ok & line].mean() if (ok & line).any() else np.nan)
            g["ext"].append(np.nanmean((f.flux[i] / ff[i] - t.electrons[i] / t.fiberflat[i])[ok & cont]))
            g["skym"].append(np.mean((sky[i] - tsky[i])[ok & cont]))
            g["obj"].append(tobj[i][ok & cont].mean())
            g["sky"].append(tsky[i][ok & cont].mean())
    return out


def coadd_ratios(prod, truth_root, cls):
    """{(class, band): [sum iv c e, sum iv e^2, pulls...]} over the tile coadds."""
    from fiberflow.io.spectra import read_spectra
    from fiberflow.validation import TruthFluxes, expected_coadd

    tf = TruthFluxes(truth_root)
    acc = {}
    for sp in sorted(glob.glob(os.path.join(prod, "tiles", "*", "*", "*", "spectra-*.fits"))):
        cp = sp.replace(os.sep + "spectra-", os.sep + "coadd-")
        if not os.path.exists(cp):
            continue
        s, co = read_spectra(sp), read_spectra(cp)
        expect, _ = expected_coadd(s, co, tf)
        for b, e in expect.items():
            for i, tid in enumerate(co.fibermap["TARGETID"]):
                if not np.isfinite(e[i]).all():
                    continue
                iv = co.ivar[b][i].astype(float) * (co.mask[b][i] == 0)
                a = acc.setdefault((cls.get(int(tid), "?"), b), [0.0, 0.0, []])
                a[0] += np.sum(iv * co.flux[b][i] * e[i])
                a[1] += np.sum(iv * e[i] ** 2)
                a[2].append(((co.flux[b][i] - e[i]) * np.sqrt(iv))[iv > 0])
    return acc


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prod", required=True, help="production folder (redux/SPECPROD)")
    ap.add_argument("--truth", required=True, help="simulator truth folder")
    ap.add_argument("--cameras", nargs="*", default=None)
    args = ap.parse_args()
    cls = classes(args.truth)
    res = frame_residuals(args.prod, args.truth, cls, args.cameras)
    print("sframe - true object on continuum / sky-line bins [electron/A, flat-fielded], mean over fibers +- error;")
    print("continuum parts: extraction (frame/fiberflat - true) and sky model (model - true sky)")
    for (arm, g), v in sorted(res.items()):
        v = {k: np.asarray(x, float) for k, x in v.items()}
        n = len(v["cont"])
        err = v["cont"].std() / np.sqrt(max(n, 1))
        of_obj = f"{v['cont'].mean() / v['obj'].mean():+.4f}" if v["obj"].mean() > 1e-3 else "   -   "
        print(f"  {arm} {g:6s} n={n:4d}  continuum {v['cont'].mean():+7.3f} +- {err:.3f} "
              f"({v['cont'].mean() / v['sky'].mean():+.5f} of the sky, {of_obj} "
              f"of the object)  lines {np.nanmean(v['line']):+7.3f}  |  extraction {v['ext'].mean():+7.3f}  "
              f"sky model {v['skym'].mean():+7.3f}  (object {v['obj'].mean():8.1f}, sky {v['sky'].mean():6.1f})")
    acc = coadd_ratios(args.prod, args.truth, cls)
    if acc:
        print("tile coadds against the truth's expected coadd: ivar-weighted flux ratio, mean pull, pull std")
        for (c, b), (num, den, pulls) in sorted(acc.items()):
            p = np.concatenate(pulls) if pulls else np.zeros(0)
            ratio = f"{num / den:.4f}" if den > 0 else "   -  "
            print(f"  {c:4s} {b}  ratio {ratio}  pull mean {p.mean():+.4f}  std {p.std():.4f}  ({len(pulls)} spectra)")


if __name__ == "__main__":
    main()
