"""Operations commands: ``fiberflow status`` (job states per step, from the file system) and
``fiberflow dag`` (the rule graph and one night's job DAG as SVG, via graphviz)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from ..errors import ConfigError


def add_arguments(p, name):
    p.add_argument("--config", required=True, help="production configuration (YAML)")
    if name == "status":
        p.add_argument("--directory", "-d", default=None,
                       help="Snakemake's working directory (where .snakemake/ lives); default: the configuration "
                            "file's folder")
        p.add_argument("--failed", action="store_true",
                       help="list every failed job with its log and last error, and every stale job with its reason")
        p.add_argument("--json", action="store_true", help="print the counts (and failures) as JSON")
        p.add_argument("--stale", action="store_true",
                       help="list only the HEALPix spectra/coadd files no exposure feeds any more (one path a "
                            "line, e.g. for `| xargs rm`)")
    else:
        p.add_argument("--night", type=int, default=None, help="night of the job DAG (default: the first one)")
        p.add_argument("--expid", type=int, default=None,
                       help="draw this exposure's chain only (every job upstream of its products, each node naming "
                            "its camera, coloured by its state)")
        p.add_argument("--camera", default=None, help="with --expid: one camera's chain (e.g. r0)")
        p.add_argument("-o", "--outdir", default=".", help="folder of the SVG files (default: the current one)")
        p.add_argument("--snakefile", default=None,
                       help="the workflow's Snakefile (default: the one installed with fiberflow)")
        p.add_argument("--directory", "-d", default=None,
                       help="Snakemake's working directory (default: the configuration file's folder)")


def run(args):
    if args.directory is None:
        args.directory = os.path.dirname(os.path.abspath(args.config))
    if args.command == "status":
        return _status(args)
    return _dag(args)


def _status(args):
    from ..config import load_config
    from ..workflow.plan import Plan
    from ..workflow.status import (
        certification_states,
        format_certification,
        format_table,
        job_states,
        snakemake_running,
        stale_lock,
        stale_products,
        summary,
    )

    t0 = time.perf_counter()
    cfg = load_config(args.config)
    prod = Plan(cfg, args.directory, configfile=os.path.abspath(args.config))
    orphans = stale_products(prod)
    if args.stale:
        for path in orphans:
            print(path)
        return 0
    jobs = job_states(prod, args.directory)
    table = summary(jobs)
    failed = [j for j in jobs if j.state == "failed"]
    stale_jobs = [j for j in jobs if j.state == "stale"]
    running = snakemake_running(args.directory)  # one /proc scan for the whole report
    stale = stale_lock(args.directory, running)
    certs = certification_states(prod)
    if args.json:
        json.dump({"prod": prod.prod, "nights": prod.nights, "snakemake_running": running,
                   "stale_lock": stale, "stale_products": orphans,
                   "steps": table, "certification": certs,
                   "failed": [{"step": j.step, "output": j.output, "log": j.log, "reason": j.reason} for j in failed],
                   "stale": [{"step": j.step, "output": j.output, "reason": j.reason} for j in stale_jobs]},
                  sys.stdout, indent=1)
        print()
        return 0
    state = "a Snakemake process is running here" if running else "no Snakemake running here"
    if stale:
        state += " (stale lock of a killed run: `snakemake --unlock` before restarting)"
    print(f"production {prod.prod}: {len(prod.nights)} night(s), "
          f"{sum(len(prod.rows(n)) for n in prod.nights)} exposure(s); {state}")
    print(format_table(table))
    for line in format_certification(certs):
        print(line)
    if failed:
        print(f"\n{len(failed)} failed job(s)" + ("" if args.failed else " (--failed lists them all)") + ":")
        for j in failed if args.failed else failed[:10]:
            print(f"  {j.step:<15} {os.path.relpath(j.output, prod.prod)}\n"
                  f"      log {j.log}\n      {j.reason}")
    if stale_jobs:
        print(f"\n{len(stale_jobs)} stale job(s): their products exist but the next run remakes them"
              + ("" if args.failed else " (first 10; --failed lists them all)") + ":")
        for j in stale_jobs if args.failed else stale_jobs[:10]:
            print(f"  {j.step:<15} {os.path.relpath(j.output, prod.prod)}: {j.reason}")
    if orphans:
        print(f"\n{len(orphans)} HEALPix file(s) no exposure of the production feeds any more (stale; "
              f"`fiberflow status --stale` lists them), e.g. {os.path.relpath(orphans[0], prod.prod)}")
    print(f"({len(jobs)} jobs checked in {time.perf_counter() - t0:.2f} s)")
    return 0


def _draw(dot_text, path, what):
    """Render DOT text to an SVG file with graphviz (atomically)."""
    svg = subprocess.run(["dot", "-Tsvg"], input=dot_text, capture_output=True, text=True)
    if svg.returncode != 0:
        raise ConfigError(f"dot could not draw {what}: {svg.stderr[-1000:]}")
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(svg.stdout)
    os.replace(tmp, path)


def _exposure_dag(args):
    """One exposure's chain from the production plan."""
    from ..config import load_config
    from ..workflow.graph import exposure_chain, to_dot
    from ..workflow.plan import Plan
    from ..workflow.status import job_states

    cfgfile = os.path.abspath(args.config)
    plan = Plan(load_config(cfgfile), args.directory, configfile=cfgfile)
    nights = [args.night] if args.night is not None else plan.nights
    night = next((n for n in nights if any(r["EXPID"] == args.expid for r in plan.tables.get(n, []))), None)
    if night is None:
        raise ConfigError(f"{args.config}: exposure {args.expid} is in no exposure table of night(s) "
                          f"{', '.join(map(str, nights))}")
    if args.camera is not None and args.camera not in plan.cameras:
        raise ConfigError(f"--camera {args.camera}: not a camera of instrument {plan.cfg['instrument']}")
    job_states(plan, args.directory)
    jobs = exposure_chain(plan, night, args.expid, args.camera)
    if not jobs:
        raise ConfigError(f"exposure {args.expid} of night {night} has no job (LASTSTEP ignore?)")
    name = f"dag-{night}-{args.expid:08d}" + (f"-{args.camera}" if args.camera else "")
    os.makedirs(args.outdir, exist_ok=True)
    path = os.path.join(args.outdir, f"{name}.svg")
    title = f"exposure {args.expid} of night {night}" + (f", camera {args.camera}" if args.camera else "")
    _draw(to_dot(jobs, title + " (green done, orange stale, red failed, grey ready, white waiting)"), path, name)
    print(f"wrote {path} ({len(jobs)} jobs)")
    return 0


def _dag(args):
    from ..config import load_config, resolve_roots

    if not shutil.which("dot"):
        raise ConfigError("graphviz's `dot` is not installed (`make dag` or `make test` installs it; or apt-get "
                          "install graphviz)")
    if args.camera is not None and args.expid is None:
        raise ConfigError("--camera needs --expid (one exposure's chain)")
    if args.expid is not None:
        return _exposure_dag(args)
    if args.snakefile is None:
        from ..reference import workflow_dir

        args.snakefile = os.path.join(workflow_dir(), "Snakefile")
    if not os.path.exists(args.snakefile):
        raise ConfigError(f"{args.snakefile}: no Snakefile (pass --snakefile)")
    cfg = load_config(args.config)
    nights = [int(n) for n in cfg["nights"]]
    if args.night is None and not nights:
        from ..workflow.exptable import nights_with_raw

        nights = nights_with_raw(resolve_roots(cfg)["raw"])
    night = args.night if args.night is not None else (nights[0] if nights else None)
    if night is None:
        raise ConfigError(f"{args.config}: no night configured and no raw data: nothing to draw")
    os.makedirs(args.outdir, exist_ok=True)
    prod = resolve_roots(cfg)["prod"]
    base = [sys.executable, "-m", "snakemake", "-s", args.snakefile, "--configfile", os.path.abspath(args.config),
            "--directory", args.directory, "--cores", "1", "--quiet"]
    from ..paths import findfile

    target = findfile("night_done", prod=prod, night=night)
    written = []
    for name, extra in (("rulegraph", ["--rulegraph", "--forceall"]),
                        (f"dag-{night}", ["--dag", "--forceall", target])):
        dot = subprocess.run(base + extra, capture_output=True, text=True)
        text = dot.stdout[dot.stdout.find("digraph"):] if "digraph" in dot.stdout else ""
        if dot.returncode != 0 or not text:
            raise ConfigError(f"snakemake {' '.join(extra[:1])} failed (exit {dot.returncode}): {dot.stderr[-2000:]}")
        path = os.path.join(args.outdir, f"{name}.svg")
        _draw(text, path, name)
        written.append(path)
        print(f"wrote {path} ({text.count('->')} edges)")
    return 0
