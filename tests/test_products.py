"""Round trips of every product (write, read back, equal), atomic writes, determinism."""

import hashlib
import os

import _factories as fac
import numpy as np
import pytest

from fiberflow.io.calib import FiberFlat, FluxCalib, SkyModel, StdStars
from fiberflow.io.fibermap import read_fibermap, write_fibermap
from fiberflow.io.frame import Frame, read_frame
from fiberflow.io.image import PreprocImage
from fiberflow.io.spectra import read_spectra
from fiberflow.provenance import provenance_header


def _assert_same(a, b, fields):
    for f in fields:
        x, y = getattr(a, f), getattr(b, f)
        if x is None:
            assert y is None, f
            continue
        if getattr(x, "dtype", None) is not None and x.dtype.names:
            assert x.dtype.names == y.dtype.names, f
            for n in x.dtype.names:
                np.testing.assert_array_equal(x[n], y[n], err_msg=f"{f}.{n}")
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f)


def test_frame_roundtrip(tmp_path):
    fr = fac.frame()
    fr.header.update(provenance_header("extract", {"wavesize": 50}, ["/x/preproc.fits"]))
    path = fr.write(tmp_path / "frame-r0-00000101.fits")
    back = read_frame(path)
    _assert_same(fr, back, ["wave", "flux", "ivar", "mask", "resolution", "fibermap", "chi2pix"])
    assert back.header["CAMERA"] == "r0" and back.header["FFSTEP"] == "extract"
    assert back.units == "electron/Angstrom" and back.ndiag == 11
    assert back.resolution.dtype == np.float32 and back.wave.dtype == np.float64
    # rows of every resolution matrix still sum to one after the float32 round trip
    from fiberflow.models.resolution import row_sums

    for i in range(back.nspec):
        np.testing.assert_allclose(row_sums(back.resolution[i].astype(float))[5:-5], 1.0, atol=1e-6)


def test_cframe_units_roundtrip(tmp_path):
    fr = fac.frame(units="10**-17 erg/(s cm2 Angstrom)")
    back = read_frame(fr.write(tmp_path / "cframe-r0-00000101.fits"))
    assert back.units == "10**-17 erg/(s cm2 Angstrom)"


@pytest.mark.parametrize("make,cls,fields", [
    (fac.fiberflat, FiberFlat, ["wave", "fiberflat", "ivar", "mask", "meanspec", "fibermap"]),
    (fac.sky, SkyModel, ["wave", "flux", "ivar", "mask", "stat_ivar", "throughput_corr"]),
    (fac.fluxcalib, FluxCalib, ["wave", "calib", "ivar", "mask"]),
    (fac.stdstars, StdStars, ["wave", "flux", "fibers", "metadata", "fibermap", "input_frames"]),
    (fac.preproc, PreprocImage, ["image", "ivar", "mask", "readnoise", "fibermap"]),
])
def test_calibration_products_roundtrip(tmp_path, make, cls, fields):
    obj = make()
    back = cls.read(obj.write(tmp_path / f"{cls.NAME}.fits"))
    _assert_same(obj, back, fields)
    assert back.header["FFDMNAME"] == cls.NAME


@pytest.mark.parametrize("coadd", [False, True])
def test_spectra_roundtrip(tmp_path, coadd):
    sp = fac.spectra(coadd=coadd)
    back = read_spectra(sp.write(tmp_path / "spectra-main-dark-5261.fits"))
    assert back.bands == ["b", "r", "z"] and back.header["HPXPIXEL"] == 5261
    for b in sp.bands:
        for attr in ("wave", "flux", "ivar", "mask", "resolution"):
            np.testing.assert_array_equal(getattr(sp, attr)[b], getattr(back, attr)[b])
    assert (back.exp_fibermap is None) == (not coadd)
    np.testing.assert_array_equal(back.fibermap["TARGETID"], sp.fibermap["TARGETID"])


def test_fibermap_roundtrip(tmp_path):
    fm = fac.fibermap(20, petal=3)
    write_fibermap(tmp_path / "fibermap-00000101.fits", fm, {"TILEID": 1000})
    back, hdr = read_fibermap(tmp_path / "fibermap-00000101.fits")
    assert hdr["TILEID"] == 1000 and back.dtype == fm.dtype
    for n in fm.dtype.names:
        np.testing.assert_array_equal(back[n], fm[n])
    assert back["FIBER"][0] == 1500 and set(back["OBJTYPE"]) == {"SKY", "TGT"}


def test_psf_roundtrip(tmp_path, real_psf):
    path = real_psf.write(tmp_path / "psf.fits")
    from fiberflow.io.psf import read_psf

    back = read_psf(path)
    np.testing.assert_array_equal(back.xtrace, real_psf.xtrace)
    np.testing.assert_array_equal(back.ytrace, real_psf.ytrace)
    assert set(back.params) == set(real_psf.params)
    for k in real_psf.params:
        np.testing.assert_array_equal(back.params[k], real_psf.params[k])
    assert (back.trace_wavemin, back.psf_wavemax) == (real_psf.trace_wavemin, real_psf.psf_wavemax)
    assert back.npix_x == 4114 and back.hsizey == 5
    sub = real_psf.select_fibers(25, 50)
    back = read_psf(sub.write(tmp_path / "sub.fits"))
    assert back.nfiber == 25 and back.fibermin == 25


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    fr = fac.frame()
    path = tmp_path / "frame.fits"
    fr.write(path)
    before = path.read_bytes()
    bad = fac.frame()
    bad.ivar = bad.ivar[:, :-1]  # inconsistent shape: validate() refuses before writing
    with pytest.raises(Exception):
        bad.write(path)
    fr2 = fac.frame()
    fr2.resolution = None  # fails in the middle of writing
    with pytest.raises(ValueError, match="required"):
        fr2.write(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["frame.fits"], "temporary file left behind"


def test_same_inputs_same_bytes(tmp_path):
    digests = []
    for k in range(2):
        p = fac.frame(rng=np.random.default_rng(11)).write(tmp_path / f"f{k}.fits")
        digests.append(hashlib.sha256(open(p, "rb").read()).hexdigest())
    assert digests[0] == digests[1]


def test_frame_from_other_camera_shapes_are_checked(tmp_path):
    fr = fac.frame()
    fr.resolution = fr.resolution[:, :, :-2]
    with pytest.raises(Exception, match="RESOLUTION"):
        Frame.validate(fr)


def test_describe_lists_hdus():
    text = Frame.describe()
    for name in ("FLUX", "IVAR", "MASK", "WAVELENGTH", "RESOLUTION", "FIBERMAP", "CHI2PIX"):
        assert name in text


def test_every_writer_stamps_provenance(tmp_path, real_psf):
    import fitsio

    from fiberflow.io.fibermap import write_fibermap

    files = [fac.frame().write(tmp_path / "a.fits"), fac.sky().write(tmp_path / "b.fits"),
             fac.spectra().write(tmp_path / "c.fits"), real_psf.write(tmp_path / "d.fits")]
    write_fibermap(tmp_path / "e.fits", fac.fibermap(3))
    files.append(tmp_path / "e.fits")
    for f in files:
        hdr = fitsio.read_header(str(f), 0)
        assert hdr["FFVER"] and hdr["DEPNAM00"] == "python", f


def _every_product(tmp_path, real_psf):
    """(path, reader) of one file of every product fiberflow writes, FITS and JSON."""
    import numpy as np

    from fiberflow.io.datamodel import read_json, write_json
    from fiberflow.io.image import BiasNight, ModelImage, PixFlat
    from fiberflow.io.psf import read_psf
    from fiberflow.sim.truth import TruthFrame, TruthStdStars
    from fiberflow.workflow.tilepix import read_tilepix, write_tilepix

    img = np.ones((6, 5), "f4")
    out = []
    for name, obj, cls in [("frame", fac.frame(), Frame), ("fiberflat", fac.fiberflat(), FiberFlat),
                           ("sky", fac.sky(), SkyModel), ("fluxcalib", fac.fluxcalib(), FluxCalib),
                           ("stdstars", fac.stdstars(), StdStars), ("preproc", fac.preproc(), PreprocImage),
                           ("biasnight", BiasNight(img, np.zeros((6, 5), "i2")), BiasNight),
                           ("pixflat", PixFlat(img), PixFlat), ("model", ModelImage(img), ModelImage),
                           ("truth", TruthFrame(np.zeros((6, 5), "u1"), np.zeros((6, 5), "u1"), wave=np.arange(4.0)), TruthFrame),
                           ("truthstd", TruthStdStars(np.zeros(2, [("TARGETID", "i8")])), TruthStdStars)]:
        out.append((obj.write(tmp_path / f"{name}.fits"), cls.read))
    out.append((fac.spectra().write(tmp_path / "spectra.fits"), read_spectra))
    out.append((real_psf.write(tmp_path / "psf.fits"), read_psf))
    out.append((write_tilepix(tmp_path / "tilepix-1.json", 1, {0: [5, 6]}, 64), read_tilepix))
    for name in ("qa_frame", "qa_night"):
        out.append((write_json(tmp_path / f"{name}.json", name, {"CAMERA": "r0"}),
                    lambda p, name=name: read_json(p, name)))
    return out


def test_every_reader_refuses_an_unknown_datamodel_version(tmp_path, real_psf):
    """Each product round-trips at its own version; the same file stamped with a version this
    fiberflow does not know is refused by its reader with a message naming file and version."""
    import json

    import fitsio

    from fiberflow.errors import DataError

    products = _every_product(tmp_path, real_psf)
    assert len(products) == 16
    for path, reader in products:
        reader(path)  # its own version reads
        path = str(path)
        if path.endswith(".json"):
            data = json.load(open(path))
            data["FFDMVER"] = "99"
            json.dump(data, open(path, "w"))
        else:
            with fitsio.FITS(path, "rw") as fx:
                ext = next(i for i in range(len(fx)) if "FFDMVER" in fx[i].read_header())
                fx[ext].write_key("FFDMVER", "99")
        with pytest.raises(DataError, match="datamodel version 99; this fiberflow reads version") as err:
            reader(path)
        assert path in str(err.value), err.value
