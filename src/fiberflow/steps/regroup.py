"""HEALPix regrouping: calibrated frames (cframes) of many exposures -> one pixel's spectra.

Survey science works on the sky. Every fiber whose TARGET_RA/TARGET_DEC falls in a nested
HEALPix pixel (nside 64 by default, DESI's choice) is collected from every exposure, night and
petal of the production into one ``spectra-{survey}-{program}-{pix}.fits`` (DESI layout, see
:class:`fiberflow.io.spectra.Spectra`).

Conventions (DESI's, so its tools read the result the same way):

- rows are ordered by spectrograph, then night, then exposure, then fiber;
- an exposure contributes to every band: a camera missing from it (dropped by the exposure
  table, or never read out) gets zero flux, ivar 0 and specmask NODATA on that band's grid;
- FIBERSTATUS of a row is the OR over the exposure's cameras;
- FIBERMAP gains NIGHT, EXPID, MJD and TILEID (and EXPTIME when the frame lacks it);
- SCORES hold, per band, the integrated and median calibrated flux and the median S/N in the
  band's fixed top-hat range (DESI's ``compute_frame_scores`` quantities, suffix CALIB), and
  the cframe's template signal-to-noise ``TSNR2_{TRACER}_{B}`` (0 for a missing camera).

The functions here are pure: they take frames and return arrays; reading the cframes one
exposure at a time (so memory stays bounded by the pixel, not the production) is the CLI's job
(:mod:`fiberflow.cli.healpix`).
"""

from __future__ import annotations

import numpy as np

from ..bitmasks import specmask
from ..models.scores import band_scores
from ..models.tsnr import TRACERS

#: DESI's nested HEALPix resolution of the healpix/ products
NSIDE = 64

#: per-exposure columns appended to the spectra FIBERMAP: name, dtype, header key(s)
EXPOSURE_COLUMNS = (("NIGHT", "i4", ("NIGHT",)), ("EXPID", "i4", ("EXPID",)),
                    ("MJD", "f8", ("MJD-OBS", "MJD")), ("TILEID", "i4", ("TILEID",)))


def healpix_of(ra, dec, nside=NSIDE):
    """Nested HEALPix pixel of each position.

    Parameters
    ----------
    ra, dec : array_like (n,)
        Degrees.
    nside : int
        Power of two.

    Returns
    -------
    ndarray int64 (n,)
        Pixel numbers; -1 where a coordinate is not finite.
    """
    import healpy

    ra = np.atleast_1d(np.asarray(ra, dtype=float))
    dec = np.atleast_1d(np.asarray(dec, dtype=float))
    pix = np.full(ra.shape, -1, dtype=np.int64)
    ok = np.isfinite(ra) & np.isfinite(dec)
    if ok.any():
        pix[ok] = healpy.ang2pix(int(nside), ra[ok], dec[ok], nest=True, lonlat=True)
    return pix


def petal_pixels(fibermap, nside=NSIDE):
    """Pixels each petal's fibers fall in (DESI's tilepix mapping).

    Parameters
    ----------
    fibermap : structured (nfiber,)
        With PETAL_LOC, TARGET_RA, TARGET_DEC.

    Returns
    -------
    dict int -> list of int
        Petal -> sorted pixels (petals without a positioned fiber are absent).
    """
    pix = healpix_of(fibermap["TARGET_RA"], fibermap["TARGET_DEC"], nside)
    petal = np.asarray(fibermap["PETAL_LOC"]).astype(int)
    out = {}
    for p in np.unique(petal[pix >= 0]):
        out[int(p)] = sorted(int(x) for x in np.unique(pix[(petal == p) & (pix >= 0)]))
    return out


def in_pixel(fibermap, pix, nside=NSIDE):
    """(nfiber,) bool: fibers whose TARGET_RA/TARGET_DEC fall in ``pix``."""
    return healpix_of(fibermap["TARGET_RA"], fibermap["TARGET_DEC"], nside) == int(pix)


def exposure_fibermap(fibermap, header):
    """Fibermap rows of one exposure with NIGHT, EXPID, MJD, TILEID appended, and EXPTIME
    (appended, or filled where not positive) from the header.

    Parameters
    ----------
    fibermap : structured (n,)
    header : dict
        The frame header (NIGHT, EXPID, MJD-OBS, TILEID, EXPTIME).

    Returns
    -------
    structured (n,)
        A new array; existing columns of those names are overwritten.
    """
    names = fibermap.dtype.names
    extra = [(name, dt, keys) for name, dt, keys in EXPOSURE_COLUMNS]
    if "EXPTIME" not in names:
        extra.append(("EXPTIME", "f8", ("EXPTIME",)))
    descr = [(n, fibermap.dtype[n]) for n in names if n not in {e[0] for e in extra}]
    descr += [(name, dt) for name, dt, _ in extra]
    out = np.zeros(len(fibermap), dtype=descr)
    for n in names:
        if n in out.dtype.names:
            out[n] = fibermap[n]
    for name, dt, keys in extra:
        val = next((header[k] for k in keys if header.get(k) is not None), -1)
        out[name] = val
    if "EXPTIME" in names and header.get("EXPTIME") is not None:
        unset = ~(np.asarray(out["EXPTIME"], float) > 0)
        out["EXPTIME"][unset] = float(header["EXPTIME"])
    return out


def select_exposure(fibermaps, header, pix, nside=NSIDE):
    """Fibers of one exposure x spectrograph that fall in a pixel (every fiber when ``pix`` is None:
    a tile spectra file).

    Parameters
    ----------
    fibermaps : dict band -> structured (nfiber,)
        FIBERMAP of each camera of the exposure that exists (at least one); all must list the
        same fibers (FIBER, TARGETID) in the same order.
    header : dict
        Header of one of the frames (NIGHT, EXPID, MJD-OBS, TILEID, EXPTIME).
    pix : int or None

    Returns
    -------
    (sel, fibermap) or None
        sel bool (nfiber,); fibermap (n,) of the selected fibers with the exposure columns and
        FIBERSTATUS ORed over the cameras. None when no fiber falls in the pixel.

    Raises
    ------
    ValueError
        When the cameras' fibermaps disagree.
    """
    bands = list(fibermaps)
    if not bands:
        raise ValueError("select_exposure needs at least one fibermap")
    ref = fibermaps[bands[0]]
    for b in bands[1:]:
        fm = fibermaps[b]
        if len(fm) != len(ref) or np.any(fm["TARGETID"] != ref["TARGETID"]) or np.any(fm["FIBER"] != ref["FIBER"]):
            raise ValueError(f"the {b} and {bands[0]} frames of one exposure have different fibers")
    sel = np.ones(len(ref), bool) if pix is None else in_pixel(ref, pix, nside)
    if not sel.any():
        return None
    fm = exposure_fibermap(ref[sel], header)
    fm["FIBERSTATUS"] = np.bitwise_or.reduce([np.asarray(fibermaps[b]["FIBERSTATUS"])[sel] for b in bands], axis=0)
    return sel, fm


def band_rows(frame, sel, wave, band, ndiag):
    """The selected rows of one camera, or blank rows (ivar 0, NODATA) when it is missing.

    Parameters
    ----------
    frame : Frame or None
    sel : bool (nfiber,)
    wave : (nwave,)
        The band's grid.
    band : str
    ndiag : int
        Resolution diagonals of the output (the frame's are zero-padded up to it).

    Returns
    -------
    dict
        ``flux``, ``ivar`` (n, nwave) f4, ``mask`` (n, nwave) i4, ``resolution`` (n, ndiag, nwave)
        f4, ``scores`` (dict name -> (n,), see :func:`fiberflow.models.scores.band_scores`).

    Raises
    ------
    ValueError
        When the frame is not on the band's grid.
    """
    n, nw = int(np.count_nonzero(sel)), len(wave)
    if frame is not None:
        if frame.flux.shape[1] != nw or not np.allclose(frame.wave, wave, rtol=0, atol=1e-6):
            raise ValueError(f"the {band} frame is not on the {band} grid ({nw} bins from {wave[0]:.2f} A)")
        rows = {"flux": frame.flux[sel].astype("f4"), "ivar": frame.ivar[sel].astype("f4"),
                "mask": frame.mask[sel].astype("i4"),
                "resolution": pad_diagonals(frame.resolution[sel].astype("f4"), ndiag)}
    else:
        rows = {"flux": np.zeros((n, nw), "f4"), "ivar": np.zeros((n, nw), "f4"),
                "mask": np.full((n, nw), specmask.mask("NODATA"), "i4"),
                "resolution": np.zeros((n, ndiag, nw), "f4")}
    rows["scores"] = band_scores(wave, rows["flux"], rows["ivar"], band, "CALIB")
    # the cframe's template signal-to-noise (0 for a missing camera or a cframe without it)
    have = frame.scores if frame is not None and frame.scores is not None else None
    for t in TRACERS:
        col = f"TSNR2_{t}_{band.upper()}"
        rows["scores"][col] = (np.asarray(have[col], np.float32)[sel] if have is not None and col in have.dtype.names
                               else np.zeros(n, np.float32))
    return rows


def exposure_rows(frames, pix, grids, ndiag, nside=NSIDE):
    """The rows of one exposure x spectrograph that fall in a pixel, on every band
    (:func:`select_exposure` then :func:`band_rows` for each band).

    Parameters
    ----------
    frames : dict band -> Frame
        The cframes of this exposure and spectrograph that exist (at least one).
    pix : int
    grids : dict band -> (nwave_band,)
    ndiag : dict band -> int

    Returns
    -------
    dict or None
        None when no fiber falls in the pixel; else ``fibermap`` and per band the
        :func:`band_rows` dict.
    """
    present = [b for b in grids if b in frames]
    if not present:
        raise ValueError("exposure_rows needs at least one frame")
    found = select_exposure({b: frames[b].fibermap for b in present}, frames[present[0]].header, pix, nside)
    if found is None:
        return None
    sel, fm = found
    out = {"fibermap": fm}
    for b, wave in grids.items():
        out[b] = band_rows(frames.get(b), sel, wave, b, ndiag[b])
    return out


def pad_diagonals(res, ndiag):
    """Resolution diagonals (n, nd, nwave) padded with zero outer diagonals to ``ndiag``
    (both odd; the central diagonal stays central)."""
    nd = res.shape[1]
    if nd == ndiag:
        return res
    if nd > ndiag or (ndiag - nd) % 2:
        raise ValueError(f"cannot pad {nd} resolution diagonals to {ndiag}")
    k = (ndiag - nd) // 2
    return np.pad(res, ((0, 0), (k, k), (0, 0)))
