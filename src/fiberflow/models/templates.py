"""Model pieces of extragalactic spectra that the simulator and the template signal-to-noise
ensembles (:mod:`fiberflow.models.tsnr`) share: ELG emission lines and the mean Lyman-alpha
forest transmission of quasars."""

from __future__ import annotations

import numpy as np

C_KMS = 299792.458

#: rest vacuum wavelengths of ELG emission lines and their flux ratios relative to [OII] total
ELG_LINES = [
    (3727.09, 0.42), (3729.88, 0.58),  # [OII] doublet
    (4862.68, 0.35), (4960.30, 0.17), (5008.24, 0.5),  # Hb, [OIII]
    (6564.61, 1.0), (6585.27, 0.3), (6718.29, 0.18), (6732.67, 0.13),  # Ha, [NII], [SII]
]


def emission_lines(wave, z, oii, sigv):
    """ELG emission-line spectrum (Gaussian lines, ratios of :data:`ELG_LINES`).

    Parameters
    ----------
    wave : (nwave,)
        Observed vacuum wavelengths [Angstrom].
    z : float
    oii : float
        Total [OII] 3727+3729 flux, erg/s/cm^2.
    sigv : float
        Line-of-sight velocity dispersion [km/s].

    Returns
    -------
    (nwave,)
        erg/s/cm^2/Angstrom.
    """
    out = np.zeros(len(wave))
    for lam0, ratio in ELG_LINES:
        lam = lam0 * (1 + z)
        sig = lam * sigv / C_KMS
        sel = np.abs(wave - lam) < 8 * sig
        out[sel] += oii * ratio * np.exp(-0.5 * ((wave[sel] - lam) / sig) ** 2) / (np.sqrt(2 * np.pi) * sig)
    return out


def lya_forest_transmission(wave, z):
    """Mean transmission of the Lyman-alpha forest, ``exp(-0.0036 (1+z_abs)^3.7)`` blueward of
    the quasar's Lyman-alpha, 1 redward.

    Parameters
    ----------
    wave : (nwave,)
        Observed wavelengths [Angstrom].
    z : float
        Quasar redshift.

    Returns
    -------
    (nwave,)
    """
    lya = 1215.67 * (1 + z)
    zabs = np.asarray(wave) / 1215.67 - 1
    return np.where(wave < lya, np.exp(-0.0036 * np.clip(1 + zabs, 1, None) ** 3.7), 1.0)
