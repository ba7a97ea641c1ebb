import os

import pytest

from fiberflow import paths

IDS = dict(night=20251205, expid=1234, camera="z3", spectrograph=3, survey="main", program="dark", pix=11234, tileid=1000,
           specprod="prod", calibration="psfnight")


@pytest.mark.parametrize("filetype", paths.filetypes())
def test_findfile_parse_roundtrip(filetype):
    path = paths.findfile(filetype, raw="/r", prod="/p/prod", truth="/t", **IDS)
    ft, ids = paths.parse_path(path)
    assert ft == filetype
    expected = {k: IDS[k] for k in paths.template_fields(filetype)}
    assert ids == expected
    # relative path parses the same way
    assert paths.parse_path(paths.relpath(filetype, **IDS)) == (ft, ids)


def test_desi_names_exact():
    p = paths.findfile("raw", raw="/raw", night=20201214, expid=67784)
    assert p == "/raw/20201214/00067784/desi-00067784.fits.fz"
    assert paths.relpath("cframe", night=20201214, expid=67784, camera="b5") == \
        "exposures/20201214/00067784/cframe-b5-00067784.fits"
    assert paths.relpath("psfnight", night=20201214, camera="r0") == "calibnight/20201214/psfnight-r0-20201214.fits"
    assert paths.relpath("exposure_table", night=20201214) == "exposure_tables/202012/exposure_table_20201214.csv"
    assert paths.relpath("stdstars", night=20201214, expid=5, spectrograph=7) == \
        "exposures/20201214/00000005/stdstars-7-00000005.fits"
    assert paths.relpath("spectra", survey="main", program="dark", pix=10016) == \
        "healpix/main/dark/100/10016/spectra-main-dark-10016.fits"
    assert paths.relpath("fitpsf", night=20201214, expid=5, camera="r0").endswith("fit-psf-r0-00000005.fits")


def test_psf_and_fitpsf_not_confused():
    ft, _ = paths.parse_path("exposures/20201214/00000005/fit-psf-r0-00000005.fits")
    assert ft == "fitpsf"
    ft, _ = paths.parse_path("exposures/20201214/00000005/psf-r0-00000005.fits")
    assert ft == "psf"


def test_parse_rejects_inconsistent_and_unknown():
    with pytest.raises(ValueError, match="does not match night"):
        paths.parse_path("exposure_tables/202101/exposure_table_20201214.csv")
    with pytest.raises(ValueError, match="//100"):
        paths.parse_path("healpix/main/dark/99/10016/spectra-main-dark-10016.fits")
    with pytest.raises(ValueError, match="not a fiberflow file name"):
        paths.parse_path("/some/where/else.txt")
    # expid in the folder and in the name must agree
    with pytest.raises(ValueError):
        paths.parse_path("exposures/20201214/00000005/frame-r0-00000006.fits")


def test_findfile_errors():
    with pytest.raises(ValueError, match="needs camera"):
        paths.relpath("frame", night=20201214, expid=5)
    with pytest.raises(ValueError, match="invalid night"):
        paths.relpath("psfnight", night=1234, camera="r0")
    with pytest.raises(ValueError, match="invalid camera"):
        paths.relpath("frame", night=20201214, expid=5, camera="x9")
    with pytest.raises(KeyError, match="unknown file type"):
        paths.relpath("nonsense")


def test_roots_from_desi_environment(monkeypatch):
    monkeypatch.setenv("DESI_SPECTRO_DATA", "/data/raw")
    monkeypatch.setenv("DESI_SPECTRO_REDUX", "/data/redux")
    monkeypatch.setenv("SPECPROD", "daily")
    assert paths.findfile("raw", night=20201214, expid=1).startswith("/data/raw/20201214/")
    assert paths.findfile("frame", night=20201214, expid=1, camera="b0").startswith("/data/redux/daily/exposures/")
    monkeypatch.delenv("SPECPROD")
    with pytest.raises(ValueError, match="root is not set"):
        paths.findfile("frame", night=20201214, expid=1, camera="b0")


def test_wildcard_patterns_match_templates():
    pat = paths.wildcard_pattern("cframe")
    assert pat == "exposures/{night}/{expid}/cframe-{camera}-{expid}.fits"
    assert paths.wildcard_pattern("raw", "/raw") == os.path.join("/raw", "{night}/{expid}/desi-{expid}.fits.fz")
    cons = paths.wildcard_constraints()
    assert cons["expid"] == r"\d{8}" and cons["camera"] == r"[brz]\d"


def test_production_relpath():
    assert paths.production_relpath("/p/prod/exposures/x.fits", "/p/prod") == "exposures/x.fits"
    assert paths.production_relpath("/elsewhere/x.fits", "/p/prod") == "/elsewhere/x.fits"


def test_camera_list():
    cams = paths.camera_list(2)
    assert cams == ["b0", "b1", "r0", "r1", "z0", "z1"]
