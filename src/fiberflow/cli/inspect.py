"""The QA scientist's inspection tools (DESI's data-QA walkthrough), each writing one PNG:

- ``fiberflow plot-spectra -i COADD [--targetid ... | --fiber ... | --spectype QSO] [--redrock
  REDROCK] [--rebin N]``: spectra of a spectra or coadd file (fiberflow's or DESI's), selected by
  TARGETID, by FIBER or by redrock SPECTYPE, with redrock's best-fit model over them (the
  redrock file beside a coadd is found by itself);
- ``fiberflow plot-frame -i SFRAME [--sky-fibers | --fibers ...] [--rebin N]``: some fibers of a
  frame, sframe or cframe, overlaid and as a fiber x wavelength image;
- ``fiberflow plot-focalplane -i FRAMES... [--fiberflat ...] [--wave-min --wave-max]``: the median
  flux of every fiber in a wavelength window against FIBER_X / FIBER_Y, as the residual from the
  median of the fibers, one panel per kind of input (frames, with their fiberflats applied; sframes
  after sky subtraction), for a whole exposure; ``--table`` writes the numbers as CSV.
"""

from __future__ import annotations

import os
import warnings

import numpy as np


def add_arguments(p, name):
    p.add_argument("-o", "--png", required=True, help="PNG to write")
    p.add_argument("--rebin", type=int, default=1, help="average N bins (inverse-variance weighted)")
    if name == "plot-spectra":
        p.add_argument("-i", "--infile", required=True, help="spectra or coadd file")
        sel = p.add_mutually_exclusive_group()
        sel.add_argument("--targetid", type=int, nargs="+", help="targets to plot")
        sel.add_argument("--fiber", type=int, nargs="+", help="fibers to plot (FIBERMAP FIBER)")
        sel.add_argument("--spectype", help="every target redrock classified so (GALAXY, QSO, STAR)")
        p.add_argument("--redrock", default=None,
                       help="redrock file of the coadd (model overlay, --spectype); default: redrock-* beside it")
        p.add_argument("--templates", default=None, help="redrock template folder (default: the shipped ones)")
        p.add_argument("--max", type=int, default=12, help="at most this many spectra")
    elif name == "plot-frame":
        p.add_argument("-i", "--infile", required=True, help="frame, sframe or cframe")
        sel = p.add_mutually_exclusive_group()
        sel.add_argument("--sky-fibers", action="store_true", help="the sky fibers (OBJTYPE SKY)")
        sel.add_argument("--fibers", type=int, nargs="+", help="these fibers (FIBER)")
    else:
        p.add_argument("-i", "--infiles", nargs="+", required=True,
                       help="frames or sframes (or cframes) of one exposure, any cameras")
        p.add_argument("--fiberflat", nargs="*", default=[],
                       help="fiberflats applied to the frames (matched by camera; sframes already have it)")
        p.add_argument("--wave-min", type=float, default=6500.0)
        p.add_argument("--wave-max", type=float, default=6700.0)
        p.add_argument("--flank", type=float, default=0.0,
                       help="subtract each fiber's median over this many Angstrom on both sides of the window "
                            "(its own continuum cancels: light or residuals confined to the window stand out)")
        p.add_argument("--table", default=None, help="CSV of the values plotted (camera, fiber, x, y, median, residual)")


def run(args):
    return {"plot-spectra": _spectra, "plot-frame": _frame, "plot-focalplane": _focalplane}[args.command](args)


def _beside(path):
    d, b = os.path.split(path)
    for pre in ("coadd-", "spectra-"):
        if b.startswith(pre):
            cand = os.path.join(d, "redrock-" + b[len(pre):])
            if os.path.exists(cand):
                return cand
    return None


def select_rows(fibermap, targetid=None, fiber=None, tids_of_spectype=None, nmax=12, exp_fibermap=None):
    """Rows of a spectra file to plot.

    Returns
    -------
    (rows (n,) int sorted, note str)

    Raises
    ------
    ValueError
        Naming the targets or fibers the file does not have, or an empty selection.
    """
    tid = np.asarray(fibermap["TARGETID"])
    if targetid:
        missing = sorted(set(targetid) - set(tid.tolist()))
        if missing:
            raise ValueError(f"has no TARGETID {', '.join(map(str, missing))}")
        rows = np.flatnonzero(np.isin(tid, targetid))
    elif fiber:
        if "FIBER" in (fibermap.dtype.names or ()):
            fib = np.asarray(fibermap["FIBER"])
        elif exp_fibermap is not None and "FIBER" in (exp_fibermap.dtype.names or ()):
            from ..qa.tileqa import first_per_target  # a coadd: the fiber of each target's first exposure

            fib = first_per_target(tid, exp_fibermap, "FIBER")
        else:
            raise ValueError("has no FIBER column in FIBERMAP or EXP_FIBERMAP")
        missing = sorted(set(fiber) - set(fib.tolist()))
        if missing:
            raise ValueError(f"has no FIBER {', '.join(map(str, missing))}")
        rows = np.flatnonzero(np.isin(fib, fiber))
    elif tids_of_spectype is not None:
        rows = np.flatnonzero(np.isin(tid, list(tids_of_spectype)))
        if not rows.size:
            raise ValueError("no target of that SPECTYPE")
    else:
        rows = np.arange(len(tid))
    note = ""
    if rows.size > nmax:
        note = f" (first {nmax} of {rows.size})"
        rows = rows[:nmax]
    return np.sort(rows), note


def redrock_model(zrow, templates, wave, resolution=None):
    """redrock's best-fit model of one target on a band's grid.

    Parameters
    ----------
    zrow : REDSHIFTS row (Z, COEFF, SPECTYPE, SUBTYPE)
    templates : dict (SPECTYPE, SUBTYPE) -> redrock Template
    wave : (nwave,)
    resolution : (ndiag, nwave), optional
        The spectrum's resolution diagonals (the model is convolved with them, as redrock fits).

    Returns
    -------
    (nwave,) or None when no template has that type
    """
    from ..models.resolution import apply

    tx = templates.get((str(zrow["SPECTYPE"]).strip(), str(zrow["SUBTYPE"]).strip()))
    if tx is None:
        return None
    model = tx.eval(np.asarray(zrow["COEFF"], float), np.asarray(wave, float), float(zrow["Z"]))
    return apply(np.asarray(resolution, float), model) if resolution is not None else model


def load_rr_templates(folder=None):
    """redrock's templates as {(SPECTYPE, SUBTYPE): Template} (default: the shipped ones)."""
    import contextlib
    import io

    from redrock.templates import load_templates

    from .. import reference

    with contextlib.redirect_stdout(io.StringIO()):  # redrock prints what it reads
        return load_templates(folder or reference.redrock_template_dir(), asdict=True)


def _spectra(args):
    from ..errors import DataError
    from ..io.spectra import read_spectra_meta, read_spectra_rows, spectra_layout
    from ..io.zcatalog import read_redrock
    from ..qa import plots

    header, fm, exp_fm, _, bands = read_spectra_meta(args.infile)
    layout = spectra_layout(args.infile)
    rrpath = args.redrock or _beside(args.infile)
    rr = read_redrock(rrpath) if rrpath else None
    if args.spectype and rr is None:
        raise DataError(args.infile, "--spectype needs the coadd's redrock file (--redrock; none beside the coadd)")
    zrow = {}
    if rr is not None:
        zrow = {int(t): k for k, t in enumerate(rr.redshifts["TARGETID"])}
    spec_tids = None
    if args.spectype:
        st = np.char.strip(np.asarray(rr.redshifts["SPECTYPE"]).astype(str))
        spec_tids = set(np.asarray(rr.redshifts["TARGETID"])[st == args.spectype.strip().upper()].tolist())
    try:
        rows, note = select_rows(fm, args.targetid, args.fiber, spec_tids, args.max, exp_fm)
    except ValueError as exc:
        raise DataError(args.infile, str(exc)) from None
    templates = load_rr_templates(args.templates) if rr is not None else None
    data = {b: read_spectra_rows(args.infile, b, rows) for b in bands}
    panels = []
    for k, r in enumerate(rows):
        tid = int(fm["TARGETID"][r])
        label = f"TARGETID {tid}"
        if "FIBER" in (fm.dtype.names or ()):
            label += f" FIBER {int(fm['FIBER'][r])}"
        elif exp_fm is not None and "FIBER" in (exp_fm.dtype.names or ()):
            from ..qa.tileqa import first_per_target

            label += f" FIBER {int(first_per_target([tid], exp_fm, 'FIBER')[0])}"
        p = {"bands": {}, "model": {}}
        zr = zrow.get(tid)
        for b in bands:
            flux, ivar, mask, res = data[b]
            w = layout[b][0]
            good_ivar = ivar[k] if mask is None else ivar[k] * (mask[k] == 0)  # masked bins are left out
            wb, fb, _ = plots.rebin(w, flux[k], good_ivar, args.rebin)
            p["bands"][b] = (wb, fb)
            if zr is not None and templates is not None:
                model = redrock_model(rr.redshifts[zr], templates, w, None if res is None else res[k])
                if model is not None:
                    wm, mb, _ = plots.rebin(w, model, (ivar[k] > 0).astype(float), args.rebin)
                    p["model"][b] = (wm, mb)
        if zr is not None:
            z = rr.redshifts[zr]
            label += (f"  {str(z['SPECTYPE']).strip()} z={float(z['Z']):.4f} ZWARN={int(z['ZWARN'])} "
                      f"DELTACHI2={float(z['DELTACHI2']):.0f}")
        p["label"] = label
        panels.append(p)
    title = f"{os.path.basename(args.infile)}{note}" + (f"; model: {os.path.basename(rrpath)}" if rrpath else "")
    plots.spectra_panels(args.png, title, panels)
    print(f"plot-spectra: {len(panels)} spectra of {args.infile}{note} -> {args.png}")
    return 0


def _frame(args):
    from ..errors import DataError
    from ..io.frame import read_frame
    from ..qa import plots

    fr = read_frame(args.infile)
    fm = fr.fibermap
    if fm is None:
        raise DataError(args.infile, "has no FIBERMAP: cannot select fibers")
    fib = np.asarray(fm["FIBER"])
    if args.fibers:
        missing = sorted(set(args.fibers) - set(fib.tolist()))
        if missing:
            raise DataError(args.infile, f"has no FIBER {', '.join(map(str, missing))}")
        rows = np.flatnonzero(np.isin(fib, args.fibers))
    elif args.sky_fibers:
        rows = np.flatnonzero(np.char.strip(np.asarray(fm["OBJTYPE"]).astype(str)) == "SKY")
        if not rows.size:
            raise DataError(args.infile, "has no sky fiber")
    else:
        rows = np.arange(fr.nspec)
    w, f, _ = plots.rebin(fr.wave, fr.flux[rows], fr.ivar[rows] * (fr.mask[rows] == 0), args.rebin)  # mask honoured
    what = "sky fibers" if args.sky_fibers else f"{rows.size} fibers"
    plots.frame_fibers(args.png, f"{os.path.basename(args.infile)}: {what} (rebin {args.rebin})", w, f, fib[rows],
                       f"flux [{fr.units}]")
    print(f"plot-frame: {what} of {args.infile} -> {args.png}")
    return 0


def focalplane_values(frames, fiberflats, wmin, wmax, flank=0.0):
    """Median flux of every fiber in [wmin, wmax] and its residual from the median of the fibers
    of the same camera and kind.

    Parameters
    ----------
    frames : list of (path, Frame)
    fiberflats : dict camera -> FiberFlat
        Applied to frames in electron/Angstrom that are not sky-subtracted (HDU header: no
        SKYFLAG / IN_SKY) when their camera has one.
    flank : float
        When > 0, each fiber's median is taken relative to the mean of its medians over
        [wmin - flank, wmin) and (wmax, wmax + flank] (where the camera covers them): a target's
        continuum and the sky continuum cancel, so light confined to the window stands out.

    Returns
    -------
    list of dict
        kind (frame or sframe / cframe), camera, fiber, x, y, objtype, median, residual (NaN for
        a fiber with less than half its bins good in the window or in both flanks).
    """
    rows = []
    for path, fr in frames:
        cam = fr.camera
        kind = os.path.basename(path).split("-")[0]
        if not ((fr.wave >= wmin) & (fr.wave <= wmax)).any():
            continue

        def medians(sel):
            flux = fr.flux[:, sel].astype(float)
            good = (fr.ivar[:, sel] > 0) & (fr.mask[:, sel] == 0)
            if kind == "frame" and cam in fiberflats:
                ff = fiberflats[cam].fiberflat[:, sel]
                good &= ff > 0.1
                flux = np.where(good, flux / np.where(ff > 0.1, ff, 1.0), 0.0)
            # a fiber with less than half its bins good (a masked CCD defect) has no honest median
            return np.array([np.median(flux[i][good[i]]) if good[i].sum() >= 0.5 * sel.sum() else np.nan
                             for i in range(fr.nspec)])

        med = medians((fr.wave >= wmin) & (fr.wave <= wmax))
        if flank > 0:
            sides = [s for s in ((fr.wave >= wmin - flank) & (fr.wave < wmin), (fr.wave > wmax) & (fr.wave <= wmax + flank))
                     if s.sum() >= 10]
            if sides:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # a fiber without good flank bins: NaN
                    med = med - np.nanmean([medians(s) for s in sides], axis=0)
        ref = np.nanmedian(med) if np.isfinite(med).any() else np.nan
        fm = fr.fibermap
        for i in range(fr.nspec):
            rows.append({"kind": kind, "camera": cam, "fiber": int(fm["FIBER"][i]), "x": float(fm["FIBER_X"][i]),
                         "y": float(fm["FIBER_Y"][i]), "objtype": str(fm["OBJTYPE"][i]).strip(),
                         "median": float(med[i]), "residual": float(med[i] - ref)})
    return rows


def _focalplane(args):
    import csv

    from ..errors import DataError
    from ..io.calib import FiberFlat
    from ..io.fitsutil import atomic_path
    from ..io.frame import read_frame
    from ..qa import plots

    frames = []
    for f in args.infiles:
        fr = read_frame(f)
        if fr.fibermap is None or not {"FIBER_X", "FIBER_Y", "FIBER"} <= set(fr.fibermap.dtype.names):
            raise DataError(f, "FIBERMAP has no FIBER / FIBER_X / FIBER_Y: no focal-plane positions")
        frames.append((f, fr))
    expids = {int(fr.header.get("EXPID", -1)) for _, fr in frames}
    if len(expids) > 1:
        raise DataError(args.infiles[0], f"the inputs are of several exposures ({sorted(expids)}); give one exposure")
    ffs = {}
    for f in args.fiberflat:
        ff = FiberFlat.read(f)
        ffs[str(ff.header.get("CAMERA", "")).strip().lower()] = ff
    rows = focalplane_values(frames, ffs, args.wave_min, args.wave_max, args.flank)
    if not rows:
        raise DataError(args.infiles[0], f"no input covers {args.wave_min:.0f}-{args.wave_max:.0f} A")
    kinds = sorted({r["kind"] for r in rows}, key=["frame", "sframe", "cframe"].index)
    panels = []
    for kind in kinds:
        rs = [r for r in rows if r["kind"] == kind]
        res = np.array([r["residual"] for r in rs])
        # a robust scale (5 sigma of the fibers' scatter): bright targets saturate, the sky level shows
        lim = 5 * 1.4826 * np.nanmedian(np.abs(res - np.nanmedian(res))) if np.isfinite(res).any() else 1.0
        label = {"frame": "frame / fiberflat", "sframe": "sframe (sky subtracted)", "cframe": "cframe"}[kind]
        what = f"median {args.wave_min:.0f}-{args.wave_max:.0f} A" + (f" - {args.flank:.0f} A flanks" if args.flank > 0 else "")
        panels.append((f"{label}: {what} - median of fibers",
                       [r["x"] for r in rs], [r["y"] for r in rs], res, [r["fiber"] for r in rs],
                       (-max(lim, 1e-9), max(lim, 1e-9)), "RdBu_r"))
    plots.focal_plane(args.png, f"exposure {expids.pop()}: focal plane of {', '.join(sorted({r['camera'] for r in rows}))}",
                      panels)
    if args.table:
        with atomic_path(args.table) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    print(f"plot-focalplane: {len(rows)} fibers x kinds of {len(frames)} file(s) -> {args.png}")
    return 0
