"""GAUSS-HERMITE PSF files (specex PSFVER 3), as used by DESI for psf/fit-psf/psfnight.

Layout: HDU ``XTRACE`` (primary image, float64 ``[nfiber, ncoef]``: Legendre coefficients of
CCD x versus reduced wavelength), ``YTRACE`` (same for y), and the binary table ``PSF`` with
one row per parameter: ``PARAM`` (8A), ``COEFF`` ``[nfiber, ncoefw]``, ``LEGDEGX``, ``LEGDEGW``.
Trace HDUs carry WAVEMIN/WAVEMAX/FIBERMIN/FIBERMAX/PSFTYPE/PSFVER; the PSF HDU carries
NPIX_X/Y, HSIZEX/Y, GHDEGX/Y, its own WAVEMIN/WAVEMAX, per-bundle fit quality, provenance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from ..provenance import with_base_provenance
from . import fitsutil
from .datamodel import check_product

REQUIRED_PARAMS = ("GHSIGX", "GHSIGY")
TAIL_PARAMS = ("TAILAMP", "TAILCORE", "TAILXSCA", "TAILYSCA", "TAILINDE")
_GH = re.compile(r"^GH-(\d+)-(\d+)$")


@dataclass
class GaussHermitePSF:
    """Coefficients of a GAUSS-HERMITE PSF (data only; evaluation in :mod:`fiberflow.models.psf`).

    Attributes
    ----------
    xtrace, ytrace : float64 (nfiber, ncoef)
        Legendre coefficients of x(wave), y(wave) in reduced wavelength over
        [trace_wavemin, trace_wavemax].
    trace_wavemin, trace_wavemax : float
    params : dict[str, float64 (nfiber, ncoefw)]
        Legendre coefficients of each PSF parameter over [psf_wavemin, psf_wavemax]
        (all coefficients are evaluated, as specter/desispec do).
    legdeg : dict[str, (int, int)]
        LEGDEGX, LEGDEGW of each parameter (kept for round trips).
    psf_wavemin, psf_wavemax : float
    meta : dict
        PSF-HDU keywords (NPIX_X, NPIX_Y, HSIZEX, HSIZEY, GHDEGX, GHDEGY, ...).
    header : dict
        Extra keywords for the XTRACE (primary) HDU: provenance, CAMERA ...
    fiberstatus : structured (nfiber,), optional
        HDU ``FIBERSTATUS`` of fitted PSFs: FIBER, STATUS (fibermask bits BADARC/BADTRACE),
        NLINE (spots used), RMSX/RMSY (spot residuals about the fitted traces, pixel).
    spots : structured (nspot,), optional
        HDU ``SPOTS``: every measured arc spot (FIBER, WAVE, X, Y, FLUX, errors, CHI2, GOOD).
    """

    xtrace: np.ndarray
    ytrace: np.ndarray
    trace_wavemin: float
    trace_wavemax: float
    params: dict
    psf_wavemin: float
    psf_wavemax: float
    meta: dict = field(default_factory=dict)
    legdeg: dict = field(default_factory=dict)
    header: dict = field(default_factory=dict)
    fiberstatus: np.ndarray | None = None
    spots: np.ndarray | None = None

    NAME = "psf"
    VERSION = "3"

    # ------------------------------------------------------------------ properties
    @property
    def nfiber(self):
        return self.xtrace.shape[0]

    @property
    def fibermin(self):
        return int(self.meta.get("FIBERMIN", 0))

    @property
    def npix_x(self):
        return int(self.meta["NPIX_X"])

    @property
    def npix_y(self):
        return int(self.meta["NPIX_Y"])

    @property
    def hsizex(self):
        return int(self.meta.get("HSIZEX", 8))

    @property
    def hsizey(self):
        return int(self.meta.get("HSIZEY", 5))

    def status(self):
        """fibermask bits per fiber (nfiber,), zeros when the file has no FIBERSTATUS."""
        if self.fiberstatus is None:
            return np.zeros(self.nfiber, dtype=np.int32)
        return np.asarray(self.fiberstatus["STATUS"], dtype=np.int32)

    @property
    def ghdegx(self):
        return int(self.meta.get("GHDEGX", max((i for i, _ in self.gh_terms()), default=0)))

    @property
    def ghdegy(self):
        return int(self.meta.get("GHDEGY", max((j for _, j in self.gh_terms()), default=0)))

    def gh_terms(self):
        """(i, j) of every GH-i-j parameter present."""
        out = []
        for name in self.params:
            m = _GH.match(name)
            if m:
                out.append((int(m.group(1)), int(m.group(2))))
        return sorted(out)

    def copy(self):
        """Deep copy."""
        return GaussHermitePSF(
            self.xtrace.copy(), self.ytrace.copy(), self.trace_wavemin, self.trace_wavemax,
            {k: v.copy() for k, v in self.params.items()}, self.psf_wavemin, self.psf_wavemax,
            dict(self.meta), dict(self.legdeg), dict(self.header),
            None if self.fiberstatus is None else self.fiberstatus.copy(),
            None if self.spots is None else self.spots.copy(),
        )

    def select_fibers(self, start, stop):
        """PSF restricted to fibers ``start:stop`` (indices into this PSF)."""
        out = self.copy()
        out.xtrace = out.xtrace[start:stop].copy()
        out.ytrace = out.ytrace[start:stop].copy()
        out.params = {k: v[start:stop].copy() for k, v in out.params.items()}
        if out.fiberstatus is not None:
            out.fiberstatus = out.fiberstatus[start:stop].copy()
        out.spots = None
        out.meta["FIBERMIN"] = self.fibermin + start
        out.meta["FIBERMAX"] = self.fibermin + start + out.nfiber - 1
        return out

    # ------------------------------------------------------------------ I/O
    def write(self, path):
        """Write in the specex PSFVER 3 layout, atomically."""
        nfib = self.nfiber
        if self.ytrace.shape[0] != nfib:
            raise ValueError("XTRACE and YTRACE have different fiber counts")
        names = list(self.params)
        ncoef = max(v.shape[1] for v in self.params.values())
        table = np.zeros(len(names), dtype=[("PARAM", "U8"), ("COEFF", "f8", (nfib, ncoef)),
                                            ("LEGDEGX", "i4"), ("LEGDEGW", "i4")])
        for k, name in enumerate(names):
            c = self.params[name]
            if c.shape[0] != nfib:
                raise ValueError(f"PSF parameter {name} has {c.shape[0]} fibers, traces have {nfib}")
            table["PARAM"][k] = name
            table["COEFF"][k, :, : c.shape[1]] = c
            dx, dw = self.legdeg.get(name, (0, c.shape[1] - 1))
            table["LEGDEGX"][k] = dx
            table["LEGDEGW"][k] = dw
        fmin = self.fibermin
        common = {"FIBERMIN": fmin, "FIBERMAX": fmin + nfib - 1, "PSFTYPE": "GAUSS-HERMITE", "PSFVER": 3}
        xhdr = with_base_provenance(self.header)
        xhdr.update(common)
        xhdr.update({"WAVEMIN": float(self.trace_wavemin), "WAVEMAX": float(self.trace_wavemax)})
        xhdr["FFDMNAME"] = (self.NAME, "fiberflow data product")
        xhdr["FFDMVER"] = (self.VERSION, "datamodel version")
        yhdr = dict(common)
        yhdr.update({"WAVEMIN": float(self.trace_wavemin), "WAVEMAX": float(self.trace_wavemax)})
        phdr = dict(self.meta)
        phdr.update(common)
        phdr["PSFVER"] = "3"
        phdr.update({"WAVEMIN": float(self.psf_wavemin), "WAVEMAX": float(self.psf_wavemax),
                     "NPARAMS": len(names), "LEGDEG": ncoef - 1})
        with fitsutil.atomic_fits(path) as fx:
            fitsutil.write_image(fx, np.asarray(self.xtrace, "f8"), "XTRACE", xhdr)
            fitsutil.write_image(fx, np.asarray(self.ytrace, "f8"), "YTRACE", yhdr)
            fitsutil.write_table(fx, table, "PSF", phdr)
            if self.fiberstatus is not None:
                if len(self.fiberstatus) != nfib:
                    raise ValueError(f"FIBERSTATUS has {len(self.fiberstatus)} rows, traces have {nfib} fibers")
                fitsutil.write_table(fx, self.fiberstatus, "FIBERSTATUS")
            if self.spots is not None:
                fitsutil.write_table(fx, self.spots, "SPOTS")
        return path

    @classmethod
    def read(cls, path):
        """Read a GAUSS-HERMITE PSFVER 3 file (DESI/specex or fiberflow)."""
        path = str(path)
        with fitsutil.open_fits(path) as fx:
            xtrace, xhdr = fitsutil.read_image(fx, "XTRACE", path, dtype="f8", ndim=2)
            check_product(xhdr, path, cls.NAME, cls.VERSION)
            ytrace, yhdr = fitsutil.read_image(fx, "YTRACE", path, dtype="f8", ndim=2)
            table, phdr = fitsutil.read_table(fx, "PSF", path, required=("PARAM", "COEFF"))
            names = fitsutil.hdu_names(fx)
            fiberstatus = (fitsutil.read_table(fx, "FIBERSTATUS", path, required=("FIBER", "STATUS"))[0]
                           if "FIBERSTATUS" in names else None)
            spots = fitsutil.read_table(fx, "SPOTS", path)[0] if "SPOTS" in names else None
        for name, hdr in (("XTRACE", xhdr), ("YTRACE", yhdr), ("PSF", phdr)):
            fitsutil.require_keys(hdr, ("WAVEMIN", "WAVEMAX"), path, f"HDU {name}")
        psftype = str(xhdr.get("PSFTYPE", phdr.get("PSFTYPE", ""))).strip()
        if psftype and psftype != "GAUSS-HERMITE":
            raise DataError(path, f"PSFTYPE is {psftype!r}, expected GAUSS-HERMITE")
        fitsutil.require_keys(phdr, ("NPIX_X", "NPIX_Y"), path, "HDU PSF")
        if xtrace.shape[0] != ytrace.shape[0]:
            raise DataError(path, f"XTRACE has {xtrace.shape[0]} fibers, YTRACE {ytrace.shape[0]}")
        params, legdeg = {}, {}
        for row in table:
            name = str(row["PARAM"]).strip()
            coeff = np.asarray(row["COEFF"], dtype=np.float64)
            if coeff.ndim == 1:
                coeff = coeff.reshape(xtrace.shape[0], -1)
            params[name] = coeff
            legdeg[name] = (int(row["LEGDEGX"]) if "LEGDEGX" in table.dtype.names else 0,
                            int(row["LEGDEGW"]) if "LEGDEGW" in table.dtype.names else coeff.shape[1] - 1)
        missing = [p for p in REQUIRED_PARAMS if p not in params]
        if missing:
            raise DataError(path, f"PSF table lacks parameter(s) {', '.join(missing)}")
        for name, c in params.items():
            if c.shape[0] != xtrace.shape[0]:
                raise DataError(path, f"PSF parameter {name} has {c.shape[0]} fibers, XTRACE {xtrace.shape[0]}")
        meta = {k: v for k, v in phdr.items() if k not in ("WAVEMIN", "WAVEMAX", "COMMENT", "HISTORY")}
        meta.setdefault("FIBERMIN", xhdr.get("FIBERMIN", 0))
        header = {k: v for k, v in xhdr.items()
                  if k not in ("WAVEMIN", "WAVEMAX", "FIBERMIN", "FIBERMAX", "PSFTYPE", "PSFVER", "COMMENT", "HISTORY")}
        if fiberstatus is not None and len(fiberstatus) != xtrace.shape[0]:
            raise DataError(path, f"FIBERSTATUS has {len(fiberstatus)} rows, XTRACE {xtrace.shape[0]} fibers")
        return cls(xtrace, ytrace, float(xhdr["WAVEMIN"]), float(xhdr["WAVEMAX"]), params,
                   float(phdr["WAVEMIN"]), float(phdr["WAVEMAX"]), meta, legdeg, header, fiberstatus, spots)


def read_psf(path):
    """Read a GAUSS-HERMITE PSF file."""
    return GaussHermitePSF.read(path)


def write_psf(path, psf):
    """Write a GAUSS-HERMITE PSF file atomically."""
    return psf.write(path)
