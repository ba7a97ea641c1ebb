import pytest

from fiberflow import bitmasks
from fiberflow.config import load_config, resolve_roots, validate_config
from fiberflow.errors import ConfigError
from fiberflow.instrument import load_instrument, preset_names
from fiberflow.provenance import config_hash, provenance_header, read_provenance


def test_bitmask_values_match_desi_doc():
    assert bitmasks.ccdmask.COSMIC == 16 and bitmasks.ccdmask.BADAMP == 512
    assert bitmasks.specmask.BAD2DFIT == 128 and bitmasks.specmask.ALLBADPIX == 2
    assert bitmasks.fibermask.BROKENFIBER == 4 and bitmasks.fibermask.BADARC == 1 << 19
    assert bitmasks.ccdmask.names(16 | 1) == ["BAD", "COSMIC"]
    assert bitmasks.ccdmask.mask("HOT|DEAD") == 6
    with pytest.raises(AttributeError):
        bitmasks.ccdmask.NOPE


def test_bitmasks_agree_with_desispec():
    maskbits = pytest.importorskip("desispec.maskbits")
    for ours, theirs in ((bitmasks.ccdmask, maskbits.ccdmask), (bitmasks.specmask, maskbits.specmask),
                         (bitmasks.fibermask, maskbits.fibermask)):
        for name, bit, _ in ours.items():
            assert theirs.mask(name) == 1 << bit, (ours.name, name)
    assert bitmasks.EXTRACT_MASKVAL == maskbits.extractmaskval


def test_config_defaults_and_validation(tmp_path):
    cfg = validate_config({"instrument": "tiny", "raw": "r", "redux": "x", "specprod": "p"})
    assert cfg["extract"]["wavesize"] == 50 and cfg["healpix"]["nside"] == 64
    bad = tmp_path / "config.yaml"
    bad.write_text("instrument: tiny\nextract:\n  wavesize: -3\nsky:\n  typo_key: 1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    msg = str(exc.value)
    assert str(bad) in msg and "extract.wavesize" in msg and "minimum" in msg
    assert "sky" in msg and "typo_key" in msg
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_shipped_config_is_valid():
    import os

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = load_config(os.path.join(here, "config", "config.yaml"))
    assert cfg["instrument"] in preset_names()


def test_roots_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DESI_SPECTRO_DATA", str(tmp_path / "raw"))
    monkeypatch.setenv("DESI_SPECTRO_REDUX", str(tmp_path / "redux"))
    monkeypatch.setenv("SPECPROD", "daily")
    roots = resolve_roots(validate_config({}))
    assert roots["prod"] == str(tmp_path / "redux" / "daily") and roots["raw"] == str(tmp_path / "raw")
    # explicit config wins over the environment
    roots = resolve_roots(validate_config({"specprod": "other"}))
    assert roots["prod"].endswith("other")
    monkeypatch.delenv("SPECPROD")
    with pytest.raises(ConfigError, match="SPECPROD"):
        resolve_roots(validate_config({}))


def test_instrument_presets():
    desi = load_instrument("desi")
    assert desi.npetal == 10 and desi.nfiber == 500 and desi.nbundle == 20
    assert [desi.wavegrid(a).size for a in "brz"] == [2751, 2326, 2881]
    assert desi.wavegrid("r")[0] == 5760.0 and desi.wavegrid("r")[-1] == pytest.approx(7620.0)
    assert len(desi.camera_names()) == 30
    demo = load_instrument("demo")
    assert demo.npetal == 1 and demo.nfiber == 50 and demo.ccd["ny"] == 4128
    assert demo.cameras["b"].readnoise == desi.cameras["b"].readnoise  # same physics
    with pytest.raises(ConfigError, match="unknown instrument preset"):
        load_instrument("hubble")
    with pytest.raises(ConfigError, match="multiple of bundlesize"):
        load_instrument("tiny", overrides={"nfiber": 30})


def test_provenance_cards(tmp_path):
    hdr = provenance_header("extract", {"wavesize": 50, "psferr": 0.01},
                            [str(tmp_path / "prod" / "preproc" / "x.fits"), "/abs/elsewhere.fits"],
                            config={"a": 1}, prod=str(tmp_path / "prod"))
    assert hdr["FFSTEP"][0] == "extract" and hdr["FFCFGH"][0] == config_hash({"a": 1})
    prov = read_provenance({k: v[0] if isinstance(v, tuple) else v for k, v in hdr.items()})
    assert prov["inputs"] == ["preproc/x.fits", "/abs/elsewhere.fits"]
    assert prov["options"] == {"psferr": "0.01", "wavesize": "50"}
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_step_header_restamps_provenance_and_names_inputs(tmp_path):
    """An input's own provenance never reaches the output (a cframe of an sframe made with more
    options than the cframe step has would otherwise keep the sframe's extra FFOPT cards)."""
    from fiberflow.provenance import step_header

    prod = str(tmp_path / "prod")
    sframe = provenance_header("sky", {f"opt{i}": i for i in range(7)}, ["a", "b", "c"])
    base = {"NIGHT": 20250101, "EXPID": 12, **sframe}
    hdr = step_header("cframe", {}, {"": (f"{prod}/exposures/s.fits", ""), "IN_CALIB": ("/x/fluxcalib-r0.fits", "flux")},
                      {"a": 1}, prod, base=base, camera="r0")
    assert hdr["FFSTEP"][0] == "cframe" and hdr["NIGHT"] == 20250101 and hdr["CAMERA"] == "r0"
    assert not [k for k in hdr if k.startswith(("FFOPT", "FFIN002"))], sorted(hdr)
    assert hdr["FFIN000"][0] == "exposures/s.fits" and hdr["IN_CALIB"] == ("fluxcalib-r0.fits", "flux")
    kept = step_header("fiberflat", None, ["f"], base=base, keep=("EXPID", "TILEID"))
    assert kept["EXPID"] == 12 and "NIGHT" not in kept and "TILEID" not in kept
