"""The atmosphere seen by a spectrograph: telluric absorption bands."""

from __future__ import annotations

import numpy as np

#: telluric absorption bands left out of star fits and smoothed over in calibrations (the
#: stellar models have no atmosphere) [Angstrom]: O2 B, H2O, O2 A, H2O, H2O
TELLURIC_BANDS = ((6855.0, 6965.0), (7150.0, 7400.0), (7580.0, 7710.0), (8100.0, 8400.0), (8900.0, 9900.0))


def telluric_mask(wave):
    """(nwave,) bool: True inside a telluric band."""
    m = np.zeros(np.shape(wave), bool)
    for lo, hi in TELLURIC_BANDS:
        m |= (wave >= lo) & (wave <= hi)
    return m
