"""Small, physically sensible products for I/O tests."""

import numpy as np

from fiberflow.io.calib import FiberFlat, FluxCalib, SkyModel, StdStars
from fiberflow.io.fibermap import empty_fibermap
from fiberflow.io.frame import FLUX_UNITS, Frame
from fiberflow.io.image import PreprocImage
from fiberflow.io.spectra import Spectra
from fiberflow.models import resolution
from fiberflow.steps.regroup import exposure_fibermap


def fibermap(nspec=5, petal=0, rng=None):
    rng = rng or np.random.default_rng(1)
    fm = empty_fibermap(nspec, petal=petal)
    fm["TARGETID"] = 39627000000000 + np.arange(nspec)
    fm["OBJTYPE"] = np.where(np.arange(nspec) % 5 == 0, "SKY", "TGT")
    fm["FIBERSTATUS"] = 0
    fm["TARGET_RA"] = 150.0 + rng.uniform(-1, 1, nspec)
    fm["TARGET_DEC"] = 2.0 + rng.uniform(-1, 1, nspec)
    fm["FLUX_R"] = rng.uniform(1, 30, nspec)
    fm["DESI_TARGET"] = 1 << 33
    return fm


def frame(nspec=5, nwave=40, ndiag=11, rng=None, units="electron/Angstrom", camera="r0"):
    rng = rng or np.random.default_rng(2)
    wave = 5760.0 + 0.8 * np.arange(nwave)
    flux = rng.normal(100, 10, (nspec, nwave)).astype("f4")
    ivar = rng.uniform(0.01, 0.02, (nspec, nwave)).astype("f4")
    mask = np.zeros((nspec, nwave), "i4")
    mask[0, 3] = 1
    res = np.stack([resolution.gaussian_diags(np.full(nwave, 1.2 + 0.1 * i), ndiag) for i in range(nspec)]).astype("f4")
    hdr = {"CAMERA": camera, "NIGHT": 20251205, "EXPID": 101, "FIBERMIN": 0, "SPECGRPH": int(camera[1]),
           "TILEID": 1000, "EXPTIME": 900.0, "FLAVOR": "science", "OBSTYPE": "SCIENCE"}
    return Frame(wave, flux, ivar, mask, res, fibermap(nspec, rng=rng), rng.normal(1, 0.1, (nspec, nwave)).astype("f4"),
                 header=hdr, units=units)


def fiberflat(nspec=5, nwave=40, rng=None):
    rng = rng or np.random.default_rng(3)
    wave = 5760.0 + 0.8 * np.arange(nwave)
    ff = rng.normal(1, 0.03, (nspec, nwave)).astype("f4")
    return FiberFlat(wave, ff, np.full((nspec, nwave), 1e4, "f4"), np.zeros((nspec, nwave), "i4"),
                     rng.uniform(500, 1000, nwave).astype("f4"), fibermap(nspec, rng=rng),
                     {"CAMERA": "r0", "NIGHT": 20251205, "EXPID": 100})


def sky(nspec=5, nwave=40, rng=None):
    rng = rng or np.random.default_rng(4)
    wave = 5760.0 + 0.8 * np.arange(nwave)
    flux = rng.uniform(10, 50, (nspec, nwave)).astype("f4")
    return SkyModel(wave, flux, np.full((nspec, nwave), 2.0, "f4"), np.zeros((nspec, nwave), "i4"),
                    np.full((nspec, nwave), 3.0, "f4"), np.ones(nspec, "f4"),
                    {"CAMERA": "r0", "NIGHT": 20251205, "EXPID": 101})


def fluxcalib(nspec=5, nwave=40, rng=None):
    rng = rng or np.random.default_rng(5)
    wave = 5760.0 + 0.8 * np.arange(nwave)
    return FluxCalib(wave, rng.uniform(1, 2, (nspec, nwave)).astype("f4"), np.full((nspec, nwave), 100.0, "f4"),
                     np.zeros((nspec, nwave), "i4"), header={"CAMERA": "r0", "EXPID": 101})


def stdstars(nstd=3, nwave=100, rng=None):
    rng = rng or np.random.default_rng(6)
    meta = np.zeros(nstd, dtype=[("TEFF", "f4"), ("LOGG", "f4"), ("FEH", "f4"), ("CHI2DOF", "f4"), ("DATA_G-R", "f4")])
    meta["TEFF"] = [6000, 6200, 5900]
    meta["LOGG"] = 4.0
    meta["FEH"] = -1.0
    frames = np.zeros(3, dtype=[("NIGHT", "i4"), ("EXPID", "i4"), ("CAMERA", "U2")])
    frames["CAMERA"] = ["b0", "r0", "z0"]
    return StdStars(np.linspace(3500, 10000, nwave).astype("f4"), rng.uniform(1, 2, (nstd, nwave)).astype("f4"),
                    np.array([3, 10, 20], "i4"), meta, fibermap(nstd, rng=rng), frames, {"EXPID": 101})


def spectra(nspec=4, rng=None, coadd=False):
    rng = rng or np.random.default_rng(7)
    grids = {"b": 3600.0 + 0.8 * np.arange(30), "r": 5760.0 + 0.8 * np.arange(25), "z": 7520.0 + 0.8 * np.arange(35)}
    flux, ivar, mask, res = {}, {}, {}, {}
    for b, w in grids.items():
        n = w.size
        flux[b] = rng.normal(5, 1, (nspec, n)).astype("f4")
        ivar[b] = rng.uniform(1, 2, (nspec, n)).astype("f4")
        mask[b] = np.zeros((nspec, n), "i4")
        res[b] = np.stack([resolution.gaussian_diags(np.full(n, 1.0), 11)] * nspec).astype("f4")
    fm = fibermap(nspec, rng=rng)
    exp_fm = None
    if coadd:
        exp_fm = np.concatenate([fm, fm])
    hdr = {"HPXPIXEL": 5261, "HPXNSIDE": 64, "HPXNEST": True}
    return Spectra(list(grids), grids, flux, ivar, mask, res, fm, exp_fm, None, hdr, FLUX_UNITS)


def preproc(ny=30, nx=20, rng=None):
    rng = rng or np.random.default_rng(8)
    img = rng.normal(0, 3, (ny, nx)).astype("f4")
    mask = np.zeros((ny, nx), "i2")
    mask[5, 5] = 16
    return PreprocImage(img, np.full((ny, nx), 1 / 9.0, "f4"), mask, np.full((ny, nx), 3.0, "f4"),
                        fibermap(5, rng=rng), {"CAMERA": "b0", "OBSRDNA": 3.0, "EXPID": 1})


# healpix spectra with known truth: a deconvolved spectrum seen through per-exposure Gaussian
# resolution matrices plus Gaussian noise of known variance
HPX_GRIDS = {"b": 3600.0 + 0.8 * np.arange(2400, 2751), "r": 3600.0 + 0.8 * np.arange(2700, 3050),
             "z": 3600.0 + 0.8 * np.arange(5000, 5350)}  # on DESI's lattice, each band in its score range


def truth_spectrum(wave, rng):
    """Smooth continuum plus two emission lines [flux units]."""
    cont = 5.0 + 2.0 * np.sin(wave / 300.0) + rng.uniform(0, 3)
    lines = sum(a * np.exp(-0.5 * ((wave - c) / 1.5) ** 2) for a, c in ((40.0, wave[60]), (25.0, wave[-80])))
    return cont + lines


def healpix_spectra(ntarget=30, nexp=4, sigma_noise=1.0, rng=None, ndiag=11, bands=HPX_GRIDS):
    """Spectra (target x exposure rows) and the deconvolved truth of every target.

    Returns (Spectra, truth dict band -> (ntarget, nwave)); row order exposure-major.
    """
    rng = rng or np.random.default_rng(11)
    fm = []
    truth = {b: np.array([truth_spectrum(w, rng) for _ in range(ntarget)]) for b, w in bands.items()}
    flux, ivar, mask, res = ({b: [] for b in bands} for _ in range(4))
    for e in range(nexp):
        f = fibermap(ntarget, rng=np.random.default_rng(5))
        f["TARGETID"] = 1000 + np.arange(ntarget)
        f = exposure_fibermap(f, {"NIGHT": 20250101 + e // 2, "EXPID": 100 + e, "MJD-OBS": 60000.0 + e,
                                          "TILEID": 7, "EXPTIME": 900.0})
        f["FIBER_X"] = rng.normal(0, 1, ntarget)
        fm.append(f)
        for b, w in bands.items():
            sig = 1.0 + 0.15 * e + 0.002 * np.arange(len(w))  # resolution differs by exposure and wavelength
            rd = np.stack([resolution.gaussian_diags(sig, ndiag)] * ntarget)
            model = np.array([resolution.apply(rd[i], truth[b][i]) for i in range(ntarget)])
            noise = sigma_noise * rng.uniform(0.8, 1.2, (ntarget, len(w)))
            flux[b].append(model + rng.normal(0, 1, model.shape) * noise)
            ivar[b].append(1.0 / noise ** 2)
            mask[b].append(np.zeros(model.shape, "i4"))
            res[b].append(rd)
    cat = {k: {b: np.concatenate(v[b]) for b in bands} for k, v in
           (("flux", flux), ("ivar", ivar), ("mask", mask), ("res", res))}
    sp = Spectra(list(bands), dict(bands), {b: cat["flux"][b].astype("f4") for b in bands},
                 {b: cat["ivar"][b].astype("f4") for b in bands}, cat["mask"],
                 {b: cat["res"][b].astype("f4") for b in bands}, np.concatenate(fm), None, None,
                 {"HPXPIXEL": 5261, "HPXNSIDE": 64, "HPXNEST": True}, FLUX_UNITS)
    return sp, truth
