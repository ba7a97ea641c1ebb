"""DESI's spectrum scores (``desispec.specscore``): per band, the integrated and median flux and
the median S/N in a fixed top-hat wavelength range, for exposures (suffix CALIB, spectra files)
and coadds (suffix COADD); the SCORES table of both products."""

from __future__ import annotations

import numpy as np

#: fixed top-hat ranges of the band scores [Angstrom] (DESI's specscore.tophat_wave)
TOPHAT = {"b": (4000.0, 5800.0), "r": (5800.0, 7600.0), "z": (7600.0, 9800.0)}


def band_scores(wave, flux, ivar, band, suffix="CALIB"):
    """DESI-style scores of spectra in one band's top-hat range.

    Parameters
    ----------
    wave : (nwave,)
    flux, ivar : (nspec, nwave)
    band : str
        'b', 'r' or 'z' (selects the top-hat range).
    suffix : str
        CALIB for exposures, COADD for coadds.

    Returns
    -------
    dict name -> float32 (nspec,)
        ``INTEG_{suffix}_FLUX_{B}`` (sum of flux x bin width), ``MEDIAN_{suffix}_FLUX_{B}``,
        ``MEDIAN_{suffix}_SNR_{B}`` (median of flux x sqrt(ivar)).
    """
    lo, hi = TOPHAT[band]
    sel = (wave >= lo) & (wave < hi)
    B = band.upper()
    nspec = flux.shape[0]
    if not sel.any():
        zero = np.zeros(nspec, np.float32)
        return {f"INTEG_{suffix}_FLUX_{B}": zero, f"MEDIAN_{suffix}_FLUX_{B}": zero.copy(),
                f"MEDIAN_{suffix}_SNR_{B}": zero.copy()}
    dwave = np.gradient(wave)[sel]
    f = np.asarray(flux, float)[:, sel]
    iv = np.clip(np.asarray(ivar, float)[:, sel], 0, None)
    return {
        f"INTEG_{suffix}_FLUX_{B}": (f * dwave).sum(axis=1).astype(np.float32),
        f"MEDIAN_{suffix}_FLUX_{B}": np.median(f, axis=1).astype(np.float32),
        f"MEDIAN_{suffix}_SNR_{B}": np.median(f * np.sqrt(iv), axis=1).astype(np.float32),
    }


def scores_table(targetid, per_band):
    """Structured SCORES table: TARGETID then the band scores in b, r, z order.

    Parameters
    ----------
    targetid : (nspec,)
    per_band : dict band -> dict name -> (nspec,)
    """
    cols = [("TARGETID", np.asarray(targetid, np.int64))]
    for b in sorted(per_band, key="brz".find):
        cols += list(per_band[b].items())
    out = np.zeros(len(targetid), dtype=[(n, v.dtype) for n, v in cols])
    for n, v in cols:
        out[n] = v
    return out


def coadd_tsnr2(scores, rows):
    """DESI's coadded template signal-to-noise (``specscore.compute_coadd_tsnr_scores``): each
    ``TSNR2_{TRACER}_{B}`` summed over a target's exposures, and ``TSNR2_{TRACER}`` over its bands.

    Parameters
    ----------
    scores : structured (nspec,) or None
        The spectra file's SCORES (per exposure row).
    rows : list of int arrays
        Each target's rows.

    Returns
    -------
    dict name -> float32 (ntarget,)
        Empty when the scores have no TSNR2 column.
    """
    names = [n for n in (scores.dtype.names if scores is not None else ())
             if n.startswith("TSNR2_") and n.count("_") == 2 and n[-1] in "BRZ"]
    out = {}
    for n in names:
        v = np.asarray(scores[n], np.float64)
        out[n] = np.array([v[r].sum() for r in rows], np.float32)
    for t in dict.fromkeys(n.split("_")[1] for n in names):
        out[f"TSNR2_{t}"] = np.sum([out[n] for n in names if n.split("_")[1] == t], axis=0).astype(np.float32)
    return out


def with_columns(table, cols):
    """``table`` (structured) with the columns ``cols`` (dict name -> (n,)) appended."""
    if not cols:
        return table
    out = np.zeros(len(table), dtype=[(n, table.dtype[n]) for n in table.dtype.names]
                   + [(n, np.asarray(v).dtype) for n, v in cols.items()])
    for n in table.dtype.names:
        out[n] = table[n]
    for n, v in cols.items():
        out[n] = v
    return out
