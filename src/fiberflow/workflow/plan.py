"""The plan of a production: every job, its inputs, outputs, log and command-line options.

One :class:`Plan` is built from the configuration and the nights' exposure tables (CSV edits,
raw exposures not yet in the CSV, the override file). Snakemake's rules (``rules/*.smk``) take
their input functions, options and target lists from it through the thin adapters of
``rules/common.smk``; ``fiberflow status`` iterates over the same jobs; later stages add their
jobs here. ``tests/test_plan.py`` checks that Snakemake's DAG holds exactly these jobs, each
with exactly these inputs.

The policy of the production lives here and only here:

- which exposures and cameras a step processes (LASTSTEP, CAMWORD, BADCAMWORD);
- the nightly calibrations and their fallbacks (an earlier production night within
  ``calibration.fallback_nights``, else the nominal PSF or the default fiberflat);
- which cframes feed each HEALPix pixel (the tilepix maps) and each tile coadd (every exposure
  of the tile up to a night, or of that night alone; ``coadds.flavours``);
- which products each frame's QA reads, and the QA history window.

Examples
--------
>>> plan = Plan(load_config("prod.yaml"))               # doctest: +SKIP
>>> job = plan.job("preproc", night=20250101, expid=12, camera="r0")   # doctest: +SKIP
>>> job.inputs["raw"], job.options                       # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .. import paths
from . import exptable as ffexp

#: step (Snakemake rule) -> file types of its outputs, the main one first
OUTPUTS = {
    "simulate_exposure": ("raw",),
    "exposure_table": ("exposure_table",),
    "biasnight": ("biasnight",),
    "preproc": ("preproc",),
    "tilepix": ("tilepix",),
    "psf": ("fitpsf",),
    "certify": ("certification",),  # of biasnight, psfnight, fiberflatnight, before their use
    "psfnight": ("psfnight",),
    "traceshift": ("psf",),
    "extract": ("frame",),  # + model with extract.model
    "fiberflat": ("fiberflat",),
    "fiberflatnight": ("fiberflatnight",),
    "sky": ("sframe", "sky"),
    "stdstars": ("stdstars",),
    "fluxcalib": ("fluxcalib",),
    "cframe": ("cframe",),
    "spectra": ("spectra",),
    "coadd": ("coadd",),
    "cumulative_spectra": ("spectra_cumulative",),
    "cumulative_coadd": ("coadd_cumulative",),
    "pernight_spectra": ("spectra_pernight",),
    "pernight_coadd": ("coadd_pernight",),
    "redrock": ("redrock",),
    "cumulative_redrock": ("redrock_cumulative",),
    "pernight_redrock": ("redrock_pernight",),
    "ztile": ("ztile",),
    "zpix": ("zpix",),
    "summary": ("tiles_summary", "tiles_summary_csv", "exposures_summary", "exposures_summary_csv"),
    "qa_frame": ("qa_frame", "qa_frame_png", "qa_frame_blink"),
    "qa_night": ("qa_night", "qa_night_html", "qa_night_trends", "qa_night_hist"),
    "qa_exposure": ("qa_exposure_html", "qa_exposure_png"),
    "tile_qa": ("tile_qa", "tile_qa_png"),
    "nightqa": ("nightqa_html",),
    "qc_ingest": ("qc_ingest",),
    "qc_health": ("qc_health_html", "qc_health_table"),
    "qa_production": ("qa_production_html", "qa_production_table", "qa_production_trends",
                      "qa_production_hist"),
}

#: step -> configuration sections its outputs depend on: their hash is one of the step's
#: params, so editing a section reruns exactly the steps that read it (Snakemake's params
#: trigger; `fiberflow status` calls such outputs stale)
HASHED_SECTIONS = {
    "simulate_exposure": ("instrument", "simulate"),
    "biasnight": ("instrument", "preproc"),
    "preproc": ("instrument", "preproc"),
    "psf": ("instrument", "psf"),
    "psfnight": ("instrument", "psf"),
    "traceshift": ("instrument", "traceshift"),
    "extract": ("instrument", "extract"),
    "fiberflat": ("instrument", "fiberflat"),
    "fiberflatnight": ("instrument", "fiberflat"),
    "sky": ("instrument", "sky"),
    "stdstars": ("instrument", "stdstars"),
    "fluxcalib": ("instrument", "fluxcalib"),
    "spectra": ("instrument",),
    "coadd": ("healpix",),
    "cumulative_spectra": ("instrument",),
    "cumulative_coadd": ("healpix",),
    "pernight_spectra": ("instrument",),
    "pernight_coadd": ("healpix",),
    "redrock": ("redshift",),
    "cumulative_redrock": ("redshift",),
    "pernight_redrock": ("redshift",),
}

#: steps in production order
STEPS = tuple(s for s in OUTPUTS if s != "simulate_exposure")

#: production-wide steps (no night): built by the target `all`, not by one night's
PRODUCTION_STEPS = ("qa_production", "qc_health", "ztile", "zpix", "summary")

#: jobs every later job of a night waits for (:meth:`Plan.priority`)
NIGHTLY_GATES = ("biasnight", "psfnight", "fiberflatnight", "certify")

#: per-exposure steps up to the cframe, with the frame QA (:meth:`Plan.priority`)
FRAME_CHAIN = ("preproc", "psf", "traceshift", "extract", "fiberflat", "sky", "stdstars", "fluxcalib", "cframe",
               "qa_frame")

#: OBSTYPEs that get frame QA
QA_OBSTYPES = ("ZERO", "DARK", "ARC", "FLAT", "SCIENCE")

#: job log of each step of a frame, as named on the frame QA pages
QA_STEP_LOGS = {
    "PREPROC": "preproc",
    "PSF": "psf",
    "TRACESHIFT": "traceshift",
    "EXTRACT": "extract",
    "FIBERFLAT": "fiberflat",
    "SKY": "sky",
    "FLUXCALIB": "fluxcalib",
    "CFRAME": "cframe",
}


@dataclass
class Job:
    """One job of the production.

    Attributes
    ----------
    step : str
        Snakemake rule name.
    ids : dict
        Identifiers of its outputs (night, expid, camera, spectrograph, tileid, survey, program, pix).
    outputs : list of str
        Absolute output paths, the main one first.
    log : str
        Job log ``{prod}/logs/{step}/{ident}.log``.
    inputs : dict
        Named inputs as the rule sees them: name -> path or list of paths.
    options : str
        Command-line options that depend on the plan (fallbacks, bad amplifiers, logs).
    night : int or None
        Night the job belongs to (None: HEALPix and production-wide jobs).
    error : str
        Why the job cannot run as configured (e.g. no starting PSF for a night without arcs);
        :meth:`Plan.job` raises it when Snakemake asks for the job.
    ordering : tuple of str
        Names of inputs that only order the job (Snakemake's ``ancient``): a newer file does not
        rerun it (a nightly calibration's certification and fallback: what reruns it on a ledger
        edit is the ledger's decision in its options).
    """

    step: str
    ids: dict
    outputs: list
    log: str
    inputs: dict = field(default_factory=dict)
    options: str = ""
    night: int | None = None
    error: str = ""
    state: str = ""
    reason: str = ""
    ordering: tuple = ()

    @property
    def output(self):
        """The main output."""
        return self.outputs[0]

    @property
    def needs(self):
        """Every input path, flattened, in order."""
        out = []
        for v in self.inputs.values():
            out += list(v) if isinstance(v, (list, tuple)) else [v]
        return out


def _key(ids):
    """Identifiers as a hashable key (integers as int, whatever form the caller had)."""
    return tuple(sorted((k, int(v) if k in paths.INT_IDS else str(v)) for k, v in ids.items()))


class Plan:
    """Every job of a production.

    Parameters
    ----------
    cfg : dict
        Validated configuration (:func:`fiberflow.config.validate_config`).
    workdir : str
        Snakemake's working directory (a relative ``qa.thresholds`` is looked up there first).
    configfile : str
        The configuration file the steps read (``--config`` of their command lines).
    """

    def __init__(self, cfg, workdir=".", configfile=""):
        from ..config import default_psf_dir, resolve_roots
        from ..instrument import load_instrument

        self.cfg = cfg
        self.workdir = os.path.abspath(workdir)
        self.configfile = configfile
        roots = resolve_roots(cfg)
        self.raw, self.prod = roots["raw"], roots["prod"]
        self.cameras = load_instrument(cfg["instrument"]).camera_names()
        self.nights = [int(n) for n in cfg["nights"]] or ffexp.nights_with_raw(self.raw)
        self.tables = {n: ffexp.night_table(self.raw, self.prod, n) for n in self.nights}
        #: what the configuration makes of the raw data that is probably not meant (printed by the workflow)
        self.warnings = []
        if not cfg["simulate"]["rule"]:
            if not os.path.isdir(self.raw):
                self.warnings.append(f"raw: {self.raw} does not exist: the production has no exposure "
                                     f"(`fiberflow config check` lists what is missing)")
            elif not self.nights:
                self.warnings.append(f"raw: {self.raw} holds no night folder (YYYYMMDD): the production has 0 nights")
            else:
                empty = [n for n in self.nights if not self.tables[n]]  # night_table read the raw folder
                if empty:
                    self.warnings.append(f"night(s) {', '.join(map(str, empty))}: no exposure under {self.raw}")
        self.default_psf_dir = default_psf_dir(cfg)
        self.default_fiberflat_dir = default_psf_dir(cfg, key="default_fiberflat")
        self.default_fluxcalib_dir = default_psf_dir(cfg, key="default_fluxcalib")
        self.pixflat_dir = default_psf_dir(cfg, key="pixflat")
        self.nside = int(cfg["healpix"]["nside"])
        self.qa_thresholds = qa_thresholds_path(cfg, self.workdir)
        self.breakpoints = sorted(int(b) for b in cfg["calibration"]["breakpoints"])
        self.certify = bool(cfg["calibration"]["certify"])
        if self.certify:
            from ..qa.certify import ledger_path, load_ledger

            self.ledger = load_ledger(ledger_path(cfg))
        else:
            self.ledger = []
        self.jobs = []
        self._index = {}
        self._found = {}
        self.pixels = {}
        self._build()

    # ---- look-ups --------------------------------------------------------------------
    def find(self, filetype, **ids):
        """Path of a production or raw file (cached)."""
        key = (filetype, tuple(sorted(ids.items())))
        path = self._found.get(key)
        if path is None:
            path = self._found[key] = paths.findfile(filetype, raw=self.raw, prod=self.prod, **ids)
        return path

    def config_hash(self, step):
        """Hash of the configuration sections ``step`` depends on (:data:`HASHED_SECTIONS`), with
        paths as relative to the configuration file as they were written (a moved production
        keeps its hashes)."""
        from ..config import relative_paths, section_hash

        if "_hashed_cfg" not in self.__dict__:  # the configuration as written, once per plan
            self._hashed_cfg = relative_paths(self.cfg, os.path.dirname(self.configfile)) if self.configfile \
                else self.cfg
            self._config_hashes = {}
        if step not in self._config_hashes:
            self._config_hashes[step] = section_hash(self._hashed_cfg, *HASHED_SECTIONS[step])
        return self._config_hashes[step]

    def log(self, step, ident):
        """Log of one job: {prod}/logs/{step}/{ident}.log."""
        return os.path.join(self.prod, "logs", step, f"{ident}.log")

    def benchmark(self, step, ident):
        """Benchmark of one job: {prod}/benchmarks/{step}/{ident}.tsv."""
        return os.path.join(self.prod, "benchmarks", step, f"{ident}.tsv")

    def rows(self, night, obstypes=None):
        """Exposure-table rows of a night that are not ignored (optionally of some OBSTYPEs)."""
        return [r for r in self.tables.get(int(night), [])
                if r["LASTSTEP"] != "ignore" and (obstypes is None or r["OBSTYPE"] in obstypes)]

    def row(self, night, expid):
        """The exposure-table row of one exposure (ignored ones too)."""
        for r in self.tables.get(int(night), []):
            if r["EXPID"] == int(expid):
                return r
        raise ValueError(f"exposure {int(expid)} is not in the exposure table of night {int(night)}")

    def priority(self, step, **ids):
        """Scheduling priority of a job (Snakemake runs the highest of the ready jobs first, then
        those with the largest inputs).

        A night's cframes wait for its nightly calibrations: the calibrations (and their
        certification; seconds each) come first (40), then every per-frame job of the zeros,
        darks, arcs and flats they are made from or certified with (30), the science preprocs
        (20) and the rest of the science chain up to the cframe with the frame QA (10); tile and
        HEALPix products, redrock and night-level QA last (0). Without it a 1-s psfnight waited
        10 minutes behind large-input extractions, and the b camera's preprocs behind the
        science extractions until a zero's frame QA had run.
        """
        if step in NIGHTLY_GATES:
            return 40
        if step not in FRAME_CHAIN or "night" not in ids or "expid" not in ids:
            return 0
        try:
            obstype = self.row(ids["night"], ids["expid"])["OBSTYPE"]
        except ValueError:
            return 0
        if obstype in ("ZERO", "DARK", "ARC", "FLAT"):
            return 30  # the zeros' frame QA certifies the master bias every preproc reads
        return 20 if step == "preproc" else 10

    def cams(self, r):
        """Cameras an exposure-table row processes."""
        return ffexp.cameras_of(r, self.cameras)

    def breakpoint_of(self, night):
        """The latest configured breakpoint (instrument change) on or before ``night``, else 0."""
        return max([b for b in self.breakpoints if b <= int(night)], default=0)

    def fallback_night(self, night, obstype, camera):
        """Nearest earlier production night with a usable ``obstype`` exposure of ``camera``,
        within ``calibration.fallback_nights`` days and not before the night's latest breakpoint;
        None when there is none."""
        night = int(night)
        limit = self.cfg["calibration"]["fallback_nights"]
        since = self.breakpoint_of(night)
        best = None
        for n in sorted(self.nights):
            if since <= n < night and ffexp.nights_apart(n, night) <= limit and \
                    any(camera in self.cams(r) for r in self.rows(n, (obstype,))):
                best = n
        return best

    def default_psf(self, camera):
        """Nominal PSF of a camera (calibration.default_psf/psf-{camera}.fits)."""
        if not self.default_psf_dir:
            raise ValueError("calibration.default_psf is not set: the psf and psfnight steps need a starting "
                             "PSF (write the nominal ones with `fiberflow calibinit --config CONFIG`)")
        return os.path.join(self.default_psf_dir, f"psf-{camera}.fits")

    def job(self, step, **ids):
        """The job of ``step`` whose outputs have these identifiers (Snakemake wildcards work:
        extra ones such as ``yyyymm`` are ignored).

        Raises
        ------
        ValueError
            When the production plans no such job (an ignored exposure, a camera not in the
            exposure's CAMWORD, a pixel no fiber falls in).
        """
        filetype = OUTPUTS[step][0]
        mine = {k: ids[k] for k in paths.template_fields(filetype) if k in ids}
        job = self._index.get((step, _key(mine)))
        if job is None:
            norm = dict(_key(mine))
            what = ", ".join(f"{k}={norm[k]}" for k in mine)
            raise ValueError(f"the production plans no {step} job for {what} "
                             f"({paths.findfile(filetype, raw=self.raw, prod=self.prod, **mine)}): "
                             "check the exposure table (LASTSTEP, CAMWORD, BADCAMWORD) and the nights")
        if job.error:
            raise ValueError(job.error)
        return job

    def steps(self, step):
        """The jobs of one step, in plan order."""
        return [j for j in self.jobs if j.step == step]

    # ---- targets ---------------------------------------------------------------------
    def targets(self, nights=None, production=True):
        """Main output of every job of the given nights (default all), the HEALPix spectra and
        coadds of the pixels their exposures feed and, with ``production``, the
        production-wide QA."""
        if nights is None:
            nights, pixels = self.nights, self.pixels
        else:
            nights = {int(n) for n in nights}
            pixels = {k: v for k, v in self.pixels.items() if any(n in nights for n, _e, _p in v)}
        out = [j.output for j in self.jobs if j.night is not None and j.night in nights
               and j.step != "simulate_exposure"]
        out += [self.find(kind, survey=s, program=p, pix=pix) for (s, p, pix) in pixels
                for kind in self._pixel_products()]
        if production:
            out += [j.output for j in self.jobs if j.step in PRODUCTION_STEPS]
        return out

    def exposure_targets(self, night, expid):
        """The last product and the frame QA of every camera of one exposure: fitted PSFs of an
        arc, fiberflats of a flat, cframes (sframes when LASTSTEP is skysub) of a science
        exposure, the nightly bias a ZERO or DARK is compared with."""
        r = self.row(night, expid)
        if r["LASTSTEP"] == "ignore":
            return []
        night, expid = int(night), int(expid)
        if r["OBSTYPE"] in ("ZERO", "DARK"):
            cams = self.qa_cameras(night, r)
            return [self.find("biasnight", night=night, camera=c) for c in cams] + \
                [self.find("qa_frame", night=night, expid=expid, camera=c) for c in cams]
        last = {"ARC": "fitpsf", "FLAT": "fiberflat",
                "SCIENCE": "cframe" if ffexp.flux_calibrated(r) else "sframe"}.get(r["OBSTYPE"])
        if last is None:
            return []
        ids = [dict(night=night, expid=expid, camera=c) for c in self.cams(r)]
        return [self.find(last, **i) for i in ids] + [self.find("qa_frame", **i) for i in ids]

    def tile_targets(self, tileid):
        """Every exposure of one tile over the production's nights (as
        :meth:`exposure_targets`), the tile's coadds, redrock files and tile QA, and the spectra
        and coadds of the HEALPix pixels its exposures feed."""
        exps = [(n, r) for n in self.nights for r in self.rows(n, ("SCIENCE",)) if int(r["TILEID"]) == int(tileid)]
        if not exps:
            raise ValueError(f"tile {tileid} has no science exposure in this production")
        out = [t for n, r in exps for t in self.exposure_targets(n, r["EXPID"])]
        out += [j.output for j in self.jobs if (j.step.endswith(("_coadd", "_redrock")) or j.step == "tile_qa")
                and j.ids.get("tileid") == int(tileid)]
        fed = {(n, int(r["EXPID"])) for n, r in exps}
        for (survey, program, pix), feeds in self.pixels.items():
            if any((night, expid) in fed for night, expid, _ in feeds):
                out += [self.find(kind, survey=survey, program=program, pix=pix) for kind in self._pixel_products()]
        return out

    def _pixel_products(self):
        """File types written for every HEALPix pixel."""
        return ("spectra", "coadd", "redrock") if self.cfg["redshift"]["enabled"] else ("spectra", "coadd")

    def simulate_targets(self):
        """Raw file of every simulated exposure (simulate.rule: true)."""
        return [j.output for j in self.steps("simulate_exposure")]

    def qa_cameras(self, night, r):
        """Cameras of an exposure that get frame QA (ZERO / DARK: those with a nightly bias)."""
        if r["OBSTYPE"] in ("ZERO", "DARK"):
            zeros = {c for z in self.rows(night, ("ZERO",)) for c in self.cams(z)}
            return [c for c in self.cams(r) if c in zeros]
        return self.cams(r)

    # ---- building --------------------------------------------------------------------
    def _add(self, step, ids, ident, inputs=None, options="", night=None, error="", ordering=()):
        ids = {k: v for k, v in ids.items() if v is not None}
        outputs = [self.find(ft, **ids) for ft in OUTPUTS[step]]
        if step == "extract" and self.cfg["extract"].get("model"):
            outputs.append(self.find("model", **ids))
        job = Job(step, ids, outputs, self.log(step, ident), dict(inputs or {}), options, night, error,
                  ordering=tuple(ordering))
        key = (step, _key({k: ids[k] for k in paths.template_fields(OUTPUTS[step][0])}))
        if key in self._index:
            raise ValueError(f"the plan has two {step} jobs writing {outputs[0]}")
        self._index[key] = job
        self.jobs.append(job)
        return job

    def _build(self):
        if self.cfg["simulate"]["rule"]:
            self._simulate()
        for night in self.nights:
            self._night(night)
        self._healpix()
        self._tiles()
        self._qa()
        self._catalogs()
        self._tile_qa()
        self._qc_ingest()
        self._qc_health()
        self._qa_production()

    def _simulate(self):
        from ..sim.plan import default_plan, load_plan, parse_plan

        sim = self.cfg["simulate"]
        if sim["plan"]:
            plan = load_plan(sim["plan"])
            plans = {plan.night: plan}
        elif not self.cfg["nights"]:
            raise ValueError("the simulate rules need the nights listed in the config "
                             "(or a simulate.plan naming its night)")
        else:
            plans = {int(n): parse_plan(default_plan(int(n)), where="built-in demo plan") for n in self.cfg["nights"]}
        inputs = {"plan": [sim["plan"]]} if sim["plan"] else {}
        for night, plan in plans.items():
            for expid in plan.expids():
                self._add("simulate_exposure", dict(night=night, expid=expid), f"{night}/{int(expid):08d}",
                          inputs, night=night)

    def _night(self, night):
        if not self.tables.get(night):
            return
        self._add("exposure_table", dict(night=night), f"{night}-{str(night)[:6]}", night=night)
        zeros = {c: [r for r in self.rows(night, ("ZERO",)) if c in self.cams(r)] for c in self.cameras}
        for cam in self.cameras:
            if zeros[cam]:
                self._add("biasnight", dict(night=night, camera=cam), f"{night}-{cam}",
                          {"zeros": [self.find("raw", night=night, expid=r["EXPID"]) for r in zeros[cam]]},
                          night=night)
        for r in self.rows(night, ("ARC", "FLAT", "SCIENCE")):
            for cam in self.cams(r):
                self._preproc(night, r, cam, bool(zeros[cam]))
        for r in self.rows(night, ("ARC",)):
            for cam in self.cams(r):
                ids = dict(night=night, expid=r["EXPID"], camera=cam)
                earlier = self.fallback_night(night, "ARC", cam) if self.cfg["psf"]["start"] == "previous" else None
                start, error = self._default(self.default_psf, cam)
                if earlier is not None:
                    start, error = self.find("psfnight", night=earlier, camera=cam), ""
                inputs = {"preproc": self.find("preproc", **ids)} | ({"start": start} if start else {})
                self._add("psf", ids, f"{night}/{r['EXPID']:08d}-{cam}", inputs, night=night, error=error)
        used = {c for r in self.rows(night) for c in self.cams(r)}
        for cam in (c for c in self.cameras if c in used):
            self._nightly("psfnight", night, cam, "ARC", "fitpsf", "psfs", self.default_psf)
        for r in self.rows(night, ("FLAT", "SCIENCE")):
            for cam in self.cams(r):
                ids = dict(night=night, expid=r["EXPID"], camera=cam)
                ident = f"{night}/{r['EXPID']:08d}-{cam}"
                self._add("traceshift", ids, ident, {"preproc": self.find("preproc", **ids),
                                                     "psf": self.find("psfnight", night=night, camera=cam)},
                          night=night)
                self._add("extract", ids, ident, {"preproc": self.find("preproc", **ids),
                                                  "psf": self.find("psf", **ids)}, night=night)
                if r["OBSTYPE"] == "FLAT":
                    self._add("fiberflat", ids, ident, {"frame": self.find("frame", **ids)}, night=night)
        flatcams = {c for r in self.rows(night, ("FLAT", "SCIENCE")) for c in self.cams(r)}
        for cam in sorted(flatcams):
            self._nightly("fiberflatnight", night, cam, "FLAT", "fiberflat", "flats", self.default_fiberflat)
        for r in self.rows(night, ("SCIENCE",)):
            self._calibchain(night, r)

    def _preproc(self, night, r, cam, has_bias):
        ids = dict(night=night, expid=r["EXPID"], camera=cam)
        inputs = {"raw": self.find("raw", night=night, expid=r["EXPID"])}
        if has_bias:
            inputs["biasnight"] = self.find("biasnight", night=night, camera=cam)
        if self.pixflat_dir:
            inputs["pixflat"] = os.path.join(self.pixflat_dir, f"pixflat-{cam}.fits")
        if r["OBSTYPE"] == "SCIENCE":
            inputs["fibermap"] = self.find("fibermap", night=night, expid=r["EXPID"])
        opts = [f"--{k} {inputs[k]}" for k in ("biasnight", "pixflat", "fibermap") if k in inputs]
        amps = ",".join(sorted(ffexp.parse_badamps(r["BADAMPS"]).get(cam, set())))
        if amps:
            opts.append(f"--badamps {amps}")
        ordering = ()
        if has_bias and self.certify:
            # the master bias is certified from the night's ZEROs' frame QA before use (as
            # psfnight / fiberflatnight, _nightly); a REJECTED one: an earlier night's, else overscan only
            from ..qa.certify import ledger_decision

            qa = [self.find("qa_frame", night=night, expid=z["EXPID"], camera=cam)
                  for z in self.rows(night, ("ZERO",)) if cam in self.cams(z)]
            history = self._cert_history(night, "biasnight")
            inputs.update({"qa": qa, "thresholds": self.qa_thresholds, "history": history})
            opts += [f"--qa {' '.join(qa)}", f"--thresholds {self.qa_thresholds}",
                     f"--ledger-decision {ledger_decision(self.ledger, 'biasnight', night, cam)}"]
            if history:
                opts.append(f"--history {' '.join(history)}")
            ordering = ("thresholds", "history")
            earlier = self.fallback_night(night, "ZERO", cam)
            if earlier is not None:
                inputs["fallback_bias"] = self.find("biasnight", night=earlier, camera=cam)
                opts.append(f"--fallback-bias {inputs['fallback_bias']}")
                ordering += ("fallback_bias",)
        self._add("preproc", ids, f"{night}/{r['EXPID']:08d}-{cam}", inputs, " ".join(opts), night=night,
                  ordering=ordering)

    def default_fiberflat(self, camera):
        """calibration.default_fiberflat/fiberflat-{camera}.fits, or None when not configured."""
        if not self.default_fiberflat_dir:
            return None
        return os.path.join(self.default_fiberflat_dir, f"fiberflat-{camera}.fits")

    def average_fluxcalib(self, camera):
        """calibration.default_fluxcalib/fluxcalib-avg-{camera}.fits, or None when not configured."""
        if not self.default_fluxcalib_dir:
            return None
        return os.path.join(self.default_fluxcalib_dir, f"fluxcalib-avg-{camera}.fits")

    def _nightly(self, step, night, cam, obstype, per_exposure, name, default):
        """A nightly calibration (psfnight, fiberflatnight) from the night's per-exposure
        products, else the nearest earlier night's nightly file, else the default one."""
        exps = [r for r in self.rows(night, (obstype,)) if cam in self.cams(r)]
        earlier = self.fallback_night(night, obstype, cam)
        if earlier is not None:
            fallback, error = self.find(step, night=earlier, camera=cam), ""
        else:
            fallback, error = self._default(default, cam)
        ordering = ()
        if exps:
            files = [self.find(per_exposure, night=night, expid=r["EXPID"], camera=cam) for r in exps]
            inputs, opts = {name: files}, ["-i " + " ".join(files)]
            error = ""
            if self.certify:
                # certified before use, from the frame QA of its exposures (as the certify job, which
                # records the decision; the ledger's decision is in the options, so editing it reruns
                # exactly this job); a REJECTED one is replaced by the fallback. The thresholds, the
                # earlier certifications and the fallback only order the job: a threshold edit does
                # not re-associate the calibrations (`fiberflow status` flags what it would change)
                from ..qa.certify import ledger_decision

                qa = [self.find("qa_frame", night=night, expid=r["EXPID"], camera=cam) for r in exps]
                history = self._cert_history(night, step)
                inputs.update({"qa": qa, "thresholds": self.qa_thresholds, "history": history})
                opts += [f"--qa {' '.join(qa)}", f"--thresholds {self.qa_thresholds}",
                         f"--ledger-decision {ledger_decision(self.ledger, step, night, cam)}"]
                if history:
                    opts.append(f"--history {' '.join(history)}")
                ordering = ("thresholds", "history")
                if fallback:
                    inputs["fallback"] = fallback
                    opts.append(f"--fallback {fallback}")
                    ordering += ("fallback",)
        else:
            inputs = {"fallback": fallback} if fallback else {}
            opts = [f"--fallback {fallback}"] if fallback else []
        self._add(step, dict(night=night, camera=cam), f"{night}-{cam}", inputs, " ".join(opts), night=night,
                  error=error, ordering=ordering)

    @staticmethod
    def _default(default, cam):
        """(path, "") of a default calibration, or (None, why) when it is not configured."""
        try:
            return default(cam), ""
        except ValueError as exc:
            return None, str(exc)

    def _calibchain(self, night, r):
        expid = r["EXPID"]
        cams = self.cams(r)
        for cam in cams:
            ids = dict(night=night, expid=expid, camera=cam)
            self._add("sky", ids, f"{night}/{expid:08d}-{cam}",
                      {"frame": self.find("frame", **ids),
                       "fiberflat": self.find("fiberflatnight", night=night, camera=cam)}, night=night)
        if not ffexp.flux_calibrated(r):  # LASTSTEP skysub stops at the sframes
            return
        for sp in sorted({int(c[1:]) for c in cams}):
            self._add("stdstars", dict(night=night, expid=expid, spectrograph=sp), f"{night}/{expid:08d}-{sp}",
                      {"sframes": [self.find("sframe", night=night, expid=expid, camera=c)
                                   for c in cams if int(c[1:]) == sp]}, night=night)
        for cam in cams:
            ids = dict(night=night, expid=expid, camera=cam)
            inputs = {"sframe": self.find("sframe", **ids),
                      "stdstars": self.find("stdstars", night=night, expid=expid, spectrograph=int(cam[1:]))}
            if self.average_fluxcalib(cam):
                inputs["average"] = self.average_fluxcalib(cam)
            self._add("fluxcalib", ids, f"{night}/{expid:08d}-{cam}", inputs, night=night)
            self._add("cframe", ids, f"{night}/{expid:08d}-{cam}",
                      {"sframe": self.find("sframe", **ids), "fluxcalib": self.find("fluxcalib", **ids)},
                      night=night)

    def healpix_exposures(self, nights=None):
        """Science exposures that feed the HEALPix stage: a tile, LASTSTEP all, some camera."""
        return [(n, r) for n in (nights or self.nights) for r in self.rows(n, ("SCIENCE",))
                if r["LASTSTEP"] == "all" and int(r["TILEID"]) >= 0 and self.cams(r)]

    def _healpix(self):
        from .tilepix import pixel_groups

        exposures = []
        for night, r in self.healpix_exposures():
            ids = dict(night=night, expid=r["EXPID"], tileid=r["TILEID"])
            fibermap = self.find("fibermap", night=night, expid=r["EXPID"])
            tp = self._add("tilepix", ids, f"{night}/{r['EXPID']:08d}-{r['TILEID']}", {"fibermap": fibermap},
                           night=night).output
            exposures.append({"NIGHT": night, "EXPID": r["EXPID"], "SURVEY": r["SURVEY"], "PROGRAM": r["PROGRAM"],
                              "petals": {int(c[1:]) for c in self.cams(r)}, "fibermap": fibermap, "tilepix": tp})
        if not exposures or "healpix" not in self.cfg["coadds"]["flavours"]:
            return
        hp = self.cfg["healpix"]
        self.pixels = pixel_groups(exposures, self.nside, hp["survey"], hp["program"])
        for (survey, program, pix), feeds in self.pixels.items():
            cframes = []
            for night, expid, petal in feeds:
                r = self.row(night, expid)
                cframes += [self.find("cframe", night=night, expid=expid, camera=c)
                            for c in self.cams(r) if int(c[1:]) == petal]
            ids = dict(survey=survey, program=program, pix=pix)
            ident = f"{survey}/{program}/{pix // 100}/{pix}"
            spectra = self._add("spectra", ids, ident, {"cframes": cframes}).output
            coadd = self._add("coadd", ids, ident, {"spectra": spectra}).output
            if self.cfg["redshift"]["enabled"]:
                self._add("redrock", ids, ident, {"coadd": coadd})

    def tile_exposures(self):
        """{tileid: [(night, row), ...]} of the exposures that feed tile coadds (as the HEALPix
        stage: LASTSTEP all, some camera), in night order."""
        out = {}
        for night, r in self.healpix_exposures():
            out.setdefault(int(r["TILEID"]), []).append((night, r))
        return out

    def _tiles(self):
        """Tile coadds of each petal: cumulative (every exposure of the tile up to each of its
        nights) and per night, as ``coadds.flavours`` asks."""
        flavours = [f for f in ("cumulative", "pernight") if f in self.cfg["coadds"]["flavours"]]
        for tileid, exps in self.tile_exposures().items():
            for night in sorted({n for n, _ in exps}):
                for flavour in flavours:
                    used = [(n, r) for n, r in exps if (n <= night if flavour == "cumulative" else n == night)]
                    for sp in sorted({int(c[1:]) for _, r in used for c in self.cams(r)}):
                        cframes = [self.find("cframe", night=n, expid=r["EXPID"], camera=c)
                                   for n, r in used for c in self.cams(r) if int(c[1:]) == sp]
                        ids = dict(tileid=tileid, night=night, spectrograph=sp)
                        ident = f"{tileid}/{night}/{sp}"
                        spectra = self._add(f"{flavour}_spectra", ids, ident, {"cframes": cframes}, night=night)
                        coadd = self._add(f"{flavour}_coadd", ids, ident, {"spectra": spectra.output}, night=night)
                        if self.cfg["redshift"]["enabled"]:
                            self._add(f"{flavour}_redrock", ids, ident, {"coadd": coadd.output}, night=night)

    def _qa_frame(self, night, r, cam):
        expid = r["EXPID"]
        ids = dict(night=night, expid=expid, camera=cam)
        ident = f"{night}/{expid:08d}-{cam}"
        opts = [f"--prod {self.prod}"]
        obstype = r["OBSTYPE"]
        if obstype in ("ZERO", "DARK"):
            inputs = {"raw": self.find("raw", night=night, expid=expid),
                      "biasnight": self.find("biasnight", night=night, camera=cam)}
            opts += [f"--{k} {v}" for k, v in inputs.items()]
            opts += [f"--config {self.configfile}", f"--log BIAS={self.log('biasnight', f'{night}-{cam}')}"]
            return self._add("qa_frame", ids, ident, inputs, " ".join(opts), night=night)
        inputs = {"preproc": self.find("preproc", **ids)}
        if obstype == "ARC":
            inputs["psf"] = self.find("fitpsf", **ids)
        else:
            inputs["psf"] = self.find("psf", **ids)
            inputs["frame"] = self.find("frame", **ids)
            if obstype == "FLAT":
                inputs["fiberflat"] = self.find("fiberflat", **ids)
            if obstype == "SCIENCE":
                inputs["sky"] = self.find("sky", **ids)
                inputs["sframe"] = self.find("sframe", **ids)
                if ffexp.flux_calibrated(r):
                    inputs["fluxcalib"] = self.find("fluxcalib", **ids)
                    inputs["cframe"] = self.find("cframe", **ids)
                    inputs["stdstars"] = self.find("stdstars", night=night, expid=expid, spectrograph=int(cam[1:]))
        opts += [f"--{k} {v}" for k, v in inputs.items()]
        for step, name in QA_STEP_LOGS.items():
            if not (step == "TRACESHIFT" and obstype == "ARC"):
                opts.append(f"--log {step}={self.log(name, ident)}")
        if obstype == "SCIENCE":
            opts.append(f"--log STDSTARS={self.log('stdstars', f'{night}/{expid:08d}-{int(cam[1:])}')}")
        return self._add("qa_frame", ids, ident, inputs, " ".join(opts), night=night)

    def _qa(self):
        from ..qa.scoring import load_thresholds

        history = load_thresholds(self.qa_thresholds)["history"]["nights"]
        qa_rows = {n: [r for r in self.rows(n, QA_OBSTYPES) if self.qa_cameras(n, r)] for n in self.nights}
        qa_nights = [n for n in self.nights if qa_rows[n]]
        for night in qa_nights:
            frames = {}
            for r in qa_rows[night]:
                frames[r["EXPID"]] = [self._qa_frame(night, r, cam).output for cam in self.qa_cameras(night, r)]
            since = self.breakpoint_of(night)
            earlier = [n for n in sorted(qa_nights) if since <= n < night][-history:] if history else []
            certs = self._certify(night, qa_rows[night], frames) if self.certify else []
            nightqa = self._add("qa_night", dict(night=night), str(night),
                                {"frames": [f for fs in frames.values() for f in fs],
                                 "history": [self.find("qa_night", night=n) for n in earlier],
                                 "certification": certs,
                                 "thresholds": self.qa_thresholds}, night=night).output
            for r in qa_rows[night]:
                self._add("qa_exposure", dict(night=night, expid=r["EXPID"]), f"{night}/{r['EXPID']:08d}",
                          {"nightqa": nightqa, "frames": frames[r["EXPID"]]}, night=night)

    def _cert_history(self, night, calibration):
        """Certification records of ``calibration`` of the earlier production nights with its
        exposures, since the night's breakpoint, within the QA history window."""
        from ..qa.certify import CALIBRATIONS
        from ..qa.scoring import load_thresholds

        if not hasattr(self, "_history_nights"):
            self._history_nights = load_thresholds(self.qa_thresholds)["history"]["nights"]
        if not self._history_nights:
            return []
        obstype = CALIBRATIONS[calibration][0]
        since = self.breakpoint_of(night)
        nights = [n for n in sorted(self.nights) if since <= n < int(night) and self.rows(n, (obstype,))]
        return [self.find("certification", night=n, calibration=calibration) for n in nights[-self._history_nights:]]

    def _certify(self, night, rows, frames):
        """Certification of the night's biasnight, psfnight and fiberflatnight from the frame QA
        of their exposures (ZERO, ARC, FLAT), with the earlier certifications of the same
        calibration since the night's breakpoint as history (ordering only); the ledger's entries
        of the calibration and night are in the options, so editing them reruns this job alone.
        Returns the certification files of the night."""
        from ..qa.certify import CALIBRATIONS, ledger_digest, ledger_entries

        out = []
        for calib, (obstype, _step) in CALIBRATIONS.items():
            files = [f for r in rows if r["OBSTYPE"] == obstype for f in frames[r["EXPID"]]]
            if not files:
                continue
            digest = ledger_digest(ledger_entries(self.ledger, calib, night))
            job = self._add("certify", dict(night=night, calibration=calib), f"{night}-{calib}",
                            {"frames": files, "history": self._cert_history(night, calib),
                             "thresholds": self.qa_thresholds},
                            f"--ledger-digest {digest}", night=night, ordering=("history",))
            out.append(job.output)
        return out

    def _catalogs(self):
        """Redshift catalogs (redshift.enabled): ztile of each survey/program from every tile's
        latest cumulative redrock files, zpix from its HEALPix redrock files; then the
        production summaries (tiles, exposures) of every exposure that reached its cframes."""
        ztiles = []
        if self.cfg["redshift"]["enabled"]:
            last = {}
            for j in self.steps("cumulative_redrock"):
                t = j.ids["tileid"]
                last[t] = max(last.get(t, 0), j.ids["night"])
            groups = {}
            for tileid, exps in self.tile_exposures().items():
                key = (exps[0][1]["SURVEY"], exps[0][1]["PROGRAM"])
                groups.setdefault(key, []).extend(
                    j.output for j in self.steps("cumulative_redrock")
                    if j.ids["tileid"] == tileid and j.ids["night"] == last.get(tileid))
            for (survey, program), files in sorted(groups.items()):
                if files:
                    ztiles.append(self._add("ztile", dict(survey=survey, program=program), f"{survey}-{program}",
                                            {"redrock": files}).output)
            pix = {}
            for j in self.steps("redrock"):
                pix.setdefault((j.ids["survey"], j.ids["program"]), []).append(j.output)
            for (survey, program), files in sorted(pix.items()):
                self._add("zpix", dict(survey=survey, program=program), f"{survey}-{program}", {"redrock": files})
        exps = self.healpix_exposures()
        nightqa = [j.output for j in self.steps("qa_night")]
        if exps and nightqa:
            cframes = [self.find("cframe", night=n, expid=r["EXPID"], camera=c) for n, r in exps for c in self.cams(r)]
            specprod = os.path.basename(os.path.normpath(self.prod))
            self._add("summary", dict(specprod=specprod), specprod,
                      {"qa_night": nightqa, "cframes": cframes, "ztile": ztiles})


    def _tile_qa(self):
        """Tile QA (redshift.enabled) of every cumulative tile and night from its petals' redrock
        files and coadds (sky fibers); the tile's program comes from its exposures. With the
        thresholds' ``tile_qa.reference: history`` each also reads the latest tile QA of the other
        tiles of earlier nights (its reference once enough of them are NORMAL)."""
        if not self.cfg["redshift"]["enabled"]:
            return
        groups, coadds = {}, {}
        for j in self.steps("cumulative_redrock"):
            groups.setdefault((j.ids["tileid"], j.ids["night"]), []).append(j.output)
        for j in self.steps("cumulative_coadd"):
            coadds.setdefault((j.ids["tileid"], j.ids["night"]), []).append(j.output)
        texps = self.tile_exposures()
        from ..qa.scoring import load_thresholds
        from ..qa.tileqa import settings

        st = settings(load_thresholds(self.qa_thresholds))
        for (tileid, night), files in sorted(groups.items()):
            program = texps[tileid][0][1]["PROGRAM"] if texps.get(tileid) else ""
            history = []
            if st["reference"] == "history":
                # the latest QA of every other tile before this night, the most recent tiles first
                latest = {}
                for (t, n) in groups:
                    if t != tileid and n < night and n > latest.get(t, 0):
                        latest[t] = n
                recent = sorted(latest.items(), key=lambda tn: (-tn[1], tn[0]))[:st["history_tiles"]]
                history = [self.find("tile_qa", tileid=t, night=n) for t, n in sorted(recent)]
            self._add("tile_qa", dict(tileid=tileid, night=night), f"{tileid}/{night}",
                      {"redrock": sorted(files), "coadd": sorted(coadds[(tileid, night)]), "history": history,
                       "thresholds": self.qa_thresholds},
                      options=f"--program {program}" if program else "", night=night)
        for nq in self.steps("qa_night"):
            night = nq.ids["night"]
            tiles = [j.output for j in self.steps("tile_qa") if j.ids["night"] == night]
            if tiles:
                self._add("nightqa", dict(night=night), str(night), {"qa_night": nq.output, "tile_qa": tiles},
                          night=night)

    def _qc_ingest(self):
        """The QC1 parameters of every night with QA (its night QA record and tile QAs) into the QC1
        database; the job's output is a receipt of what went in."""
        for nq in self.steps("qa_night"):
            night = nq.ids["night"]
            tiles = [j.output for j in self.steps("tile_qa") if j.ids["night"] == night]
            self._add("qc_ingest", dict(night=night), str(night),
                      {"qa_night": nq.output, "tile_qa": tiles, "certification": nq.inputs["certification"]},
                      night=night)

    def _qc_health(self):
        """The health check of the production's last night against the QC1 database's history,
        after every night's ingestion (the receipts are its inputs)."""
        receipts = [j.output for j in self.steps("qc_ingest")]
        if receipts:
            self._add("qc_health", {}, "production", {"receipts": receipts, "thresholds": self.qa_thresholds})

    def _qa_production(self):
        """Production QA index of every night with QA (linking the night QA reports)."""
        nights = [j.ids["night"] for j in self.steps("qa_night")]
        if nights:
            self._add("qa_production", {}, "production",
                      {"nights": [self.find("qa_night", night=n) for n in nights],
                       "nightqa": [j.output for j in self.steps("nightqa")]})


def qa_thresholds_path(cfg, workdir=".", section="qa"):
    """config ``qa.thresholds`` (or ``quicklook.thresholds``): absolute, else relative to the
    working directory, else the workflow's own (the shipped ``config/qa.yaml``,
    :func:`fiberflow.reference.workflow_dir`)."""
    path = cfg[section]["thresholds"]
    if os.path.isabs(path):
        return path
    if os.path.exists(os.path.join(workdir, path)):
        return os.path.abspath(os.path.join(workdir, path))
    from ..reference import workflow_dir

    return os.path.join(workflow_dir(), path)
