"""Raw exposures (compressed camera HDUs) and clear errors on bad input."""

import _factories as fac
import numpy as np
import pytest

from fiberflow.errors import DataError
from fiberflow.io import raw
from fiberflow.io.fitsutil import check_finite
from fiberflow.io.frame import read_frame


def _camera(rng, ny=40, nx_amp=15, npre=2, nover=4):
    """A 4-amp raw camera laid out as DESI's (prescan | data | overscan) per amp."""
    half = npre + nx_amp + nover
    data = rng.integers(1000, 1100, size=(2 * (ny // 2), 2 * half)).astype(np.uint16)
    h = ny // 2
    hdr = {}
    for amp, row0, left in (("A", 0, True), ("B", 0, False), ("C", h, True), ("D", h, False)):
        rows = f"{row0 + 1}:{row0 + h}"
        if left:
            pre, dat, bias, ccdx = (1, npre), (npre + 1, npre + nx_amp), (npre + nx_amp + 1, half), (1, nx_amp)
        else:
            bias, dat, pre = (half + 1, half + nover), (half + nover + 1, half + nover + nx_amp), (2 * half - npre + 1, 2 * half)
            ccdx = (nx_amp + 1, 2 * nx_amp)
        hdr[f"PRESEC{amp}"] = f"[{pre[0]}:{pre[1]},{rows}]"
        hdr[f"DATASEC{amp}"] = f"[{dat[0]}:{dat[1]},{rows}]"
        hdr[f"BIASSEC{amp}"] = f"[{bias[0]}:{bias[1]},{rows}]"
        hdr[f"CCDSEC{amp}"] = f"[{ccdx[0]}:{ccdx[1]},{rows}]"
        hdr[f"GAIN{amp}"] = 1.6
    return data, hdr


EXP = {"EXPID": 101, "NIGHT": 20251205, "OBSTYPE": "ARC", "EXPTIME": 5.0, "FLAVOR": "arc", "TILEID": -1}


def _write(tmp_path, rng, cams=("b0", "r0", "z0"), mutate=None):
    cameras = {}
    for c in cams:
        data, hdr = _camera(rng)
        if mutate:
            mutate(c, hdr)
        cameras[c] = raw.RawCamera(c, data, hdr)
    path = tmp_path / "20251205" / "00000101" / "desi-00000101.fits.fz"
    raw.write_raw(path, EXP, cameras)
    return path, cameras


def test_raw_roundtrip_compressed(tmp_path, rng):
    path, cams = _write(tmp_path, rng)
    assert raw.raw_cameras(path) == ["b0", "r0", "z0"]
    hdr = raw.read_raw_header(path)
    assert hdr["OBSTYPE"] == "ARC" and hdr["EXPID"] == 101
    for c, rc in cams.items():
        back = raw.read_raw_camera(path, c)
        np.testing.assert_array_equal(back.data, rc.data)
        assert back.data.dtype == np.uint16 and back.header["CAMERA"] == c and back.header["NIGHT"] == 20251205
        amps = back.amps(path)
        assert list(amps) == ["A", "B", "C", "D"]
        assert raw.ccd_shape(amps) == (40, 30)
    # the camera HDUs really are tile-compressed (fpack style) with uint16 BZERO
    import fitsio

    with fitsio.FITS(str(path)) as fx:
        h = fx["R0"].read_header()
        assert h["ZCMPTYPE"].strip() == "RICE_1" and h["BZERO"] == 32768
        assert fx[1].get_extname() == "SPEC"


def test_sections():
    sy, sx = raw.parse_sec("[8:2064, 2:2065]")
    assert (sy, sx) == (slice(1, 2065), slice(7, 2064))
    assert raw.format_sec(sy, sx) == "[8:2064,2:2065]"
    assert raw.parse_sec("[4114:2058, 1:2064]")[1] == slice(2057, 4114)
    with pytest.raises(ValueError):
        raw.parse_sec("8:2064,2:2065")


def test_missing_amp_keyword(tmp_path, rng):
    path, _ = _write(tmp_path, rng)
    # a camera whose amplifier C lacks BIASSECC is refused at write time ...
    data, hdr = _camera(rng)
    del hdr["BIASSECC"]
    with pytest.raises(DataError, match="amplifier C lacks keyword\\(s\\) BIASSECC"):
        raw.write_raw(tmp_path / "x.fits.fz", EXP, {"r0": raw.RawCamera("r0", data, hdr)})
    # ... and a file written by someone else without it is refused on read, naming file and keyword
    import fitsio

    bad = tmp_path / "bad.fits.fz"
    with fitsio.FITS(str(bad), "rw", clobber=True) as fx:
        fx.write(None)
        fx.write(np.arange(10, dtype=np.int16), extname="SPEC", header=[{"name": k, "value": v} for k, v in EXP.items()])
        fx.write(data, extname="R0", compress="RICE", header=[{"name": k, "value": v} for k, v in hdr.items()])
    with pytest.raises(DataError) as exc:
        raw.read_raw_camera(bad, "r0")
    assert str(bad) in str(exc.value) and "BIASSECC" in str(exc.value)


def test_no_amp_keywords(tmp_path, rng):
    data, hdr = _camera(rng)
    with pytest.raises(DataError, match="no amplifier keywords"):
        raw.amp_geometry({}, path="f.fits", shape=data.shape, camera="r0")


def test_truncated_raw(tmp_path, rng):
    path, _ = _write(tmp_path, rng)
    blob = path.read_bytes()
    cut = tmp_path / "truncated.fits.fz"
    cut.write_bytes(blob[: len(blob) - 4000])
    with pytest.raises(DataError) as exc:
        raw.read_raw_camera(cut, "z0")
    assert str(cut) in str(exc.value) and "truncated" in str(exc.value)


def test_truncated_and_missing_hdu_frame(tmp_path):
    path = fac.frame().write(tmp_path / "frame-r0-00000101.fits")
    blob = path.read_bytes()
    for n, cut in enumerate((len(blob) // 2, len(blob) - 2880, 1000)):
        bad = tmp_path / f"cut{n}.fits"
        bad.write_bytes(blob[:cut])
        with pytest.raises(DataError) as exc:
            read_frame(bad)
        assert str(bad) in str(exc.value)
    # same size, corrupted data: the DATASUM check catches it
    import fitsio

    with fitsio.FITS(str(path)) as fx:
        off = fx["IVAR"].get_offsets()
        data_start, data_end = int(off["data_start"]), int(off["data_end"])
    corrupt = bytearray(blob)
    corrupt[(data_start + data_end) // 2] ^= 0xFF
    bad = tmp_path / "corrupt.fits"
    bad.write_bytes(bytes(corrupt))
    with pytest.raises(DataError, match="checksum|cannot be read|truncated"):
        read_frame(bad)
    # a frame without RESOLUTION
    fr = fac.frame()
    nohdu = tmp_path / "nores.fits"
    with fitsio.FITS(str(nohdu), "rw", clobber=True) as fx:
        fx.write(fr.flux, extname="FLUX")
        fx.write(fr.ivar, extname="IVAR")
        fx.write(fr.mask, extname="MASK")
        fx.write(fr.wave, extname="WAVELENGTH")
    with pytest.raises(DataError, match="missing HDU RESOLUTION"):
        read_frame(nohdu)
    with pytest.raises(DataError, match="does not exist"):
        read_frame(tmp_path / "nope.fits")
    (tmp_path / "empty.fits").write_bytes(b"")
    with pytest.raises(DataError, match="truncated"):
        read_frame(tmp_path / "empty.fits")
    (tmp_path / "text.fits").write_bytes(b"hello" * 1000)
    with pytest.raises(DataError, match="not a readable FITS"):
        read_frame(tmp_path / "text.fits")


def test_wrong_shape_rejected_on_read(tmp_path):
    import fitsio

    fr = fac.frame()
    bad = tmp_path / "shape.fits"
    with fitsio.FITS(str(bad), "rw", clobber=True) as fx:
        fx.write(fr.flux, extname="FLUX")
        fx.write(fr.ivar[:, :-1], extname="IVAR")
        fx.write(fr.mask, extname="MASK")
        fx.write(fr.wave, extname="WAVELENGTH")
        fx.write(fr.resolution, extname="RESOLUTION")
    with pytest.raises(DataError, match="IVAR has shape"):
        read_frame(bad)


def test_nan_check():
    with pytest.raises(DataError, match="entirely NaN"):
        check_finite(np.full((3, 3), np.nan), "img.fits", "IMAGE")
    assert check_finite(np.array([1.0, np.nan]), "img.fits", "IMAGE") == 1
