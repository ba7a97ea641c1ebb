"""Raw exposure files ``desi-{expid:08d}.fits.fz`` in DESI's raw layout.

HDU 0 is empty; HDU ``SPEC`` carries the exposure keywords ("treat as primary") with a
dummy compressed payload; one RICE-compressed uint16 image per camera (``B0`` .. ``Z9``,
any subset, any order) whose header repeats the exposure keywords and gives, per
amplifier ``x`` in A..D, ``PRESECx``, ``DATASECx``, ``BIASSECx`` and ``CCDSECx``
(FITS 1-indexed inclusive ``[x1:x2,y1:y2]``), optionally ``GAINx``, ``SATURLEVx``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from ..provenance import with_base_provenance
from . import fitsutil

AMPS = ("A", "B", "C", "D")
SECTION_KEYS = ("PRESEC", "DATASEC", "BIASSEC", "CCDSEC")

#: exposure-level keywords copied into every camera header
EXPOSURE_KEYS = (
    "EXPID", "NIGHT", "TILEID", "FLAVOR", "OBSTYPE", "PROGRAM", "EXPTIME", "REQTIME", "DATE-OBS",
    "MJD-OBS", "AIRMASS", "SKYRA", "SKYDEC", "DARKTIME", "TARGTRA", "TARGTDEC", "SEEING", "TRANSPAR", "SURVEY",
    "FAPRGRM", "DOSVER", "OBSERVER",
)

_SEC = re.compile(r"^\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]$")


def parse_sec(text):
    """FITS section ``[x1:x2,y1:y2]`` (1-indexed, inclusive) -> numpy ``(slice_y, slice_x)``.

    Reversed ranges (read direction, as in DESI's AMPSEC) are normalised to increasing slices.
    """
    m = _SEC.match(str(text).strip())
    if not m:
        raise ValueError(f"not a FITS section: {text!r}")
    x1, x2, y1, y2 = (int(v) for v in m.groups())
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    return slice(y1 - 1, y2), slice(x1 - 1, x2)


def format_sec(sy, sx):
    """numpy ``(slice_y, slice_x)`` -> FITS section string."""
    return f"[{sx.start + 1}:{sx.stop},{sy.start + 1}:{sy.stop}]"


@dataclass
class AmpGeometry:
    """Sections of one amplifier, as numpy slices ``(slice_y, slice_x)``."""

    amp: str
    prescan: tuple
    data: tuple
    bias: tuple
    ccd: tuple


@dataclass
class RawCamera:
    """One camera of a raw exposure.

    Attributes
    ----------
    camera : str
        ``b0`` .. ``z9``.
    data : ndarray, uint16, shape (ny_raw, nx_raw)
        ADU including prescan/overscan.
    header : dict
        Camera header merged with the exposure (SPEC) header.
    """

    camera: str
    data: np.ndarray
    header: dict = field(default_factory=dict)

    def amps(self, path=None):
        """Amplifier geometry (validated); see :func:`amp_geometry`."""
        return amp_geometry(self.header, path=path, shape=self.data.shape, camera=self.camera)


def amp_geometry(header, path=None, shape=None, camera=""):
    """Parse and validate the per-amplifier sections of a camera header.

    An amplifier is present when any of its section keywords is; a present amplifier must
    have all four. Sections must lie inside the raw image, and CCDSECs must not overlap.

    Returns
    -------
    dict[str, AmpGeometry]
    """
    where = f"camera {camera.upper()}" if camera else "camera header"
    present = [a for a in AMPS if any(f"{k}{a}" in header for k in SECTION_KEYS)]
    if not present:
        raise DataError(path, f"{where}: no amplifier keywords (need PRESECx, DATASECx, BIASSECx, CCDSECx for x in A-D)")
    out = {}
    for amp in present:
        missing = [f"{k}{amp}" for k in SECTION_KEYS if f"{k}{amp}" not in header]
        if missing:
            raise DataError(path, f"{where}: amplifier {amp} lacks keyword(s) {', '.join(missing)}")
        try:
            secs = [parse_sec(header[f"{k}{amp}"]) for k in SECTION_KEYS]
        except ValueError as exc:
            raise DataError(path, f"{where}: amplifier {amp}: {exc}") from exc
        if shape is not None:
            for key, (sy, sx) in zip(SECTION_KEYS, secs[:3]):
                if sy.stop > shape[0] or sx.stop > shape[1]:
                    raise DataError(path, f"{where}: {key}{amp} {header[f'{key}{amp}']} outside the raw image {shape}")
        dy, dx = secs[1]
        cy, cx = secs[3]
        if (dy.stop - dy.start, dx.stop - dx.start) != (cy.stop - cy.start, cx.stop - cx.start):
            raise DataError(path, f"{where}: DATASEC{amp} and CCDSEC{amp} have different sizes")
        out[amp] = AmpGeometry(amp, *secs)
    return out


def ccd_shape(amps):
    """Trimmed CCD shape ``(ny, nx)`` covered by the CCDSECs."""
    ny = max(g.ccd[0].stop for g in amps.values())
    nx = max(g.ccd[1].stop for g in amps.values())
    return ny, nx


@dataclass
class RawExposure:
    """A whole raw exposure: exposure header + cameras.

    Attributes
    ----------
    header : dict
        Exposure keywords (the SPEC HDU).
    cameras : dict[str, RawCamera]
    """

    header: dict
    cameras: dict

    def write(self, path):
        """Write in DESI's raw layout, atomically."""
        write_raw(path, self.header, self.cameras)


def write_raw(path, header, cameras):
    """Write a raw exposure file.

    Parameters
    ----------
    path : str
    header : dict
        Exposure keywords (EXPID, NIGHT, OBSTYPE, EXPTIME ...).
    cameras : dict[str, RawCamera]
        Camera images with their amplifier keywords in ``header``.
    """
    for key in ("EXPID", "NIGHT", "OBSTYPE", "EXPTIME"):
        if key not in header:
            raise ValueError(f"write_raw: exposure header lacks {key}")
    with fitsutil.atomic_fits(path) as fx:
        fitsutil.write_empty_primary(fx, None)
        spec_hdr = with_base_provenance(header)
        fitsutil.write_image(fx, np.arange(10, dtype=np.int16), "SPEC", spec_hdr, compress="GZIP")
        for cam in sorted(cameras):
            rc = cameras[cam]
            data = np.asarray(rc.data)
            if data.dtype != np.uint16:
                raise ValueError(f"write_raw: camera {cam} data must be uint16, got {data.dtype}")
            amp_geometry(rc.header, shape=data.shape, camera=cam)
            hdr = {k: header[k] for k in EXPOSURE_KEYS if k in header}
            hdr.update(rc.header)
            hdr["CAMERA"] = cam.lower()
            hdr["INHERIT"] = True
            fitsutil.write_image(fx, data, cam.upper(), hdr, compress="RICE")


def read_raw_header(path):
    """Exposure header of a raw file: the first HDU that has EXPTIME (DESI convention)."""
    path = str(path)
    with fitsutil.open_fits(path) as fx:
        for hdu in fx:
            try:
                hdr = fitsutil.header_dict(hdu.read_header())
            except Exception as exc:
                raise DataError(path, f"header of HDU {hdu.get_extname() or 0} unreadable ({exc})") from exc
            if "EXPTIME" in hdr:
                return hdr
    raise DataError(path, "no HDU with EXPTIME (not a raw exposure)")


def raw_cameras(path):
    """Cameras present in a raw file, lower case, sorted."""
    with fitsutil.open_fits(path) as fx:
        names = fitsutil.hdu_names(fx)
    return sorted(n.lower() for n in names if re.fullmatch(r"[BRZ]\d", n))


def read_raw_camera(path, camera):
    """Read one camera of a raw file, header merged with the exposure header.

    Raises
    ------
    DataError
        Missing file/HDU/keyword, truncated data or non-2D image; the message names the file.
    """
    path = str(path)
    exp_hdr = read_raw_header(path)
    with fitsutil.open_fits(path) as fx:
        data, hdr = fitsutil.read_image(fx, camera.upper(), path, ndim=2)
    merged = dict(exp_hdr)
    merged.update(hdr)
    merged.setdefault("CAMERA", camera.lower())
    for key in ("EXPID", "NIGHT", "OBSTYPE", "EXPTIME"):
        if key not in merged:
            raise DataError(path, f"camera {camera.upper()}: missing keyword {key}")
    if data.dtype != np.uint16:
        if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
            nbad = int(np.count_nonzero(~np.isfinite(data)))
            raise DataError(path, f"camera {camera.upper()}: {nbad} pixels are NaN or infinite (a raw image holds "
                                  "integer ADU)")
        if data.min() < 0 or data.max() > 65535:
            raise DataError(path, f"camera {camera.upper()}: pixel values outside uint16")
        data = data.astype(np.uint16)
    if data.size and data.min() == data.max():
        raise DataError(path, f"camera {camera.upper()}: every pixel is {int(data.min())} (no readout: a CCD image "
                              "has bias noise at least)")
    rc = RawCamera(camera.lower(), data, merged)
    rc.amps(path)  # validate amplifier keywords now, with the file name in the message
    return rc


def read_raw(path, cameras=None):
    """Read a raw exposure (all cameras or the listed ones)."""
    cams = raw_cameras(path) if cameras is None else list(cameras)
    hdr = read_raw_header(path)
    return RawExposure(hdr, {c: read_raw_camera(path, c) for c in cams})
