"""Snakemake's per-output records under ``.snakemake/``, read and carried along when a
production moves.

Snakemake (file persistence backend, the default) keeps one JSON record per output file
under ``.snakemake/metadata`` (the params, inputs, code and software of the job that wrote it;
what ``--rerun-triggers`` compare) and one marker per output being written under
``.snakemake/incomplete``. Each is named by the URL-safe base64 of the output's path as the
rule names it (absolute for fiberflow's rules), split into folder levels of at most NAME_MAX-1
characters, every level but the last prefixed with ``@``.

A production whose folder is moved or copied (``mv``, ``cp -a``, ``rsync -a``: the files keep
their mtimes) keeps its products, but its records still name the old paths: Snakemake would
find no record for any output, so a changed option would no longer rerun anything.
:func:`follow_move` renames the records (and rewrites the old roots inside them) the first
time the workflow is parsed in the new place; the roots of the last parse are kept in
``.snakemake/fiberflow-roots.json``.
"""

from __future__ import annotations

import base64
import json
import os
import re

STAMP = "fiberflow-roots.json"
KINDS = ("metadata", "incomplete")


def decode_key(relpath):
    """The output path a record file names (its path relative to the record folder), or None."""
    parts = relpath.split(os.sep)
    text = "".join(p[1:] if p.startswith("@") else p for p in parts[:-1]) + parts[-1]
    try:
        return base64.urlsafe_b64decode(text.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def encode_key(folder, key):
    """Record file of output path ``key`` under ``folder`` (as Snakemake names it)."""
    try:
        max_len = os.pathconf(folder, "PC_NAME_MAX") or 255
    except (OSError, ValueError):
        max_len = 255
    b64 = base64.urlsafe_b64encode(key.encode()).decode()
    chunks = [b64[i:i + max_len - 1] for i in range(0, len(b64), max_len - 1)]
    return os.path.join(folder, *(["@" + c for c in chunks[:-1]] + [chunks[-1]]))


def iter_records(workdir, kind="metadata"):
    """(record file, output path) of every record of one kind in a working directory."""
    folder = os.path.join(workdir, ".snakemake", kind)
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            key = decode_key(os.path.relpath(path, folder))
            if key is not None:
                yield path, key


def read_metadata(workdir, output):
    """The metadata record of one output (dict), or None when Snakemake has none."""
    path = encode_key(os.path.join(workdir, ".snakemake", "metadata"), output)
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _rewriter(pairs):
    """Function replacing every old root (followed by a path boundary) with its new one."""
    pairs = sorted(pairs, key=lambda p: -len(p[0]))
    table = dict(pairs)
    pattern = re.compile("(" + "|".join(re.escape(old) for old, _new in pairs) + r")(?=/|$|[^\w.-])")

    def sub(text):
        return pattern.sub(lambda m: table[m.group(1)], text)

    def walk(obj):
        if isinstance(obj, str):
            return sub(obj)
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        if isinstance(obj, dict):
            return {k: walk(v) for k, v in obj.items()}
        return obj

    return sub, walk


def follow_move(workdir, roots):
    """Carry Snakemake's records along when the production's roots changed since the last parse.

    Parameters
    ----------
    workdir : str
        Snakemake's working directory (where ``.snakemake/`` lives).
    roots : dict
        name -> absolute folder (working directory, production, raw root, config folder) now.

    Returns
    -------
    int
        Records renamed (0 when nothing moved, or on the first parse).
    """
    import fcntl

    snakedir = os.path.join(workdir, ".snakemake")
    os.makedirs(snakedir, exist_ok=True)
    roots = {k: os.path.normpath(v) for k, v in roots.items() if v and os.path.isabs(v)}
    stamp = os.path.join(snakedir, STAMP)
    moved = 0
    with open(stamp + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(stamp) as fh:
                before = json.load(fh)
        except (OSError, ValueError):
            before = {}
        pairs = [(os.path.normpath(old), roots[k]) for k, old in before.items()
                 if k in roots and isinstance(old, str) and os.path.normpath(old) != roots[k]]
        if pairs:
            sub, walk = _rewriter(pairs)
            for kind in KINDS:
                folder = os.path.join(snakedir, kind)
                for path, key in list(iter_records(workdir, kind)):
                    new_key = sub(key)
                    if new_key == key:
                        continue
                    with open(path) as fh:
                        text = fh.read()
                    try:
                        text = json.dumps(walk(json.loads(text)))
                    except ValueError:
                        pass
                    target = encode_key(folder, new_key)
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    with open(target + ".tmp", "w") as fh:
                        fh.write(text)
                    os.replace(target + ".tmp", target)
                    os.remove(path)
                    moved += 1
        if pairs or before != roots:
            with open(stamp + ".tmp", "w") as fh:
                json.dump(roots, fh, indent=1)
            os.replace(stamp + ".tmp", stamp)
    return moved
