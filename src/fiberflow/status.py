"""Status of a production without building Snakemake's DAG (``fiberflow status``).

The jobs a production needs follow from its exposure tables exactly as the workflow's rules
derive them (``rules/*.smk``; ``tests/test_operations.py`` checks that both give the same
outputs). Each job's state comes from the file system alone:

- ``done``: its output exists and Snakemake has no incomplete marker for it;
- ``running``: its output is missing or marked incomplete and Snakemake marked it as being
  written (``.snakemake/incomplete``) while a Snakemake process runs in the working
  directory (``interrupted`` when no Snakemake runs: the next run redoes it, rerun-incomplete);
  a lock without a Snakemake process is reported as stale (``snakemake --unlock``);
- ``failed``: its output is missing and its job log ends in an error (the step's own error
  message, a traceback, a kill); that line says why;
- ``ready``: every job it depends on is done; ``waiting``: some are not.

This costs a stat per output, so a DESI-size night (about 10,000 jobs) takes a fraction of
a second, where a Snakemake dry run takes about 10 s.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field

from . import exptable as ffexp
from . import paths

#: steps in production order (Snakemake rule names)
STEPS = (
    "exposure_table", "biasnight", "preproc", "tilepix", "psf", "psfnight", "traceshift", "extract",
    "fiberflat", "fiberflatnight", "sky", "stdstars", "fluxcalib", "cframe", "spectra", "coadd",
    "qa_frame", "qa_night", "qa_exposure", "qa_production",
)
STATES = ("done", "running", "interrupted", "ready", "waiting", "failed")


@dataclass
class Job:
    """One job of the production: its rule, main output, log and the outputs it needs."""

    step: str
    output: str
    log: str
    needs: list = field(default_factory=list)
    state: str = ""
    reason: str = ""


class Production:
    """The jobs of a production, from its configuration and exposure tables.

    Parameters
    ----------
    cfg : dict
        Validated configuration (:func:`fiberflow.config.load_config`).
    workdir : str
        Snakemake's working directory (relative QA threshold paths are resolved there).
    """

    def __init__(self, cfg, workdir="."):
        from .config import resolve_roots
        from .instrument import load_instrument

        self.cfg = cfg
        self.workdir = workdir
        roots = resolve_roots(cfg)
        self.raw, self.prod = roots["raw"], roots["prod"]
        self.cameras = load_instrument(cfg["instrument"]).camera_names()
        self.nights = [int(n) for n in cfg["nights"]] or ffexp.nights_with_raw(self.raw)
        self.tables = {n: ffexp.night_table(self.raw, self.prod, n) for n in self.nights}
        self.jobs = []
        self._build()

    # --- helpers mirroring rules/common.smk -------------------------------------------
    def rows(self, night, obstypes=None):
        return [r for r in self.tables.get(night, [])
                if r["LASTSTEP"] != "ignore" and (obstypes is None or r["OBSTYPE"] in obstypes)]

    def cams(self, r):
        return ffexp.cameras_of(r, self.cameras)

    def find(self, filetype, **ids):
        return paths.findfile(filetype, raw=self.raw, prod=self.prod, **ids)

    def log(self, step, ident):
        return os.path.join(self.prod, "logs", step, ident + ".log")

    def _add(self, step, output, ident, needs=()):
        job = Job(step, output, self.log(step, ident), [n for n in needs if n])
        self.jobs.append(job)
        return job

    def _fallback_night(self, night, obstype, camera):
        limit = self.cfg["calibration"]["fallback_nights"]
        best = None
        for n in sorted(self.nights):
            if n < night and ffexp.nights_apart(n, night) <= limit and \
                    any(camera in self.cams(r) for r in self.rows(n, (obstype,))):
                best = n
        return best

    def _qa_thresholds(self):
        """config qa.thresholds as rules/qa.smk resolves it: absolute, else relative to the
        working directory, else to the project (the shipped config/qa.yaml)."""
        path = self.cfg["qa"]["thresholds"]
        if os.path.isabs(path):
            return path
        if os.path.exists(os.path.join(self.workdir, path)):
            return os.path.join(self.workdir, path)
        from .reference import workflow_dir

        return os.path.join(workflow_dir(), path)

    # --- the jobs -----------------------------------------------------------------------
    def _build(self):
        for night in self.nights:
            self._night(night)
        self._healpix()
        self._qa()

    def _night(self, night):
        if not self.tables.get(night):
            return
        yyyymm = str(night)[:6]
        self._add("exposure_table", self.find("exposure_table", night=night), f"{night}-{yyyymm}")
        used = [c for c in self.cameras if any(c in self.cams(r) for r in self.rows(night))]
        zeros = {c for r in self.rows(night, ("ZERO",)) for c in self.cams(r)}
        calib = {}
        for cam in self.cameras:
            if cam in zeros:  # preproc of the night's exposures and QA of its ZEROs / DARKs use it
                calib[("biasnight", cam)] = self._add("biasnight", self.find("biasnight", night=night, camera=cam),
                                                      f"{night}-{cam}").output
        # preproc of every arc/flat/science camera; psf of every arc camera
        for r in self.rows(night, ("ARC", "FLAT", "SCIENCE")):
            for cam in self.cams(r):
                ids = dict(night=night, expid=r["EXPID"], camera=cam)
                self._add("preproc", self.find("preproc", **ids), f"{night}/{r['EXPID']:08d}-{cam}",
                          [calib.get(("biasnight", cam))])
                if r["OBSTYPE"] == "ARC":
                    self._add("psf", self.find("fitpsf", **ids), f"{night}/{r['EXPID']:08d}-{cam}",
                              [self.find("preproc", **ids)])
        for cam in used:
            self._nightly("psfnight", night, cam, "ARC", "fitpsf")
        flatcams = [c for c in self.cameras if any(c in self.cams(r) for r in self.rows(night, ("FLAT", "SCIENCE")))]
        for r in self.rows(night, ("FLAT", "SCIENCE")):
            for cam in self.cams(r):
                ids = dict(night=night, expid=r["EXPID"], camera=cam)
                ident = f"{night}/{r['EXPID']:08d}-{cam}"
                self._add("traceshift", self.find("psf", **ids), ident,
                          [self.find("preproc", **ids), self.find("psfnight", night=night, camera=cam)])
                self._add("extract", self.find("frame", **ids), ident, [self.find("psf", **ids)])
                if r["OBSTYPE"] == "FLAT":
                    self._add("fiberflat", self.find("fiberflat", **ids), ident, [self.find("frame", **ids)])
        for cam in flatcams:
            self._nightly("fiberflatnight", night, cam, "FLAT", "fiberflat")
        for r in self.rows(night, ("SCIENCE",)):
            expid = r["EXPID"]
            cams = self.cams(r)
            for cam in cams:
                ids = dict(night=night, expid=expid, camera=cam)
                self._add("sky", self.find("sframe", **ids), f"{night}/{expid:08d}-{cam}",
                          [self.find("frame", **ids), self.find("fiberflatnight", night=night, camera=cam)])
            if not ffexp.flux_calibrated(r):  # LASTSTEP skysub stops at the sframes
                continue
            for sp in sorted({int(c[1:]) for c in cams}):
                self._add("stdstars", self.find("stdstars", night=night, expid=expid, spectrograph=sp),
                          f"{night}/{expid:08d}-{sp}",
                          [self.find("sframe", night=night, expid=expid, camera=c) for c in cams if int(c[1:]) == sp])
            for cam in cams:
                ids = dict(night=night, expid=expid, camera=cam)
                std = self.find("stdstars", night=night, expid=expid, spectrograph=int(cam[1:]))
                self._add("fluxcalib", self.find("fluxcalib", **ids), f"{night}/{expid:08d}-{cam}",
                          [self.find("sframe", **ids), std])
                self._add("cframe", self.find("cframe", **ids), f"{night}/{expid:08d}-{cam}",
                          [self.find("sframe", **ids), self.find("fluxcalib", **ids)])

    def _nightly(self, step, night, cam, obstype, per_exposure):
        """A nightly calibration job (psfnight, fiberflatnight): it needs the night's
        per-exposure products, or else the nearest earlier night's nightly file."""
        exps = [r for r in self.rows(night, (obstype,)) if cam in self.cams(r)]
        if exps:
            needs = [self.find(per_exposure, night=night, expid=r["EXPID"], camera=cam) for r in exps]
        else:
            earlier = self._fallback_night(night, obstype, cam)
            needs = [self.find(step, night=earlier, camera=cam)] if earlier else []
        self._add(step, self.find(step, night=night, camera=cam), f"{night}-{cam}", needs)

    def healpix_exposures(self):
        return [(n, r) for n in self.nights for r in self.rows(n, ("SCIENCE",))
                if r["LASTSTEP"] == "all" and int(r["TILEID"]) >= 0 and self.cams(r)]

    def _healpix(self):
        from .healpixmap import pixel_groups

        exposures = []
        for night, r in self.healpix_exposures():
            tp = self.find("tilepix", night=night, expid=r["EXPID"], tileid=r["TILEID"])
            self._add("tilepix", tp, f"{night}/{r['EXPID']:08d}-{r['TILEID']}")
            exposures.append({"NIGHT": night, "EXPID": r["EXPID"], "SURVEY": r["SURVEY"], "PROGRAM": r["PROGRAM"],
                              "petals": {int(c[1:]) for c in self.cams(r)},
                              "fibermap": self.find("fibermap", night=night, expid=r["EXPID"]), "tilepix": tp})
        if not exposures:
            return
        hp = self.cfg["healpix"]
        groups = pixel_groups(exposures, int(hp["nside"]), hp["survey"], hp["program"])
        for (survey, program, pix), feeds in groups.items():
            cframes = []
            for night, expid, petal in feeds:
                r = next(x for x in self.tables[night] if x["EXPID"] == expid)
                cframes += [self.find("cframe", night=night, expid=expid, camera=c)
                            for c in self.cams(r) if int(c[1:]) == petal]
            ids = dict(survey=survey, program=program, pix=pix)
            ident = f"{survey}/{program}/{pix // 100}/{pix}"
            spectra = self._add("spectra", self.find("spectra", **ids), ident, cframes).output
            self._add("coadd", self.find("coadd", **ids), ident, [spectra])

    def _qa(self):
        from .qa.scoring import load_thresholds

        history = load_thresholds(self._qa_thresholds())["history"]["nights"]
        last = {"ARC": "fitpsf", "FLAT": "fiberflat", "SCIENCE": "cframe", "skysub": "sframe",
                "ZERO": "biasnight", "DARK": "biasnight"}

        def qa_cams(night, r):  # as rules/common.smk qa_cameras: ZERO / DARK need the night's master bias
            zeros = {c for z in self.rows(night, ("ZERO",)) for c in self.cams(z)}
            return [c for c in self.cams(r) if r["OBSTYPE"] not in ("ZERO", "DARK") or c in zeros]

        qa_rows = {n: [r for r in self.rows(n, ("ZERO", "DARK", "ARC", "FLAT", "SCIENCE")) if qa_cams(n, r)]
                   for n in self.nights}
        qa_nights = sorted(n for n in self.nights if qa_rows[n])
        for night in qa_nights:
            frames = []
            for r in qa_rows[night]:
                kind = r["OBSTYPE"] if r["OBSTYPE"] != "SCIENCE" or ffexp.flux_calibrated(r) else "skysub"
                for cam in qa_cams(night, r):
                    ids = dict(night=night, expid=r["EXPID"], camera=cam)
                    src = (self.find("biasnight", night=night, camera=cam) if last[kind] == "biasnight"
                           else self.find(last[kind], **ids))
                    frames.append(self._add("qa_frame", self.find("qa_frame", **ids), f"{night}/{r['EXPID']:08d}-{cam}",
                                            [src]).output)
            earlier = [self.find("qa_night", night=n) for n in qa_nights if n < night][-history:] if history else []
            nightqa = self._add("qa_night", self.find("qa_night", night=night), str(night), frames + earlier).output
            for r in qa_rows[night]:
                self._add("qa_exposure", self.find("qa_exposure_html", night=night, expid=r["EXPID"]),
                          f"{night}/{r['EXPID']:08d}", [nightqa])
        if qa_nights:
            self._add("qa_production", self.find("qa_production_html"), "production",
                      [self.find("qa_night", night=n) for n in qa_nights])


def _incomplete_markers(workdir):
    """Outputs Snakemake marked as being written, as absolute normalised paths.

    Snakemake's file backend keeps one marker per output under ``.snakemake/incomplete``,
    named by the URL-safe base64 of the path, split into folder levels of at most NAME_MAX-1
    characters when long."""
    folder = os.path.join(workdir, ".snakemake", "incomplete")
    out = set()
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), folder).replace(os.sep, "")
            try:
                path = base64.urlsafe_b64decode(rel.encode()).decode()
            except (ValueError, UnicodeDecodeError):
                continue
            out.add(os.path.normpath(os.path.join(workdir, path)))
    return out


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


def job_states(production, workdir="."):
    """Set ``state`` (and ``reason`` for failures) on every job of ``production``.

    Parameters
    ----------
    production : Production
    workdir : str
        Snakemake's working directory (where ``.snakemake/`` lives).

    Returns
    -------
    list of Job
    """
    incomplete = _incomplete_markers(os.path.abspath(workdir))
    running = snakemake_running(workdir) if incomplete else False
    exists = {}

    def done(path):
        if path not in exists:
            exists[path] = os.path.exists(path) and os.path.normpath(path) not in incomplete
        return exists[path]

    for job in production.jobs:
        if done(job.output):
            job.state = "done"
        elif os.path.normpath(job.output) in incomplete:
            job.state = "running" if running else "interrupted"
        elif os.path.exists(job.log) and (reason := _last_error(job.log)):
            job.state, job.reason = "failed", reason
        elif all(done(n) for n in job.needs):
            job.state = "ready"
        else:
            job.state = "waiting"
    return production.jobs


def stale_products(production):
    """HEALPix spectra and coadd files on disk that no job of the production writes any more.

    A pixel whose every feeding exposure was dropped (LASTSTEP ignore, BADCAMWORD, an
    exposure-table override) keeps its old files, which Snakemake never touches again; users
    would read them as current. They are listed here so operators can remove them.

    Returns
    -------
    list of str
        Absolute paths, sorted.
    """
    planned = {os.path.normpath(j.output) for j in production.jobs if j.step in ("spectra", "coadd")}
    root = os.path.join(production.prod, "healpix")
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if not (name.startswith(("spectra-", "coadd-")) and name.endswith(".fits")):
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
