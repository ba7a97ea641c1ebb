"""What the live monitor (``fiberflow serve``) shows, read from the quick-look tree and the QC1
database: nights, a night's exposures with their statuses, one exposure in detail (cameras,
amplifiers, fibers, spectra), the latest exposure, the watcher's state and step log, and a
metric's history. Every function returns plain JSON-able values; the web pages and the JSON API
serve the same ones.

The sources: the watcher's table ``{prod}/quicklook/{night}/qlexposures-{night}.csv`` (one row per
exposure it has seen, with STATE, STATUS and the CCD / FIBERS / SPECTRA statuses), the
exposure records ``qa-{expid}.json`` and camera records ``qa-{camera}-{expid}.json``, the
extracted spectra ``qsframe`` / ``qframe``, ``watch.pid`` / ``watch.log``, and the database's
QC1 rows (KIND quicklook and the full reduction's frame rows).
"""

from __future__ import annotations

import csv
import glob
import os
import re

from .. import paths

#: check families in display order
FAMILIES = ("CCD", "FIBERS", "SPECTRA")
#: amplifier metrics shown per camera and amplifier
AMP_METRICS = ("BIAS_AMP", "READNOISE_AMP", "NOISE_RATIO_AMP", "OSTEP_AMP", "LITFRAC_REL_AMP")


class NotFound(LookupError):
    """What was asked for does not exist (the API answers 404)."""


class Monitor:
    """Read-only view of a production's quick-look.

    Parameters
    ----------
    prod : str
        The production root.
    database : str, optional
        The QC1 database (path or URL); None: no history.
    """

    def __init__(self, prod, database=None):
        self.prod = os.path.abspath(prod)
        self.root = os.path.join(self.prod, "quicklook")
        self.database = database

    def find(self, filetype, **ids):
        return paths.findfile(filetype, prod=self.prod, **ids)

    def rel(self, path):
        """A file's path relative to the production (as the monitor's /files/ URLs take it)."""
        return os.path.relpath(path, self.prod)

    # ---- nights and exposures -----------------------------------------------------------
    def nights(self):
        """Every night the watcher has seen, newest first: NIGHT, NEXP, NDONE, STATUS (worst of
        its exposures), COUNTS per status."""
        from .scoring import worst

        out = []
        for f in glob.glob(os.path.join(self.root, "*", "qlexposures-*.csv")):
            m = re.search(r"qlexposures-(\d{8})\.csv$", f)
            if not m:
                continue
            rows = self._table(int(m.group(1)))
            statuses = [r["STATUS"] for r in rows if r["STATUS"]]
            counts = {s: statuses.count(s) for s in ("NORMAL", "WARNING", "ALARM")}
            out.append({"NIGHT": int(m.group(1)), "NEXP": len(rows),
                        "NDONE": sum(r["STATE"] in ("done", "failed") for r in rows),
                        "STATUS": worst(statuses) if statuses else "NA", "COUNTS": counts})
        return sorted(out, key=lambda r: -r["NIGHT"])

    def _table(self, night):
        path = self.find("ql_table", night=night)
        if not os.path.exists(path):
            return []
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        for r in rows:
            r["EXPID"] = int(r["EXPID"])
            r["NIGHT"] = int(r["NIGHT"])
            for k in ("LATENCY", "EXPTIME"):
                try:
                    r[k] = float(r[k]) if r.get(k) not in (None, "") else None
                except ValueError:
                    r[k] = None
            r.pop("PID", None)
        return rows

    def exposures(self, night):
        """The night's exposures in the watcher's table (oldest first), with their statuses.

        Raises
        ------
        NotFound
            When the watcher has no table for the night.
        """
        night = int(night)
        if not os.path.exists(self.find("ql_table", night=night)):
            raise NotFound(f"no quick-look of night {night}")
        return self._table(night)

    def exposure(self, night, expid):
        """One exposure: its table row, the scored record (cameras with statuses per family,
        failures, step durations, calibrations used, out-of-range metrics), every scored metric
        per camera, the amplifier metrics, and the fibers (number, focal-plane x / y, relative
        throughput, sky residual)."""
        from ..io.datamodel import read_json

        night, expid = int(night), int(expid)
        row = next((r for r in self._table(night) if r["EXPID"] == expid), None)
        path = self.find("ql_qa", night=night, expid=expid)
        if row is None and not os.path.exists(path):
            raise NotFound(f"no quick-look of exposure {expid} of night {night}")
        out = {"NIGHT": night, "EXPID": expid, "ROW": row, "DONE": os.path.exists(path)}
        if not out["DONE"]:
            return out
        rec = read_json(path, "ql_qa", "quick-look exposure record")
        scored = rec.pop("SCORED", {})
        out.update(rec)
        metrics, amps, fibers = {}, {}, {}
        for cam, fr in sorted((scored.get("FRAMES") or {}).items()):
            metrics[cam] = {step: {m: {"VALUE": s.get("VALUE"), "STATUS": s.get("STATUS"), "NORMAL": s.get("NORMAL"),
                                       "WARNING": s.get("WARNING"), "SOURCE": s.get("SOURCE")}
                                   for m, s in ms.items()} for step, ms in (fr.get("SCORES") or {}).items()}
            camfile = self.find("ql_qa_frame", night=night, expid=expid, camera=cam)
            try:
                cam_rec = read_json(camfile, "qa_frame")
            except Exception:  # noqa: BLE001  (a camera record being rewritten)
                continue
            pre = (cam_rec.get("METRICS") or {}).get("PREPROC") or {}
            amps[cam] = {m: pre[m] for m in AMP_METRICS if isinstance(pre.get(m), dict)}
            fibers[cam] = cam_rec.get("FIBERS") or {}
            if rec["CAMERAS"].get(cam, {}).get("PLOT"):
                rec["CAMERAS"][cam]["PLOT_URL"] = "/files/" + rec["CAMERAS"][cam]["PLOT"]
        out.update(METRICS=metrics, AMPLIFIERS=amps, FIBERS=fibers,
                   SPECTRA_CAMERAS=[c for c in rec["CAMERAS"] if self._spectra_file(night, expid, c)])
        return out

    def latest(self):
        """The newest exposure the watcher has taken (of the newest night), in detail; None
        when there is none."""
        for n in self.nights():
            rows = [r for r in self._table(n["NIGHT"]) if r["STATE"] != "skipped"]
            if rows:
                last = max(rows, key=lambda r: (r.get("ARRIVED") or "", r["EXPID"]))
                return self.exposure(n["NIGHT"], last["EXPID"])
        return None

    # ---- the watcher ---------------------------------------------------------------------
    def watcher(self, nlog=30):
        """Whether a watcher runs (its pid file and process), the exposure it is processing,
        the step durations of the cameras of the latest exposure, and the last lines of its log."""
        from ..prodlock import pid_alive

        pidfile = os.path.join(self.root, "watch.pid")
        pid = None
        if os.path.exists(pidfile):
            try:
                pid = int(open(pidfile).read().strip() or 0) or None
            except (OSError, ValueError):
                pid = None
        running = bool(pid) and pid_alive(pid)
        log = []
        logfile = os.path.join(self.root, "watch.log")
        if os.path.exists(logfile):
            with open(logfile) as fh:
                log = [ln.rstrip("\n") for ln in fh.readlines()[-nlog:]]
        current = None
        for n in self.nights()[:1]:
            current = next((r for r in self._table(n["NIGHT"]) if r["STATE"] == "running"), None)
        return {"RUNNING": running, "PID": pid if running else None, "CURRENT": current, "LOG": log,
                "STOP_REQUESTED": os.path.exists(os.path.join(self.root, "STOP"))}

    # ---- spectra -------------------------------------------------------------------------
    def _spectra_file(self, night, expid, camera):
        for kind in ("ql_sframe", "ql_frame"):
            f = self.find(kind, night=night, expid=expid, camera=camera)
            if os.path.exists(f):
                return f
        return None

    def spectrum(self, night, expid, camera, fiber, rebin=4):
        """One fiber's quick-look spectrum (sky-subtracted for science, else as extracted),
        rebinned by ``rebin`` bins: WAVE, FLUX (None where no good bin), and the fiber's row."""
        import numpy as np

        from ..io.frame import read_frame

        f = self._spectra_file(int(night), int(expid), camera)
        if f is None:
            raise NotFound(f"no quick-look spectra of {camera} in exposure {int(expid)}")
        fr = read_frame(f)
        fibers = np.asarray(fr.fibermap["FIBER"]) if fr.fibermap is not None else np.arange(fr.nspec)
        rows = np.flatnonzero(fibers == int(fiber))
        if rows.size == 0:
            raise NotFound(f"fiber {int(fiber)} is not in {camera} (fibers {int(fibers.min())}-{int(fibers.max())})")
        i = int(rows[0])
        rebin = max(1, int(rebin))
        n = fr.nwave // rebin * rebin
        good = (fr.ivar[i, :n] > 0) & (fr.mask[i, :n] == 0)
        w = fr.wave[:n].reshape(-1, rebin).mean(axis=1)
        num = np.where(good, fr.flux[i, :n], 0.0).reshape(-1, rebin).sum(axis=1)
        cnt = good.reshape(-1, rebin).sum(axis=1)
        flux = np.where(cnt > 0, num / np.maximum(cnt, 1), np.nan)
        objtype = ""
        if fr.fibermap is not None and "OBJTYPE" in (fr.fibermap.dtype.names or ()):
            objtype = str(fr.fibermap["OBJTYPE"][i]).strip()
        return {"CAMERA": camera, "FIBER": int(fiber), "OBJTYPE": objtype, "FILE": self.rel(f),
                "WAVE": [round(float(x), 2) for x in w],
                "FLUX": [None if not np.isfinite(x) else round(float(x), 4) for x in flux]}

    # ---- history ----------------------------------------------------------------------------
    def has_database(self):
        """Whether the QC1 database is there (the monitor never creates one)."""
        from ..io.qcdb import is_url

        return bool(self.database) and (is_url(self.database) or os.path.exists(self.database))

    def metrics_known(self):
        """(step, metric) pairs the database holds, for the history page's menus."""
        if not self.has_database():
            return []
        from ..io import qcdb

        conn = qcdb.connect(self.database)
        try:
            rows = conn.execute("SELECT DISTINCT step, metric FROM qc1 ORDER BY step, metric").fetchall()
        finally:
            conn.close()
        return [{"STEP": r[0], "METRIC": r[1]} for r in rows]

    def history(self, metric, camera=None, step=None, kind=None, nights=None):
        """A metric's values across nights from the QC1 database (quick-look and full reduction
        rows; ``kind`` quicklook or frame keeps one): rows with NIGHT, EXPID, CAMERA, MJD, VALUE,
        STATUS, KIND."""
        if not self.has_database():
            raise NotFound(f"no QC1 database ({self.database or 'none configured'})")
        from ..io import qcdb

        conn = qcdb.connect(self.database)
        try:
            rows = qcdb.query(conn, metric=metric, camera=camera, step=step, kind=kind)
        finally:
            conn.close()
        keep = ("KIND", "NIGHT", "EXPID", "CAMERA", "MJD", "STEP", "METRIC", "VALUE", "STATUS")
        out = [{k: r.get(k) for k in keep} for r in rows]
        if nights:
            last = sorted({r["NIGHT"] for r in out})[-int(nights):]
            out = [r for r in out if r["NIGHT"] in set(last)]
        return out
