"""Comparisons of pipeline products with the simulator's truth (for tests, the demo and
validation scripts; the pipeline itself never reads truth)."""

from __future__ import annotations

import os

import numpy as np


def coadd_vs_truth(prod, truth_root, bands=("b", "r", "z"), min_single_snr=2.0):
    """Pulls of every multi-exposure coadd of a production against the truth, and its S/N gain.

    The expected coadd is the true flux of each exposure (truth ``FLUX``: the object at the
    instrument resolution through that exposure's aperture) coadded with exactly the weights
    of the coadd (same masks, same cosmic-ray rejection).

    Parameters
    ----------
    prod : str
        Production root (``healpix/`` below it).
    truth_root : str
        Simulator truth folder.
    bands : sequence of str
        Bands to compare (bands without truth files are skipped).
    min_single_snr : float
        Targets whose median single-exposure S/N per bin is below this are left out of the
        S/N-gain figure (their median S/N is noise).

    Returns
    -------
    dict nexp -> dict with ``pulls`` (concatenated (n,) over good bins), ``snr_ratio`` (list of
    median coadd S/N over median single-exposure S/N per target and band), ``ntarget``.
    """
    import glob

    from . import coadd, paths
    from .io.spectra import read_spectra
    from .sim.truth import TruthFrame

    cache = {}

    def truth_flux(night, expid, camera, tid):
        key = (night, expid, camera)
        if key not in cache:
            path = paths.findfile("truth", truth=truth_root, night=night, expid=expid, camera=camera)
            cache[key] = TruthFrame.read(path) if os.path.exists(path) else None
        t = cache[key]
        if t is None:
            return None
        k = np.flatnonzero(t.fibermap["TARGETID"] == tid)
        return t.flux[k[0]] if k.size else None

    out = {}
    for f in sorted(glob.glob(os.path.join(prod, "healpix", "*", "*", "*", "*", "spectra-*.fits"))):
        cpath = f.replace(os.sep + "spectra-", os.sep + "coadd-")
        if not os.path.exists(cpath):
            continue
        sp, co = read_spectra(f), read_spectra(cpath)
        fm = sp.fibermap
        for i, tid in enumerate(co.fibermap["TARGETID"]):
            jj = np.flatnonzero(fm["TARGETID"] == tid)
            entry = out.setdefault(len(jj), {"pulls": [], "snr_ratio": [], "ntarget": 0})
            entry["ntarget"] += 1
            for b in bands:
                if b not in sp.bands:
                    continue
                tr = [truth_flux(int(fm["NIGHT"][j]), int(fm["EXPID"][j]), f"{b}{int(fm['PETAL_LOC'][j])}", tid)
                      for j in jj]
                if any(t is None for t in tr):
                    continue
                fl, iv, mk = sp.flux[b][jj].astype(float), sp.ivar[b][jj].astype(float), sp.mask[b][jj]
                rej = None
                if len(jj) > 1 and float(co.header.get("COSMNSIG", 0) or 0) > 0:
                    rej = coadd.cosmic_mask(fl, iv * (mk == 0), float(co.header["COSMNSIG"]),
                                            float(co.header.get("COSMFRAC", 0.05)), float(co.header.get("COSMGROW", 2.0)))
                expect = coadd.coadd_band(np.array(tr, float), iv, mk, None, rej)[0]
                civ = co.ivar[b][i].astype(float)
                ok = (civ > 0) & (co.mask[b][i] == 0)
                if not ok.any():
                    continue
                entry["pulls"].append(((co.flux[b][i] - expect) * np.sqrt(civ))[ok])
                single = np.median([np.median((fl[k] * np.sqrt(iv[k]))[ok]) for k in range(len(jj))])
                if len(jj) > 1 and single > min_single_snr:
                    entry["snr_ratio"].append(float(np.median((co.flux[b][i] * np.sqrt(civ))[ok]) / single))
    for entry in out.values():
        entry["pulls"] = np.concatenate(entry["pulls"]) if entry["pulls"] else np.zeros(0)
    return out
