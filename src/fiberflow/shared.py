"""Where the shared real instrument data live (``../shared/data`` beside the project)."""

from __future__ import annotations

import os


def shared_data_dir():
    """Folder of the shared instrument data, or None when absent.

    Looked up in ``$FIBERFLOW_SHARED_DATA``, then ``../shared/data`` relative to the project
    root (the parent of ``src/``), then ``./shared/data`` and ``../shared/data`` from the
    current directory.
    """
    candidates = []
    env = os.environ.get("FIBERFLOW_SHARED_DATA")
    if env:
        candidates.append(env)
    here = os.path.dirname(os.path.abspath(__file__))
    project = os.path.normpath(os.path.join(here, "..", ".."))
    candidates += [os.path.join(project, "..", "shared", "data"), os.path.join(project, "shared", "data"),
                   os.path.join(os.getcwd(), "shared", "data"), os.path.join(os.getcwd(), "..", "shared", "data")]
    for c in candidates:
        if os.path.isdir(os.path.join(c, "psf")):
            return os.path.normpath(c)
    return None


def shared_file(*parts):
    """Path of a file under the shared data folder, or None when the folder or file is absent."""
    root = shared_data_dir()
    if root is None:
        return None
    path = os.path.join(root, *parts)
    return path if os.path.exists(path) else None


def real_psf_path():
    """The real DESI r0 PSF ``psf/psf-r0-00067784.fits``, or None."""
    return shared_file("psf", "psf-r0-00067784.fits")
