"""Coadds: one spectrum per target from all its exposures in a HEALPix pixel.

Per target and band (DESI's conventions, so ``desispec.coaddition.coadd`` run on the same
spectra file gives the same numbers):

- exposures whose FIBERSTATUS has a bit of :func:`fiberflow.bitmasks.coadd_bad_fiberstatus`
  are left out (per band: BADAMPB only removes the b band);
- inverse-variance weights; bins with a specmask bit, or rejected as cosmic rays, get weight 0;
- where every exposure is masked in a bin, the bin is still coadded with the unmasked weights
  and carries the OR of the input masks (so the coadd has a value everywhere);
- flux = sum(w f) / sum(w), ivar = sum(w);
- the resolution matrix row i is the same weighted mean of the exposures' rows i
  (flux_i = sum_e w_ei (R_e t)_i / sum_e w_ei, so that coadd = R_coadd t exactly).

Cosmic-ray rejection across exposures (fiberflow's own test, not DESI's): each exposure is
compared with the weighted mean of the others; a bin more than ``cosmics_nsig`` above it, in
units of the combined noise plus a small fractional allowance (exposures of extended objects
differ by their aperture losses, and sharp lines by the resolution), is rejected, the worst
exposure first, and its neighbouring bins follow when they are more than 2 sigma high.
Cosmic rays only add light, so only positive outliers count; that makes two exposures enough.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..bitmasks import coadd_bad_fiberstatus, specmask
from ..config import StepOptions
from ..models.scores import band_scores, coadd_tsnr2, scores_table, with_columns


@dataclass
class CoaddOptions(StepOptions):
    """Options of :func:`coadd_spectra` (config section ``healpix``)."""

    cosmics_nsig: float = 4.0    #: rejection threshold [sigma]; 0 switches rejection off
    cosmics_frac: float = 0.05   #: fractional allowance added to the noise of the comparison
    cosmics_grow: float = 2.0    #: neighbours of a rejected bin above this [sigma] are rejected too
    merge_bands: bool = False    #: also write the b, r, z bands merged on one grid (BRZ_*)
    coadd_max_rows: int = 500    #: input spectra (rows) held in memory at a time by :func:`coadd_file`


#: fibermap columns that describe one exposure of a target (DESI's EXP_FIBERMAP columns)
PER_EXPOSURE_COLUMNS = (
    "TARGETID", "PRIORITY", "SUBPRIORITY", "NIGHT", "EXPID", "MJD", "TILEID", "EXPTIME",
    "PETAL_LOC", "DEVICE_LOC", "LOCATION", "FIBER", "FIBERSTATUS", "FIBERASSIGN_X", "FIBERASSIGN_Y",
    "LAMBDA_REF", "PLATE_RA", "PLATE_DEC", "NUM_ITER", "FIBER_X", "FIBER_Y", "DELTA_X", "DELTA_Y",
    "FIBER_RA", "FIBER_DEC", "PSF_TO_FIBER_SPECFLUX",
)

#: per-exposure columns dropped from the one-row-per-target FIBERMAP (kept in EXP_FIBERMAP)
_DROP_FROM_TARGET = (
    "NIGHT", "EXPID", "MJD", "EXPTIME", "NUM_ITER", "PSF_TO_FIBER_SPECFLUX", "TILEID", "FIBER",
    "FIBER_X", "FIBER_Y", "PRIORITY", "PETAL_LOC", "DEVICE_LOC", "LOCATION", "FIBERASSIGN_X",
    "FIBERASSIGN_Y", "LAMBDA_REF", "PLATE_RA", "PLATE_DEC", "DELTA_X", "DELTA_Y", "FIBER_RA", "FIBER_DEC",
)

#: targeting bit columns: OR over exposures
_TARGET_BITS = ("DESI_TARGET", "BGS_TARGET", "MWS_TARGET", "SCND_TARGET", "CMX_TARGET")


def use_for_coadd(fiberstatus, band):
    """(n,) bool: exposures whose FIBERSTATUS lets them into the coadd of ``band``."""
    return (np.asarray(fiberstatus).astype(np.int64) & coadd_bad_fiberstatus(band)) == 0


def ordered_unique(values):
    """Unique values in order of first appearance, and the index of each first appearance."""
    values = np.asarray(values)
    _, first = np.unique(values, return_index=True)
    first = np.sort(first)
    return values[first], first


# ------------------------------------------------------------------------------ cosmic rays
def cosmic_mask(flux, ivar, nsig=4.0, frac=0.05, grow=2.0):
    """Bins where one exposure of a target is a positive outlier against the others.

    Parameters
    ----------
    flux, ivar : (nexp, nwave)
        One target, one band; ivar 0 marks bins already masked.
    nsig : float
        Threshold [sigma] of ``(f_e - m_e) / sqrt(1/ivar_e + 1/W_e + (frac m_e)^2)``, where
        ``m_e`` and ``W_e`` are the weighted mean and summed weight of the other exposures.
    frac : float
        Fractional allowance for exposure-to-exposure differences of real signal.
    grow : float
        Bins next to a rejected one (same exposure) above this threshold are rejected too.

    Returns
    -------
    bool (nexp, nwave)
        True where rejected. At most one exposure per bin is rejected per pass; passes stop
        when nothing is above threshold or one exposure per bin is left.
    """
    flux = np.asarray(flux, float)
    ivar = np.asarray(ivar, float)
    nexp, nwave = flux.shape
    rej = np.zeros((nexp, nwave), bool)
    if nexp < 2 or nsig <= 0:
        return rej
    good = ivar > 0
    for _ in range(nexp - 1):
        w = np.where(good & ~rej, ivar, 0.0)
        W = w.sum(axis=0)
        S = (w * flux).sum(axis=0)
        Wo = W[None, :] - w
        use = (w > 0) & (Wo > 0)
        safe = np.where(use, Wo, 1.0)
        m = np.where(use, (S[None, :] - w * flux) / safe, 0.0)
        var = np.where(use, 1.0 / np.where(use, w, 1.0) + 1.0 / safe + (frac * m) ** 2, 1.0)
        chi = np.where(use, (flux - m) / np.sqrt(var), 0.0)
        cand = chi > nsig
        cols = np.flatnonzero(cand.any(axis=0))
        if cols.size == 0:
            break
        worst = np.argmax(np.where(cand[:, cols], chi[:, cols], -np.inf), axis=0)
        new = np.zeros_like(rej)
        new[worst, cols] = True
        near = np.zeros_like(rej)
        near[:, 1:] |= new[:, :-1]
        near[:, :-1] |= new[:, 1:]
        rej |= new | (near & (chi > grow) & use)
        # never reject every exposure of a bin
        allgone = ~(good & ~rej).any(axis=0) & good.any(axis=0)
        if allgone.any():
            rej[:, allgone] &= ~new[:, allgone]
    return rej


def cosmic_mask_loop(flux, ivar, nsig=4.0, frac=0.05, grow=2.0):
    """Plain-loop reference of :func:`cosmic_mask` (one bin and one exposure at a time)."""
    flux = np.asarray(flux, float)
    ivar = np.asarray(ivar, float)
    nexp, nwave = flux.shape
    rej = np.zeros((nexp, nwave), bool)
    if nexp < 2 or nsig <= 0:
        return rej
    for _ in range(nexp - 1):
        chi = np.zeros((nexp, nwave))
        use = np.zeros((nexp, nwave), bool)
        for j in range(nwave):
            for e in range(nexp):
                if ivar[e, j] <= 0 or rej[e, j]:
                    continue
                others = [k for k in range(nexp) if k != e and ivar[k, j] > 0 and not rej[k, j]]
                if not others:
                    continue
                Wo = sum(ivar[k, j] for k in others)
                m = sum(ivar[k, j] * flux[k, j] for k in others) / Wo
                chi[e, j] = (flux[e, j] - m) / np.sqrt(1 / ivar[e, j] + 1 / Wo + (frac * m) ** 2)
                use[e, j] = True
        new = np.zeros_like(rej)
        for j in range(nwave):
            best = -1
            for e in range(nexp):
                if use[e, j] and chi[e, j] > nsig and (best < 0 or chi[e, j] > chi[best, j]):
                    best = e
            if best >= 0:
                new[best, j] = True
        if not new.any():
            break
        for e in range(nexp):
            for j in range(nwave):
                if new[e, j] or (use[e, j] and chi[e, j] > grow
                                 and ((j > 0 and new[e, j - 1]) or (j < nwave - 1 and new[e, j + 1]))):
                    rej[e, j] = True
        for j in range(nwave):
            if any(ivar[e, j] > 0 for e in range(nexp)) and not any(ivar[e, j] > 0 and not rej[e, j]
                                                                   for e in range(nexp)):
                for e in range(nexp):
                    if new[e, j]:
                        rej[e, j] = False
    return rej


# ------------------------------------------------------------------------------ one target
def coadd_resolution(res, weights):
    """Resolution diagonals of a weighted mean of spectra.

    Parameters
    ----------
    res : (nexp, ndiag, nwave)
        Diagonals, scipy dia convention (offsets +ndiag//2 .. -ndiag//2): ``res[e, k, j]`` is
        ``R_e[j - offset_k, j]``, on row ``i = j + k - ndiag//2``.
    weights : (nexp, nwave)
        Per-exposure weights of each output bin (row), normalised to sum 1 over exposures.

    Returns
    -------
    (ndiag, nwave)
        Row i of the result is ``sum_e weights[e, i] R_e[i, :]``; entries outside the matrix are 0.
    """
    _, ndiag, nwave = res.shape
    half = ndiag // 2
    out = np.zeros((ndiag, nwave), dtype=float)
    j = np.arange(nwave)
    for k in range(ndiag):
        row = j + k - half
        ok = (row >= 0) & (row < nwave)
        out[k, ok] = (weights[:, row[ok]] * res[:, k, ok]).sum(axis=0)
    return out


def coadd_band(flux, ivar, mask, res, rejected=None):
    """Inverse-variance coadd of one target's exposures in one band.

    Parameters
    ----------
    flux, ivar : (nexp, nwave)
    mask : int (nexp, nwave)
        specmask bits; a set bit gives the bin weight 0.
    res : (nexp, ndiag, nwave) or None
    rejected : bool (nexp, nwave), optional
        Cosmic-ray rejected bins (weight 0).

    Returns
    -------
    flux (nwave,), ivar (nwave,), mask (nwave,), res (ndiag, nwave) or None
    """
    flux = np.asarray(flux, float)
    ivar = np.asarray(ivar, float)
    w = ivar * (mask == 0)
    if rejected is not None:
        w = np.where(rejected, 0.0, w)
    tivar = w.sum(axis=0)
    bad = tivar == 0
    if bad.any():
        w[:, bad] = ivar[:, bad]
        tivar[bad] = w[:, bad].sum(axis=0)
    wn = w / np.where(tivar > 0, tivar, 1.0)
    tflux = (wn * flux).sum(axis=0)
    tmask = np.zeros(flux.shape[1], dtype=np.int32)
    if bad.any():
        tmask[bad] = np.bitwise_or.reduce(np.asarray(mask)[:, bad], axis=0)
    tres = None if res is None else coadd_resolution(np.asarray(res, float), wn)
    return tflux, tivar, tmask, tres


# ------------------------------------------------------------------------------ fibermaps
def _mean_radec(ra, dec):
    """Mean RA/Dec [deg] and their scatter [arcsec, RA times cos(Dec)], RA wrap handled."""
    ra = np.asarray(ra, float)
    dec = np.asarray(dec, float)
    offset = 180.0 if ra.max() - ra.min() > 180 else 0.0
    ras = (ra + offset) % 360
    mdec = dec.mean()
    return ((ras.mean() - offset) % 360, ras.std() * np.cos(np.radians(mdec)) * 3600, mdec, dec.std() * 3600)


def coadd_fibermap(fibermap, bands=("b", "r", "z")):
    """One FIBERMAP row per target, and the per-exposure EXP_FIBERMAP.

    Parameters
    ----------
    fibermap : structured (nspec,)
        Rows of the spectra file (target x exposure), with FIBERSTATUS and TARGETID.
    bands : sequence of str
        Bands whose FIBERSTATUS rules decide IN_COADD_{B} and COADD_NUMEXP.

    Returns
    -------
    (tfmap, exp_fibermap)
        tfmap (ntarget,): the target columns of the first row of each target (in order of first
        appearance), COADD_FIBERSTATUS (AND over the exposures used, OR when none is usable),
        COADD_NUMEXP / COADD_EXPTIME / COADD_NUMNIGHT / COADD_NUMTILE, MEAN_/RMS_DELTA_X/Y,
        MEAN_/STD_FIBER_RA/DEC, MEAN_FIBER_X/Y, MIN_/MAX_/MEAN_MJD, targeting bits ORed.
        exp_fibermap (nspec,): the per-exposure columns plus IN_COADD_B/R/Z.
    """
    names = fibermap.dtype.names
    tids, first = ordered_unique(fibermap["TARGETID"])
    nt = len(tids)
    fs = np.asarray(fibermap["FIBERSTATUS"]).astype(np.int64)
    inc = {b: use_for_coadd(fs, b) for b in "brz"}
    used = np.zeros(len(fibermap), bool)
    for b in bands:
        used |= inc[b]
    # target table columns
    keep = [n for n in names if n not in _DROP_FROM_TARGET and n != "FIBERSTATUS"]
    descr = [(n, fibermap.dtype[n]) for n in keep]
    descr.insert(1 if keep and keep[0] == "TARGETID" else 0, ("COADD_FIBERSTATUS", "i4"))
    added = [("COADD_NUMEXP", "i2"), ("COADD_EXPTIME", "f4"), ("COADD_NUMNIGHT", "i2"), ("COADD_NUMTILE", "i2")]
    for c in ("DELTA_X", "DELTA_Y"):
        if c in names:
            added += [(f"MEAN_{c}", "f4"), (f"RMS_{c}", "f4")]
    for c in ("FIBER_X", "FIBER_Y"):
        if c in names:
            added += [(f"MEAN_{c}", "f4")]
    if "FIBER_RA" in names and "FIBER_DEC" in names:
        added += [("MEAN_FIBER_RA", "f8"), ("STD_FIBER_RA", "f4"), ("MEAN_FIBER_DEC", "f8"), ("STD_FIBER_DEC", "f4")]
    if "MJD" in names:
        added += [("MIN_MJD", "f8"), ("MAX_MJD", "f8"), ("MEAN_MJD", "f8")]
    tf = np.zeros(nt, dtype=descr + added)
    for n in keep:
        tf[n] = fibermap[n][first]
    order = np.argsort(fibermap["TARGETID"], kind="stable")
    sorted_tid = np.asarray(fibermap["TARGETID"])[order]
    for i, tid in enumerate(tids):
        lo, hi = np.searchsorted(sorted_tid, tid, "left"), np.searchsorted(sorted_tid, tid, "right")
        jj = np.sort(order[lo:hi])
        ok = used[jj]
        use = jj[ok] if ok.any() else jj
        tf["COADD_FIBERSTATUS"][i] = (np.bitwise_and.reduce(fs[jj[ok]]) if ok.any() else np.bitwise_or.reduce(fs[jj]))
        tf["COADD_NUMEXP"][i] = int(ok.sum())
        good = jj[ok]
        if "EXPTIME" in names:
            tf["COADD_EXPTIME"][i] = float(np.sum(fibermap["EXPTIME"][good]))
        if "NIGHT" in names:
            tf["COADD_NUMNIGHT"][i] = len(np.unique(fibermap["NIGHT"][good]))
        if "TILEID" in names:
            tf["COADD_NUMTILE"][i] = len(np.unique(fibermap["TILEID"][good]))
        for c in ("DELTA_X", "DELTA_Y"):
            if c in names:
                v = np.asarray(fibermap[c][use], float)
                tf[f"MEAN_{c}"][i] = v.mean()
                tf[f"RMS_{c}"][i] = np.sqrt(np.mean(v ** 2))
        for c in ("FIBER_X", "FIBER_Y"):
            if c in names:
                tf[f"MEAN_{c}"][i] = np.mean(fibermap[c][use])
        if "FIBER_RA" in names and "FIBER_DEC" in names:
            ra, dec = fibermap["FIBER_RA"][use], fibermap["FIBER_DEC"][use]
            coords = (ra != 0) | (dec != 0)
            if coords.any():
                ra, dec = ra[coords], dec[coords]
            mra, sra, mdec, sdec = _mean_radec(ra, dec)
            tf["MEAN_FIBER_RA"][i], tf["STD_FIBER_RA"][i] = mra, sra
            tf["MEAN_FIBER_DEC"][i], tf["STD_FIBER_DEC"][i] = mdec, sdec
        if "MJD" in names:
            v = fibermap["MJD"][use]
            tf["MIN_MJD"][i], tf["MAX_MJD"][i], tf["MEAN_MJD"][i] = v.min(), v.max(), v.mean()
        for c in _TARGET_BITS:
            if c in keep:
                tf[c][i] = np.bitwise_or.reduce(fibermap[c][jj])
    expcols = [n for n in PER_EXPOSURE_COLUMNS if n in names]
    ex = np.zeros(len(fibermap), dtype=[(n, fibermap.dtype[n]) for n in expcols]
                  + [("IN_COADD_B", "?"), ("IN_COADD_R", "?"), ("IN_COADD_Z", "?")])
    for n in expcols:
        ex[n] = fibermap[n]
    for b in "brz":
        ex[f"IN_COADD_{b.upper()}"] = inc[b] if b in bands else False
    return tf, ex


# ------------------------------------------------------------------------------ the pixel
def target_rows(targetid):
    """(unique targets in order of first appearance, [row indices of each target])."""
    tids, _ = ordered_unique(targetid)
    order = np.argsort(targetid, kind="stable")
    st = np.asarray(targetid)[order]
    rows = [np.sort(order[np.searchsorted(st, t, "left"):np.searchsorted(st, t, "right")]) for t in tids]
    return tids, rows


def coadd_one_band(fiberstatus, rows, band, flux, ivar, mask, res, opts=None):
    """Coadd every target in one band.

    Parameters
    ----------
    fiberstatus : (nspec,)
    rows : list of int arrays
        Rows of each target (:func:`target_rows`).
    band : str
    flux, ivar : (nspec, nwave)
    mask : (nspec, nwave)
    res : (nspec, ndiag, nwave) or None
    opts : CoaddOptions

    Returns
    -------
    dict
        ``flux``, ``ivar`` (ntarget, nwave) f4, ``mask`` i4, ``resolution`` (ntarget, ndiag, nwave)
        f4 or None, ``ncosmic`` (rejected bins). A target without a usable exposure has ivar 0
        and NODATA.
    """
    opts = opts or CoaddOptions()
    nt, nw = len(rows), flux.shape[1]
    ok = use_for_coadd(fiberstatus, band) if band in "brz" else np.ones(len(fiberstatus), bool)
    tflux = np.zeros((nt, nw), np.float32)
    tivar = np.zeros((nt, nw), np.float32)
    tmask = np.zeros((nt, nw), np.int32)
    tres = None if res is None else np.zeros((nt, res.shape[1], nw), np.float32)
    ncr = 0
    for i, jj in enumerate(rows):
        jj = jj[ok[jj]]
        if jj.size == 0:
            tmask[i] = specmask.mask("NODATA")
            continue
        f = flux[jj].astype(float)
        iv = ivar[jj].astype(float)
        mk = mask[jj]
        rej = None
        if opts.cosmics_nsig > 0 and jj.size >= 2:
            rej = cosmic_mask(f, iv * (mk == 0), opts.cosmics_nsig, opts.cosmics_frac, opts.cosmics_grow)
            ncr += int(rej.sum())
        cf, ci, cm, cr = coadd_band(f, iv, mk, None if res is None else res[jj], rej)
        tflux[i], tivar[i], tmask[i] = cf, ci, cm
        if tres is not None:
            tres[i] = cr
    return {"flux": tflux, "ivar": tivar, "mask": tmask, "resolution": tres, "ncosmic": ncr}


def coadd_header(header, opts, ncosmic):
    """Header of a coadd: the input's grouping cards (HPX* of a pixel; TILEID, PETAL, SPGRP,
    SPGRPVAL, NIGHT of a tile petal; SURVEY, PROGRAM), the rejection settings and counts."""
    keep = ("SURVEY", "PROGRAM", "TILEID", "PETAL", "SPGRP", "SPGRPVAL", "NIGHT")
    out = {k: v for k, v in header.items() if k.startswith("HPX") or k in keep}
    for b, n in ncosmic.items():
        out[f"NCOSMIC{b.upper()}"] = (int(n), f"bins rejected as cosmic rays in {b}")
    out["COSMNSIG"] = (float(opts.cosmics_nsig), "cosmic-ray rejection threshold (0: off)")
    out["COSMFRAC"] = (float(opts.cosmics_frac), "cosmic-ray test: fractional allowance")
    out["COSMGROW"] = (float(opts.cosmics_grow), "cosmic-ray test: neighbour threshold")
    return out


def merged_grid(wave, tolerance=1e-4):
    """The one wavelength lattice of bands that share it, and where each band starts on it.

    Parameters
    ----------
    wave : dict band -> (nwave_b,)

    Returns
    -------
    grid : (nw,)
    start : dict band -> int
        Bands in order of increasing wavelength; ``grid[start[b]:start[b] + nwave_b] == wave[b]``.

    Raises
    ------
    ValueError
        When a band's grid does not fall on the merged lattice.
    """
    bands = sorted(wave, key=lambda b: float(np.mean(wave[b])))
    grid = np.asarray(wave[bands[0]], float)
    for b in bands[1:]:
        w = np.asarray(wave[b], float)
        grid = np.concatenate([grid, w[w > grid[-1] + tolerance]])
    start = {}
    for b in bands:
        i0 = int(np.argmin(np.abs(grid - wave[b][0])))
        if i0 + len(wave[b]) > grid.size or np.any(np.abs(grid[i0:i0 + len(wave[b])] - wave[b]) > tolerance):
            raise ValueError(f"band {b} is not on the merged wavelength lattice")
        start[b] = i0
    return grid, start


def merge_bands(wave, flux, ivar, mask, res, tolerance=1e-4):
    """Merge bands that share one wavelength lattice into one spectrum per target (BRZ).

    Parameters
    ----------
    wave, flux, ivar, mask, res : dict band -> arrays
        As in a coadd: (nwave_b,), (n, nwave_b), ..., res (n, ndiag_b, nwave_b) or None.

    Returns
    -------
    wave (nw,), flux (n, nw), ivar (n, nw), mask (n, nw), res (n, ndiag, nw) or None
        Overlapping bins are ivar-weighted means (equal weights where every band has ivar 0),
        ivar the sum, mask the OR where the sum is 0; resolution rows weighted alike.

    Raises
    ------
    ValueError
        When a band's grid does not fall on the merged lattice.
    """
    grid, start = merged_grid(wave, tolerance)
    bands = list(start)
    nw = grid.size
    n = flux[bands[0]].shape[0]
    ndiag = max(res[b].shape[1] for b in bands) if all(res.get(b) is not None for b in bands) else None
    W = np.zeros((n, nw))
    cover = np.zeros(nw)
    for b in bands:
        sl = slice(start[b], start[b] + len(wave[b]))
        W[:, sl] += ivar[b]
        cover[sl] += 1
    F = np.zeros((n, nw))
    M = np.zeros((n, nw), np.int32)
    R = None if ndiag is None else np.zeros((n, ndiag, nw))
    zero = W == 0
    for b in bands:
        sl = slice(start[b], start[b] + len(wave[b]))
        wb = np.where(zero[:, sl], 1.0 / cover[sl], ivar[b] / np.where(zero[:, sl], 1.0, W[:, sl]))
        F[:, sl] += wb * flux[b]
        M[:, sl] |= np.where(zero[:, sl], mask[b], 0)
        if R is not None:
            rb = np.asarray(res[b], float)
            ndb, nwb = rb.shape[1], rb.shape[2]
            pad = (ndiag - ndb) // 2
            j = np.arange(nwb)
            for kb in range(ndb):
                row = j + kb - ndb // 2       # row of each entry of this diagonal (weights are per row)
                ok = (row >= 0) & (row < nwb)
                R[:, pad + kb, start[b] + j[ok]] += wb[:, row[ok]] * rb[:, kb, ok]
    return grid, F.astype("f4"), W.astype("f4"), M, None if R is None else R.astype("f4")


def coadd_spectra(spectra, opts=None):
    """The coadd of a spectra file held in memory: one row per target, DESI coadd layout.

    Parameters
    ----------
    spectra : fiberflow.io.spectra.Spectra
    opts : CoaddOptions

    Returns
    -------
    Spectra
        FIBERMAP one row per target, EXP_FIBERMAP, SCORES with the COADD scores per band and the summed TSNR2 (DESI);
        header keeps HPX* and gains the rejection settings and NCOSMIC{B}. With
        ``opts.merge_bands`` the bands are replaced by one merged ``brz`` band.
    """
    from ..io.spectra import Spectra

    opts = opts or CoaddOptions()
    fm = spectra.fibermap
    tids, rows = target_rows(fm["TARGETID"])
    fs = np.asarray(fm["FIBERSTATUS"]).astype(np.int64)
    tf, ex = coadd_fibermap(fm, [b for b in spectra.bands if b in "brz"])
    bands = list(spectra.bands)
    wave = {b: np.asarray(spectra.wave[b], float) for b in bands}
    flux, ivar, mask, res, ncosmic = {}, {}, {}, {}, {}
    for b in bands:
        c = coadd_one_band(fs, rows, b, spectra.flux[b], spectra.ivar[b], spectra.mask[b],
                           spectra.resolution.get(b), opts)
        flux[b], ivar[b], mask[b], res[b], ncosmic[b] = c["flux"], c["ivar"], c["mask"], c["resolution"], c["ncosmic"]
    header = coadd_header(spectra.header, opts, ncosmic)
    if opts.merge_bands and len(bands) > 1:
        g, f, iv, m, r = merge_bands(wave, flux, ivar, mask, res)
        per_band = {b: band_scores(g, f, iv, b, "COADD") for b in bands if b in "brz"}
        bands, wave, flux, ivar, mask, res = ["brz"], {"brz": g}, {"brz": f}, {"brz": iv}, {"brz": m}, {"brz": r}
    else:
        per_band = {b: band_scores(wave[b], flux[b], ivar[b], b, "COADD") for b in bands if b in "brz"}
    scores = with_columns(scores_table(tids, per_band), coadd_tsnr2(spectra.scores, rows))
    return Spectra(bands, wave, flux, ivar, mask, res, tf, ex, scores, header, spectra.units)


def target_chunks(rows, max_rows):
    """Consecutive groups of targets whose spectra together fit in ``max_rows`` rows.

    Parameters
    ----------
    rows : list of int arrays
        Rows of each target (:func:`target_rows`).
    max_rows : int
        Rows per chunk (a target with more rows than this gets a chunk of its own).

    Returns
    -------
    list of (first target, stop target)
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, not {max_rows}")
    chunks, t0, n = [], 0, 0
    for i, jj in enumerate(rows):
        if n and n + len(jj) > max_rows:
            chunks.append((t0, i))
            t0, n = i, 0
        n += len(jj)
    if len(rows):
        chunks.append((t0, len(rows)))
    return chunks


def coadd_file(infile, outfile, opts=None, header=None):
    """Coadd a spectra file into a coadd file, ``opts.coadd_max_rows`` input spectra in memory at a time.

    Targets are taken in chunks (:func:`target_chunks`); for each chunk every band's rows are
    read (:func:`fiberflow.io.spectra.read_spectra_rows`), coadded and written into the output's
    rows, so memory is bounded by the chunk, not by the pixel. The result is the same as
    :func:`coadd_spectra` on the whole file.

    Parameters
    ----------
    infile, outfile : str
    opts : CoaddOptions
    header : dict, optional
        Extra primary-header cards (provenance).

    Returns
    -------
    dict
        ``ntarget``, ``nspec``, ``nchunk``, ``ncosmic`` {band: bins rejected}.

    Raises
    ------
    DataError
        When the input is a coadd already, lacks TARGETID/FIBERSTATUS, or is unreadable.
    """
    from ..errors import DataError
    from ..io import fitsutil
    from ..io.spectra import (
        SpectraStreamWriter,
        read_spectra_meta,
        read_spectra_rows,
        spectra_layout,
        verify_spectra_band,
    )

    opts = opts or CoaddOptions()
    hdr0, fm, exp_fm, in_scores, bands = read_spectra_meta(infile)
    if exp_fm is not None:
        raise DataError(infile, "has an EXP_FIBERMAP: it is already a coadd")
    for col in ("TARGETID", "FIBERSTATUS"):
        if col not in fm.dtype.names:
            raise DataError(infile, f"FIBERMAP has no {col} column")
    tids, rows = target_rows(fm["TARGETID"])
    fs = np.asarray(fm["FIBERSTATUS"]).astype(np.int64)
    tf, ex = coadd_fibermap(fm, [b for b in bands if b in "brz"])
    layout = spectra_layout(infile)
    wave = {b: layout[b][0] for b in bands}
    merge = bool(opts.merge_bands) and len(bands) > 1
    if merge:
        try:
            grid, _ = merged_grid(wave)
        except ValueError as exc:
            raise DataError(infile, str(exc)) from None
        out_wave = {"brz": grid}
        out_ndiag = {"brz": max(layout[b][1] for b in bands)}
    else:
        out_wave = wave
        out_ndiag = {b: layout[b][1] for b in bands}
    hdr = coadd_header(hdr0, opts, {})
    hdr.update(header or {})
    ncosmic = {b: 0 for b in bands}
    scores = {b: [] for b in bands if b in "brz"}
    chunks = target_chunks(rows, max(1, int(opts.coadd_max_rows)))
    with fitsutil.open_fits(infile) as fin, SpectraStreamWriter(outfile, hdr, tf, out_wave, out_ndiag,
                                                                 layout[bands[0]][2], exp_fibermap=ex) as writer:
        for b in bands:  # the chunks read rows only: the checksums are verified whole first (streamed)
            verify_spectra_band(fin, infile, b)
        for t0, t1 in chunks:
            need = np.unique(np.concatenate(rows[t0:t1]))
            local = [np.searchsorted(need, jj) for jj in rows[t0:t1]]
            fsl = fs[need]
            parts = {}
            for b in bands:
                flux, ivar, mask, res = read_spectra_rows(infile, b, need, fx=fin)
                c = coadd_one_band(fsl, local, b, flux, ivar, mask, res, opts)
                del flux, ivar, mask, res
                ncosmic[b] += c["ncosmic"]
                if c["resolution"] is None:
                    c["resolution"] = np.zeros((t1 - t0, 1, len(wave[b])), "f4")
                parts[b] = c
            if merge:
                g, f, iv, m, r = merge_bands(wave, *({b: parts[b][k] for b in bands}
                                                     for k in ("flux", "ivar", "mask", "resolution")))
                writer.write_rows("brz", t0, f, iv, m, r)
                for b in scores:
                    scores[b].append(band_scores(g, f, iv, b, "COADD"))
            else:
                for b in bands:
                    c = parts[b]
                    writer.write_rows(b, t0, c["flux"], c["ivar"], c["mask"], c["resolution"])
                    if b in scores:
                        scores[b].append(band_scores(wave[b], c["flux"], c["ivar"], b, "COADD"))
            del parts
        for key, val in coadd_header({}, opts, ncosmic).items():
            if key.startswith("NCOSMIC"):
                writer.fx[0].write_key(key, val[0], comment=val[1])
        per_band = {b: {k: np.concatenate([p[k] for p in v]) for k in v[0]} for b, v in scores.items() if v}
        writer.close(with_columns(scores_table(tids, per_band), coadd_tsnr2(in_scores, rows)))
    return {"ntarget": len(tids), "nspec": len(fm), "nchunk": len(chunks), "ncosmic": ncosmic}
