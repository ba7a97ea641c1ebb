# Shared workflow helpers: configuration validation, roots, exposure tables, wildcard
# constraints, output patterns and input functions. File names come from fiberflow.paths.

import os
import sys

import fiberflow.exptable as ffexp
import fiberflow.paths as ffpaths
from fiberflow.config import default_psf_dir, resolve_roots, section_hash, validate_config
from fiberflow.instrument import load_instrument

# jobs call `fiberflow <step>`: the one installed beside the Python running Snakemake comes
# first on PATH, so a non-activated virtual environment (python -m snakemake) works too
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
    return os.path.join(PROD, "logs", step, ident + ".log")


def benchfile(step, ident):
    """Benchmark of one job: {prod}/benchmarks/{step}/{ident}.tsv."""
    return os.path.join(PROD, "benchmarks", step, ident + ".tsv")


def find(filetype, **ids):
    return ffpaths.findfile(filetype, raw=ROOTS["raw"], prod=PROD, **ids)


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
