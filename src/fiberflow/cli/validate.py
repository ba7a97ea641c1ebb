"""``fiberflow validate-redshifts``: a simulated production's redshift catalog against the truth.

Reads the catalog (``zpix`` or ``ztile``) and the simulator's per-tile truth tables and prints
the success table per class (success: ZWARN 0 and |dz|/(1+z) < 1000 km/s; catastrophic: ZWARN
0 and beyond; Wilson 1-sigma intervals; median coadd exposure time). With ``--ideal`` it also
runs redrock on the *ideal* reduction of every coadd of the catalog (the truth through the
coadd's own weights plus Gaussian noise as large as the coadd's own measured scatter,
:func:`fiberflow.validation.ideal_coadd`) and
counts the pipeline-induced failures: targets that fail on fiberflow's coadd but not on the
ideal one, those that fail only on the ideal one (its own noise realization), and the net loss
with its McNemar error. Validation only: the production never reads truth.
"""

from __future__ import annotations

import os
import time


def add_arguments(p, name):
    p.add_argument("--config", default=None, help="the production's configuration (roots, redshift templates)")
    p.add_argument("--prod", default=None, help="production root (default: from --config)")
    p.add_argument("--truth", default=None, help="simulator truth root (default: from --config)")
    p.add_argument("--group", choices=("zpix", "ztile"), default="zpix", help="which catalog (default zpix)")
    p.add_argument("--survey", default="main")
    p.add_argument("--program", default="dark")
    p.add_argument("--ideal", action="store_true", help="also fit the ideal reduction (pipeline-induced failures)")
    p.add_argument("--outdir", default=None, help="ideal coadds and their redrock files (default: {prod}/validation)")
    p.add_argument("--ncpu", type=int, default=1, help="redrock processes for the ideal coadds")
    p.add_argument("--json", default=None, help="also write the table as JSON")


def _roots(args):
    from ..config import load_config, resolve_roots
    from ..errors import ConfigError

    prod, truth = args.prod, args.truth
    if prod is None or truth is None:
        if args.config is None:
            raise ConfigError("give --config, or both --prod and --truth")
        roots = resolve_roots(load_config(args.config))
        prod, truth = prod or roots["prod"], truth or roots["truth"]
    return prod, truth


def catalog_coadds(zcat, group, prod):
    """(spectra, coadd) paths of every coadd a catalog was built from."""
    from .. import paths

    out = []
    if group == "ztile":
        for t, p, n in sorted({(int(r["TILEID"]), int(r["PETAL_LOC"]), int(r["LASTNIGHT"])) for r in zcat}):
            ids = dict(tileid=t, spectrograph=p, night=n)
            out.append((paths.findfile("spectra_cumulative", prod=prod, **ids),
                        paths.findfile("coadd_cumulative", prod=prod, **ids)))
    else:
        for s, g, pix in sorted({(str(r["SURVEY"]).strip(), str(r["PROGRAM"]).strip(), int(r["HEALPIX"])) for r in zcat}):
            ids = dict(survey=s, program=g, pix=pix)
            out.append((paths.findfile("spectra", prod=prod, **ids), paths.findfile("coadd", prod=prod, **ids)))
    return out


def ideal_catalog(args, zcat, prod, truth, outdir):
    """Redrock on the ideal reduction of every coadd of the catalog; its catalog rows. A coadd whose
    ideal redrock file is newer than its ideal coadd, itself newer than the coadd, is not redone (an
    interrupted validation resumes)."""
    import subprocess
    import sys

    import numpy as np

    from ..errors import DataError
    from ..io.spectra import read_spectra_meta
    from ..steps.zcatalog import zcatalog
    from ..validation import NOISE_RATIO_EDGES, ideal_coadd

    rrfiles, scales = [], {}
    for spath, cpath in catalog_coadds(zcat, args.group, prod):
        rel = os.path.relpath(cpath, prod)
        ideal = os.path.join(outdir, rel)
        rr = os.path.join(outdir, os.path.dirname(rel), os.path.basename(cpath).replace("coadd-", "redrock-", 1))
        if os.path.exists(rr) and os.path.exists(ideal) and os.path.getmtime(rr) >= os.path.getmtime(ideal) >= \
                os.path.getmtime(cpath):
            rrfiles.append(rr)  # done by an earlier run on this coadd (the ideal noise is seeded by the file name)
            _noise_scales(read_spectra_meta(ideal)[0], scales)
            continue
        icoadd = ideal_coadd(spath, cpath, truth)
        icoadd.write(ideal)
        _noise_scales(icoadd.header, scales)
        argv = [sys.executable, "-m", "fiberflow.cli.main", "redrock", "-i", ideal, "-o", rr, "--ncpu", str(args.ncpu)]
        if args.config:
            argv += ["--config", args.config]
        log = rr.replace(".fits", ".log")
        with open(log, "w") as fh:  # redrock's own report goes to a log beside its output
            if subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT).returncode != 0:
                raise DataError(ideal, f"redrock failed on the ideal coadd (see {log})")
        rrfiles.append(rr)
    if scales:
        edges = ", ".join(["< " + str(NOISE_RATIO_EDGES[0])] + [f"{a}-{b}" for a, b in zip(NOISE_RATIO_EDGES[:-1], NOISE_RATIO_EDGES[1:])]
                          + [">= " + str(NOISE_RATIO_EDGES[-1])])
        print(f"ideal noise = the coadds' measured scatter in units of their sigma (median over {len(rrfiles)} coadds; "
              f"bins by ivar / its running median: {edges}):")
        for b, rows in scales.items():
            print(f"  {b}: " + "  ".join(f"{v:.3f}" for v in np.median(np.array(rows), axis=0)))
    return zcatalog(rrfiles, args.group, args.survey, args.program).zcatalog


def _noise_scales(header, out):
    """Collect an ideal coadd's ``IDNOIS{B}`` scales into ``out`` (band -> list of lists)."""
    for b in ("b", "r", "z"):
        v = header.get(f"IDNOIS{b.upper()}")
        if isinstance(v, tuple):
            v = v[0]
        if v:
            out.setdefault(b, []).append([float(x) for x in str(v).split(",")])


def run(args):
    import json

    import numpy as np

    from .. import paths
    from ..io.zcatalog import ZCatalog
    from ..validation import format_success_table, load_truth_targets, redshift_outcomes, success_table

    t0 = time.time()
    prod, truth = _roots(args)
    catpath = paths.findfile(args.group, prod=prod, survey=args.survey, program=args.program)
    zcat = ZCatalog.read(catpath).zcatalog
    tt = load_truth_targets(truth)
    outcomes = redshift_outcomes(zcat, tt)
    ideal = None
    if args.ideal:
        outdir = args.outdir or os.path.join(prod, "validation")
        ideal = redshift_outcomes(ideal_catalog(args, zcat, prod, truth, outdir), tt)
    table = success_table(outcomes, ideal)
    print(f"redshifts of {catpath} against the truth ({len(outcomes)} targets; success: ZWARN 0 and "
          f"|dz|/(1+z) < 1000 km/s):")
    for line in format_success_table(table):
        print("  " + line)
    if args.json:
        from ..io.fitsutil import atomic_path

        def plain(v):
            return [None if not np.isfinite(x) else float(x) for x in v] if isinstance(v, tuple) else v

        with atomic_path(args.json) as tmp, open(tmp, "w") as fh:
            json.dump([{k: plain(v) for k, v in r.items()} for r in table], fh, indent=1)
    print(f"[{time.time() - t0:.1f} s]")
    return 0
