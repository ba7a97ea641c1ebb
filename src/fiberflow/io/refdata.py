"""Readers of reference data files: arc line lists (DESI good lines, NIST lists) and the
UVES night-sky atlas. Used by the reduction (arclines, traceshift) and the simulator alike."""

from __future__ import annotations

import functools
import re

import numpy as np

from ..errors import DataError
from . import fitsutil

#: NIST lists of the lamps in DESI's arc exposures (HgAr, Cd, Ne, Kr)
ARC_LAMPS = ("HgI", "CdI", "NeI", "KrI", "ArI")


@functools.lru_cache(maxsize=8)
def read_line_list(path):
    """Read a good-lines list: ``wavelength ion [cameras]`` per line (untagged lines serve no camera), ``#`` comments.

    Returns
    -------
    ndarray, structured (nline,): WAVE (f8), ION (U6), CAMERAS (U8, e.g. ``B,R``)
    """
    rows = []
    try:
        fh = open(path)
    except OSError as exc:
        raise DataError(path, f"cannot read the arc line list ({exc.strerror})") from exc
    with fh:
        for k, line in enumerate(fh, 1):
            parts = line.split()
            if not parts or line.lstrip().startswith("#"):
                continue
            if len(parts) < 2:
                raise DataError(path, f"line {k}: expected 'wavelength ion [cameras]', got {line.strip()!r}")
            try:
                wave = float(parts[0])
            except ValueError as exc:
                raise DataError(path, f"line {k}: wavelength {parts[0]!r} is not a number") from exc
            rows.append((wave, parts[1], parts[2] if len(parts) > 2 else ""))  # untagged: no camera
    if not rows:
        raise DataError(path, "no lines in the arc line list")
    return np.array(rows, dtype=[("WAVE", "f8"), ("ION", "U6"), ("CAMERAS", "U8")])


@functools.lru_cache(maxsize=16)
def read_nist(path):
    """Observed vacuum wavelengths and relative intensities of a NIST list (``*_vacuum.ascii``).

    Returns
    -------
    wave, intensity : (n,) float64, sorted by wavelength (intensity 0 when NIST gives none)
    """
    waves, ints = [], []
    try:
        fh = open(path)
    except OSError as exc:
        raise DataError(path, f"cannot read the NIST line list ({exc.strerror})") from exc
    with fh:
        for line in fh:
            if line.startswith("#") or "|" not in line:
                continue
            cols = line.split("|")
            m = re.match(r"\s*(\d+\.\d*)", cols[0])
            if not m:
                continue
            k = re.search(r"(\d+)", cols[2]) if len(cols) > 2 else None
            waves.append(float(m.group(1)))
            ints.append(float(k.group(1)) if k else 0.0)
    order = np.argsort(waves)
    return np.asarray(waves)[order], np.asarray(ints)[order]


def read_uves_sky(path):
    """The UVES high-resolution night-sky atlas (``sky-uves.fits``): wave [A], flux (>= 0)."""
    with fitsutil.open_fits(path) as fx:
        tab, _ = fitsutil.read_table(fx, 1, path, required=("wavelength", "flux"))
    return np.asarray(tab["wavelength"], float), np.clip(np.asarray(tab["flux"], float), 0.0, None)
