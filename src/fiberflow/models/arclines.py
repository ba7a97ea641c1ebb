"""Arc-lamp line lists the wavelength calibration starts from.

DESI's ``goodlines_vacuum.ascii`` (bright, isolated lines, vacuum wavelengths in Angstrom, each
tagged with the cameras it serves) is read from the reference data shipped with fiberflow, or from a file
named in the configuration (``psf.line_list``).
"""

from __future__ import annotations

import numpy as np

from ..io.refdata import ARC_LAMPS, read_line_list, read_nist
from ..reference import reference_file


def default_line_list():
    """Path of DESI's good-lines list in the shipped reference data."""
    return reference_file("arc_lines", "goodlines_vacuum.ascii")


def lines_for_camera(arm, wmin, wmax, path=None, min_separation=6.0):
    """Good-line wavelengths usable by one arm inside [wmin, wmax].

    Lines closer than ``min_separation`` Angstrom to another listed line of the arm are dropped
    (their spots would overlap).

    Parameters
    ----------
    arm : str
        ``b``, ``r`` or ``z``.
    wmin, wmax : float
    path : str, optional
        Line list (default: DESI's good lines, shipped with fiberflow).

    Returns
    -------
    (nline,) float64, sorted
    """
    path = path or default_line_list()
    tab = read_line_list(str(path))
    tag = arm.upper()
    sel = np.array([tag in c.upper().split(",") for c in tab["CAMERAS"]])
    wave = np.sort(tab["WAVE"][sel])
    if wave.size > 1:
        gap = np.diff(wave)
        crowded = np.zeros(wave.size, bool)
        crowded[1:] |= gap < min_separation
        crowded[:-1] |= gap < min_separation
        wave = wave[~crowded]
    return wave[(wave > wmin) & (wave < wmax)]




def nist_path(lamp):
    """Path of a lamp's NIST list in the shipped reference data, or None for a lamp fiberflow
    does not ship."""
    return reference_file("arc_lines", f"{lamp}_vacuum.ascii", required=False)


def refinement_lines(wmin, wmax, lamps=ARC_LAMPS, min_intensity=50.0, min_separation=6.0, contrast=0.1):
    """NIST lines of the arc lamps worth fitting after the good lines have anchored the solution.

    A line is kept when NIST gives it at least ``min_intensity`` and no other line of any of the
    lamps within ``min_separation`` Angstrom is brighter than ``contrast`` times it (blends
    would pull the centroid). Whether a line is really lit in the lamps is decided by the data.

    Returns
    -------
    (nline,) float64, sorted
    """
    ws, its = [], []
    for lamp in lamps:
        path = nist_path(lamp)
        if path is None:
            continue
        w, i = read_nist(path)
        ws.append(w)
        its.append(i)
    if not ws:
        return np.zeros(0)
    w = np.concatenate(ws)
    i = np.concatenate(its)
    order = np.argsort(w)
    w, i = w[order], i[order]
    keep = []
    for k in np.nonzero((i >= min_intensity) & (w > wmin) & (w < wmax))[0]:
        near = (np.abs(w - w[k]) < min_separation)
        near[k] = False
        if not np.any(i[near] > contrast * i[k]):
            keep.append(w[k])
    return np.unique(np.array(keep))
