"""``fiberflow demo``: simulate the demo night and reduce it end to end under ``./demo``.

It reports only what it did: every stage is printed as ``ran`` (with its seconds and where its
products are), ``reused`` (its products were already there) or ``NOT RUN`` / ``FAILED`` with the
reason, and the command exits 1 unless every stage ran and the production is complete.
"""

from __future__ import annotations

import glob
import html
import os
import sys
import time


def add_arguments(p, name):
    p.add_argument("--out", default="demo", help="demo folder (default ./demo)")
    p.add_argument("--config", default=None, help="configuration file (default: built-in demo settings)")
    p.add_argument("--profile", default=None,
                   help="Snakemake profile folder (default: the installed workflow's profiles/local; e.g. "
                        "profiles/testslurm after `scripts/local-slurm start` to reduce the demo night through Slurm)")
    p.add_argument("--flats", type=int, default=None,
                   help="flat exposures of the demo night (default 3, as DESI takes a night; 1 is quicker but "
                        "its fiberflat is noise-limited)")
    p.add_argument("--tiles", type=int, default=None,
                   help="science tiles of the demo night (default 2: the first observed twice, so coadds have two "
                        "exposures, the second once; 1 makes a smaller night)")


def _log(msg):
    print(f"[fiberflow demo] {msg}", flush=True)


class Ledger:
    """What the demo did, stage by stage: status, seconds, products, reason."""

    def __init__(self):
        self.rows = []

    def add(self, stage, status, seconds=None, where="", reason=""):
        self.rows.append({"stage": stage, "status": status, "seconds": seconds, "where": where, "reason": reason})
        sec = "" if seconds is None else f" in {seconds:.1f} s"
        tail = f" -> {where}" if where else ""
        why = f": {reason}" if reason else ""
        _log(f"{status.upper() if status not in ('ran', 'reused') else status}: {stage}{sec}{tail}{why}")

    @property
    def complete(self):
        return all(r["status"] in ("ran", "reused") for r in self.rows)

    def table(self):
        width = max(len(r["stage"]) for r in self.rows)
        lines = []
        for r in self.rows:
            st = r["status"] if r["status"] in ("ran", "reused") else r["status"].upper()
            sec = "" if r["seconds"] is None else f"{r['seconds']:7.1f} s"
            lines.append(f"  {st:8s} {sec:>9s}  {r['stage']:{width}s}  {r['where'] or r['reason']}")
        return lines


def run(args):
    import numpy as np

    from .. import paths
    from ..config import load_config, resolve_roots
    from ..errors import FiberflowError
    from ..instrument import load_instrument
    from ..io.psf import read_psf
    from ..models import psf as psfmodel
    from ..reference import real_psf_path, workflow_dir

    t0 = time.time()
    ledger = Ledger()
    out = os.path.abspath(args.out)
    rel = os.path.relpath
    overrides = {"instrument": "demo", "raw": os.path.join(out, "raw"), "redux": os.path.join(out, "redux"),
                 "specprod": "demo", "truth": os.path.join(out, "truth")}
    t = time.time()
    cfg = load_config(args.config, overrides=overrides)
    roots = resolve_roots(cfg)
    inst = load_instrument(cfg["instrument"])
    for key in ("raw", "prod", "truth"):
        os.makedirs(roots[key], exist_ok=True)
    qa_dir = os.path.join(out, "qa")
    os.makedirs(qa_dir, exist_ok=True)
    _log(f"configuration valid; instrument {inst.name}: {inst.npetal} petal x {len(inst.arms)} cameras, "
         f"{inst.nfiber} fibers, CCD {inst.ccd['ny']}x{inst.ccd['nx']}")
    for arm in inst.arms:
        g = inst.wavegrid(arm)
        _log(f"  camera {arm}: {g[0]:.1f}-{g[-1]:.1f} A, {g.size} bins of {inst.camera(arm).dwave} A")

    # file names of one example exposure of the demo production
    example = dict(night=20251205, expid=101, camera="r0", spectrograph=0, survey="main", program="dark", pix=5261,
                   tileid=1000, specprod=roots["specprod"])
    names = []
    for ft in paths.filetypes():
        try:
            names.append((ft, paths.findfile(ft, raw=roots["raw"], prod=roots["prod"], truth=roots["truth"], **example)))
        except ValueError:
            continue
    plan = os.path.join(roots["prod"], "FILE-NAMES.txt")
    with open(plan, "w") as fh:
        fh.write("# file names of one example exposure/pixel of this production (fiberflow.paths)\n")
        for ft, p in names:
            fh.write(f"{ft:22s} {os.path.relpath(p, out)}\n")
    ledger.add(f"configuration validated, file-name table ({len(names)} file types)", "ran", time.time() - t, rel(plan))

    done = []
    figs = []
    try:
        t = time.time()
        psf = read_psf(real_psf_path())
        calib_dir = os.path.join(out, "calib", "psf")
        from .calibinit import write_default_psfs

        # kept when there (deterministic): a rewritten PSF would be newer than every product made from it
        for p in write_default_psfs(inst, calib_dir, overwrite=False, log=_log):
            npsf = read_psf(p)
            wmin, wmax = psfmodel.wavelength_range(npsf, [0])
            _log(f"nominal {npsf.header['CAMERA']} PSF for the {inst.name} instrument ({npsf.nfiber} fibers, "
                 f"{wmin[0]:.0f}-{wmax[0]:.0f} A on the CCD): {rel(p)}")
        ledger.add(f"nominal b/r/z PSFs of the {inst.name} instrument from the real DESI r0 PSF", "ran",
                   time.time() - t, rel(calib_dir))
        t = time.time()
        figs.append(_psf_figure(psf, psfmodel, np, qa_dir))
        ledger.add("real DESI r0 PSF evaluated (spots and traces figure)", "ran", time.time() - t, rel(figs[-1]))
    except FiberflowError as exc:
        ledger.add("nominal PSFs from the real DESI r0 PSF", "not run", reason=str(exc))

    if ledger.complete:
        try:
            wdir = workflow_dir()
        except FiberflowError as exc:
            wdir = None
            ledger.add("Snakemake workflow", "not run", reason=str(exc))
        if wdir is not None:
            done += _simulate_and_reduce(out, roots, inst, wdir, ledger, getattr(args, "profile", None),
                                         getattr(args, "flats", None), getattr(args, "tiles", None))

    t = time.time()
    qa_link = os.path.relpath(paths.findfile("qa_production_html", prod=roots["prod"]), qa_dir)
    page = _write_page(qa_dir, inst, ledger, done, figs, qa_link if ledger.complete else None)
    ledger.add("demo page", "ran", time.time() - t, rel(page))
    _log("summary (status, seconds, stage, where its products are):")
    for line in ledger.table():
        _log(line)
    if not ledger.complete:
        _log(f"the demo did NOT produce its production (finished in {time.time() - t0:.1f} s); see the stages above")
        return 1
    _log(f"finished in {time.time() - t0:.1f} s. Look first at {rel(page)} (links to the production's QA pages "
         f"{rel(paths.findfile('qa_production_html', prod=roots['prod']))}); raw data in {rel(roots['raw'])}, "
         f"truth in {rel(roots['truth'])}, products in {rel(roots['prod'])}, job logs in "
         f"{rel(os.path.join(roots['prod'], 'logs'))}")
    return 0


DEMO_NIGHT = 20250101
#: flats of the demo night (DESI takes three a night; one is noise-limited at ~0.5% rms) and
#: their exposure time (180 s: the b camera's brightest pixels stay at ~80% of saturation)
DEMO_NFLAT = 3
DEMO_NTILE = 2
DEMO_FLAT_EXPTIME = 180.0


def _simulate_and_reduce(out, roots, inst, wdir, ledger, profile=None, nflat=None, ntile=None):
    """Simulate the demo night (once), run the Snakemake workflow on it, compare with truth.

    Returns the lines of figures against truth; every stage goes into ``ledger``.
    """
    import subprocess

    import yaml

    from ..errors import ConfigError
    from ..sim.night import simulate_night
    from ..sim.plan import default_plan, parse_plan
    from ..workflow.exptable import raw_exposures

    rel = os.path.relpath
    # three flats, as DESI takes a night: their average is the fiberflatnight
    nflat = DEMO_NFLAT if nflat is None else int(nflat)
    if nflat < 1:
        raise ConfigError(f"demo: --flats must be >= 1, not {nflat}")
    ntile = DEMO_NTILE if ntile is None else int(ntile)
    if ntile < 1:
        raise ConfigError(f"demo: --tiles must be >= 1, not {ntile}")
    plan = parse_plan(default_plan(DEMO_NIGHT, ntile=ntile, nflat=nflat, flat_exptime=DEMO_FLAT_EXPTIME))
    have = raw_exposures(roots["raw"], DEMO_NIGHT)
    stage = f"simulate raw night {DEMO_NIGHT} ({len(plan.expids())} exposures) with truth"
    if set(plan.expids()) <= set(have):
        ledger.add(stage, "reused", where=rel(os.path.join(roots["raw"], str(DEMO_NIGHT))))
    else:
        t = time.time()
        simulate_night(plan, inst, 1, roots["raw"], roots["truth"])
        missing = set(plan.expids()) - set(raw_exposures(roots["raw"], DEMO_NIGHT))
        if missing:
            ledger.add(stage, "failed", time.time() - t, reason=f"exposures {sorted(missing)} were not written")
            return []
        ledger.add(stage, "ran", time.time() - t, rel(os.path.join(roots["raw"], str(DEMO_NIGHT))))
    snakefile = os.path.join(wdir, "Snakefile")
    cfgfile = os.path.join(out, "config.yaml")
    with open(cfgfile, "w") as fh:
        # paths relative to the config file's folder (the demo folder): the demo can be moved or copied
        fh.write("# the demo production; relative paths are relative to this file's folder\n")
        yaml.safe_dump({"instrument": inst.name, "raw": rel(roots["raw"], out), "redux": rel(roots["redux"], out),
                        "specprod": roots["specprod"], "truth": rel(roots["truth"], out), "nights": [DEMO_NIGHT],
                        "calibration": {"default_psf": rel(os.path.join(out, "calib", "psf"), out)},
                        "redshift": {"enabled": True}}, fh, sort_keys=False)
    cmd = [sys.executable, "-m", "snakemake", "-s", snakefile, "--configfile", cfgfile, "--directory", out,
           "--profile", os.path.abspath(profile) if profile else os.path.join(wdir, "profiles", "local"),
           "--cores", str(os.cpu_count() or 1), "--quiet"]
    _log("running the workflow: " + " ".join(cmd[1:]))
    t = time.time()
    res = subprocess.run(cmd)
    stage = "Snakemake workflow of the night (exposure table .. cframes, tile and HEALPix coadds, redrock, catalogs, QA)"
    if res.returncode != 0:
        ledger.add(stage, "failed", time.time() - t,
                   reason=f"snakemake exited {res.returncode}; logs under {rel(os.path.join(roots['prod'], 'logs'))}")
        return []
    ledger.add(stage, "ran", time.time() - t, rel(roots["prod"]))
    t = time.time()
    status, ok = _status_summary(cfgfile, out)
    ledger.add("fiberflow status: every planned job done", "ran" if ok else "failed", time.time() - t, reason="" if ok else status[0])
    if not ok:
        return status
    t = time.time()
    done = []
    done += _psf_summary(roots)
    done += _frame_summary(roots)
    done += _calib_summary(roots)
    done += _healpix_summary(roots)
    done += _qa_summary(roots)
    ledger.add("products compared with the simulator's truth", "ran", time.time() - t,
               "the lines above (PSF, frames, calibration, sky, standards, coadds, QA); also on the demo page")
    t = time.time()
    zlines, zpath = _redshift_summary(roots, cfgfile)
    done += zlines
    ledger.add("redshifts (zpix) against truth, and redrock on the ideal reduction of every coadd", "ran",
               time.time() - t, rel(zpath))
    done += _tile_qa_summary(roots)
    return done + status


def _tile_qa_summary(roots):
    """Each tile QA's status and metrics, and the tiles summary's completeness."""
    from ..io.tileqa import TileQA

    lines = []
    for path in sorted(glob.glob(os.path.join(roots["prod"], "tiles", "cumulative", "*", "*", "tile-qa-*.fits"))):
        qa = TileQA.read(path)
        h = qa.header
        vals = ", ".join(f"{str(r['NAME']).strip()} {r['VALUE']:.3g} {str(r['STATUS']).strip()}" for r in qa.metrics)
        lines.append(f"tile QA {h['TILEID']} thru {h['LASTNIGHT']}: {qa.status}; EFFTIME {h['EFFTIME']:.0f} s of "
                     f"goal {h['GOALTIME']:.0f} s; {vals}; picture {os.path.relpath(path[:-5] + '.png')}")
    tiles = os.path.join(roots["prod"], f"tiles-{roots['specprod']}.csv")
    if os.path.exists(tiles):
        import csv

        with open(tiles) as fh:
            for row in csv.DictReader(fh):
                lines.append(f"tile {row['TILEID']} completeness: EFFTIME_SPEC {float(row['EFFTIME_SPEC']):.0f} s of "
                             f"{float(row['GOALTIME']):.0f} s goal, {row['NVALID']} of {row['GOODFIBERS']} good targets "
                             f"valid ({row['TSNR2_TRACER']} EFFTIME >= fiber_rel_mintfrac x mintfrac x goal), done: {row['DONE'] == '1'}")
    for msg in lines:
        _log(msg)
    return lines


def _status_summary(cfgfile, workdir):
    """`fiberflow status` of the demo production: (lines, every job done?)."""
    from ..config import load_config
    from ..workflow.plan import Plan
    from ..workflow.status import job_states, summary

    t = time.time()
    jobs = job_states(Plan(load_config(cfgfile), workdir, configfile=cfgfile), workdir)
    table = summary(jobs)
    ndone = sum(r["done"] for r in table.values())
    line = (f"fiberflow status: {ndone} of {len(jobs)} jobs done over {len(table)} steps "
            f"(checked in {time.time() - t:.2f} s)")
    _log(line)
    return [line], ndone == len(jobs) and len(jobs) > 0


def qa_cost(prod):
    """(seconds of the QA jobs, seconds of all other jobs) from the production's benchmark files."""
    import csv

    qa = other = 0.0
    for path in glob.glob(os.path.join(prod, "benchmarks", "**", "*.tsv"), recursive=True):
        step = os.path.relpath(path, os.path.join(prod, "benchmarks")).split(os.sep)[0]
        with open(path) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        sec = sum(float(r["s"]) for r in rows) / max(len(rows), 1)
        if step.startswith("qa_"):
            qa += sec
        else:
            other += sec
    return qa, other


def _qa_summary(roots):
    """Night QA status, first bad step, EFFTIME, the QA cost, where the pages are."""
    import json

    from .. import paths

    path = paths.findfile("qa_night", prod=roots["prod"], night=DEMO_NIGHT)
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        rec = json.load(fh)
    index = paths.findfile("qa_production_html", prod=roots["prod"])
    fb = rec["FIRST_BAD"]
    eff = ", ".join(f"{e['EXPID']}: {e['EFFTIME']:.0f} s" for e in rec["EXPOSURES"] if e.get("EFFTIME") is not None)
    qa, other = qa_cost(roots["prod"])
    line = (f"QA of night {DEMO_NIGHT}: status {rec['STATUS']}, {rec['NALARM']} of {rec['NSCORED']} scored metrics in "
            f"alarm" + (f", first bad step {fb['STEP']} ({', '.join(fb['CAMERAS'])})" if fb else ", no first bad step")
            + f"; EFFTIME {eff}; QA jobs {qa:.0f} s = {100 * qa / max(other, 1e-9):.0f}% of the reduction's "
            f"{other:.0f} s of jobs; pages: {os.path.relpath(index)}")
    _log(line)
    return [line]


def _healpix_summary(roots):
    """HEALPix files of the production, and the coadds against truth."""
    import numpy as np

    from ..validation import coadd_vs_truth

    files = sorted(glob.glob(os.path.join(roots["prod"], "healpix", "*", "*", "*", "*", "coadd-*.fits")))
    if not files:
        return ["no HEALPix coadd written"]
    stats = coadd_vs_truth(roots["prod"], roots["truth"])
    lines = [f"{len(files)} HEALPix pixels (nside 64) with spectra and coadds; targets by number of exposures: "
             + ", ".join(f"{n}: {stats[n]['ntarget']}" for n in sorted(stats))]
    for n in sorted(stats):
        p = stats[n]["pulls"]
        if p.size == 0:
            continue
        msg = f"coadds of {n} exposure(s) vs truth: pulls mean {p.mean():+.3f} std {p.std():.3f} over {p.size} bins"
        if stats[n]["snr_ratio"]:
            msg += (f"; median S/N gain over one exposure {np.median(stats[n]['snr_ratio']):.3f} "
                    f"(sqrt({n}) = {np.sqrt(n):.3f})")
        lines.append(msg)
    for msg in lines:
        _log(msg)
    return lines


def _redshift_summary(roots, cfgfile):
    """The HEALPix catalog's success table against truth, with the pipeline-induced failures
    (redrock on the ideal reduction of every coadd, see ``fiberflow validate-redshifts``)."""
    import argparse

    from .. import paths
    from ..io.zcatalog import ZCatalog
    from ..validation import format_success_table, load_truth_targets, redshift_outcomes, success_table
    from .validate import ideal_catalog

    cat = paths.findfile("zpix", prod=roots["prod"], survey="main", program="dark")
    zc = ZCatalog.read(cat)
    zcat = zc.zcatalog
    truth = load_truth_targets(roots["truth"])
    outdir = os.path.join(roots["prod"], "validation")
    args = argparse.Namespace(group="zpix", survey="main", program="dark", ncpu=os.cpu_count() or 1, config=cfgfile)
    ideal = redshift_outcomes(ideal_catalog(args, zcat, roots["prod"], roots["truth"], outdir), truth)
    table = success_table(redshift_outcomes(zcat, truth), ideal)
    tot = table[-1]
    lines = [f"redshifts (redrock {zc.header.get('RRVER', '')}) of {tot['N']} targets in "
             f"{os.path.relpath(cat, roots['prod'])} against truth (success: ZWARN 0 and |dz|/(1+z) < 1000 km/s; "
             f"ideal: the truth through each coadd's weights + noise as large as its measured scatter):"]
    lines += ["  " + line for line in format_success_table(table)]
    lines.append(f"pipeline-induced redshift failures (fail on fiberflow's coadd, succeed on the ideal one): "
                 f"{tot['NPIPELINE']} of {tot['NIDEAL']} targets; {tot['NREVERSE']} the other way (the ideal's own "
                 f"noise); net loss {100 * tot['NET_PIPELINE']:+.1f} +- {100 * tot['NET_PIPELINE_ERR']:.1f}%")
    for msg in lines:
        _log(msg)
    return lines, cat


def _calib_summary(roots):
    """One line per camera: fiberflat, sky and flux calibration of the demo night against truth."""

    import numpy as np

    from .. import paths
    from ..io.calib import read_fiberflat, read_fluxcalib, read_sky
    from ..sim.truth import TruthFrame
    from ..validation import calibration_ratio

    lines = []
    for cam in ("b0", "r0", "z0"):
        ffp = paths.findfile("fiberflatnight", prod=roots["prod"], night=DEMO_NIGHT, camera=cam)
        if not os.path.exists(ffp):
            continue
        ff = read_fiberflat(ffp)
        pattern = paths.findfile("fluxcalib", prod=roots["prod"], night=DEMO_NIGHT, expid=0, camera=cam)
        cal_paths = sorted(glob.glob(pattern.replace("00000000", "*")))
        if not cal_paths:
            continue
        # the calibration vector of every science exposure, as an RMS about 1 (its mean offset included)
        crms, cmean, first = [], [], None
        for path in cal_paths:
            expid = int(os.path.basename(path).split("-")[-1].split(".")[0])
            t = TruthFrame.read(paths.findfile("truth", truth=roots["truth"], night=DEMO_NIGHT, expid=expid, camera=cam))
            cr = calibration_ratio(read_fluxcalib(path), t)
            crms.append(float(np.sqrt(np.mean((cr - 1) ** 2))))
            cmean.append(float(np.mean(cr)))
            first = first or (expid, t)
        # fiberflat and sky against the first exposure's truth
        expid, t = first
        r = ff.fiberflat / t.fiberflat
        r = r / np.median(r, axis=0)[None]
        ffrms = float(np.sqrt(np.mean((r - 1)[ff.ivar > 0] ** 2)))
        sky = read_sky(paths.findfile("sky", prod=roots["prod"], night=DEMO_NIGHT, expid=expid, camera=cam))
        nflat = int(ff.header.get("NFLATS", 1))
        msg = (f"{cam} exposure {expid} vs truth: fiberflat rms {100 * ffrms:.2f}% "
               f"({nflat} flat{'s' if nflat > 1 else ''} averaged), "
               f"sky fibers chi2/dof {sky.header.get('SKYCHI2', 0):.2f}, calibration vector rms "
               f"{100 * max(crms):.2f}% about 1, worst of {len(crms)} exposures "
               f"({', '.join(f'{100 * v:.2f}%' for v in crms)}; means {', '.join(f'{m:.4f}' for m in cmean)}; "
               "off telluric bands)")
        _log(msg)
        lines.append(msg)
        lines += _sky_summary(roots, cam)
    return lines + _stdstar_summary(roots)


def _stdstar_summary(roots):
    """Standard-star parameters and calibrated point-source fluxes of the demo night against
    truth, over its science exposures (spectrograph 0)."""
    import numpy as np

    from .. import paths
    from ..validation import calib_vs_truth

    stars, ratios = [], []
    pattern = paths.findfile("stdstars", prod=roots["prod"], night=DEMO_NIGHT, expid=0, spectrograph=0)
    for path in sorted(glob.glob(pattern.replace("00000000", "*"))):
        expid = int(os.path.basename(path).split("-")[-1].split(".")[0])
        res = calib_vs_truth(roots["prod"], roots["truth"], DEMO_NIGHT, expid, 0)
        stars += res["stars"]
        ratios += list(res["point_ratio"])
    if not stars and not ratios:
        return []
    r = np.asarray(ratios)
    msg = (f"standard stars vs truth ({len(stars)} fits with S/N > 20): max |dTeff| "
           f"{max((abs(s['DTEFF']) for s in stars), default=float('nan')):.0f} K, max |d[Fe/H]| "
           f"{max((abs(s['DFEH']) for s in stars), default=float('nan')):.2f}; calibrated r-band flux of "
           f"{r.size} non-standard point sources / truth: mean {r.mean() if r.size else float('nan'):.4f} "
           f"rms about 1 {100 * np.sqrt(np.mean((r - 1) ** 2)) if r.size else float('nan'):.2f}%")
    _log(msg)
    return [msg]


def _sky_summary(roots, cam):
    """Sky subtraction of every science exposure of one camera against truth (worst case)."""
    import numpy as np

    from .. import paths
    from ..io.calib import read_sky
    from ..io.frame import read_frame
    from ..sim.truth import TruthFrame
    from ..validation import sky_vs_truth

    pattern = paths.findfile("sframe", prod=roots["prod"], night=DEMO_NIGHT, expid=0, camera=cam)
    res = []
    for path in sorted(glob.glob(pattern.replace("00000000", "*"))):
        expid = int(os.path.basename(path).split("-")[-1].split(".")[0])
        ids = dict(night=DEMO_NIGHT, expid=expid, camera=cam)
        res.append(sky_vs_truth(read_frame(path), read_sky(paths.findfile("sky", prod=roots["prod"], **ids)),
                                TruthFrame.read(paths.findfile("truth", truth=roots["truth"], **ids))))
    if not res:
        return []

    def worst(key):
        return max(abs(x) for r in res for x in r[key])

    msg = (f"{cam} sky vs truth ({len(res)} exposures, 5 brightest lines each): line residual max "
           f"{100 * worst('line_resid_sky'):.1f}% in sky fibers, {100 * worst('line_resid_target'):.1f}% in targets; "
           f"target pulls off the lines mean {np.mean([r['pull_mean_offline'] for r in res]):+.3f} std "
           f"{max(r['pull_std_offline'] for r in res):.3f} (worst); sky-fiber continuum residual "
           f"{100 * max(abs(r['resid_cont_frac']) for r in res):.2f}% (worst)")
    _log(msg)
    return [msg]


def _psf_summary(roots):
    """One line per arc PSF: the fitted PSF against the simulator's true PSF of that exposure."""

    import fitsio
    import numpy as np

    from .. import paths
    from ..io.psf import read_psf
    from ..models import psf as psfmodel
    from ..sim.night import Simulator

    lines = []
    for cam in ("b0", "r0", "z0"):
        tpath = paths.findfile("truth_calib", truth=roots["truth"], night=DEMO_NIGHT, camera=cam)
        pattern = paths.findfile("fitpsf", prod=roots["prod"], night=DEMO_NIGHT, expid=0, camera=cam)
        pattern = pattern.replace("00000000", "*")
        for path in sorted(glob.glob(pattern)):
            fit = read_psf(path)
            expid = int(fit.meta["ARCEXP"])
            shifts = fitsio.read(tpath, ext="SHIFTS")
            row = shifts[shifts["EXPID"] == expid][0]
            true = Simulator.shifted_psf(read_psf(tpath), row["DX"], row["DY"], row["DYSLOPE"])
            good = fit.status() == 0
            wlo, whi = psfmodel.wavelength_range(true, [0])
            w = np.linspace(float(wlo[0]), float(whi[0]), 200)[5:-5]
            dx = (psfmodel.trace_x(fit, w) - psfmodel.trace_x(true, w))[good]
            dw = (psfmodel.wavelength(fit, psfmodel.trace_y(true, w)) - w[None, :])[good]
            msg = (f"arc PSF {cam} exposure {expid} vs truth: trace x rms {np.sqrt(np.mean(dx**2)):.4f} px, "
                   f"wavelength rms {np.sqrt(np.mean(dw**2)):.4f} A over {good.sum()} good fibers")
            _log(msg)
            lines.append(msg)
    return lines


def _frame_summary(roots):
    """Median CHI2PIX of every extracted frame (from the headers)."""

    import fitsio

    pattern = os.path.join(roots["prod"], "exposures", str(DEMO_NIGHT), "*", "frame-*.fits")
    chi = [(os.path.basename(p), float(fitsio.read_header(p, ext="FLUX").get("CHI2PIX", 0.0)))
           for p in sorted(glob.glob(pattern))]
    if not chi:
        return ["no frame extracted"]
    msg = (f"{len(chi)} frames extracted; median CHI2PIX per frame "
           f"{min(c for _, c in chi):.2f}-{max(c for _, c in chi):.2f}")
    _log(msg)
    return [msg]


def _psf_figure(psf, psfmodel, np, qa_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fibers = np.array([0, 250, 499])
    waves = np.array([5800.0, 6700.0, 7600.0])
    stamps, x0, y0 = psfmodel.spots(psf, waves, fibers)
    fig, axes = plt.subplots(3, 4, figsize=(12, 8), gridspec_kw={"width_ratios": [1, 1, 1, 1.4]})
    for i in range(3):
        for j in range(3):
            ax = axes[i, j]
            ax.imshow(stamps[i, j], origin="lower", cmap="viridis")
            ax.set_title(f"fiber {fibers[i]}  {waves[j]:.0f} A", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    wgrid = np.linspace(psf.trace_wavemin, psf.trace_wavemax, 200)
    allf = np.arange(0, psf.nfiber, 25)
    gs = axes[0, 3].get_gridspec()
    for ax in axes[:, 3]:
        ax.remove()
    axt = fig.add_subplot(gs[:, 3])
    x = psfmodel.trace_x(psf, wgrid, allf)
    y = psfmodel.trace_y(psf, wgrid, allf)
    for k in range(len(allf)):
        axt.plot(x[k], y[k], lw=0.6)
    axt.set_xlabel("CCD x [pix]")
    axt.set_ylabel("CCD y [pix]")
    axt.set_title("traces (every 25th fiber)", fontsize=9)
    fig.suptitle("Real DESI r0 PSF evaluated by fiberflow (pixel-integrated Gauss-Hermite spots)")
    fig.tight_layout()
    path = os.path.join(qa_dir, "psf-r0-spots.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _write_page(qa_dir, inst, ledger, done, figs, qa_link):
    rows = []
    for r in ledger.rows:
        cls = "ok" if r["status"] in ("ran", "reused") else "bad"
        sec = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        rows.append(f"<tr><td>{html.escape(r['stage'])}</td><td class={cls}>{html.escape(r['status'])}</td>"
                    f"<td>{sec}</td><td>{html.escape(r['where'] or r['reason'])}</td></tr>")
    rows = "\n".join(rows)
    imgs = "\n".join(f'<p><img src="{os.path.basename(f)}" alt="{os.path.basename(f)}"></p>' for f in figs)
    items = "\n".join(f"<li>{html.escape(d)}</li>" for d in done)
    link = (f'<p><a href="{html.escape(qa_link)}">Production QA pages</a> (scores, first bad step, plots, logs).</p>'
            if qa_link else "<p><b>The production was not completed: see the stages below.</b></p>")
    text = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>fiberflow demo</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:4px 10px;border-bottom:1px solid #ddd}}
.ok{{background:#cfc}} .bad{{background:#fcc}}</style></head>
<body><h1>fiberflow demo production</h1>
<p>Instrument preset <b>{html.escape(inst.name)}</b>: {html.escape(inst.description)}.</p>
{link}
<h2>Stages of this run</h2><table><tr><th>stage</th><th>status</th><th>seconds</th><th>products / reason</th></tr>
{rows}</table>
<h2>Against the simulator's truth</h2><ul>{items}</ul>
<h2>PSF</h2>{imgs or '<p>no PSF figure was made</p>'}
</body></html>
"""
    path = os.path.join(qa_dir, "index.html")
    with open(path, "w") as fh:
        fh.write(text)
    return path


def main(argv=None):
    from .main import main as _main

    return _main(["demo"] + list(argv or sys.argv[1:]))
