"""Checks every step command makes before any work, and the one-line error policy.

Before a step reads its first input, its output paths are checked: not a folder, not one of
its inputs, not given twice, and in a folder it can write (or create). Then the step runs
inside :func:`fiberflow.io.fitsutil.all_or_none`, so a step with several outputs writes all of
them or none. Errors reach the user as one line naming the file and the problem.
"""

from __future__ import annotations

import os

from ..errors import DataError

#: argument names that are output files of a step
OUTPUT_ARGS = ("outfile", "sframe", "model", "png", "blink", "html", "trends", "hist", "table", "details", "tiles_out", "tiles_csv",
               "exposures_out", "exposures_csv", "receipt")
#: commands that are not steps of a production (no output guard, no all-or-none block)
NOT_STEPS = {"findfile", "parsepath", "describe", "config", "simulate", "status", "dag", "workflow", "demo",
             "calibinit", "validate-redshifts", "watch", "quicklook", "serve", "rebuild"}


def _values(value):
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str)]
    return []


def _writable_folder(path):
    """The nearest existing folder of ``path`` and whether this process can create files in it."""
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    if not os.path.isdir(folder):
        return folder, False
    return folder, os.access(folder, os.W_OK | os.X_OK)


def check_outputs(args):
    """Refuse a step's output paths before any work (DataError naming the path and the problem)."""
    outputs = []
    for name in OUTPUT_ARGS:
        for path in _values(getattr(args, name, None)):
            outputs.append((name, path))
    inputs = {}
    for name, value in vars(args).items():
        if name in OUTPUT_ARGS or name.startswith("_"):
            continue
        for path in _values(value):
            if os.path.isfile(path):
                inputs.setdefault(os.path.realpath(path), name)
    seen = {}
    for name, path in outputs:
        flag = "--" + name.replace("_", "-")
        if os.path.isdir(path):
            raise DataError(path, f"{flag} names a folder; it must be the path of the file to write")
        real = os.path.realpath(path)
        if real in inputs:
            raise DataError(path, f"{flag} is also an input (--{inputs[real].replace('_', '-')}): "
                                  "refusing to overwrite an input")
        if real in seen:
            raise DataError(path, f"{flag} and --{seen[real]} name the same file")
        seen[real] = name
        folder, ok = _writable_folder(path)
        if not ok:
            raise DataError(path, f"cannot write {flag}: folder {folder} is not writable")


def os_error_line(exc):
    """One line for an OSError (permission, disk full, missing file, fitsio I/O status)."""
    parts = [p for p in (getattr(exc, "filename", None), getattr(exc, "strerror", None)) if p]
    if parts:
        return ": ".join(str(p) for p in parts)
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
