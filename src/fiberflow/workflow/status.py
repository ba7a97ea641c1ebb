"""Status of a production without building Snakemake's DAG (``fiberflow status``).

The jobs are those of the production plan (:class:`fiberflow.workflow.plan.Plan`), the same
the workflow's rules run. Each job's state comes from the file system alone:

- ``done``: its output exists and Snakemake has no incomplete marker for it;
- ``stale``: its output exists but Snakemake would remake it, as its rerun triggers decide:
  an input is newer than the output, an input will itself be remade, or the job's options or
  the hash of the configuration sections it reads differ from those Snakemake recorded when it
  wrote the output (``.snakemake/metadata``); the reason says which;
- ``running``: its output is missing or marked incomplete and Snakemake marked it as being
  written (``.snakemake/incomplete``) while a Snakemake process runs in the working
  directory (``interrupted`` when no Snakemake runs: the next run redoes it, rerun-incomplete);
  a lock without a Snakemake process is reported as stale (``snakemake --unlock``);
- ``failed``: its output is missing and its job log ends in an error (the step's own error
  message, a traceback, a kill); that line says why;
- ``ready``: every input exists (those of other jobs done); ``waiting``: some do not.

This costs a few stats and one small JSON read per job, so a DESI-size night (about 10,000
jobs) takes about a second, where a Snakemake dry run takes about 10 s.
"""

from __future__ import annotations

import os

from .plan import HASHED_SECTIONS, STEPS
from .records import iter_records, read_metadata

STATES = ("done", "stale", "running", "interrupted", "ready", "waiting", "failed")


def _incomplete_markers(workdir):
    """Outputs Snakemake marked as being written (``.snakemake/incomplete``), as absolute
    normalised paths."""
    return {os.path.normpath(os.path.join(workdir, key)) for _path, key in iter_records(workdir, "incomplete")}


def _locked(workdir):
    folder = os.path.join(workdir, ".snakemake", "locks")
    return os.path.isdir(folder) and any(os.scandir(folder))


def snakemake_running(workdir):
    """True when a Snakemake process works in ``workdir`` (found in /proc by its command line
    and working directory); without /proc, when the working directory is locked."""
    workdir = os.path.realpath(workdir)
    if not os.path.isdir("/proc/self"):
        return _locked(workdir)
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().split(b"\0")
            if not any(b"snakemake" in part for part in cmd[:4]):
                continue
            if os.path.realpath(f"/proc/{pid}/cwd") == workdir:
                return True
        except OSError:
            continue
    return False


def stale_lock(workdir, running=None):
    """True when ``workdir`` is locked but no Snakemake runs there (a killed run:
    ``snakemake --unlock`` before the next one)."""
    if running is None:
        running = snakemake_running(workdir)
    return _locked(workdir) and not running


def _last_error(log):
    """The last line of a job log that reads like an error ('' when none: the log of an
    earlier successful run whose output was since removed)."""
    try:
        with open(log, errors="replace") as fh:
            lines = [ln.strip() for ln in fh.read().splitlines()[-200:] if ln.strip()]
    except OSError:
        return ""
    for ln in reversed(lines):
        low = ln.lower()
        if "error" in low or "traceback" in low or "killed" in low or "signal" in low:
            return ln[:300]
    return ""


def _paths(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def job_states(plan, workdir="."):
    """Set ``state`` (and ``reason`` for failed and stale jobs) on every job of ``plan``.

    Parameters
    ----------
    plan : fiberflow.workflow.plan.Plan
    workdir : str
        Snakemake's working directory (where ``.snakemake/`` lives).

    Returns
    -------
    list of Job
    """
    workdir = os.path.abspath(workdir)
    incomplete = _incomplete_markers(workdir)
    running = snakemake_running(workdir) if incomplete else False
    exists, mtimes = {}, {}
    producer = {os.path.normpath(o): j for j in plan.jobs for o in j.outputs}

    def mtime(path):
        if path not in mtimes:
            try:
                mtimes[path] = os.stat(path).st_mtime
            except OSError:
                mtimes[path] = None
        return mtimes[path]

    def done(path):
        if path not in exists:
            exists[path] = mtime(path) is not None and os.path.normpath(path) not in incomplete
        return exists[path]

    def stale_reason(job):
        """Why Snakemake would remake a job whose outputs exist ('' when it would not)."""
        if job.state:
            return job.reason if job.state == "stale" else ""
        job.state = "checking"  # a cycle cannot recurse
        reason = ""
        t_out = min((t for t in (mtime(o) for o in job.outputs) if t is not None), default=None)
        for name, value in job.inputs.items():
            if name in job.ordering or reason:
                continue
            for p in _paths(value):
                up = producer.get(os.path.normpath(p))
                if up is not None and up is not job and (not done(up.output) or stale_reason(up)):
                    reason = f"its input {os.path.basename(p)} ({up.step}) will be remade first"
                    break
                t = mtime(p)
                if t is not None and t_out is not None and t > t_out:
                    reason = f"its input {os.path.basename(p)} is newer than the output"
                    break
        if not reason:
            rec = read_metadata(workdir, job.output)
            params = (rec or {}).get("params") if (rec or {}).get("record_format_version", 0) >= 6 else None
            if params is not None:
                if job.step in HASHED_SECTIONS and repr(plan.config_hash(job.step)) not in params:
                    reason = f"configuration section(s) {', '.join(HASHED_SECTIONS[job.step])} changed since it was made"
                elif job.options and repr(job.options) not in params:
                    reason = "its options changed since it was made (exposure table, calibration choice, ledger)"
        job.state, job.reason = ("stale", reason) if reason else ("done", "")
        return reason

    for job in plan.jobs:
        job.state, job.reason = "", ""
    for job in plan.jobs:
        if done(job.output):
            stale_reason(job)
        elif os.path.normpath(job.output) in incomplete:
            job.state = "running" if running else "interrupted"
        elif job.error:  # cannot run as configured (e.g. no starting PSF for a night without arcs)
            job.state, job.reason = "failed", job.error
        elif os.path.exists(job.log) and (reason := _last_error(job.log)):
            job.state, job.reason = "failed", reason
        elif all(done(n) for n in job.needs):
            job.state = "ready"
        else:
            job.state = "waiting"
    return plan.jobs


def stale_products(plan):
    """HEALPix spectra and coadd files on disk that no job of the production writes any more.

    A pixel whose every feeding exposure was dropped (LASTSTEP ignore, BADCAMWORD, an
    exposure-table override) keeps its old files, which Snakemake never touches again; users
    would read them as current. They are listed here so operators can remove them.

    Returns
    -------
    list of str
        Absolute paths, sorted.
    """
    planned = {os.path.normpath(j.output) for j in plan.jobs if j.step in ("spectra", "coadd", "redrock")}
    root = os.path.join(plan.prod, "healpix")
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if not (name.startswith(("spectra-", "coadd-", "redrock-")) and name.endswith(".fits")):
                continue
            path = os.path.normpath(os.path.join(dirpath, name))
            if path not in planned:
                out.append(path)
    return sorted(out)


def summary(jobs):
    """Counts per step and state: dict step -> dict state -> int (steps in production order)."""
    table = {}
    for job in jobs:
        row = table.setdefault(job.step, dict.fromkeys(STATES, 0))
        row[job.state] += 1
    return {s: table[s] for s in STEPS if s in table}


def format_table(table):
    """The summary as a fixed-width text table (like DESI's ``desi_pipe top``)."""
    head = f"{'step':<16}{'total':>7}" + "".join(f"{s:>12}" for s in STATES)
    lines = [head, "-" * len(head)]
    total = dict.fromkeys(STATES, 0)
    for step, row in table.items():
        lines.append(f"{step:<16}{sum(row.values()):>7}" + "".join(f"{row[s]:>12}" for s in STATES))
        for s in STATES:
            total[s] += row[s]
    lines.append("-" * len(head))
    lines.append(f"{'all':<16}{sum(total.values()):>7}" + "".join(f"{total[s]:>12}" for s in STATES))
    return "\n".join(lines)


def certification_states(plan):
    """The certification state of every nightly calibration the production has certified so far.

    Returns
    -------
    list of dict
        NIGHT, CALIBRATION, CAMERA, STATUS (AUTO / REVIEW / REJECTED / CERTIFIED / NA), SOURCE,
        REASON, and STALE: the psfnight / fiberflatnight file on disk was made under the other
        decision (used / not used, by its CERTSTAT header; a threshold edit rescored it: rerun
        that file with ``snakemake --forcerun``, or decide in the ledger).
    """
    import json

    out = []
    for job in plan.steps("certify"):
        try:
            with open(job.output) as fh:
                rec = json.load(fh)
        except (OSError, ValueError):
            continue
        calib = job.ids["calibration"]
        for d in rec.get("DECISIONS", []):
            stale = False
            if calib in ("psfnight", "fiberflatnight") and plan.certify:
                made = _made_under(plan.find(calib, night=job.ids["night"], camera=d["CAMERA"]))
                stale = made is not None and (made == "REJECTED") != (d["STATUS"] == "REJECTED")
            out.append({"NIGHT": int(job.ids["night"]), "CALIBRATION": calib, "CAMERA": d["CAMERA"],
                        "STATUS": d["STATUS"], "SOURCE": d.get("SOURCE", ""), "REASON": d.get("REASON", ""),
                        "STALE": stale})
    return out


def _made_under(path):
    """The CERTSTAT header of a nightly calibration file (None: no file or no such card)."""
    if not os.path.exists(path):
        return None
    from astropy.io import fits

    try:
        return fits.getheader(path, 0).get("CERTSTAT")
    except (OSError, ValueError):
        return None


def format_certification(states):
    """Lines for ``fiberflow status``: counts per state, then every calibration that is not
    plainly AUTO (to review, rejected, decided in the ledger) or whose file is stale."""
    if not states:
        return []
    counts = {}
    for s in states:
        counts[s["STATUS"]] = counts.get(s["STATUS"], 0) + 1
    lines = ["nightly calibrations: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))]
    for s in states:
        if s["STATUS"] != "AUTO" or s["STALE"]:
            lines.append(f"  {s['NIGHT']} {s['CALIBRATION']}-{s['CAMERA']:<3} {s['STATUS']:<9} {s['SOURCE']:<14} "
                         f"{s['REASON'][:90]}" + ("  [file made under another decision: --forcerun it]"
                                                  if s["STALE"] else ""))
    return lines
