"""One production, one writer: locks under the production root for each night a Snakemake
invocation writes (and one for the production-wide products: HEALPix, production QA).

Snakemake's own lock lives in the working directory (``.snakemake/locks``), so two invocations
from different working directories on the same production root do not see each other. Before
any job runs (``onstart``), the workflow takes ``{prod}/locks/{key}.lock`` for every key its
planned outputs touch, with the owner written inside (host, pid, working directory, command,
start time); a key held by a live invocation stops the new one with a message naming it. The
locks are released when the invocation ends (``onsuccess`` / ``onerror``). A lock whose owner
is dead (same host, no such process: a SIGKILL, a crashed node) is taken over with a warning;
one held from another host names that host, to be removed by hand if its run is gone.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

from .errors import FiberflowError

LOCK_DIR = "locks"
#: key of the outputs that belong to no night (HEALPix pixels, production QA, catalogs)
PRODUCTION_KEY = "production"


class LockedError(FiberflowError):
    """Another live invocation writes part of the same production."""


def lock_keys(outputs, prod):
    """Lock keys of planned output paths: ``night-YYYYMMDD`` or ``production``.

    Paths outside ``prod`` (logs elsewhere, flags of other trees) take no lock.

    Parameters
    ----------
    outputs : iterable of str
    prod : str

    Returns
    -------
    sorted list of str
    """
    from .paths import parse_path

    prod = os.path.realpath(prod)
    keys = set()
    for path in outputs:
        real = os.path.realpath(path)
        if os.path.commonpath([real, prod]) != prod:
            continue
        try:
            _, ids = parse_path(real)
        except ValueError:
            ids = {}
        night = ids.get("night")
        keys.add(f"night-{int(night)}" if night else PRODUCTION_KEY)
    return sorted(keys)


def _owner():
    return {"host": socket.gethostname(), "pid": os.getpid(), "cwd": os.getcwd(),
            "command": " ".join(sys.argv)[:500], "started": time.strftime("%Y-%m-%dT%H:%M:%S")}


def pid_alive(pid):
    """Whether a process of this host has that pid (one of another user counts as alive)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def acquire(prod, keys, log=print):
    """Take the locks ``keys`` of production ``prod`` for this process; all or none.

    Returns
    -------
    list of str
        The lock files taken (to pass to :func:`release`).

    Raises
    ------
    LockedError
        A key is held by a live invocation (the message names it and the lock file).
    """
    folder = os.path.join(prod, LOCK_DIR)
    os.makedirs(folder, exist_ok=True)
    me = _owner()
    taken = []
    try:
        for key in keys:
            path = os.path.join(folder, f"{key}.lock")
            while True:
                try:
                    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    other = _read(path)
                    if other is None:  # being written this instant, or garbage: look again once
                        time.sleep(0.2)
                        other = _read(path)
                    if other is not None and other.get("pid") == me["pid"] and other.get("host") == me["host"]:
                        break  # ours already
                    if other is not None and other.get("host") == me["host"] and not pid_alive(other.get("pid", -1)):
                        log(f"fiberflow: taking over the stale lock {path} of a dead invocation "
                            f"(pid {other.get('pid')}, started {other.get('started')})")
                        os.unlink(path)
                        continue
                    who = ("an unreadable owner" if other is None else
                           f"snakemake pid {other.get('pid')} on {other.get('host')} (started {other.get('started')}, "
                           f"working directory {other.get('cwd')})")
                    what = "the production-wide products (HEALPix, production QA)" if key == PRODUCTION_KEY \
                        else f"night {key.split('-', 1)[1]}"
                    raise LockedError(f"{prod}: {what} is being written by {who}; run disjoint nights side by side "
                                      f"(config nights:) and the HEALPix/QA stage once, or remove {path} if that "
                                      "run is gone")
                with os.fdopen(fd, "w") as fh:
                    json.dump(me, fh)
                taken.append(path)
                break
    except BaseException:
        release(taken)
        raise
    return taken


def release(paths):
    """Remove the lock files ``paths`` that this process owns."""
    me = os.getpid()
    for path in paths:
        other = _read(path)
        if other is None or other.get("pid") == me:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
