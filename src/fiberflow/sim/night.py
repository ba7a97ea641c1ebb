"""Simulate a night: raw exposures in DESI's layout plus truth files.

Randomness is keyed, never sequential: every random draw comes from a generator seeded by
``(seed, purpose, night/expid/camera ...)``, so one exposure or camera can be simulated alone
(one Snakemake job per exposure) and gives the same bytes as a whole-night run.

Fixed per camera across nights: fiber throughputs (the fiberflat truth), bias pattern, hot
pixels and columns. Per night: a flexure offset of the traces (sigma 0.3 px in x and y).
Per exposure: a small extra offset (0.05 px) and a y stretch, bias drift, noise, cosmics.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import numpy as np

from .. import paths
from ..instrument import load_instrument
from ..io.fibermap import write_fibermap
from ..io.image import PixFlat
from ..io.psf import read_psf
from ..io.raw import RawCamera, write_raw
from ..reference import real_psf_path
from . import detector, library, lightpath, optics, project, targets
from .plan import ExposureSpec, Plan
from .truth import TruthFrame, TruthStdStars, TruthTargets

#: per-fiber throughput RMS (truth of the fiberflat)
FIBER_SCATTER = 0.03
#: quartz lamp level: peak electrons per Angstrom per fiber for a 120 s flat
FLAT_LEVEL = 2.5e5
#: night / exposure trace offsets (pixels, RMS)
NIGHT_SHIFT = 0.3
EXPOSURE_SHIFT = 0.05
EXPOSURE_YSLOPE = 0.03


#: Gauss-Hermite terms the simulator's ``psf_shape`` perturbs (shear, coma-like and
#: triangular terms: orthogonal to the spot position and width a spot fit measures)
SHAPE_TERMS = ("GH-1-1", "GH-2-1", "GH-1-2", "GH-3-0", "GH-0-3")


def _rng(seed, *keys):
    return np.random.default_rng([int(seed)] + [int(k) for k in keys])


def _cam_index(camera):
    return "brz".index(camera[0]) * 10 + int(camera[1:])


@dataclass
class Simulator:
    """Everything a night simulation needs that does not change between exposures.

    Parameters
    ----------
    instrument : Instrument or str
    seed : int
    projection : {"fine", "grid"}
        ``fine`` (default): half-pixel bins with their electron centroids, so the image has
        the spectra's sub-bin structure, as a real CCD sees it. ``grid``: bins centred on each
        camera's extraction grid (:func:`project.bin_to_grid`), so the image is exactly the
        extraction's model and its truth is known per bin (extraction validation).
    psf_shape : float
        0 (default): every night's true PSF has the nominal PSF's shape (only its traces
        move). Above 0: the night's true PSF also differs from the nominal in its higher-order
        Gauss-Hermite terms (:data:`SHAPE_TERMS`): each term gains a seeded offset of this rms
        (in units of the GH-0-0 amplitude) plus a linear trend across fibers and wavelength,
        and TAILAMP gains ``psf_shape / 10``, so a PSF fit must measure them (their truth is in the
        night's true PSF file).
    pixflat : float
        0 (default): every pixel responds alike. Above 0: each camera's pixels have a fixed
        relative response of this rms (:func:`detector.pixel_response`), written as the true
        pixel flat ``pixflat/pixflat-{camera}.fits`` under the truth root (a ``calibration.pixflat``
        folder for preproc).
    """

    instrument: object
    seed: int = 1
    projection: str = "fine"
    psf_shape: float = 0.0
    pixflat: float = 0.0

    def __post_init__(self):
        if isinstance(self.instrument, str):
            self.instrument = load_instrument(self.instrument)
        if self.projection not in ("fine", "grid"):
            raise ValueError(f"projection must be 'fine' or 'grid', not {self.projection!r}")
        if not self.psf_shape >= 0:
            raise ValueError(f"psf_shape must be >= 0, not {self.psf_shape!r}")
        if not 0 <= self.pixflat < 0.2:
            raise ValueError(f"pixflat must be in [0, 0.2), not {self.pixflat!r}")
        self._r_psf = read_psf(real_psf_path())
        self._nominal = {}
        self._grids = {}

    # ------------------------------------------------------------------ optics
    def nominal_psf(self, camera):
        """Nominal (bootstrap) PSF of a camera."""
        if camera not in self._nominal:
            psf = optics.nominal_psf(self._r_psf, self.instrument, camera[0])
            psf.meta["CAMERA"] = camera
            psf.header["CAMERA"] = camera
            self._nominal[camera] = psf
        return self._nominal[camera]

    def night_shift(self, night, camera):
        """(dx, dy) of the night's traces relative to nominal, pixels."""
        r = _rng(self.seed, 11, night, _cam_index(camera))
        return tuple(NIGHT_SHIFT * r.standard_normal(2))

    def exposure_shift(self, expid, camera):
        """(dx, dy, dyslope) of an exposure relative to the night, pixels."""
        r = _rng(self.seed, 12, expid, _cam_index(camera))
        dx, dy = EXPOSURE_SHIFT * r.standard_normal(2)
        return float(dx), float(dy), float(EXPOSURE_YSLOPE * r.standard_normal())

    @staticmethod
    def shifted_psf(psf, dx, dy, dyslope=0.0):
        """Copy of ``psf`` with traces moved by dx, dy (+ dyslope x reduced wavelength) pixels."""
        out = psf.copy()
        out.xtrace[:, 0] += dx
        out.ytrace[:, 0] += dy
        if out.ytrace.shape[1] > 1:
            out.ytrace[:, 1] += dyslope
        return out

    def shaped_psf(self, psf, night, camera):
        """Copy of ``psf`` whose :data:`SHAPE_TERMS` differ by seeded offsets and trends of rms
        ``psf_shape`` (the constant and linear Legendre coefficients in wavelength, and a
        linear trend across fibers)."""
        out = psf.copy()
        if self.psf_shape <= 0:
            return out
        r = _rng(self.seed, 13, night, _cam_index(camera))
        t = np.linspace(-1.0, 1.0, out.nfiber)
        for name in SHAPE_TERMS:
            c0, c1, slope = self.psf_shape * r.standard_normal(3) * (1.0, 0.5, 0.5)
            coef = out.params.get(name)
            if coef is None:
                continue
            coef = np.array(coef, float)
            if coef.shape[1] < 2:
                coef = np.concatenate([coef, np.zeros((coef.shape[0], 2 - coef.shape[1]))], axis=1)
                out.legdeg[name] = (out.legdeg.get(name, (0, 0))[0], 1)
            coef[:, 0] += c0 + slope * t
            coef[:, 1] += c1
            out.params[name] = coef
        # a power-law tail of amplitude psf_shape / 10: ~3% of the light for psf_shape 0.03 in
        # DESI's stamp (the nominal PSF, like the real r0 one, has none)
        tail = np.atleast_2d(np.asarray(out.params.get("TAILAMP", np.zeros((out.nfiber, 1))), float))
        tail = np.repeat(tail[:1], out.nfiber, axis=0) if tail.shape[0] != out.nfiber else tail.copy()
        tail[:, 0] += 0.1 * self.psf_shape
        out.params["TAILAMP"] = tail
        out.header["PSFSHAPE"] = (float(self.psf_shape), "rms of the true GH shape-term offsets")
        return out

    def night_psf(self, night, camera):
        dx, dy = self.night_shift(night, camera)
        psf = self.shaped_psf(self.shifted_psf(self.nominal_psf(camera), dx, dy), night, camera)
        psf.header["TRUTH"] = (True, "true PSF of the night (simulation)")
        return psf

    def exposure_psf(self, night, expid, camera):
        dx, dy, slope = self.exposure_shift(expid, camera)
        return self.shifted_psf(self.night_psf(night, camera), dx, dy, slope)

    def model_grid(self, camera):
        if camera not in self._grids:
            psf = self.nominal_psf(camera)
            grid = project.camera_model_grid(psf, pad=4.0 + 2.0)
            self._grids[camera] = (grid, project.fine_bin_factor(psf))
        return self._grids[camera]

    # ------------------------------------------------------------------ light
    def fiber_throughput(self, camera, wave, broken=()):
        spec = self.instrument.camera(camera)
        return lightpath.fiber_throughput(_rng(self.seed, 21, _cam_index(camera)), self.instrument.nfiber, wave,
                                          spec.wavemin, spec.wavemax, FIBER_SCATTER, broken)

    def light(self, exp: ExposureSpec, camera, objflux=None, info=None):
        """Electrons per 0.1 A model sample of every fiber, plus the pieces the truth needs.

        Returns
        -------
        dict with ``grid`` (nmodel,), ``total`` and ``sky`` (nfiber, nmodel) electrons per sample,
        ``fluxbin`` (nfiber, nmodel) true flux x 0.1 A (1e-17 units, point-source aperture
        scaled), ``lines`` (wave, electrons) or None, ``calib`` callable(wave) -> (nwave,).
        """
        arm = camera[0]
        grid, _ = self.model_grid(camera)
        nfib = self.instrument.nfiber
        broken = exp.faults.get("broken_fibers", []) or []
        tf = self.fiber_throughput(camera, grid, broken)
        out = {"grid": grid, "sky": np.zeros((nfib, grid.size)), "fluxbin": np.zeros((nfib, grid.size)),
               "lines": None, "fiberflat": tf}
        dw = project.MODEL_STEP
        if exp.obstype == "FLAT":
            qw, qf = library.quartz_lamp()
            lamp = np.interp(grid, qw, qf)
            peak = max(np.max(np.interp(self.model_grid(c)[0], qw, qf) * lightpath.arm_throughput(c[0], self.model_grid(c)[0]))
                       for c in (f"{a}0" for a in self.instrument.arms))
            level = FLAT_LEVEL * exp.exptime / 120.0 / peak
            illum = np.ones((nfib, 1))
            if exp.faults.get("bad_flat_lamp"):
                x = np.linspace(-1, 1, nfib)[:, None]
                illum = 1.0 + 0.10 * x + 0.03 * x * (grid[None, :] - grid.mean()) / (grid[-1] - grid[0])
            out["total"] = level * lamp[None, :] * lightpath.arm_throughput(arm, grid)[None, :] * tf * illum * dw
            return out
        if exp.obstype == "ARC":
            lines = library.arc_lines()
            sel = (lines["WAVE"] > grid[0]) & (lines["WAVE"] < grid[-1])
            lw = lines["WAVE"][sel]
            thr = lightpath.arm_throughput(arm, lw)
            thr = thr / lightpath.arm_throughput(arm, grid).max()
            tl = self.fiber_throughput(camera, lw, broken)
            le = lines["ELECTRONS_PER_S"][sel][None, :] * exp.exptime * thr[None, :] * tl
            out["total"] = np.zeros((nfib, grid.size))
            out["lines"] = (lw, le)
            return out
        # SCIENCE
        sw, sf = library.sky_spectrum()
        skysb = np.interp(grid, sw, sf) * exp.skylevel * (1.0 + 0.3 * (exp.airmass - 1.0))
        skye = skysb * lightpath.FIBER_AREA_ARCSEC2 * lightpath.photons_per_flux(grid, arm, exp.exptime) * dw
        out["sky"] = skye[None, :] * tf
        ap_ps = lightpath.aperture_fraction(grid, exp.seeing)
        conv = lightpath.photons_per_flux(grid, arm, exp.exptime, exp.airmass) * exp.transparency
        F = np.array([np.interp(grid, targets.MODEL_WAVE, objflux[f]) for f in range(nfib)]) / 1e-17
        sizes = np.array([m.get("SHAPE_R", 0.0) if m["CLASS"] in ("LRG", "ELG") else 0.0 for m in info])
        ap = lightpath.aperture_fraction(grid, exp.seeing, sizes)
        contaminated = exp.faults.get("sky_contamination", []) or []
        for k, f in enumerate(contaminated):
            star = targets.std_spectrum(_rng(self.seed, 31, exp.expid, f))[0]
            star = targets._scale_to_mag(star[None, :], 1, 17.0 + k)[0]
            F[f] += np.interp(grid, targets.MODEL_WAVE, star) / 1e-17
        obj = F * conv[None, :] * ap * tf * dw
        out["total"] = obj + out["sky"]
        glow = exp.faults.get("scattered_light")
        if glow and str(glow.get("camera", "")).lower() == camera:  # contamination: not in the truth's sky
            fm = self.science_targets(exp, int(camera[1:]))[0]
            out["total"] = out["total"] + lightpath.scattered_light(grid, fm["FIBER_X"], fm["FIBER_Y"], skye, glow) * tf
        out["fluxbin"] = F * (ap / ap_ps[None, :]) * dw
        out["calib"] = lambda w: (lightpath.photons_per_flux(w, arm, exp.exptime, exp.airmass,
                                                             lightpath.aperture_fraction(w, exp.seeing))
                                  * exp.transparency)
        return out

    @staticmethod
    def _calib_at_resolution(L, grid, factor, wave, sig):
        """True calibration as the spectrograph sees it: the calibration of the light path
        (narrow telluric lines included) convolved with each fiber's LSF, like ``flux``, so that
        ``electrons = calib x flux`` holds for smooth sources.

        Returns
        -------
        (nfiber, nwave)
        """
        cc, ccen, cphot = project.bin_model(grid, (L["calib"](grid) * project.MODEL_STEP)[None, :], factor)
        return project.convolve_to_grid(cc, ccen, cphot, wave, sig)

    # ------------------------------------------------------------------ one camera
    def simulate_camera(self, night, exp: ExposureSpec, camera, fibermap=None, objflux=None, info=None,
                        use_numba=True):
        """Raw image and truth of one camera of one exposure.

        Returns
        -------
        raw : RawCamera
        truth : TruthFrame
        expected : (ny, nx) float64
            Noise-free electrons from light (before dark, cosmics and defects).
        """
        inst = self.instrument
        spec = inst.camera(camera)
        ny, nx = int(inst.ccd["ny"]), int(inst.ccd["nx"])
        rng = _rng(self.seed, 41, exp.expid, _cam_index(camera))
        psf = self.exposure_psf(night, exp.expid, camera)
        truth_hdr = {}
        expected = np.zeros((ny, nx))
        tf_args = {}
        if exp.obstype == "SCIENCE" and objflux is None:
            fibermap, objflux, info = self.science_targets(exp, int(camera[1:]))
        if exp.obstype in ("ARC", "FLAT", "SCIENCE"):
            L = self.light(exp, camera, objflux, info)
            grid, factor = self.model_grid(camera)
            if self.projection == "grid":
                centers, centroid, photons = project.bin_to_grid(grid, L["total"], spec.wavegrid(), L["lines"])
            else:
                centers, centroid, photons = project.bin_model(grid, L["total"], factor, L["lines"])
            expected = project.project(psf, centers, centroid, photons, (ny, nx), use_numba=use_numba)
            wave = spec.wavegrid()
            sig = project.lsf_sigma(psf, wave)
            elec = project.convolve_to_grid(centers, centroid, photons, wave, sig)
            _, scen, skyp = project.bin_model(grid, L["sky"], factor)
            _, fcen, fluxp = project.bin_model(grid, L["fluxbin"], factor)
            tf_args = dict(
                wave=wave, electrons=elec,
                sky=project.convolve_to_grid(centers, scen, skyp, wave, sig),
                fiberflat=self.fiber_throughput(camera, wave, exp.faults.get("broken_fibers", []) or []),
                calib=self._calib_at_resolution(L, grid, factor, wave, sig) if "calib" in L else np.zeros_like(elec),
                flux=project.convolve_to_grid(centers, fcen, fluxp, wave, sig),
                fine_center=centers, fine_dwave=centroid - centers[None, :], photons=photons,
                fibermap=fibermap,
            )
        darktime = exp.exptime + detector.READOUT_S
        hot, columns, badpix = detector.defects(camera, ny, nx)
        response = self.pixel_flat(camera)
        electrons = rng.poisson(np.clip(expected if response is None else expected * response, 0, None)).astype(float)
        dark = np.full((ny, nx), spec.dark * darktime / 3600.0)
        dark[hot["y"], hot["x"]] += hot["rate"] * darktime / 3600.0
        electrons += rng.poisson(dark)
        for x, y0, y1, q in columns:
            electrons[y0:y1, x] += q
        crs, ncr = detector.cosmic_rays(rng, (ny, nx), darktime if exp.cosmics else 0.0, camera[0])
        electrons += crs
        raw_shape, sections = detector.amp_layout(ny, nx, int(inst.ccd["nprescan"]), int(inst.ccd["noverscan"]))
        gains = dict(zip(detector.AMPS, spec.gain))
        rdn = dict(zip(detector.AMPS, spec.readnoise))
        levels = {a: spec.bias_adu[i] + 1.5 * rng.standard_normal() for i, a in enumerate(detector.AMPS)}
        dead = [exp.faults["dead_amp"]["amp"]] if exp.faults.get("dead_amp", {}).get("camera") == camera else []
        noisy = [exp.faults["noisy_amp"]["amp"]] if exp.faults.get("noisy_amp", {}).get("camera") == camera else []
        pattern = detector.bias_pattern(camera, ny, nx)
        data = detector.digitize(rng, electrons, sections, gains, rdn, levels, pattern,
                                 int(inst.ccd.get("saturation_adu", 65535)), dead, noisy)
        hdr = detector.section_keywords(sections)
        for a in detector.AMPS:
            hdr[f"GAIN{a}"] = (gains[a], "e/ADU nominal gain")
            hdr[f"SATURLEV{a}"] = int(inst.ccd.get("saturation_adu", 65535))
            truth_hdr[f"TBIAS{a}"] = (float(levels[a]), "true bias level [ADU]")
            truth_hdr[f"TRDNOI{a}"] = (float(rdn[a] * (4.0 if a in noisy else 1.0)), "true read noise [electron]")
            truth_hdr[f"TGAIN{a}"] = (float(gains[a]), "true gain [e/ADU]")
        hdr.update({"EXPID": exp.expid, "NIGHT": int(night), "OBSTYPE": exp.obstype, "EXPTIME": float(exp.exptime),
                    "DARKTIME": float(darktime)})
        hdr["DETECTOR"] = f"SIM-{camera.upper()}"
        hdr["CCDSIZE"] = f"{ny},{nx}"
        dx, dy, slope = self.exposure_shift(exp.expid, camera)
        ndx, ndy = self.night_shift(night, camera)
        truth_hdr.update({
            "CAMERA": camera, "EXPID": exp.expid, "NIGHT": int(night), "OBSTYPE": exp.obstype, "EXPTIME": exp.exptime,
            "TDX": (dx, "x offset vs the night PSF [pixel]"), "TDY": (dy, "y offset vs the night PSF [pixel]"),
            "TDYSLOPE": (slope, "y offset Legendre-1 term vs the night PSF [pixel]"),
            "NDX": (float(ndx), "night x offset vs nominal [pixel]"), "NDY": (float(ndy), "night y offset vs nominal [pixel]"),
            "NCOSMIC": (ncr, "cosmic-ray hits"), "SEED": self.seed, "AIRMASS": exp.airmass, "SEEING": exp.seeing,
            "SKYLEVEL": exp.skylevel, "DARKTIME": darktime,
            "FAULTS": ",".join(sorted(exp.faults)) or "none",
            "PROJECTN": (self.projection, "fine: half-pixel bins; grid: extraction-grid bin centres"),
        })
        crmask = (crs > 2.0 * max(spec.readnoise)).astype(np.uint8)
        truth = TruthFrame(crmask=crmask, badpix=badpix, header=truth_hdr, **tf_args)
        return RawCamera(camera, data, hdr), truth, expected

    # ------------------------------------------------------------------ one exposure
    def science_targets(self, exp: ExposureSpec, petal):
        """(fibermap, flux, info) of one petal of a science exposure (see targets.tile_targets)."""
        ra, dec = targets.tile_center(exp.tileid)
        tile = targets.Tile(exp.tileid, ra, dec, exp.program, exp.survey)
        fm, flux, info = targets.tile_targets(self.seed, tile, petal, self.instrument.nfiber, exp.faults.get("few_stdstars"))
        fm["EXPTIME"] = exp.exptime
        return fm, flux, info

    def exposure_header(self, night, exp: ExposureSpec, tile=None):
        from astropy.time import Time

        t = Time(exp.mjd, format="mjd", scale="utc")
        hdr = {
            "EXPID": exp.expid, "NIGHT": int(night), "OBSTYPE": exp.obstype, "FLAVOR": exp.flavor,
            "EXPTIME": float(exp.exptime), "REQTIME": float(exp.exptime), "DARKTIME": float(exp.exptime + detector.READOUT_S),
            "MJD-OBS": float(exp.mjd), "DATE-OBS": t.isot, "TILEID": int(exp.tileid), "PROGRAM": exp.program,
            "SURVEY": exp.survey, "FAPRGRM": exp.program if exp.obstype == "SCIENCE" else "",
            "AIRMASS": float(exp.airmass), "INSTRUME": "DESI", "OBSERVAT": "KPNO", "TELESCOP": "KPNO 4.0-m telescope",
            "SIMULATE": (True, "simulated by fiberflow"), "SIMSEED": self.seed,
        }
        if tile is not None:
            hdr.update({"SKYRA": tile.ra, "SKYDEC": tile.dec, "TARGTRA": tile.ra, "TARGTDEC": tile.dec})
        else:
            hdr.update({"SKYRA": 0.0, "SKYDEC": 0.0})
        if exp.obstype == "ARC":
            hdr["LAMPS"] = "HgAr,Cd,Ne,Kr"
        return hdr

    def simulate_exposure(self, plan: Plan, expid, raw_root, truth_root, cameras=None, use_numba=True):
        """Write one exposure's raw file (+ fibermap for science) and its truth files.

        Returns
        -------
        list of written paths
        """
        exp = plan.exposure(expid)
        night = plan.night
        inst = self.instrument
        cameras = inst.camera_names() if cameras is None else list(cameras)
        tile = None
        fm_all = []
        flux_by_petal, info_by_petal = {}, {}
        std_rows = []
        if exp.obstype == "SCIENCE":
            ra, dec = targets.tile_center(exp.tileid)
            tile = targets.Tile(exp.tileid, ra, dec, exp.program, exp.survey)
            for petal in sorted({int(c[1:]) for c in cameras}):
                fm, flux, info = self.science_targets(exp, petal)
                # broken fibers (fault) are not flagged in the fibermap: the pipeline must find them
                fm_all.append(fm)
                flux_by_petal[petal], info_by_petal[petal] = flux, info
                for f, m in enumerate(info):
                    if m["CLASS"] == "STD":
                        std_rows.append((fm["TARGETID"][f], petal, fm["FIBER"][f], m["TEFF"], m["LOGG"], m["FEH"],
                                         m["Z"] * targets.C_KMS, 22.5 - 2.5 * np.log10(max(fm["FLUX_R"][f], 1e-9)),
                                         fm["DESI_TARGET"][f] != 0 and (fm["DESI_TARGET"][f] & (1 << 33)) != 0))
        header = self.exposure_header(night, exp, tile)
        written = []
        raw_path = paths.findfile("raw", raw=raw_root, night=night, expid=exp.expid)
        os.makedirs(os.path.dirname(raw_path), exist_ok=True)
        if fm_all:
            fibermap = np.concatenate(fm_all)
            fm_path = paths.findfile("fibermap", raw=raw_root, night=night, expid=exp.expid)
            fmhdr = {k: header[k] for k in ("EXPID", "NIGHT", "TILEID", "EXPTIME", "SKYRA", "SKYDEC", "PROGRAM", "SURVEY")}
            write_fibermap(fm_path, fibermap, fmhdr)
            written.append(fm_path)
        raw_cams = {}
        for cam in cameras:
            petal = int(cam[1:])
            fm = next((f for f in fm_all if f["PETAL_LOC"][0] == petal), None)
            rc, truth, _ = self.simulate_camera(night, exp, cam, fm, flux_by_petal.get(petal), info_by_petal.get(petal),
                                                use_numba=use_numba)
            raw_cams[cam] = rc
            tpath = paths.findfile("truth", truth=truth_root, night=night, expid=exp.expid, camera=cam)
            os.makedirs(os.path.dirname(tpath), exist_ok=True)
            truth.write(tpath)
            written.append(tpath)
        write_raw(raw_path, header, raw_cams)
        written.append(raw_path)
        if fm_all:
            # every target of the tile (the same for every exposure of the tile: rewritten atomically)
            rows = np.concatenate([TruthTargets.rows(f, info_by_petal[int(f["PETAL_LOC"][0])], exp.tileid) for f in fm_all])
            tpath = paths.findfile("truth_targets", truth=truth_root, tileid=exp.tileid)
            os.makedirs(os.path.dirname(tpath), exist_ok=True)
            _write_shared(TruthTargets(rows, {"TILEID": int(exp.tileid), "SURVEY": exp.survey,
                                              "PROGRAM": exp.program, "SIMSEED": self.seed}).write, tpath)
            written.append(tpath)
        if std_rows:
            tab = np.array(std_rows, dtype=[("TARGETID", "i8"), ("PETAL_LOC", "i2"), ("FIBER", "i4"), ("TEFF", "f4"),
                                            ("LOGG", "f4"), ("FEH", "f4"), ("RV", "f4"), ("MAG_R", "f4"), ("FLAGGED", "?")])
            spath = paths.findfile("truth_stdstars", truth=truth_root, night=night, expid=exp.expid)
            TruthStdStars(tab, {"EXPID": exp.expid, "NIGHT": int(night)}).write(spath)
            written.append(spath)
        return written

    def pixel_flat(self, camera):
        """The camera's true pixel response (ny, nx), or None when ``pixflat`` is 0."""
        if not self.pixflat:
            return None
        return detector.pixel_response(camera, int(self.instrument.ccd["ny"]), int(self.instrument.ccd["nx"]),
                                       self.pixflat)

    def write_night_truth(self, plan: Plan, truth_root, cameras=None):
        """truth-calib-{camera}-{night}.fits: the night's true PSF + per-exposure trace offsets."""
        import fitsio

        from ..io.fitsutil import atomic_path, write_table

        cameras = self.instrument.camera_names() if cameras is None else list(cameras)
        written = []
        for cam in cameras:
            path = paths.findfile("truth_calib", truth=truth_root, night=plan.night, camera=cam)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            psf = self.night_psf(plan.night, cam)
            ndx, ndy = self.night_shift(plan.night, cam)
            psf.header["NDX"] = (float(ndx), "night x offset vs nominal [pixel]")
            psf.header["NDY"] = (float(ndy), "night y offset vs nominal [pixel]")
            rows = [(e.expid, *self.exposure_shift(e.expid, cam)) for e in plan.exposures]
            tab = np.array(rows, dtype=[("EXPID", "i4"), ("DX", "f8"), ("DY", "f8"), ("DYSLOPE", "f8")])
            def write(dest, psf=psf, tab=tab):
                with atomic_path(dest) as tmp:
                    psf.write(tmp)
                    with fitsio.FITS(tmp, "rw") as fx:
                        write_table(fx, tab, "SHIFTS", {"COMMENT": "exposure trace offsets vs this PSF [pixel]"})

            _write_shared(write, path)
            written.append(path)
            if self.pixflat:
                path = paths.findfile("truth_pixflat", truth=truth_root, camera=cam)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                _write_shared(PixFlat(self.pixel_flat(cam).astype(np.float32),
                                      {"CAMERA": cam, "PFRMS": (float(self.pixflat), "simulated pixel response rms")}).write,
                              path)
                written.append(path)
        return written


def _write_shared(write, path):
    """Write a truth file that several simulate jobs write at once with the same content (the
    night's truth, a tile's targets): each through its own part file, renamed into place (the
    atomic writers clear stale temporary files of their destination, which would be another
    job's file in progress)."""
    part = f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
    try:
        write(part)
        os.replace(part, path)
    finally:
        if os.path.exists(part):
            os.unlink(part)


def simulate_night(plan: Plan, instrument, seed, raw_root, truth_root, cameras=None, expids=None, use_numba=True,
                   projection="fine", psf_shape=0.0, pixflat=0.0):
    """Simulate a whole night (or the listed exposures). Returns the written paths.

    ``projection``, ``psf_shape``, ``pixflat``: see :class:`Simulator`."""
    sim = Simulator(instrument, seed, projection, psf_shape, pixflat)
    written = sim.write_night_truth(plan, truth_root, cameras)
    for expid in (plan.expids() if expids is None else expids):
        written += sim.simulate_exposure(plan, expid, raw_root, truth_root, cameras, use_numba=use_numba)
    return written
