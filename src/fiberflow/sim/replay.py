"""Replay a simulated night into a raw folder the way a data system delivers it.

Each exposure is simulated into a staging folder beside the raw root, then delivered into
``{raw}/{night}/{expid:08d}/`` at its place in the night: the exposures start ``EXPTIME +
overhead`` apart (the telescope's cadence), divided by ``speed``. Every file is written in two
halves with a pause between them, so a reader polling the folder sees it half-written for a
while; the exposure's ``checksum-{expid:08d}.sha256sum`` (``sha256sum`` format, as DESI's data
transfer writes one per exposure) comes last, atomically.

**An exposure is complete** when its checksum file exists and every file it lists has that
checksum (:func:`fiberflow.io.delivery.exposure_complete`, the contract the night-time watcher
reads exposures by).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time

#: seconds between the end of one exposure and the start of the next (readout, slew, setup)
OVERHEAD = 120.0


def deliver(files, folder, pause=0.0, expid=None):
    """Copy ``files`` into ``folder`` the way a data system writes them: each in two halves with
    ``pause`` seconds between, then the checksum file (written to a temporary name and renamed).

    Returns
    -------
    list of str : the delivered paths, the checksum file last
    """
    os.makedirs(folder, exist_ok=True)
    out, sums = [], []
    for src in files:
        dst = os.path.join(folder, os.path.basename(src))
        with open(src, "rb") as fh:
            data = fh.read()
        with open(dst, "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            os.fsync(fh.fileno())
            if pause > 0:
                time.sleep(pause)
            fh.write(data[len(data) // 2:])
        sums.append(f"{hashlib.sha256(data).hexdigest()}  {os.path.basename(src)}\n")
        out.append(dst)
    if expid is not None:
        ck = os.path.join(folder, f"checksum-{int(expid):08d}.sha256sum")
        tmp = ck + ".tmp"
        with open(tmp, "w") as fh:
            fh.writelines(sums)
        os.replace(tmp, ck)
        out.append(ck)
    return out


def replay_night(plan, instrument, seed, raw_root, truth_root, speed, cameras=None, overhead=OVERHEAD,
                 log=print, **sim_options):
    """Simulate and deliver a night exposure by exposure at its cadence / ``speed``.

    Parameters
    ----------
    plan : fiberflow.sim.plan.Plan
    speed : float
        How much faster than real time (the pause between exposures is (EXPTIME + overhead) /
        speed, the half-written pause a fifth of it, at most 5 s).
    sim_options : dict
        Passed to :class:`fiberflow.sim.night.Simulator` (projection, psf_shape, pixflat).

    Returns
    -------
    list of str : every delivered path
    """
    from .night import Simulator

    if not speed > 0:
        raise ValueError(f"replay speed must be > 0, not {speed}")
    sim = Simulator(instrument, seed, **sim_options)
    sim.write_night_truth(plan, truth_root, cameras)
    staging = tempfile.mkdtemp(prefix=".replay-", dir=os.path.dirname(os.path.abspath(raw_root)))
    delivered = []
    try:
        t_next = time.monotonic()
        for expid in plan.expids():
            exp = plan.exposure(expid)
            written = sim.simulate_exposure(plan, expid, staging, truth_root, cameras)
            files = sorted((p for p in written if p.startswith(staging)), key=lambda p: p.endswith(".fits.fz"))
            cadence = (float(exp.exptime or 0.0) + overhead) / speed
            wait = t_next - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            folder = os.path.join(raw_root, str(plan.night), f"{int(expid):08d}")
            delivered += deliver(files, folder, pause=min(5.0, cadence / 5), expid=expid)
            log(f"replay {plan.night}/{int(expid):08d} {exp.obstype}: {len(files)} file(s) delivered")
            t_next = time.monotonic() + cadence
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return delivered
