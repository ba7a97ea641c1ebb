"""Redshift catalogs (ztile / zpix), the production summaries and the redshift validation:
DESI's primary-spectrum rule, catalogs of redrock files (real FITS files in redrock's layout),
their refusals, and success rates against a truth table."""

import subprocess
import sys

import fitsio
import numpy as np
import pytest

from fiberflow.steps.zcatalog import find_primary
from fiberflow.validation import noise_scale, redshift_outcomes, success_table, wilson


def _ff(*args):
    return subprocess.run([sys.executable, "-m", "fiberflow.cli.main", *args], capture_output=True, text=True)


def test_find_primary_follows_desispec():
    """desispec.zcatalog.find_primary_spectra: ZWARN 0 trumps a larger TSNR2, then the larger
    sort value wins; every row knows how many rows its target has."""
    rows = [  # TARGETID ZWARN TSNR2_LRG PRIMARY
        (10, 0, 100.0, 0), (10, 0, 200.0, 1),
        (20, 4, 0.0, 1),
        (30, 4, 100.0, 0), (30, 0, 10.0, 1),
        (40, 4, 100.0, 1), (40, 8, 10.0, 0),
        (50, 8, 100.0, 1), (50, 8, np.nan, 0),
        (60, 0, np.nan, 0), (60, 0, 5.0, 1), (60, 0, 1.0, 0),
    ]
    tid, zwarn, sort, want = (np.array(c) for c in zip(*rows))
    nspec, primary = find_primary(tid, zwarn, sort.astype(float))
    assert primary.tolist() == want.astype(bool).tolist()
    assert nspec.tolist() == [2, 2, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3]
    # shuffled input: same answer row by row
    k = np.random.default_rng(1).permutation(len(tid))
    n2, p2 = find_primary(tid[k], zwarn[k], sort[k].astype(float))
    assert p2.tolist() == primary[k].tolist() and n2.tolist() == nspec[k].tolist()


def test_wilson_interval():
    p, lo, hi = wilson(0, 10)
    assert p == 0 and lo == 0 and 0.05 < hi < 0.12
    p, lo, hi = wilson(10, 10)
    assert p == 1 and hi == 1 and 0.88 < lo < 0.95
    p, lo, hi = wilson(500, 1000)
    assert abs((hi - lo) / 2 - np.sqrt(0.25 / 1000)) < 1e-3


def _redrock_file(path, tids, z, zwarn, exptime, survey="main", program="dark", fm_tids=None):
    """A file in redrock's layout (RRVER; REDSHIFTS, FIBERMAP, EXP_FIBERMAP, TSNR2)."""
    n = len(tids)
    red = np.zeros(n, dtype=[("TARGETID", "i8"), ("Z", "f8"), ("ZERR", "f8"), ("ZWARN", "i8"), ("CHI2", "f8"),
                             ("COEFF", "f8", (10,)), ("SPECTYPE", "U6"), ("SUBTYPE", "U20"), ("DELTACHI2", "f8")])
    red["TARGETID"], red["Z"], red["ZWARN"] = tids, z, zwarn
    red["SPECTYPE"] = "GALAXY"
    fm = np.zeros(n, dtype=[("TARGETID", "i8"), ("TARGET_RA", "f8"), ("DESI_TARGET", "i8"), ("COADD_EXPTIME", "f4")])
    fm["TARGETID"] = tids if fm_tids is None else fm_tids
    fm["DESI_TARGET"] = 1
    fm["COADD_EXPTIME"] = exptime
    efm = np.zeros(n, dtype=[("TARGETID", "i8"), ("EXPID", "i4")])
    efm["TARGETID"] = tids
    tsnr = np.zeros(n, dtype=[("TARGETID", "i8")])
    tsnr["TARGETID"] = tids
    path.parent.mkdir(parents=True, exist_ok=True)
    with fitsio.FITS(str(path), "rw", clobber=True) as fx:
        fx.write(None, header={"RRVER": "0.21.0", "SURVEY": survey, "PROGRAM": program})
        fx.write(red, extname="REDSHIFTS")
        fx.write(fm, extname="FIBERMAP")
        fx.write(efm, extname="EXP_FIBERMAP")
        fx.write(tsnr, extname="TSNR2")
    return str(path)


@pytest.fixture
def tiles(tmp_path):
    prod = tmp_path / "prod"
    a = _redrock_file(prod / "tiles/cumulative/100/20250102/redrock-0-100-thru20250102.fits",
                      [1, 2, 3], [0.5, 1.0, 2.0], [0, 4, 0], 1000.0)
    b = _redrock_file(prod / "tiles/cumulative/101/20250103/redrock-0-101-thru20250103.fits",
                      [2, 4], [1.001, 0.3], [0, 0], 600.0)
    return prod, [a, b]


def test_ztile_catalog_of_two_tiles(tiles, tmp_path):
    from fiberflow.io.zcatalog import ZCatalog

    prod, files = tiles
    out = prod / "zcatalog/ztile-main-dark-cumulative.fits"
    res = _ff("zcatalog", "--group", "ztile", "--survey", "main", "--program", "dark", "-o", str(out), *files)
    assert res.returncode == 0, res.stderr
    cat = ZCatalog.read(out)
    z = cat.zcatalog
    assert z["TARGETID"].tolist() == [1, 2, 3, 2, 4]
    assert z["TILEID"].tolist() == [100, 100, 100, 101, 101] and set(z["PETAL_LOC"]) == {0}
    assert z["LASTNIGHT"].tolist() == [20250102] * 3 + [20250103] * 2
    assert z["ZCAT_NSPEC"].tolist() == [1, 2, 1, 2, 1]
    # target 2: ZWARN 4 on tile 100, 0 on tile 101 -> tile 101's row is primary
    assert z["ZCAT_PRIMARY"].tolist() == [True, False, True, True, True]
    assert cat.header["ZCATSORT"] == "COADD_EXPTIME" and cat.header["RRVER"] == "0.21.0"
    assert len(cat.exp_fibermap) == 5
    from astropy.table import Table

    assert len(Table.read(out, "ZCATALOG")) == 5


@pytest.mark.parametrize("case", ["program", "fibermap", "name", "twice"])
def test_zcatalog_refuses(tiles, tmp_path, case):
    prod, files = tiles
    if case == "program":
        files = files + [_redrock_file(prod / "tiles/cumulative/102/20250103/redrock-0-102-thru20250103.fits",
                                       [7], [0.1], [0], 100.0, program="bright")]
        want = "PROGRAM bright"
    elif case == "fibermap":
        files = [_redrock_file(prod / "tiles/cumulative/103/20250103/redrock-0-103-thru20250103.fits",
                               [7, 8], [0.1, 0.2], [0, 0], 100.0, fm_tids=[8, 7])]
        want = "same order"
    elif case == "name":
        files = [_redrock_file(tmp_path / "rr.fits", [7], [0.1], [0], 100.0)]
        want = "is not named as a ztile input"
    else:
        files = [files[0], files[0]]
        want = "given twice"
    out = prod / "zcatalog/ztile-main-dark-cumulative.fits"
    res = _ff("zcatalog", "--group", "ztile", "--survey", "main", "--program", "dark", "-o", str(out), *files)
    assert res.returncode == 1 and want in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not out.exists()


def test_success_table_against_truth():
    """Success needs ZWARN 0 and |dz|/(1+z) < 1000 km/s; ZWARN 0 beyond is catastrophic; a
    failure that succeeds in the ideal reduction is pipeline-induced."""
    from fiberflow.sim.truth import TRUTH_TARGET_DTYPE

    truth = np.zeros(6, dtype=TRUTH_TARGET_DTYPE)
    truth["TARGETID"] = [1, 2, 3, 4, 5, 6]
    truth["CLASS"] = ["LRG", "LRG", "ELG", "ELG", "QSO", "SKY"]
    truth["Z"] = [0.5, 0.8, 1.0, 1.2, 2.0, 0.0]
    cat = np.zeros(6, dtype=[("TARGETID", "i8"), ("Z", "f8"), ("ZWARN", "i8"), ("ZCAT_PRIMARY", "?"),
                             ("COADD_EXPTIME", "f4")])
    cat["TARGETID"] = [1, 2, 3, 4, 5, 6]
    c = 299792.458
    cat["Z"] = [0.5 + 900 / c * 1.5, 0.8 + 1100 / c * 1.8, 1.0, 1.7, 2.0, 0.0]
    cat["ZWARN"] = [0, 0, 4, 0, 0, 0]
    cat["ZCAT_PRIMARY"] = True
    cat["COADD_EXPTIME"] = 1000.0
    out = redshift_outcomes(cat, truth)
    assert out["TARGETID"].tolist() == [1, 2, 3, 4, 5]  # sky left out
    assert out["SUCCESS"].tolist() == [True, False, False, False, True]
    assert out["CATASTROPHIC"].tolist() == [False, True, False, True, False]
    ideal = out.copy()
    ideal["SUCCESS"] = True
    table = {r["CLASS"]: r for r in success_table(out, ideal)}
    assert table["LRG"]["NSUCCESS"] == 1 and table["LRG"]["NCATASTROPHIC"] == 1 and table["LRG"]["NPIPELINE"] == 1
    assert table["ELG"]["NPIPELINE"] == 2 and table["ALL"]["N"] == 5 and table["ALL"]["NPIPELINE"] == 3
    assert table["QSO"]["SUCCESS"][0] == 1.0 and table["ALL"]["EXPTIME"] == 1000.0
    # a target that succeeds here but fails on the ideal reduction counts the other way
    ideal["SUCCESS"] = [True, True, True, True, False]
    all_ = success_table(out, ideal)[-1]
    assert (all_["NPIPELINE"], all_["NREVERSE"]) == (3, 1)
    assert abs(all_["NET_PIPELINE"] - 2 / 5) < 1e-12 and abs(all_["NET_PIPELINE_ERR"] - 2 / 5) < 1e-12


def test_noise_scale_measures_a_conservative_ivar_on_sky_lines_and_ignores_residual_tails():
    """A coadd whose ivar is 30% low on sky-line bins (its noise 0.78 of its sigma there) and
    right elsewhere, with a few large sky residuals: the measured scale is 0.78 on the line
    classes and 1 on the continuum, the residuals do not inflate it, and noise drawn at
    ``scale / sqrt(ivar)`` with ivar ``ivar / scale**2`` has unit pulls in every class."""
    rng = np.random.default_rng(5)
    ntarget, nwave = 300, 2000
    wave = np.arange(nwave)
    expect = 4.0 + np.sin(wave / 97.0)[None, :] * np.linspace(0.5, 3, ntarget)[:, None]
    ivar = np.full((ntarget, nwave), 4.0) * rng.uniform(0.5, 2.0, (ntarget, 1))
    depth = np.ones(nwave)
    for c in range(20, nwave, 60):  # sky lines: cores at 0.15, wings at 0.6 of the continuum ivar
        depth[c - 1:c + 2] = 0.15
        depth[[c - 3, c - 2, c + 2, c + 3]] = 0.6
    ivar = ivar * depth
    line = depth < 0.9
    true_sigma = np.where(line, 0.78, 1.0) / np.sqrt(ivar)
    flux = expect + rng.standard_normal(expect.shape) * true_sigma
    tails = line[None, :] & (rng.uniform(size=flux.shape) < 0.02)
    flux[tails] += 10 / np.sqrt(ivar[tails])  # residuals far beyond the noise on 2% of the line bins
    good = np.ones(flux.shape, bool)
    good[:, 500:520] = False
    expect[7] = np.nan  # a target without truth
    scale, classes = noise_scale(flux, ivar, good, expect)
    (lo0, hi0, n0, s0), (_, _, n1, s1), (_, _, n2, s2), (_, _, n3, s3) = classes
    assert (lo0, hi0) == (0.0, 0.5) and min(n0, n1, n3) > 10000 and n2 == 0
    assert abs(s0 - 0.78) < 0.02 and abs(s1 - 0.78) < 0.02 and abs(s3 - 1.0) < 0.01, classes
    assert s2 == pytest.approx(noise_scale(flux, ivar, good, expect, edges=())[1][0][3])  # empty class: overall
    assert np.all(scale[:, line] < 0.8) and np.all(scale[:, ~line] > 0.98)
    ideal = np.nan_to_num(expect) + rng.standard_normal(expect.shape) * scale / np.sqrt(ivar)
    pulls = (ideal - np.nan_to_num(expect)) * np.sqrt(ivar / scale**2)
    for sel in (line, ~line):
        assert abs(np.std(pulls[:, sel]) - 1) < 0.01
    # the ideal's noise is the coadd's own scatter (0.78 sigma) on lines, not the ivar's sigma
    assert abs(np.std(((ideal - np.nan_to_num(expect)) * np.sqrt(ivar))[:, line]) - 0.78) < 0.01


def test_summaries_count_good_fibers_and_redshifts():
    """exposures/tiles rows: a fiber bad in one camera is not good; sky fibers are not targets;
    the tile's catalog rows give NZ / NZGOOD (per class by DESI_TARGET)."""
    from fiberflow.bitmasks import desi_target, fibermask
    from fiberflow.steps.summary import exposures_table, tiles_table

    def fm(status):
        t = np.zeros(4, dtype=[("TARGETID", "i8"), ("OBJTYPE", "U3"), ("FIBERSTATUS", "i4")])
        t["TARGETID"], t["OBJTYPE"], t["FIBERSTATUS"] = [1, 2, 3, 4], ["TGT", "TGT", "TGT", "SKY"], status
        return t

    broken = fibermask.mask("BROKENFIBER")
    exps = [{"NIGHT": 20250101, "EXPID": 10, "TILEID": 100, "EXPTIME": 900.0, "MJD": 60700.1, "EFFTIME": 800.0,
             "STATUS": "OK", "SURVEY": "main", "PROGRAM": "dark", "fibermaps": [fm([0, 0, 0, 0]), fm([0, broken, 0, 0])]},
            {"NIGHT": 20250102, "EXPID": 20, "TILEID": 100, "EXPTIME": 600.0, "MJD": 60701.1, "EFFTIME": None,
             "STATUS": "WARNING", "SURVEY": "main", "PROGRAM": "dark", "fibermaps": [fm([0, 0, broken, 0])]}]
    z = np.zeros(3, dtype=[("TILEID", "i4"), ("TARGETID", "i8"), ("ZWARN", "i8"), ("DESI_TARGET", "i8")])
    z["TILEID"], z["TARGETID"], z["ZWARN"] = 100, [1, 2, 3], [0, 0, 4]
    z["DESI_TARGET"] = [desi_target.mask("LRG"), desi_target.mask("ELG"), desi_target.mask("LRG")]
    ex = exposures_table(exps, z)
    assert ex["GOODFIBERS"].tolist() == [2, 2] and ex["NTARGET"].tolist() == [3, 3]
    assert ex["NZ"].tolist() == [2, 2] and ex["NZGOOD"].tolist() == [1, 2]  # of the good fibers
    assert np.isnan(ex["EFFTIME_SPEC"][1]) and ex["QA_STATUS"].tolist() == ["OK", "WARNING"]
    ti = tiles_table(exps, z)
    assert len(ti) == 1 and ti["NEXP"][0] == 2 and ti["NNIGHT"][0] == 2 and ti["LASTNIGHT"][0] == 20250102
    assert ti["EXPTIME"][0] == 1500.0 and ti["EFFTIME_SPEC"][0] == 800.0 and ti["GOODFIBERS"][0] == 3
    assert (ti["NZ"][0], ti["NZGOOD"][0], ti["NZGOOD_LRG"][0], ti["NZGOOD_ELG"][0]) == (3, 2, 1, 1)
    assert tiles_table(exps)["NZ"].tolist() == [-1]
    # completeness: EFFTIME of each good target from its catalog TSNR2_LRG; without TSNR2 unknown
    assert ti["NVALID"][0] == -1 and ti["DONE"][0] == 0 and ti["GOALTIME"][0] == 1000.0
    z2 = np.zeros(3, dtype=z.dtype.descr + [("TSNR2_LRG", "f4")])
    for n in z.dtype.names:
        z2[n] = z[n]
    z2["TSNR2_LRG"] = [400.0, 300.0, 500.0]  # x 2 s = 800, 600, 1000 s; valid at 0.85 x 0.9 x 1000 = 765 s
    ti = tiles_table(exps, z2, None, {"LRG": 2.0})
    assert ti["NVALID"][0] == 2 and ti["VALIDFRAC"][0] == pytest.approx(2 / 3) and ti["TSNR2_TRACER"][0] == "LRG"
    assert ti["DONE"][0] == 0  # EFFTIME_SPEC 800 s < 0.9 x 1000 s
    ti = tiles_table(exps, z2, {"goaltime": {"dark": 850.0}, "min_valid_fraction": 0.6}, {"LRG": 2.0})
    assert ti["DONE"][0] == 1 and ti["GOALTIME"][0] == 850.0  # 800 >= 0.9 x 850; 2/3 valid >= 0.6
