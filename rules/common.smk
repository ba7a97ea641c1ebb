# Thin adapters between Snakemake and the production plan (fiberflow.workflow.plan): the
# configuration check, output patterns, and input/option/target functions that look jobs up
# in the one Plan. Which jobs exist and what they read is decided there, not here; rules whose
# inputs are the same products of the same identifiers (extract reads the preproc and psf of its
# camera) declare those patterns directly, which Snakemake resolves much faster than a function
# (tests/test_plan.py checks every job's inputs against the plan all the same).

import os
import sys

import fiberflow.paths as ffpaths
import fiberflow.prodlock as ffprodlock
import fiberflow.workflow.records as ffrecords
from fiberflow.config import anchor_paths, validate_config
from fiberflow.workflow.plan import Plan


# jobs call `fiberflow <step>`: the one installed beside the Python running Snakemake comes
# first on PATH, so a non-activated virtual environment (python -m snakemake) works too
envvars:
    "PATH",


_BINDIR = os.path.dirname(sys.executable)
if os.path.exists(os.path.join(_BINDIR, "fiberflow")):
    os.environ["PATH"] = _BINDIR + os.pathsep + os.environ.get("PATH", "")

# validate (and fill defaults of) the configuration; errors name the bad key
validate_config(config, source="config")

# the configuration file the steps read (command-line --config overrides do not reach them);
# relative paths in it are relative to its folder, as the steps read them
CONFIGFILE = os.path.abspath(workflow.configfiles[-1]) if workflow.configfiles else ""
anchor_paths(config, os.path.dirname(CONFIGFILE) if CONFIGFILE else os.getcwd())
# every job of the production, from the exposure tables read now (CSV edits + raw exposures
# not yet in the CSV + override file), so no checkpoint is needed
PLAN = Plan(config, workdir=os.getcwd(), configfile=CONFIGFILE)
PROD = PLAN.prod
for _warning in PLAN.warnings:
    print(f"fiberflow: WARNING: {_warning}", file=sys.stderr)
# a production moved or copied with its folder keeps Snakemake's records of its outputs
ffrecords.follow_move(
    os.getcwd(),
    {
        "workdir": os.getcwd(),
        "prod": PROD,
        "raw": PLAN.raw,
        "config": os.path.dirname(CONFIGFILE),
    },
)
# the software of every rule (snakemake --software-deployment-method conda)
CONDA_ENV = os.path.join(workflow.basedir, "envs", "fiberflow.yaml")


wildcard_constraints:
    **ffpaths.wildcard_constraints(),


def out(filetype):
    """Output pattern of a production file type (absolute, under the production root)."""
    return ffpaths.wildcard_pattern(filetype, PROD)


def raw_pattern(filetype):
    """Pattern of a raw-data file type under the raw root."""
    return ffpaths.wildcard_pattern(filetype, PLAN.raw)


def logfile(step, ident):
    return PLAN.log(step, ident)


def benchfile(step, ident):
    return PLAN.benchmark(step, ident)


def prod_of(path):
    """The production root a product path lies under (for steps that take --prod)."""
    filetype, ids = ffpaths.parse_path(path)
    rel = ffpaths.relpath(filetype, **ids)
    return os.path.normpath(str(path)[: -len(rel)])


def _job(step, wildcards):
    return PLAN.job(step, **dict(wildcards.items()))


def inputs(step):
    """Input function (used with unpack): the named inputs of the planned job (those that only
    order it as ``ancient``)."""

    def named(wildcards):
        job = _job(step, wildcards)
        return {
            k: ancient(v) if k in job.ordering else v for k, v in job.inputs.items()
        }

    return named


def options(step):
    """Params function: the options of the planned job. A function of the wildcards only,
    so that Snakemake's params trigger sees an operator's exposure-table edit (BADAMPS).
    """
    return lambda wildcards: _job(step, wildcards).options


def priority(step):
    """Priority function: the planned job's scheduling priority (Plan.priority)."""
    return lambda wildcards: PLAN.priority(step, **dict(wildcards.items()))


def mpi_launch(resources):
    """Prefix that starts a step under MPI: '{launcher} -n {tasks} ' when the job's resources
    name a launcher (``mpi``) and more than one task, else '' (threads only)."""
    launcher = str(resources.get("mpi", "") or "").strip()
    tasks = int(resources.get("tasks", 1) or 1)
    if not launcher or tasks <= 1:
        return ""
    return f"{launcher} -n {tasks} "


def step_targets(*steps):
    """Main output of every job of these steps."""
    return [j.output for j in PLAN.jobs if j.step in steps]


#: command-line options fixed by the configuration, as wildcard patterns decided once at parse time
AVERAGE_OPTION = (
    f"--average {PLAN.average_fluxcalib('{camera}')}"
    if PLAN.default_fluxcalib_dir
    else ""
)
MODEL_OPTION = f"--model {out('model')}" if config["extract"].get("model") else ""


# ---- one production, one writer (fiberflow.prodlock) ----
# before any job runs, the nights (and production-wide products) this invocation writes are
# locked under the production root; a second invocation on any of them stops with the owner

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
