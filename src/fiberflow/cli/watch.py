"""``fiberflow watch``: the night-time quick-look loop (DESI's nightwatch ``monitor``).

Every ``--waittime`` seconds (``quicklook.waittime``) it looks at the night's raw folder
(``--night``, default the newest night there), and for each exposure whose files are complete
(``quicklook.completeness``: the checksum file, or files unchanged for ``quicklook.settle``
seconds; see :mod:`fiberflow.io.delivery`; a half-written file is never read) it

1. adds it to the watcher's exposure table ``{prod}/quicklook/{night}/qlexposures-{night}.csv``
   (STATE waiting / running / done / failed / skipped, arrival and end times, latency, the
   exposure's status and its CCD / FIBERS / SPECTRA statuses), written atomically after every
   change;
2. chooses its calibrations now (``qlcalib-{expid}.json``, :mod:`fiberflow.workflow.quicklook`);
3. runs ``Snakefile.quicklook`` for it (target ``qa-{expid}.json``; the cameras in parallel on
   ``quicklook.cores`` cores, or through ``--profile``), from the quick-look tree as working
   directory, so it never locks or changes the full reduction.

**Stopping and restarting.** The file ``{prod}/quicklook/STOP`` ends the loop cleanly (after the
exposure being processed; the watcher removes it); SIGTERM / SIGINT end it at once (the running
Snakemake is stopped, the exposure goes back to waiting). A restarted watcher resumes: what the
table says is done or failed is not redone, an exposure that was running is run again through
Snakemake (which keeps the cameras already finished), and every exposure not yet in the table is
new. Exposures already in the raw folder when the watcher starts, of a night it has no table
of yet, are ``skipped`` unless ``--catchup`` (which also takes those skipped earlier). One watcher per production:
``{prod}/quicklook/watch.pid`` says which process it is.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

TABLE_COLUMNS = ["EXPID", "NIGHT", "OBSTYPE", "TILEID", "EXPTIME", "STATE", "ARRIVED", "STARTED", "FINISHED",
                 "LATENCY", "STATUS", "CCD", "FIBERS", "SPECTRA", "PID", "COMMENT"]
DONE_STATES = ("done", "failed")


def add_arguments(p, name):
    p.add_argument("--config", required=True, help="the production's configuration")
    p.add_argument("--night", type=int, default=None, help="night to watch (default: the newest in the raw folder)")
    p.add_argument("--catchup", action="store_true",
                   help="also process the night's exposures that were there before the watcher first started")
    p.add_argument("--waittime", type=float, default=None, help="seconds between looks (default quicklook.waittime)")
    p.add_argument("--once", action="store_true", help="one look, process what is complete, and exit")
    p.add_argument("--cores", type=int, default=None, help="cores of the quick-look Snakemake (default quicklook.cores)")
    p.add_argument("--profile", default=None, help="a Snakemake profile for the quick-look jobs (e.g. Slurm)")
    p.add_argument("--max-hours", type=float, default=None,
                   help="exit cleanly after this many hours (a Slurm job's time limit)")


def read_table(path):
    """The watcher's exposure table: {expid: row} (empty when it does not exist)."""
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as fh:
        return {int(r["EXPID"]): r for r in csv.DictReader(fh)}


def write_table(path, rows):
    from ..io.fitsutil import atomic_path

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=TABLE_COLUMNS, lineterminator="\n")
        w.writeheader()
        for e in sorted(rows):
            w.writerow({k: rows[e].get(k, "") for k in TABLE_COLUMNS})


def _iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z" if t else ""


def _unix(text):
    import calendar

    if not text:
        return None
    base, _, frac = text.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + (float("0." + frac) if frac else 0.0)


class Watcher:
    """The loop's state: configuration, quick-look plan, the night's table."""

    def __init__(self, args):
        from ..config import load_config
        from ..reference import workflow_dir
        from ..workflow.quicklook import QuickLook

        self.args = args
        self.configfile = os.path.abspath(args.config)
        self.cfg = load_config(self.configfile)
        self.ql = QuickLook(self.cfg, self.configfile)
        self.opts = self.cfg["quicklook"]
        self.waittime = args.waittime if args.waittime is not None else float(self.opts["waittime"])
        self.cores = args.cores or int(self.opts["cores"])
        self.snakefile = os.path.join(workflow_dir(), "Snakefile.quicklook")
        self.stopfile = os.path.join(self.ql.root, "STOP")
        self.pidfile = os.path.join(self.ql.root, "watch.pid")
        self.logfile = os.path.join(self.ql.root, "watch.log")
        self.child = None
        self.interrupted = False
        self.waiting = {}

    def log(self, msg):
        line = f"{_iso(time.time())} watch: {msg}"
        print(line, flush=True)
        with open(self.logfile, "a") as fh:
            fh.write(line + "\n")

    # ---- one watcher per production -------------------------------------------------
    def acquire(self):
        from ..errors import ConfigError
        from ..prodlock import pid_alive

        os.makedirs(self.ql.root, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.pidfile, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(open(self.pidfile).read().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid_alive(pid):
                    raise ConfigError(f"{self.pidfile}: another watcher (pid {pid}) watches this production; "
                                      f"stop it first (touch {self.stopfile})") from None
                os.remove(self.pidfile)  # a watcher that died without cleaning up
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()}\n")
            return
        raise ConfigError(f"{self.pidfile}: could not take the watcher's lock")

    def release(self):
        try:
            if int(open(self.pidfile).read().strip() or 0) == os.getpid():
                os.remove(self.pidfile)
        except (OSError, ValueError):
            pass

    # ---- the night ------------------------------------------------------------------
    def night(self):
        if self.args.night:
            return int(self.args.night)
        nights = [int(n) for n in os.listdir(self.ql.raw) if n.isdigit() and len(n) == 8] \
            if os.path.isdir(self.ql.raw) else []
        return max(nights) if nights else None

    def raw_expids(self, night):
        folder = os.path.join(self.ql.raw, str(night))
        if not os.path.isdir(folder):
            return []
        return sorted(int(e) for e in os.listdir(folder) if e.isdigit() and len(e) == 8)

    def complete(self, night, expid):
        from ..io.delivery import exposure_complete

        return exposure_complete(self.ql.raw, night, expid, self.opts["completeness"], float(self.opts["settle"]))

    def table_path(self, night):
        return self.ql.find("ql_table", night=night)

    # ---- one look ---------------------------------------------------------------------
    def snapshot(self):
        """What is there when the watcher starts: the raw exposures, and the nights it has a
        table of (without --catchup, the exposures of a night without a table are skipped)."""
        self.preexisting = set()
        self.had_table = set()
        if os.path.isdir(self.ql.raw):
            for n in os.listdir(self.ql.raw):
                if n.isdigit() and len(n) == 8:
                    self.preexisting |= {(int(n), e) for e in self.raw_expids(int(n))}
                    if os.path.exists(self.table_path(int(n))):
                        self.had_table.add(int(n))

    def look(self, night):
        """Process every complete exposure of the night that needs it; returns how many ran."""
        path = self.table_path(night)
        new_table = not os.path.exists(path)
        rows = read_table(path)
        self.take_requests(night, rows, path)
        ran = 0
        for expid in self.raw_expids(night):
            if self.stop_requested():
                break
            row = rows.get(expid)
            if row is not None and row["STATE"] in DONE_STATES:
                continue
            if row is not None and row["STATE"] == "skipped" and not self.args.catchup:
                continue
            ok, why = self.complete(night, expid)
            if not ok:
                if self.waiting.get(expid) != why:
                    self.log(f"{night}/{expid:08d}: not complete yet ({why})")
                    self.waiting[expid] = why
                continue
            self.waiting.pop(expid, None)
            if row is None:
                row = rows[expid] = {"EXPID": expid, "NIGHT": night, "STATE": "waiting", "ARRIVED": _iso(time.time())}
                if (night, expid) in self.preexisting and night not in self.had_table and not self.args.catchup:
                    row.update(STATE="skipped", COMMENT="there before the watcher started (--catchup takes it)")
                    write_table(path, rows)
                    continue
            self.process(night, expid, rows, path)
            ran += 1
        if new_table and not os.path.exists(path) and self.raw_expids(night):
            write_table(path, rows)
        return ran

    def take_requests(self, night, rows, path):
        """Rerun requests of the monitor (``{prod}/quicklook/requests/rerun-{night}-{expid}``):
        the exposure's quick-look products go (its calibrations are chosen again) and it is
        processed at this look."""
        import glob
        import shutil

        for req in sorted(glob.glob(os.path.join(self.ql.root, "requests", f"rerun-{night}-*"))):
            expid = int(req.rsplit("-", 1)[1])
            os.remove(req)
            if expid not in rows:
                continue
            folder = os.path.dirname(self.ql.exposure_target(night, expid))
            shutil.rmtree(folder, ignore_errors=True)
            rows[expid].update(STATE="waiting", STATUS="", CCD="", FIBERS="", SPECTRA="", LATENCY="", FINISHED="",
                               ARRIVED=_iso(time.time()), COMMENT="rerun requested from the monitor")
            write_table(path, rows)
            self.log(f"{night}/{expid:08d}: rerun requested; its quick-look products removed")

    def process(self, night, expid, rows, path):
        from ..errors import FiberflowError
        from ..io.datamodel import read_json

        from ..prodlock import pid_alive

        row = rows[expid]
        resumed = row.get("STATE") == "running"
        if resumed:  # a watcher stopped mid-exposure: let its Snakemake finish, or clear its lock
            pid = int(row.get("PID") or 0)
            if pid and pid_alive(pid):
                self.log(f"{night}/{expid:08d}: the Snakemake of the previous watcher (pid {pid}) still runs; waiting")
                while pid_alive(pid) and not self.stop_requested():
                    time.sleep(0.2)
            if self.stop_requested():
                return
            self.unlock()  # the only watcher: a lock left now is a killed Snakemake's
        try:
            _, man = self.ql.write_manifest(night, expid)
        except (FiberflowError, OSError) as exc:
            row.update(STATE="failed", COMMENT=f"raw data unreadable: {exc}", FINISHED=_iso(time.time()))
            write_table(path, rows)
            self.log(f"{night}/{expid:08d}: FAILED before the quick-look: {exc}")
            return
        row.update(OBSTYPE=man["OBSTYPE"], TILEID=man.get("TILEID", ""), EXPTIME=man.get("EXPTIME", ""),
                   STATE="running", STARTED=_iso(time.time()), COMMENT="")
        write_table(path, rows)
        self.log(f"{night}/{expid:08d} {man['OBSTYPE']}: quick-look of {len(man['CAMERAS'])} camera(s) "
                 + ("resumed" if resumed else "started"))
        target = self.ql.exposure_target(night, expid)
        rc = self.snakemake(target, night, expid, lambda pid: (row.update(PID=pid), write_table(path, rows)))
        if self.interrupted:
            row.update(STATE="waiting", COMMENT="interrupted; the next watcher resumes it")
            write_table(path, rows)
            return
        now = time.time()
        arrived = _unix(row.get("ARRIVED")) or now
        row.update(FINISHED=_iso(now), LATENCY=f"{now - arrived:.1f}")
        if rc == 0 and os.path.exists(target):
            rec = read_json(target, "ql_qa")
            row.update(STATE="done", STATUS=rec["STATUS"], **rec["FAMILIES"])
            self.log(f"{night}/{expid:08d}: {rec['STATUS']} (" + ", ".join(f"{k} {v}" for k, v in rec["FAMILIES"].items())
                     + f") {now - arrived:.1f} s after arrival")
        else:
            log = os.path.join(self.ql.root, "logs")
            row.update(STATE="failed", STATUS="ALARM", COMMENT=f"quick-look Snakemake exited {rc}; logs under {log}")
            self.log(f"{night}/{expid:08d}: quick-look FAILED (Snakemake exit {rc}; logs under {log})")
        write_table(path, rows)

    def _base(self):
        return [sys.executable, "-m", "snakemake", "-s", self.snakefile, "--configfile", self.configfile,
                "--directory", self.ql.root]

    def unlock(self):
        """Remove the lock a killed Snakemake left in the quick-look tree."""
        subprocess.run(self._base() + ["--unlock", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def snakemake(self, target, night, expid, started=None):
        cmd = self._base() + ["--rerun-incomplete", "--keep-going", "--quiet", "rules", "--latency-wait", "5"]
        cmd += ["--profile", self.args.profile] if self.args.profile else ["--cores", str(self.cores)]
        cmd.append(target)
        log = os.path.join(self.ql.root, "logs", "snakemake", f"{night}-{expid:08d}.log")
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "a") as fh:
            self.child = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
            if started:
                started(self.child.pid)
            try:
                rc = self.child.wait()
            finally:
                self.child = None
        return rc

    # ---- the loop ---------------------------------------------------------------------
    def stop_requested(self):
        return self.interrupted or os.path.exists(self.stopfile)

    def on_signal(self, signum, frame):
        self.interrupted = True
        if self.child is not None:
            try:
                os.killpg(self.child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def run(self):
        deadline = time.time() + 3600 * self.args.max_hours if self.args.max_hours else None
        self.log(f"watching {self.ql.raw} (night {self.args.night or 'newest'}) every {self.waittime:g} s; "
                 f"quick-look under {self.ql.root}; stop: touch {self.stopfile}")
        self.snapshot()
        while True:
            night = self.night()
            if night is not None:
                self.look(night)
            if self.stop_requested():
                break
            if self.args.once or (deadline and time.time() > deadline):
                break
            t_end = time.time() + self.waittime
            while time.time() < t_end and not self.stop_requested():
                time.sleep(min(0.2, self.waittime))
            if self.stop_requested():
                break
        if os.path.exists(self.stopfile) and not self.interrupted:
            os.remove(self.stopfile)
            self.log("stop file seen: stopped")
        elif self.interrupted:
            self.log("signal received: stopped (the interrupted exposure is resumed by the next watcher)")
        else:
            self.log("stopped")


def run(args):
    w = Watcher(args)
    w.acquire()
    old = {s: signal.signal(s, w.on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        w.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        w.release()
    return 0
