"""The night-time quick-look of a production: what ``fiberflow watch`` runs for each exposure as it
arrives, through its own Snakefile (``Snakefile.quicklook``, rules in ``rules/quicklook.smk``).

Quick-look products live under ``{prod}/quicklook/{night}/{expid:08d}/`` (DESI file names, a ``q``
in front of the extracted ones as in DESI's qproc: ``preproc``, ``qframe``, ``qsky``,
``qsframe``, then ``qa-{camera}-{expid}.json`` per camera and ``qa-{expid}.json`` / ``.html`` per
exposure). The full reduction never reads them and the quick-look never writes outside that
subtree: it reads the production's nightly calibrations as they are at the moment the exposure
arrives.

**The calibrations an exposure uses** are chosen once, when the watcher takes it, and written to
``qlcalib-{expid}.json`` (the quick-look's record of what it used, read by every job of that
exposure): per camera, tonight's ``biasnight`` / ``psfnight`` / ``fiberflatnight`` when the
production has made it, else the nearest earlier night's within ``calibration.fallback_nights``
and not before the latest breakpoint, never one whose certification says REJECTED; else the
nominal PSF (``calibration.default_psf``), the default fiberflat, or none (overscan only, a
unity fiberflat). For the fiberflat, the quick-look's own fiberflat of a night's last flat (made
from its boxcar extraction, as the science it divides, and not an ALARM) comes before the
production's fiberflatnight of that night.

Examples
--------
>>> ql = QuickLook(load_config("prod.yaml"))              # doctest: +SKIP
>>> ql.write_manifest(20250101, 12)                        # doctest: +SKIP
>>> ql.exposure_target(20250101, 12)                       # doctest: +SKIP
"""

from __future__ import annotations

import functools
import glob
import os
import re

from .. import paths
from . import exptable as ffexp

#: nightly calibrations a quick-look frame uses: name -> (config key of the default folder,
#: default file name, OBSTYPEs that use it)
CALIBRATIONS = {
    "biasnight": (None, None, ("ZERO", "DARK", "ARC", "FLAT", "SCIENCE")),
    "psfnight": ("default_psf", "psf-{camera}.fits", ("FLAT", "SCIENCE")),
    "fiberflatnight": ("default_fiberflat", "fiberflat-{camera}.fits", ("SCIENCE",)),
}

#: QA steps of each check family shown by the monitor (nightwatch's amp/camera, fiber and spectra
#: checks; LIneA's CHECK CCDS / CHECK FIBERS / CHECK SPECTRA)
FAMILIES = {"CCD": ("PREPROC", "BIAS"), "FIBERS": ("PSF", "TRACESHIFT", "EXTRACT", "FIBERFLAT"),
            "SPECTRA": ("SKY", "STDSTARS", "FLUXCALIB", "CFRAME")}


class QuickLook:
    """The quick-look plan of a production.

    Parameters
    ----------
    cfg : dict
        Validated configuration.
    configfile : str
        The configuration file the jobs read.
    """

    def __init__(self, cfg, configfile=""):
        from ..config import default_psf_dir, resolve_roots
        from ..instrument import load_instrument

        self.cfg = cfg
        self.configfile = configfile
        roots = resolve_roots(cfg)
        self.raw, self.prod = roots["raw"], roots["prod"]
        self.root = os.path.join(self.prod, "quicklook")
        self.cameras = load_instrument(cfg["instrument"]).camera_names()
        self.options = cfg["quicklook"]
        self.breakpoints = sorted(int(b) for b in cfg["calibration"]["breakpoints"])
        self.defaults = {k: default_psf_dir(cfg, key=key) for k, (key, _f, _o) in CALIBRATIONS.items() if key}

    def find(self, filetype, **ids):
        """Path of a raw, production or quick-look file."""
        return paths.findfile(filetype, raw=self.raw, prod=self.prod, **ids)

    def log(self, step, ident):
        """Log of one quick-look job: {prod}/quicklook/logs/{step}/{ident}.log."""
        return os.path.join(self.root, "logs", step, f"{ident}.log")

    def benchmark(self, step, ident):
        """Benchmark of one quick-look job: {prod}/quicklook/benchmarks/{step}/{ident}.tsv."""
        return os.path.join(self.root, "benchmarks", step, f"{ident}.tsv")

    # ---- the exposure -----------------------------------------------------------------
    def exposure_row(self, night, expid):
        """Exposure-table row of a raw exposure (its headers)."""
        return ffexp.row_from_raw(self.find("raw", night=night, expid=expid))

    @functools.lru_cache(maxsize=None)  # noqa: B019  (one plan per Snakemake run)
    def manifest(self, night, expid):
        """The exposure's ``qlcalib`` record (written by :meth:`write_manifest`)."""
        from ..io.datamodel import read_json

        return read_json(self.find("ql_calib", night=night, expid=expid), "ql_calib", "quick-look calibration record")

    def cameras_of(self, night, expid):
        return list(self.manifest(int(night), int(expid))["CAMERAS"])

    def exposure_target(self, night, expid):
        """The file that says an exposure's quick-look is done (its scored QA record)."""
        return self.find("ql_qa", night=night, expid=expid)

    def targets(self):
        """Every exposure the watcher has taken (those with a ``qlcalib`` record)."""
        out = []
        for f in sorted(glob.glob(os.path.join(self.root, "*", "*", "qlcalib-*.json"))):
            filetype, ids = paths.parse_path(f)
            if filetype == "ql_calib":
                out.append(self.exposure_target(ids["night"], ids["expid"]))
        return out

    def camera_outputs(self, night, expid, camera):
        return [self.find(k, night=night, expid=expid, camera=camera) for k in ("ql_qa_frame", "ql_qa_frame_png")]

    def exposure_inputs(self, night, expid):
        """The per-camera QA records an exposure's roll-up reads."""
        return [self.find("ql_qa_frame", night=night, expid=expid, camera=c) for c in self.cameras_of(night, expid)]

    def camera_inputs(self, night, expid, camera):
        """Raw data, the calibration record and the calibration files of one camera's job."""
        man = self.manifest(int(night), int(expid))
        if camera not in man["CAMERAS"]:
            raise ValueError(f"camera {camera} is not in exposure {int(expid)} (cameras {', '.join(man['CAMERAS'])})")
        inputs = {"raw": self.find("raw", night=night, expid=expid),
                  "calib": self.find("ql_calib", night=night, expid=expid)}
        fm = self.find("fibermap", night=night, expid=expid)
        if man["OBSTYPE"] == "SCIENCE" or os.path.exists(fm):
            inputs["fibermap"] = fm
        return inputs

    # ---- calibrations -----------------------------------------------------------------
    def _calib_nights(self):
        """Nights with nightly calibrations of the production or quick-look products."""
        folders = glob.glob(os.path.join(self.prod, "calibnight", "*")) + glob.glob(os.path.join(self.root, "*"))
        return sorted({int(os.path.basename(d)) for d in folders if re.fullmatch(r"\d{8}", os.path.basename(d))})

    def _rejected(self, calibration, night, camera):
        """Whether the production's certification of a nightly calibration says REJECTED."""
        from ..io.datamodel import read_json

        path = self.find("certification", night=night, calibration=calibration)
        if not os.path.exists(path):
            return False
        try:
            rec = read_json(path, "certification")
        except Exception:  # noqa: BLE001  (an unreadable record is not a reason to take the file)
            return True
        return any(d.get("CAMERA") == camera and d.get("USABLE", True) is False for d in rec.get("DECISIONS", []))

    def choose(self, calibration, night, camera):
        """The calibration a quick-look frame of ``night`` uses now.

        Returns
        -------
        dict
            PATH (None: none), NIGHT (the night it was made for, None for a default), SOURCE
            (``tonight``, ``earlier``, ``default`` or ``none``).
        """
        night = int(night)
        since = max([b for b in self.breakpoints if b <= night], default=0)
        limit = self.cfg["calibration"]["fallback_nights"]
        for n in sorted(self._calib_nights(), reverse=True):
            if n > night or n < since or ffexp.nights_apart(n, night) > limit:
                continue
            if calibration == "fiberflatnight":  # the quick-look's own flats first (boxcar, as the science)
                qflat = self.quicklook_flat(n, camera)
                if qflat:
                    return {"PATH": qflat, "NIGHT": n, "SOURCE": "quicklook-flat"}
            path = self.find(calibration, night=n, camera=camera)
            if os.path.exists(path) and not self._rejected(calibration, n, camera):
                return {"PATH": path, "NIGHT": n, "SOURCE": "tonight" if n == night else "earlier"}
        key, name, _ = CALIBRATIONS[calibration]
        folder = self.defaults.get(calibration)
        if folder and os.path.exists(os.path.join(folder, name.format(camera=camera))):
            return {"PATH": os.path.join(folder, name.format(camera=camera)), "NIGHT": None, "SOURCE": "default"}
        return {"PATH": None, "NIGHT": None, "SOURCE": "none"}

    def quicklook_flat(self, night, camera):
        """The quick-look fiberflat of the night's last flat whose quick-look is done and was
        not an ALARM for the camera, or None."""
        from ..io.datamodel import read_json

        found = []
        for f in glob.glob(os.path.join(self.root, str(int(night)), "*", f"qfiberflat-{camera}-*.fits")):
            filetype, ids = paths.parse_path(f)
            if filetype == "ql_fiberflat":
                found.append((ids["expid"], f))
        for expid, f in sorted(found, reverse=True):
            done = self.exposure_target(night, expid)
            if not os.path.exists(done):
                continue
            try:
                cam = read_json(done, "ql_qa").get("CAMERAS", {}).get(camera, {})
            except Exception:  # noqa: BLE001
                continue
            if cam.get("STATUS") != "ALARM":
                return f
        return None

    def write_manifest(self, night, expid):
        """Choose the calibrations of an exposure now and write its ``qlcalib`` record (kept when
        it exists: a restarted watcher does not change what a half-done exposure uses).

        Returns
        -------
        (str, dict) : the path and the record
        """
        from ..io.datamodel import read_json, write_json

        path = self.find("ql_calib", night=night, expid=expid)
        if os.path.exists(path):
            return path, read_json(path, "ql_calib", "quick-look calibration record")
        row = self.exposure_row(night, expid)
        cams = ffexp.cameras_of(row, self.cameras)
        calibs = {}
        for cam in cams:
            calibs[cam] = {c: self.choose(c, night, cam) for c, (_k, _f, obstypes) in CALIBRATIONS.items()
                           if row["OBSTYPE"] in obstypes}
        rec = {"NIGHT": int(night), "EXPID": int(expid), "OBSTYPE": row["OBSTYPE"], "EXPTIME": row["EXPTIME"],
               "TILEID": row["TILEID"], "PROGRAM": row["PROGRAM"], "MJD": row["MJD-OBS"], "CAMERAS": cams,
               "CALIBRATIONS": calibs}
        write_json(path, "ql_calib", rec)
        return path, rec


def family_status(frame_scores):
    """Worst status of each check family (CCD, FIBERS, SPECTRA) of one scored frame.

    Parameters
    ----------
    frame_scores : dict
        A frame of a scored exposure record (STEP_STATUS {step: status}).

    Returns
    -------
    dict {family: status} (NA when the frame has no step of the family)
    """
    from ..qa.scoring import worst

    steps = frame_scores.get("STEP_STATUS", {})
    return {fam: worst([steps[s] for s in members if s in steps] or ["NA"]) for fam, members in FAMILIES.items()}
