# Shared workflow helpers: configuration validation, roots, exposure tables, wildcard
# constraints, output patterns and input functions. File names come from fiberflow.paths.

import functools
import os
import sys

import fiberflow.exptable as ffexp
import fiberflow.paths as ffpaths
from fiberflow.config import (
    default_psf_dir,
    resolve_roots,
    section_hash,
    validate_config,
)
from fiberflow.instrument import load_instrument


# jobs call `fiberflow <step>`: the one installed beside the Python running Snakemake comes
# first on PATH, so a non-activated virtual environment (python -m snakemake) works too
envvars:
    "PATH",


_BINDIR = os.path.dirname(sys.executable)
if os.path.exists(os.path.join(_BINDIR, "fiberflow")):
    os.environ["PATH"] = _BINDIR + os.pathsep + os.environ.get("PATH", "")

# validate (and fill defaults of) the configuration; errors name the bad key
validate_config(config, source="config")

ROOTS = resolve_roots(config)
PROD = ROOTS["prod"]
INSTRUMENT = load_instrument(config["instrument"])
CAMERAS = INSTRUMENT.camera_names()
# the configuration file the steps read (command-line --config overrides do not reach them)
CONFIGFILE = os.path.abspath(workflow.configfiles[-1]) if workflow.configfiles else ""
# nights: configured, else every night with raw data; exposure tables read at parse time
# (CSV edits + raw exposures not yet in the CSV + override file), so no checkpoint is needed
NIGHTS = [int(n) for n in config["nights"]] or ffexp.nights_with_raw(ROOTS["raw"])
TABLES = {n: ffexp.night_table(ROOTS["raw"], PROD, n) for n in NIGHTS}
DEFAULT_PSF_DIR = default_psf_dir(config)
DEFAULT_FIBERFLAT_DIR = default_psf_dir(config, key="default_fiberflat")
DEFAULT_FLUXCALIB_DIR = default_psf_dir(config, key="default_fluxcalib")
PIXFLAT_DIR = default_psf_dir(config, key="pixflat")
# the software of every rule (snakemake --software-deployment-method conda)
CONDA_ENV = os.path.join(workflow.basedir, "envs", "fiberflow.yaml")


wildcard_constraints:
    **ffpaths.wildcard_constraints(),


def out(filetype):
    """Output pattern of a production file type (absolute, under the production root)."""
    return ffpaths.wildcard_pattern(filetype, PROD)


def raw_pattern(filetype):
    """Pattern of a raw-data file type under the raw root."""
    return ffpaths.wildcard_pattern(filetype, ROOTS["raw"])


def logfile(step, ident):
    """Log of one job: {prod}/logs/{step}/{ident}.log."""
    return os.path.join(PROD, "logs", step, f"{ident}.log")


def benchfile(step, ident):
    """Benchmark of one job: {prod}/benchmarks/{step}/{ident}.tsv."""
    return os.path.join(PROD, "benchmarks", step, f"{ident}.tsv")


def prod_of(path):
    """The production root a product path lies under (for steps that take --prod)."""
    filetype, ids = ffpaths.parse_path(path)
    rel = ffpaths.relpath(filetype, **ids)
    return os.path.normpath(str(path)[: -len(rel)])


def find(filetype, **ids):
    """Path of a production or raw file (fiberflow.paths), cached: planning asks for the same
    paths from many jobs."""
    return _find(filetype, tuple(sorted(ids.items())))


@functools.lru_cache(maxsize=None)
def _find(filetype, ids):
    return ffpaths.findfile(filetype, raw=ROOTS["raw"], prod=PROD, **dict(ids))


def rows(night, obstypes=None):
    """Exposure-table rows of a night that are not ignored (optionally of some OBSTYPEs)."""
    return [
        r
        for r in TABLES.get(int(night), [])
        if r["LASTSTEP"] != "ignore" and (obstypes is None or r["OBSTYPE"] in obstypes)
    ]


def row(night, expid):
    for r in TABLES.get(int(night), []):
        if r["EXPID"] == int(expid):
            return r
    raise ValueError(f"exposure {expid} is not in the exposure table of night {night}")


def cameras(r):
    return ffexp.cameras_of(r, CAMERAS)


def night_cameras(night):
    """Cameras (instrument order) used by at least one non-ignored exposure of a night."""
    used = {c for r in rows(night) for c in cameras(r)}
    return [c for c in CAMERAS if c in used]


def zeros_of(night, camera):
    return [r for r in rows(night, ("ZERO",)) if camera in cameras(r)]


def badamps(night, expid, camera):
    """Amplifiers of a camera marked bad in the exposure table (e.g. 'B,C')."""
    amps = ffexp.parse_badamps(row(night, expid)["BADAMPS"]).get(camera, set())
    return ",".join(sorted(amps))


def default_psf(camera):
    """Nominal PSF of a camera (calibration.default_psf/psf-{camera}.fits)."""
    if not DEFAULT_PSF_DIR:
        raise ValueError(
            "calibration.default_psf is not set: the psf and psfnight steps need a starting PSF "
            "(write the nominal ones with `fiberflow calibinit --config CONFIG`)"
        )
    return os.path.join(DEFAULT_PSF_DIR, f"psf-{camera}.fits")


def psf_start(wildcards):
    """Starting PSF of an arc fit (psf.start): the nominal PSF, or the nearest earlier
    production night's psfnight of the camera when that night had an arc of it."""
    if config["psf"]["start"] == "previous":
        earlier = fallback_night(wildcards.night, "ARC", wildcards.camera)
        if earlier is not None:
            return find("psfnight", night=earlier, camera=wildcards.camera)
    return default_psf(wildcards.camera)


def fallback_night(night, obstype, camera):
    """Nearest earlier production night with a usable `obstype` exposure of `camera`, within
    calibration.fallback_nights days; None when there is none."""
    night = int(night)
    limit = config["calibration"]["fallback_nights"]
    best = None
    for n in sorted(NIGHTS):
        if n >= night or ffexp.nights_apart(n, night) > limit:
            continue
        if any(camera in cameras(r) for r in rows(n, (obstype,))):
            best = n
    return best


def mpi_launch(resources):
    """Prefix that starts a step under MPI: '{launcher} -n {tasks} ' when the job's resources
    name a launcher (``mpi``) and more than one task, else '' (threads only)."""
    launcher = str(resources.get("mpi", "") or "").strip()
    tasks = int(resources.get("tasks", 1) or 1)
    if not launcher or tasks <= 1:
        return ""
    return f"{launcher} -n {tasks} "


# ---- exptable stage (rules in rules/exptable.smk) ----


def exptable_targets(nights=None):
    return [find("exposure_table", night=n) for n in (nights or NIGHTS)]


# ---- preproc stage (rules in rules/preproc.smk) ----


def biasnight_inputs(wildcards):
    return [
        find("raw", night=r["NIGHT"], expid=r["EXPID"])
        for r in zeros_of(wildcards.night, wildcards.camera)
    ]


def preproc_inputs(wildcards):
    night = int(wildcards.night)
    files = {"raw": find("raw", night=night, expid=int(wildcards.expid))}
    if zeros_of(night, wildcards.camera):
        files["biasnight"] = find("biasnight", night=night, camera=wildcards.camera)
    if PIXFLAT_DIR:
        files["pixflat"] = os.path.join(PIXFLAT_DIR, f"pixflat-{wildcards.camera}.fits")
    fm = find("fibermap", night=night, expid=int(wildcards.expid))
    if row(night, wildcards.expid)["OBSTYPE"] == "SCIENCE":
        files["fibermap"] = fm
    return files


def preproc_options(wildcards):
    """Options of one preproc job: its nightly bias, pixel flat, fibermap and bad amplifiers. One params
    function per job (Snakemake inspects every function of every job while planning), and a
    function of the wildcards only, not of the input, so that Snakemake's params trigger sees
    an operator's BADAMPS edit and reruns the job."""
    files = preproc_inputs(wildcards)
    opts = [
        f"--{key} {files[key]}"
        for key in ("biasnight", "pixflat", "fibermap")
        if key in files
    ]
    amps = badamps(wildcards.night, wildcards.expid, wildcards.camera)
    if amps:
        opts.append(f"--badamps {amps}")
    return " ".join(opts)


def preproc_targets(nights=None):
    """Every preproc file of the given nights (default all)."""
    targets = []
    for night in nights or NIGHTS:
        for r in rows(night, ("ARC", "FLAT", "SCIENCE")):
            for cam in cameras(r):
                targets.append(
                    find("preproc", night=night, expid=r["EXPID"], camera=cam)
                )
    return targets


# ---- psf stage (rules in rules/psf.smk) ----


def psfnight_inputs(wildcards):
    arcs = [
        r for r in rows(wildcards.night, ("ARC",)) if wildcards.camera in cameras(r)
    ]
    if arcs:
        return {
            "psfs": [
                find(
                    "fitpsf",
                    night=wildcards.night,
                    expid=r["EXPID"],
                    camera=wildcards.camera,
                )
                for r in arcs
            ]
        }
    earlier = fallback_night(wildcards.night, "ARC", wildcards.camera)
    if earlier is not None:
        return {"fallback": find("psfnight", night=earlier, camera=wildcards.camera)}
    return {"fallback": default_psf(wildcards.camera)}


def psfnight_options(wildcards, input):
    if "fallback" in input.keys():
        return f"--fallback {input.fallback}"
    return "-i " + " ".join(input.psfs)


def psf_targets(nights=None):
    """Nightly PSFs of every camera that some exposure of the night uses (default all nights)."""
    return [
        find("psfnight", night=night, camera=cam)
        for night in nights or NIGHTS
        for cam in night_cameras(night)
    ]


def traceshift_targets(nights=None):
    """Shifted PSFs of every camera of every flat and science exposure."""
    targets = []
    for night in nights or NIGHTS:
        for r in rows(night, ("FLAT", "SCIENCE")):
            for cam in cameras(r):
                targets.append(find("psf", night=night, expid=r["EXPID"], camera=cam))
    return targets


# ---- extract stage (rules in rules/extract.smk) ----


def extract_targets(nights=None):
    """Frames of every camera of every flat and science exposure."""
    targets = []
    for night in nights or NIGHTS:
        for r in rows(night, ("FLAT", "SCIENCE")):
            for cam in cameras(r):
                targets.append(find("frame", night=night, expid=r["EXPID"], camera=cam))
    return targets


# ---- calib stage (rules in rules/calib.smk) ----


def default_fiberflat(camera):
    """calibration.default_fiberflat/fiberflat-{camera}.fits, or None when not configured."""
    if not DEFAULT_FIBERFLAT_DIR:
        return None
    return os.path.join(DEFAULT_FIBERFLAT_DIR, f"fiberflat-{camera}.fits")


def fiberflatnight_inputs(wildcards):
    flats = [
        r for r in rows(wildcards.night, ("FLAT",)) if wildcards.camera in cameras(r)
    ]
    if flats:
        return {
            "flats": [
                find(
                    "fiberflat",
                    night=wildcards.night,
                    expid=r["EXPID"],
                    camera=wildcards.camera,
                )
                for r in flats
            ]
        }
    earlier = fallback_night(wildcards.night, "FLAT", wildcards.camera)
    if earlier is not None:
        return {
            "fallback": find("fiberflatnight", night=earlier, camera=wildcards.camera)
        }
    default = default_fiberflat(wildcards.camera)
    return {"fallback": default} if default else {}


def fiberflatnight_options(wildcards, input):
    if "fallback" in input.keys():
        return f"--fallback {input.fallback}"
    if "flats" in input.keys():
        return "-i " + " ".join(input.flats)
    return ""


def fiberflat_targets(nights=None):
    """Nightly fiberflats of every camera that has flat or science exposures."""
    targets = []
    for night in nights or NIGHTS:
        cams = {c for r in rows(night, ("FLAT", "SCIENCE")) for c in cameras(r)}
        targets += [find("fiberflatnight", night=night, camera=c) for c in sorted(cams)]
    return targets


def sky_targets(nights=None):
    """Sky-subtracted frames of every camera of every science exposure."""
    return [
        find("sframe", night=night, expid=r["EXPID"], camera=cam)
        for night in nights or NIGHTS
        for r in rows(night, ("SCIENCE",))
        for cam in cameras(r)
    ]


def spectrograph_sframes(wildcards):
    """The sframes of every camera of one spectrograph of an exposure."""
    r = row(wildcards.night, wildcards.expid)
    return [
        find("sframe", night=wildcards.night, expid=wildcards.expid, camera=cam)
        for cam in cameras(r)
        if int(cam[1:]) == int(wildcards.spectrograph)
    ]


def average_fluxcalib(camera):
    """calibration.default_fluxcalib/fluxcalib-avg-{camera}.fits, or None when not configured."""
    if not DEFAULT_FLUXCALIB_DIR:
        return None
    return os.path.join(DEFAULT_FLUXCALIB_DIR, f"fluxcalib-avg-{camera}.fits")


#: command-line options fixed by the configuration, as wildcard patterns decided once at parse
#: time (a params function would be inspected and called for every job while planning)
AVERAGE_OPTION = (
    f"--average {average_fluxcalib('{camera}')}" if DEFAULT_FLUXCALIB_DIR else ""
)
MODEL_OPTION = f"--model {out('model')}" if config["extract"].get("model") else ""


def fluxcalib_inputs(wildcards):
    inputs = {
        "sframe": find(
            "sframe",
            night=wildcards.night,
            expid=wildcards.expid,
            camera=wildcards.camera,
        ),
        "stdstars": find(
            "stdstars",
            night=wildcards.night,
            expid=wildcards.expid,
            spectrograph=int(wildcards.camera[1:]),
        ),
    }
    avg = average_fluxcalib(wildcards.camera)
    if avg:
        inputs["average"] = avg
    return inputs


def cframe_targets(nights=None):
    """Flux-calibrated frames of every camera of every science exposure whose LASTSTEP is
    fluxcalib or all (skysub exposures stop at their sframes)."""
    return [
        find("cframe", night=night, expid=r["EXPID"], camera=cam)
        for night in nights or NIGHTS
        for r in rows(night, ("SCIENCE",))
        if ffexp.flux_calibrated(r)
        for cam in cameras(r)
    ]


def exposure_targets(night, expid):
    """The last product and frame QA of every camera of one exposure (target rule
    `exposure`): fitted PSFs of an arc, fiberflats of a flat, cframes (sframes when LASTSTEP
    is skysub) of a science exposure, the nightly bias a ZERO or DARK is compared with (and
    their frame QA)."""
    r = row(night, expid)
    if r["LASTSTEP"] == "ignore":
        return []
    if r["OBSTYPE"] in ("ZERO", "DARK"):
        out = [find("biasnight", night=night, camera=c) for c in qa_cameras(night, r)]
        return out + [
            find("qa_frame", night=night, expid=expid, camera=c)
            for c in qa_cameras(night, r)
        ]
    last = {
        "ARC": "fitpsf",
        "FLAT": "fiberflat",
        "SCIENCE": "cframe" if ffexp.flux_calibrated(r) else "sframe",
    }.get(r["OBSTYPE"])
    if last is None:
        return []
    ids = [dict(night=night, expid=expid, camera=c) for c in cameras(r)]
    return [find(last, **i) for i in ids] + [find("qa_frame", **i) for i in ids]


def tile_targets(tileid):
    """Every exposure of one tile over the production's nights (as `exposure_targets`) and the
    spectra and coadds of the HEALPix pixels those exposures feed (target rule `tile`).
    """
    exps = [
        (n, r)
        for n in NIGHTS
        for r in rows(n, ("SCIENCE",))
        if int(r["TILEID"]) == int(tileid)
    ]
    if not exps:
        raise ValueError(f"tile {tileid} has no science exposure in this production")
    targets = [t for n, r in exps for t in exposure_targets(n, r["EXPID"])]
    fed = {(n, int(r["EXPID"])) for n, r in exps}
    for (survey, program, pix), feeds in pixel_groups().items():
        if any((night, expid) in fed for night, expid, _ in feeds):
            targets += [
                find(kind, survey=survey, program=program, pix=pix)
                for kind in ("spectra", "coadd")
            ]
    return targets


# ---- healpix stage (rules in rules/healpix.smk) ----

import fiberflow.healpixmap as ffhpx

NSIDE = int(config["healpix"]["nside"])


_HPX = {}


def healpix_exposures(nights=None):
    """Science exposures that feed the healpix stage: a tile, LASTSTEP all, some camera."""
    return [
        (night, r)
        for night in nights or NIGHTS
        for r in rows(night, ("SCIENCE",))
        if r["LASTSTEP"] == "all" and int(r["TILEID"]) >= 0 and cameras(r)
    ]


def pixel_groups(nights=None):
    """(survey, program, pix) -> [(night, expid, petal)], from the tilepix maps (cached)."""
    key = tuple(sorted(nights or NIGHTS))
    if key not in _HPX:
        exposures = [
            {
                "NIGHT": night,
                "EXPID": r["EXPID"],
                "SURVEY": r["SURVEY"],
                "PROGRAM": r["PROGRAM"],
                "petals": {int(c[1:]) for c in cameras(r)},
                "fibermap": find("fibermap", night=night, expid=r["EXPID"]),
                "tilepix": find(
                    "tilepix", night=night, expid=r["EXPID"], tileid=r["TILEID"]
                ),
            }
            for night, r in healpix_exposures(list(key))
        ]
        _HPX[key] = ffhpx.pixel_groups(
            exposures, NSIDE, config["healpix"]["survey"], config["healpix"]["program"]
        )
    return _HPX[key]


def spectra_inputs(wildcards):
    """Every cframe of every (exposure, petal) whose fibers touch the pixel."""
    feeds = pixel_groups().get(
        (wildcards.survey, wildcards.program, int(wildcards.pix))
    )
    if not feeds:
        raise ValueError(
            f"no science exposure of the production has fibers in {wildcards.survey}/"
            f"{wildcards.program} nside-{NSIDE} pixel {wildcards.pix}"
        )
    out = []
    for night, expid, petal in feeds:
        r = row(night, expid)
        out += [
            find("cframe", night=night, expid=expid, camera=cam)
            for cam in cameras(r)
            if int(cam[1:]) == petal
        ]
    return out


def tilepix_targets(nights=None):
    """The tilepix map of every science exposure that feeds the healpix stage."""
    return [
        find("tilepix", night=night, expid=r["EXPID"], tileid=r["TILEID"])
        for night, r in healpix_exposures(nights)
    ]


def healpix_targets(nights=None):
    """Spectra and coadd of every pixel touched by the given nights (default: all).
    A pixel's files always gather every night of the production."""
    touched = set(pixel_groups(nights))
    return [
        find(kind, survey=s, program=p, pix=pix)
        for (s, p, pix) in sorted(touched)
        for kind in ("spectra", "coadd")
    ]


# ---- qa stage (rules in rules/qa.smk) ----

from fiberflow.qa.scoring import load_thresholds


def qa_thresholds_path():
    """config qa.thresholds: absolute, else relative to the working directory, else to the
    workflow's own folder (the shipped config/qa.yaml)."""
    path = config["qa"]["thresholds"]
    if os.path.isabs(path) or os.path.exists(path):
        return os.path.abspath(path)
    return os.path.join(workflow.basedir, path)


QA_THRESHOLDS = qa_thresholds_path()


QA_HISTORY_NIGHTS = load_thresholds(QA_THRESHOLDS)["history"]["nights"]


QA_OBSTYPES = ("ZERO", "DARK", "ARC", "FLAT", "SCIENCE")


def qa_frame_inputs(wildcards):
    """Every product of one frame that exists for its OBSTYPE (ZERO / DARK: the raw file and
    the night's master bias)."""
    obstype = row(wildcards.night, wildcards.expid)["OBSTYPE"]
    ids = dict(night=wildcards.night, expid=wildcards.expid, camera=wildcards.camera)
    if obstype in ("ZERO", "DARK"):
        return {
            "raw": find("raw", night=wildcards.night, expid=wildcards.expid),
            "biasnight": find(
                "biasnight", night=wildcards.night, camera=wildcards.camera
            ),
        }
    files = {"preproc": find("preproc", **ids)}
    if obstype == "ARC":
        files["psf"] = find("fitpsf", **ids)
        return files
    files["psf"] = find("psf", **ids)
    files["frame"] = find("frame", **ids)
    if obstype == "FLAT":
        files["fiberflat"] = find("fiberflat", **ids)
    if obstype == "SCIENCE":
        for key in ("sky", "sframe"):
            files[key] = find(key, **ids)
        if not ffexp.flux_calibrated(row(wildcards.night, wildcards.expid)):
            return files
        for key in ("fluxcalib", "cframe"):
            files[key] = find(key, **ids)
        files["stdstars"] = find(
            "stdstars",
            night=wildcards.night,
            expid=wildcards.expid,
            spectrograph=int(wildcards.camera[1:]),
        )
    return files


#: job log of each step of a frame (linked from the QA pages)
QA_STEP_LOGS = {
    "BIAS": "biasnight",
    "PREPROC": "preproc",
    "PSF": "psf",
    "TRACESHIFT": "traceshift",
    "EXTRACT": "extract",
    "FIBERFLAT": "fiberflat",
    "SKY": "sky",
    "FLUXCALIB": "fluxcalib",
    "CFRAME": "cframe",
}


def qa_frame_options(wildcards, input):
    """--prod, the frame's products and its job logs (one params function per job)."""
    opts = [f"--prod {PROD}"] + [f"--{key} {path}" for key, path in input.items()]
    ident = f"{wildcards.night}/{wildcards.expid}-{wildcards.camera}"
    obstype = row(wildcards.night, wildcards.expid)["OBSTYPE"]
    if obstype in ("ZERO", "DARK"):
        opts.append(f"--config {CONFIGFILE}")
        opts.append(
            f"--log BIAS={logfile('biasnight', f'{wildcards.night}-{wildcards.camera}')}"
        )
        return " ".join(opts)
    for step, name in QA_STEP_LOGS.items():
        if step == "BIAS":
            continue
        if step == "TRACESHIFT" and obstype == "ARC":
            continue
        opts.append(f"--log {step}={logfile(name, ident)}")
    if obstype == "SCIENCE":
        spec = int(wildcards.camera[1:])
        opts.append(
            f"--log STDSTARS={logfile('stdstars', f'{wildcards.night}/{wildcards.expid}-{spec}')}"
        )
    return " ".join(opts)


def qa_cameras(night, r):
    """Cameras of an exposure that get frame QA (ZERO / DARK: those with a master bias)."""
    if r["OBSTYPE"] in ("ZERO", "DARK"):
        return [c for c in cameras(r) if zeros_of(night, c)]
    return cameras(r)


def qa_rows(night):
    """Exposures of a night with frame QA."""
    return [r for r in rows(night, QA_OBSTYPES) if qa_cameras(night, r)]


def qa_frames_of(night, expid=None):
    """Frame QA files of a night (or of one exposure)."""
    return [
        find("qa_frame", night=night, expid=r["EXPID"], camera=cam)
        for r in qa_rows(night)
        if expid is None or int(r["EXPID"]) == int(expid)
        for cam in qa_cameras(night, r)
    ]


def qa_history(wildcards):
    """Night QA of the earlier production nights within the history window."""
    earlier = [n for n in sorted(NIGHTS) if n < int(wildcards.night) and qa_rows(n)]
    return [find("qa_night", night=n) for n in earlier[-QA_HISTORY_NIGHTS:]]


def qa_nights():
    return [n for n in NIGHTS if qa_rows(n)]


def qa_targets(nights=None, production=True):
    """Night and exposure QA pages of the given nights (default all) and, with
    ``production``, the production index."""
    targets = []
    for night in nights or qa_nights():
        if not qa_rows(night):
            continue
        targets.append(find("qa_night_html", night=night))
        targets += [
            find("qa_exposure_html", night=night, expid=r["EXPID"])
            for r in qa_rows(night)
        ]
    if production and qa_nights():
        targets.append(find("qa_production_html"))
    return targets


# ---- simulate stage (rules in rules/simulate.smk, only with simulate.rule: true) ----


def simulated_plans():
    """Observing plans of the simulated nights: the configured plan file, else the built-in
    demo plan of every configured night. {night: fiberflow.sim.plan.Plan}"""
    from fiberflow.sim.plan import default_plan, load_plan, parse_plan

    if config["simulate"]["plan"]:
        plan = load_plan(config["simulate"]["plan"])
        return {plan.night: plan}
    if not config["nights"]:
        raise ValueError(
            "the simulate rules need the nights listed in the config (or a simulate.plan naming its night)"
        )
    return {
        int(n): parse_plan(default_plan(int(n)), where="built-in demo plan")
        for n in config["nights"]
    }


SIM_PLAN_FILES = [config["simulate"]["plan"]] if config["simulate"]["plan"] else []


def simulate_targets():
    """Raw file of every exposure of every simulated night (target rule `simulate`)."""
    return [
        find("raw", night=night, expid=expid)
        for night, plan in simulated_plans().items()
        for expid in plan.expids()
    ]


# ---- one production, one writer (fiberflow.prodlock) ----
# before any job runs, the nights (and production-wide products) this invocation writes are
# locked under the production root; a second invocation on any of them stops with the owner

import fiberflow.prodlock as ffprodlock

PRODLOCKS = []


def take_production_locks():
    outputs = (f for job in workflow.dag.needrun_jobs() for f in job.output)
    PRODLOCKS.extend(ffprodlock.acquire(PROD, ffprodlock.lock_keys(outputs, PROD)))


onstart:
    take_production_locks()


onsuccess:
    ffprodlock.release(PRODLOCKS)


onerror:
    ffprodlock.release(PRODLOCKS)
