"""Provenance keywords written into every product header (ccdproc-style, no framework).

Cards (all deterministic: no wall-clock time, so the same inputs give the same bytes):

========  ===============================================================
FFVER     fiberflow version
FFGIT     ``git describe`` of the fiberflow source tree when available
FFSTEP    the step that wrote the file
FFCFGH    hash of the configuration (first 16 hex digits of sha256)
FFOPTnnn  one ``key=value`` per step option
FFINnnn   input files, relative to the production root when inside it
DEPNAMnn  package names / DEPVERnn versions (desiutil.depend convention)
========  ===============================================================
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess

from . import __version__
from .paths import production_relpath


@functools.lru_cache(maxsize=1)
def git_describe():
    """``git describe --always --dirty`` of the fiberflow source tree, or None."""
    env = os.environ.get("FIBERFLOW_GIT")
    if env:
        return env
    src = os.path.dirname(os.path.abspath(__file__))
    if not os.path.isdir(os.path.join(src, "..", "..", ".git")):
        return None
    try:
        out = subprocess.run(
            ["git", "-C", src, "describe", "--always", "--dirty", "--tags"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def config_hash(config):
    """Stable short hash of a (JSON-serialisable) configuration mapping."""
    if config is None:
        return None
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _dependency_versions():
    import numpy

    deps = [("python", platform.python_version()), ("fiberflow", __version__), ("numpy", numpy.__version__)]
    for mod in ("scipy", "numba", "fitsio", "astropy"):
        try:
            m = __import__(mod)
            deps.append((mod, getattr(m, "__version__", "unknown")))
        except ImportError:  # optional at write time
            pass
    return deps


def base_cards():
    """Provenance every written file carries, whatever wrote it: FFVER, FFGIT, DEPNAMnn/DEPVERnn."""
    hdr = {"FFVER": (__version__, "fiberflow version")}
    git = git_describe()
    if git:
        hdr["FFGIT"] = (git, "fiberflow git describe")
    for i, (name, ver) in enumerate(_dependency_versions()):
        hdr[f"DEPNAM{i:02d}"] = name
        hdr[f"DEPVER{i:02d}"] = str(ver)
    return hdr


def with_base_provenance(header):
    """``header`` (dict or None) with :func:`base_cards` filled in where absent."""
    out = base_cards()
    out.update(header or {})
    return out


def provenance_header(step, options=None, inputs=(), config=None, prod=None):
    """Header cards describing how a product was made.

    Parameters
    ----------
    step : str
        Step name (``preproc``, ``extract``, ...).
    options : dict, optional
        The step's options (written one per card).
    inputs : sequence of str
        Input file paths (shortened relative to ``prod``).
    config : dict, optional
        Configuration whose hash is recorded (FFCFGH).
    prod : str, optional
        Production root used to shorten input paths.

    Returns
    -------
    dict
        ``{KEY: (value, comment)}`` ready for the product writers.
    """
    hdr = {"FFVER": (__version__, "fiberflow version"), "FFSTEP": (step, "fiberflow step that wrote this file")}
    git = git_describe()
    if git:
        hdr["FFGIT"] = (git, "fiberflow git describe")
    h = config_hash(config)
    if h:
        hdr["FFCFGH"] = (h, "sha256[:16] of the configuration")
    for i, (key, val) in enumerate(sorted((options or {}).items())):
        text = f"{key}={json.dumps(val, default=str) if not isinstance(val, str) else val}"
        hdr[f"FFOPT{i:03d}"] = (text[:68], "step option")
    for i, path in enumerate(inputs):
        hdr[f"FFIN{i:03d}"] = (production_relpath(path, prod)[-68:], "input file")
    for i, (name, ver) in enumerate(_dependency_versions()):
        hdr[f"DEPNAM{i:02d}"] = name
        hdr[f"DEPVER{i:02d}"] = str(ver)
    return hdr


#: cards of an input's header that describe how that input was made (never carried to an output)
OWN_CARDS = ("FF", "DEPNAM", "DEPVER")


def step_header(step, options=None, inputs=(), config=None, prod=None, *, base=None, keep=None, camera=None):
    """The header of a step's product, the same way for every step.

    Parameters
    ----------
    step : str
        Step name (FFSTEP).
    options : dict, optional
        The step's options (FFOPTnnn cards).
    inputs : mapping or sequence
        ``{card: (path, comment)}``: every input gets an FFINnnn card and, when ``card`` is
        not empty, an ``IN_`` card with its file name (e.g. ``{"IN_FRAME": (path, "extracted
        frame")}``); a plain sequence of paths gets FFINnnn cards only.
    config : dict, optional
        The configuration (FFCFGH).
    prod : str, optional
        Production root (input paths are recorded relative to it).
    base : dict, optional
        Header of the main input to start from, without its own provenance cards
        (:data:`OWN_CARDS`); with ``keep`` only those keys of it.
    keep : sequence of str, optional
    camera : str, optional
        CAMERA card.

    Returns
    -------
    dict
    """
    hdr = {}
    if base:
        if keep is not None:
            hdr = {k: base[k] for k in keep if k in base}
        else:
            hdr = {k: v for k, v in base.items() if not str(k).startswith(OWN_CARDS)}
    named = isinstance(inputs, dict)
    paths = [path for path, _ in inputs.values()] if named else list(inputs)
    hdr.update(provenance_header(step, options, paths, config, prod))
    if camera is not None:
        hdr["CAMERA"] = camera
    if named:
        for card, (path, comment) in inputs.items():
            if card:
                hdr[card] = (os.path.basename(str(path)), comment)
    return hdr


def read_provenance(header):
    """Parse the provenance cards of a header dict back into a dict."""
    out = {"version": header.get("FFVER"), "git": header.get("FFGIT"), "step": header.get("FFSTEP"),
           "config_hash": header.get("FFCFGH"), "options": {}, "inputs": []}
    for key in sorted(header):
        if key.startswith("FFOPT"):
            k, _, v = str(header[key]).partition("=")
            out["options"][k] = v
        elif key.startswith("FFIN"):
            out["inputs"].append(header[key])
    return out
