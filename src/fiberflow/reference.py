"""The real instrument data fiberflow needs at run time, shipped inside the package.

They live in ``fiberflow/data/reference/`` (sources and licences in its ``README.md``): the real
DESI r0 PSF, arc-line lists, sky / lamp / extinction spectra, basis templates for the simulator
and DESI's redrock templates. ``$FIBERFLOW_SHARED_DATA`` may name a site's own folder of the same
layout; a file found there takes precedence over the shipped one, file by file.
"""

from __future__ import annotations

import os
from importlib import resources

from .errors import DataError

#: environment variable naming a folder whose files override the shipped ones
OVERRIDE_ENV = "FIBERFLOW_SHARED_DATA"


def reference_dir():
    """Folder of the shipped reference data (inside the installed package)."""
    return str(resources.files("fiberflow") / "data" / "reference")


def reference_file(*parts, required=True):
    """Path of one reference file, e.g. ``reference_file("psf", "psf-r0-00067784.fits")``.

    The override folder ``$FIBERFLOW_SHARED_DATA`` is searched first, then the shipped data.

    Raises
    ------
    DataError
        When ``required`` and the file is in neither place (a broken installation); with
        ``required=False`` None is returned instead.
    """
    env = os.environ.get(OVERRIDE_ENV)
    if env:
        path = os.path.join(env, *parts)
        if os.path.exists(path):
            return path
    path = os.path.join(reference_dir(), *parts)
    if os.path.exists(path):
        return path
    if required:
        raise DataError(path, "reference data file missing from the fiberflow installation "
                              "(reinstall fiberflow, or set FIBERFLOW_SHARED_DATA to a folder that has it)")
    return None


def real_psf_path():
    """The real DESI r0 PSF (``psf/psf-r0-00067784.fits``) the nominal PSFs are derived from."""
    return reference_file("psf", "psf-r0-00067784.fits")


def redrock_template_dir():
    """Folder of DESI's redrock templates (``rrtemplate-*.fits``) shipped with fiberflow."""
    env = os.environ.get(OVERRIDE_ENV)
    if env and os.path.isdir(os.path.join(env, "redrock-templates")):
        return os.path.join(env, "redrock-templates")
    return os.path.join(reference_dir(), "redrock-templates")


def workflow_dir():
    """Folder holding the workflow (``Snakefile``, ``rules/``, ``config/``, ``profiles/``).

    In a source checkout (an editable install) it is the project root above ``src/``; an
    installed wheel carries a copy in ``fiberflow/data/workflow`` (see ``setup.py``).

    Raises
    ------
    DataError
        When neither has a Snakefile.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    project = os.path.normpath(os.path.join(here, "..", ".."))
    packaged = os.path.join(here, "data", "workflow")
    for cand in (project, packaged):
        if os.path.exists(os.path.join(cand, "Snakefile")) and os.path.isdir(os.path.join(cand, "rules")):
            return cand
    raise DataError(os.path.join(packaged, "Snakefile"), "the workflow is not installed with fiberflow "
                    "(install from the project with `pip install .`, or run from a clone of the project)")
