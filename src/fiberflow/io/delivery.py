"""When a raw exposure is completely delivered: the contract between the data system and
fiberflow's night-time watcher (``fiberflow watch``), and what ``fiberflow simulate --replay``
writes.

**An exposure is complete** when its checksum file ``{raw}/{night}/{expid:08d}/checksum-{expid:08d}.sha256sum``
(``sha256sum`` format, as DESI's data transfer writes one per exposure, written last and
atomically) exists and every file it lists is there with that checksum: the marker says the data
system is done, the checksums that no file is half-written or truncated.

A raw folder written without checksum files (an older data system, or ``fiberflow simulate``
without ``--replay``) can be watched with the **stable** rule instead: every file of the exposure
(``desi-*.fits.fz`` and ``fibermap-*.fits`` at least) has had the same size and modification
time for ``settle`` seconds. That rule cannot see a writer that pauses longer than ``settle``;
the checksum rule can, which is why it is the default.
"""

from __future__ import annotations

import hashlib
import os
import time


def checksum_path(raw_root, night, expid):
    """``{raw}/{night}/{expid:08d}/checksum-{expid:08d}.sha256sum``."""
    return os.path.join(raw_root, str(int(night)), f"{int(expid):08d}", f"checksum-{int(expid):08d}.sha256sum")


def sha256(path):
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checksum_complete(raw_root, night, expid):
    """The checksum rule: the checksum file exists and lists files that are all there with
    those checksums.

    Returns
    -------
    (bool, str)
        Complete, and else why not (for logs).
    """
    path = checksum_path(raw_root, night, expid)
    if not os.path.exists(path):
        return False, "no checksum file yet"
    folder = os.path.dirname(path)
    try:
        with open(path) as fh:
            lines = [ln.split() for ln in fh if ln.strip()]
    except OSError as exc:
        return False, f"checksum file unreadable ({exc})"
    if not lines:
        return False, "empty checksum file"
    for parts in lines:
        if len(parts) != 2:
            return False, f"bad checksum line {' '.join(parts)!r}"
        digest, name = parts[0], parts[1].lstrip("*")
        f = os.path.join(folder, name)
        if not os.path.exists(f):
            return False, f"{name} missing"
        if sha256(f) != digest:
            return False, f"{name} not complete (checksum differs)"
    return True, ""


def stable_complete(raw_root, night, expid, settle=10.0, now=None):
    """The stable rule: the raw and fibermap files exist and no file of the exposure folder
    has changed for ``settle`` seconds.

    Returns
    -------
    (bool, str)
    """
    folder = os.path.join(raw_root, str(int(night)), f"{int(expid):08d}")
    need = (f"desi-{int(expid):08d}.fits.fz", f"fibermap-{int(expid):08d}.fits")
    missing = [n for n in need if not os.path.exists(os.path.join(folder, n))]
    if missing:
        return False, f"{', '.join(missing)} not there yet"
    now = time.time() if now is None else now
    newest = max(os.stat(os.path.join(folder, n)).st_mtime for n in os.listdir(folder))
    if now - newest < settle:
        return False, f"written {now - newest:.1f} s ago (waiting for {settle:g} s without change)"
    return True, ""


def exposure_complete(raw_root, night, expid, rule="checksum", settle=10.0):
    """Whether an exposure's files are all delivered, by ``rule`` (``checksum`` or ``stable``).

    Returns
    -------
    (bool, str)
        Complete, and else why not.
    """
    if rule == "checksum":
        return checksum_complete(raw_root, night, expid)
    if rule == "stable":
        return stable_complete(raw_root, night, expid, settle)
    raise ValueError(f"unknown completeness rule {rule!r} (checksum or stable)")
