"""``fiberflow rebuild PATH... [--from STEP] [-n] [--all]``: remake chosen products of a production.

The paths may be relative to where the user stands or absolute; each must be a product some job
of the production writes. Without ``--from`` the jobs writing them are remade; with ``--from STEP``
every STEP job upstream of them is remade, and what lies between. Snakemake's own dry run counts
the jobs first (printed); ``-n`` stops there. A force without paths would remake every STEP job of
the production (thousands on a DESI night, the mistake ``snakemake --forcerun sky PATH`` makes when
the option swallows the path): it is refused unless ``--all`` says so.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from ..errors import ConfigError


def add_arguments(p, name):
    p.add_argument("paths", nargs="*", metavar="PATH", help="products to remake (relative to here, or absolute)")
    p.add_argument("--config", required=True, help="production configuration (YAML)")
    p.add_argument("--directory", "-d", default=None,
                   help="Snakemake's working directory (default: the configuration file's folder)")
    p.add_argument("--from", dest="from_step", metavar="STEP", default=None,
                   help="remake from this step on (its jobs upstream of PATH, and everything between)")
    p.add_argument("-n", "--dry-run", action="store_true", help="print the jobs it would run, run nothing")
    p.add_argument("--all", action="store_true",
                   help="without PATH: force every STEP job of the production (--from STEP is then required)")
    p.add_argument("--profile", default=None, help="Snakemake profile folder (default: the installed profiles/local)")
    p.add_argument("--cores", type=int, default=None, help="cores for Snakemake (default: all of this machine)")
    p.add_argument("--snakefile", default=None, help="the workflow's Snakefile (default: the one installed with fiberflow)")


def job_counts(text):
    """Snakemake's dry-run 'Job stats' table as (total, {rule: count}); (0, {}) when nothing to do."""
    counts = {}
    total = 0
    m = re.search(r"Job stats:\s*\n\s*job\s+count\s*\n[-\s]+\n(.*?)\n\s*total\s+(\d+)", text, re.S)
    if m:
        for line in m.group(1).splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
        total = int(m.group(2))
    return total, counts


def run(args):
    from ..config import load_config
    from ..reference import workflow_dir
    from ..workflow.plan import STEPS, Plan

    cfgfile = os.path.abspath(args.config)
    cfg = load_config(cfgfile)
    workdir = os.path.abspath(args.directory or os.path.dirname(cfgfile))
    plan = Plan(cfg, workdir, configfile=cfgfile)
    if args.from_step is not None and args.from_step not in STEPS:
        raise ConfigError(f"--from {args.from_step}: not a step of the workflow (steps: {', '.join(STEPS)})")
    if not args.paths:
        if not args.from_step:
            raise ConfigError("name the products to remake (PATH ...), or --from STEP --all for every STEP job")
        if not args.all:
            n = len(plan.steps(args.from_step))
            raise ConfigError(f"no PATH: --from {args.from_step} would force all {n} {args.from_step} job(s) of "
                              f"production {plan.prod} and everything after them; name the products to remake, "
                              f"or pass --all if that is what you want")
    producer = {os.path.normpath(o): j for j in plan.jobs for o in j.outputs}
    targets = []
    for path in args.paths:
        full = os.path.normpath(os.path.abspath(path))
        job = producer.get(full)
        if job is None:
            if not full.startswith(plan.prod + os.sep):
                raise ConfigError(f"{path}: is not under the production {plan.prod}")
            raise ConfigError(f"{path}: is written by no job of production {plan.prod} (`fiberflow findfile` "
                              f"prints product paths)")
        if args.from_step and not _upstream(job, args.from_step, producer):
            raise ConfigError(f"{path}: no {args.from_step} job lies upstream of it (it is made by {job.step})")
        targets.append(full)

    snakefile = args.snakefile or os.path.join(workflow_dir(), "Snakefile")
    profile = os.path.abspath(args.profile) if args.profile else os.path.join(workflow_dir(), "profiles", "local")
    base = [sys.executable, "-m", "snakemake", "-s", snakefile, "--configfile", cfgfile, "--directory", workdir,
            "--profile", profile, "--cores", str(args.cores or os.cpu_count() or 1)]
    # options in their --opt=value form, targets after `--`: no option can swallow a path
    force = [f"--forcerun={args.from_step}"] if args.from_step else ["--force"]
    tail = (["--"] + targets) if targets else []
    cmd = base + force + tail
    dry = subprocess.run(base + force + ["--dry-run"] + tail, capture_output=True, text=True)
    if dry.returncode != 0:
        last = [ln for ln in (dry.stderr + dry.stdout).splitlines() if ln.strip()][-5:]
        raise ConfigError("snakemake's dry run failed: " + " | ".join(last))
    total, counts = job_counts(dry.stdout + dry.stderr)
    what = ", ".join(f"{r} {n}" for r, n in counts.items())
    print(f"fiberflow rebuild: {total} job(s) to run" + (f" ({what})" if what else "")
          + f" in {plan.prod}")
    if args.dry_run or total == 0:
        return 0
    print("running: " + " ".join(cmd[1:]), flush=True)
    res = subprocess.run(cmd)
    if res.returncode != 0:
        print(f"fiberflow rebuild: snakemake exited {res.returncode}; logs under {os.path.join(plan.prod, 'logs')}",
              file=sys.stderr)
        return 1
    print(f"fiberflow rebuild: done ({total} job(s)); products downstream of what was remade are now stale "
          f"(`fiberflow status --config {args.config}` lists them; a plain run remakes them)")
    return 0


def _upstream(job, step, producer, seen=None):
    """True when a ``step`` job is ``job`` or lies upstream of it (through inputs that rerun it)."""
    seen = set() if seen is None else seen
    if job.step == step:
        return True
    if id(job) in seen:
        return False
    seen.add(id(job))
    for name, value in job.inputs.items():
        if name in job.ordering:
            continue
        for p in value if isinstance(value, (list, tuple)) else [value]:
            up = producer.get(os.path.normpath(p))
            if up is not None and _upstream(up, step, producer, seen):
                return True
    return False


def main(argv=None):
    from .main import main as _main

    return _main(["rebuild"] + list(argv if argv is not None else sys.argv[1:]))
