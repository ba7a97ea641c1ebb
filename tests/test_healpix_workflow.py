"""The healpix stage in a real Snakemake production of simulated nights.

Night A observes tile 77 twice and tile 78 once (b and r cameras only: every exposure misses
z, which must come out as ivar 0). The test checks that every fiber lands in exactly the pixel
its coordinates give with all its exposures, the coadds against the simulator's truth, DESI's
reader on the real files, and that adding night B (tile 78 again) rebuilds only the pixels
tile 78 touches.
"""

import os
import re

import numpy as np
import pytest
from _workflow import LOCAL_PROFILE, science, snakemake, tiny_config

from fiberflow import paths
from fiberflow.bitmasks import specmask
from fiberflow.steps import regroup

NIGHT_A, NIGHT_B = 20250612, 20250613
CAMERAS = ["b0", "r0"]


def _plan(night, first, tiles):
    return {"night": night, "first_expid": first, "exposures": [
        {"obstype": "ZERO", "count": 2}, {"obstype": "ARC", "exptime": 5.0}, {"obstype": "FLAT", "exptime": 120.0},
        *({"obstype": "SCIENCE", "tileid": t, "exptime": 900.0, "seeing": 1.0 + 0.1 * i} for i, t in enumerate(tiles))]}




@pytest.fixture(scope="module")
def production(tmp_path_factory):
    from fiberflow.sim.night import simulate_night
    from fiberflow.sim.plan import parse_plan

    root = tmp_path_factory.mktemp("hpxprod")
    plan = parse_plan(_plan(NIGHT_A, 1200, [77, 77, 78]))
    simulate_night(plan, "tiny", 5, str(root / "raw"), str(root / "truth"), cameras=CAMERAS)
    cfg = tiny_config(root, "hpx", "redshift: {enabled: true}\n")
    res = snakemake(root, cfg, "--profile", LOCAL_PROFILE)
    assert res.returncode == 0, res.stderr[-3000:]
    return {"root": root, "cfg": cfg, "prod": root / "redux" / "hpx", "plan": plan}




def test_every_fiber_in_its_pixel_with_all_exposures(production):
    from fiberflow.io.fibermap import read_fibermap
    from fiberflow.io.spectra import read_spectra

    prod, root = production["prod"], production["root"]
    expected = {}
    for e in science(production["plan"]):
        fm, _ = read_fibermap(paths.findfile("fibermap", raw=str(root / "raw"), night=NIGHT_A, expid=e.expid))
        pix = regroup.healpix_of(fm["TARGET_RA"], fm["TARGET_DEC"])
        for tid, p in zip(fm["TARGETID"], pix):
            expected.setdefault(int(p), set()).add((int(tid), e.expid))
        tp = paths.findfile("tilepix", prod=str(prod), night=NIGHT_A, expid=e.expid, tileid=e.tileid)
        from fiberflow.workflow.tilepix import read_tilepix

        assert read_tilepix(tp)[1] == {0: sorted({int(p) for p in pix})}
    files = sorted(prod.glob("healpix/main/dark/*/*/spectra-main-dark-*.fits"))
    assert {int(f.stem.split("-")[-1]) for f in files} == set(expected)
    for f in files:
        pix = int(f.stem.split("-")[-1])
        assert f.parent.name == str(pix) and f.parent.parent.name == str(pix // 100)
        sp = read_spectra(f)
        got = {(int(t), int(e)) for t, e in zip(sp.fibermap["TARGETID"], sp.fibermap["EXPID"])}
        assert got == expected[pix] and len(got) == sp.nspec, pix
        assert sp.header["HPXPIXEL"] == pix and sp.header["HPXNSIDE"] == 64 and sp.header["HPXNEST"]
        assert (regroup.healpix_of(sp.fibermap["TARGET_RA"], sp.fibermap["TARGET_DEC"]) == pix).all()
        assert sp.bands == ["b", "r", "z"]
        # no z camera in this production: z rows exist with ivar 0, NODATA
        assert (sp.ivar["z"] == 0).all() and (sp.mask["z"] & specmask.mask("NODATA")).all()
        assert (sp.ivar["r"] > 0).mean() > 0.9
        co = read_spectra(str(f).replace("spectra-", "coadd-"))
        assert co.nspec == len({t for t, _ in got}) and len(co.exp_fibermap) == sp.nspec
        tile = {int(t): int(x) for t, x in zip(sp.fibermap["TARGETID"], sp.fibermap["TILEID"])}
        for tid, n in zip(co.fibermap["TARGETID"], co.fibermap["COADD_NUMEXP"]):
            assert n == (2 if tile[int(tid)] == 77 else 1)


def test_coadds_against_truth(production):
    """Pulls of the two-exposure coadds against the truth coadded with the same weights, and
    their S/N against the single exposures' (sqrt 2 expected)."""
    from fiberflow.validation import coadd_vs_truth

    stats = coadd_vs_truth(str(production["prod"]), str(production["root"] / "truth"))
    assert set(stats) == {1, 2}
    p, ratio = stats[2]["pulls"], stats[2]["snr_ratio"]
    assert p.size > 10000 and len(ratio) >= 5, (p.size, len(ratio))
    assert abs(p.mean()) < 0.05 and abs(p.std() - 1) < 0.1, (p.mean(), p.std())
    assert abs(np.median(ratio) / np.sqrt(2) - 1) < 0.1, np.median(ratio)
    single = stats[1]["pulls"]
    assert abs(single.std() - 1) < 0.1, single.std()


def test_desispec_reads_production_healpix_files(production):
    desispec_io = pytest.importorskip("desispec.io", reason="desispec (DESI's reader) is not installed")
    f = sorted(production["prod"].glob("healpix/main/dark/*/*/spectra-main-dark-*.fits"))[0]
    sp = desispec_io.read_spectra(str(f))
    co = desispec_io.read_spectra(str(f).replace("spectra-", "coadd-"))
    assert sorted(sp.bands) == ["b", "r", "z"] and co.num_targets() == len(set(sp.fibermap["TARGETID"]))
    assert {"NIGHT", "EXPID", "TILEID", "MJD"} <= set(sp.fibermap.colnames)
    assert {"COADD_NUMEXP", "COADD_EXPTIME", "MEAN_FIBER_X"} <= set(co.fibermap.colnames)


def test_tile_coadds_hold_every_fiber_of_the_petal(production):
    """Cumulative tile coadds (DESI's tiles/cumulative layout): every fiber of the petal from every
    exposure of the tile, coadded exactly as the HEALPix coadds of the same targets."""
    from fiberflow.io.spectra import read_spectra

    prod = str(production["prod"])
    nexp = {77: 2, 78: 1}
    hpx = {}
    for f in production["prod"].glob("healpix/main/dark/*/*/coadd-main-dark-*.fits"):
        co = read_spectra(f)
        for k, tid in enumerate(co.fibermap["TARGETID"]):
            hpx[int(tid)] = (co, k)
    for tile, n in nexp.items():
        sp = read_spectra(paths.findfile("spectra_cumulative", prod=prod, tileid=tile, night=NIGHT_A, spectrograph=0))
        co = read_spectra(paths.findfile("coadd_cumulative", prod=prod, tileid=tile, night=NIGHT_A, spectrograph=0))
        assert sp.nspec == 25 * n and sorted(set(sp.fibermap["FIBER"])) == list(range(25))
        assert set(sp.fibermap["TILEID"]) == {tile} and len(set(sp.fibermap["EXPID"])) == n
        assert co.header["TILEID"] == tile and co.header["SPGRP"] == "cumulative" and co.header["SPGRPVAL"] == NIGHT_A
        assert co.nspec == 25 and (co.fibermap["COADD_NUMEXP"] == n).all()
        for k, tid in enumerate(co.fibermap["TARGETID"]):
            other, j = hpx[int(tid)]
            np.testing.assert_allclose(co.flux["r"][k], other.flux["r"][j], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(co.ivar["b"][k], other.ivar["b"][j], rtol=1e-5)
    assert not list(production["prod"].glob("tiles/pernight/*"))  # not in coadds.flavours by default
    desispec_io = pytest.importorskip("desispec.io", reason="desispec (DESI's reader) is not installed")
    d = desispec_io.read_spectra(paths.findfile("coadd_cumulative", prod=prod, tileid=77, night=NIGHT_A, spectrograph=0))
    assert d.num_targets() == 25


def test_adding_a_night_rebuilds_only_the_pixels_it_touches(production):
    from fiberflow.io.fibermap import read_fibermap
    from fiberflow.sim.night import simulate_night
    from fiberflow.sim.plan import parse_plan

    root, cfg = production["root"], production["cfg"]
    res = snakemake(root, cfg, "-n", "--quiet", "rules")
    assert res.returncode == 0 and "spectra" not in res.stdout, res.stdout
    plan = parse_plan(_plan(NIGHT_B, 1300, [78]))
    simulate_night(plan, "tiny", 6, str(root / "raw"), str(root / "truth"), cameras=CAMERAS)
    fm, _ = read_fibermap(paths.findfile("fibermap", raw=str(root / "raw"), night=NIGHT_B, expid=science(plan)[0].expid))
    touched = {int(p) for p in regroup.healpix_of(fm["TARGET_RA"], fm["TARGET_DEC"])}
    res = snakemake(root, cfg, "-n", "-p")
    assert res.returncode == 0, res.stderr[-2000:]
    jobs = re.findall(r"rule (spectra|coadd):.*?wildcards: ([^\n]*)", res.stdout, re.DOTALL)
    pix = {k: {int(re.search(r"pix=(\d+)", w).group(1)) for kind, w in jobs if kind == k} for k in ("spectra", "coadd")}
    assert pix["spectra"] == touched and pix["coadd"] == touched, (pix, touched)
    all_pixels = {int(f.stem.split("-")[-1]) for f in production["prod"].glob("healpix/main/dark/*/*/spectra-*.fits")}
    assert touched < all_pixels  # tile 77's pixels are left alone
    # the tile gets its cumulative coadd through night B; nothing of tile 77 or of night A's files
    tiles = re.findall(r"rule (cumulative_spectra|cumulative_coadd):.*?wildcards: ([^\n]*)", res.stdout, re.DOTALL)
    assert sorted(k for k, _ in tiles) == ["cumulative_coadd", "cumulative_spectra"], tiles
    assert all("tileid=78" in w and f"night={NIGHT_B}" in w for _, w in tiles), tiles
    # redrock only beside the rebuilt coadds; the catalogs and summaries again (they list every file)
    rr = re.findall(r"rule (redrock|cumulative_redrock):.*?wildcards: ([^\n]*)", res.stdout, re.DOTALL)
    assert {int(re.search(r"pix=(\d+)", w).group(1)) for k, w in rr if k == "redrock"} == touched, rr
    assert [w for k, w in rr if k == "cumulative_redrock"] and \
        all("tileid=78" in w for k, w in rr if k == "cumulative_redrock"), rr
    for rule in ("ztile", "zpix", "summary"):
        assert re.search(rf"rule {rule}:", res.stdout), rule


def test_catalogs_and_summaries_of_the_production(production):
    """ztile and zpix list every target once (each target is in one tile and one pixel), with
    redrock's redshifts of the files they come from; the summaries count the exposures, tiles
    and good fibers of the production and the catalog's redshifts."""
    from astropy.table import Table

    prod = production["prod"]
    ztile = Table.read(prod / "zcatalog" / "ztile-main-dark-cumulative.fits", "ZCATALOG")
    zpix = Table.read(prod / "zcatalog" / "zpix-main-dark.fits", "ZCATALOG")
    assert sorted(set(ztile["TILEID"])) == [77, 78] and set(ztile["PETAL_LOC"]) == {0}
    assert len(ztile) == len(set(ztile["TARGETID"])) == len(zpix) == len(set(zpix["TARGETID"]))
    assert ztile["ZCAT_PRIMARY"].all() and (zpix["ZCAT_NSPEC"] == 1).all()
    for row in zpix[:5]:
        rr = Table.read(paths.findfile("redrock", prod=str(prod), survey="main", program="dark", pix=int(row["HEALPIX"])),
                        "REDSHIFTS")
        k = list(rr["TARGETID"]).index(row["TARGETID"])
        assert rr["Z"][k] == row["Z"] and rr["ZWARN"][k] == row["ZWARN"]
    exps = Table.read(prod / "exposures-hpx.fits", "EXPOSURES")
    tiles = Table.read(prod / "tiles-hpx.csv", format="ascii.csv")
    assert len(exps) == 3 and sorted(exps["TILEID"]) == [77, 77, 78] and set(exps["NCAMERA"]) == {2}
    assert list(tiles["TILEID"]) == [77, 78] and list(tiles["NEXP"]) == [2, 1]
    assert (tiles["NZ"] == [int((ztile["TILEID"] == t).sum()) for t in (77, 78)]).all()
    assert (tiles["NZGOOD"] == [int(((ztile["TILEID"] == t) & (ztile["ZWARN"] == 0)).sum()) for t in (77, 78)]).all()
    assert (tiles["GOODFIBERS"] > 15).all() and (tiles["EXPTIME"] == [1800.0, 900.0]).all()


def test_tsnr2_from_cframes_to_coadds_catalogs_and_completeness(production):
    """Each target's TSNR2 in its cumulative tile coadd is the sum of its cframes' TSNR2 over
    exposures and cameras (the missing z camera adds 0); redrock's TSNR2 HDU and the ztile catalog
    carry it, the catalog's primary spectrum is chosen by TSNR2_LRG, and the tiles summary's
    NVALID / DONE follow from it with the configured completeness."""
    import fitsio
    from astropy.table import Table

    from fiberflow.qa.tables import shipped_snr2time
    from fiberflow.steps.summary import COMPLETENESS

    prod = production["prod"]
    night = production["plan"].night
    expids = [e.expid for e in production["plan"].exposures if e.obstype == "SCIENCE" and e.tileid == 77]
    want = {}
    for expid in expids:
        for cam in CAMERAS:
            cf = paths.findfile("cframe", prod=str(prod), night=night, expid=expid, camera=cam)
            sc, fm = fitsio.read(cf, "SCORES"), fitsio.read(cf, "FIBERMAP")
            assert set(f"TSNR2_{t}_{cam[0].upper()}" for t in ("BGS", "ELG", "LRG", "QSO")) <= set(sc.dtype.names)
            tgt = np.char.strip(fm["OBJTYPE"].astype(str)) == "TGT"
            assert (sc[f"TSNR2_LRG_{cam[0].upper()}"][tgt] > 0).all()
            for tid, v in zip(sc["TARGETID"], sc[f"TSNR2_LRG_{cam[0].upper()}"]):
                want[tid] = want.get(tid, 0.0) + float(v)
    coadd = paths.findfile("coadd_cumulative", prod=str(prod), tileid=77, night=night, spectrograph=0)
    sc = fitsio.read(coadd, "SCORES")
    assert (sc["TSNR2_LRG_Z"] == 0).all()
    np.testing.assert_allclose(sc["TSNR2_LRG"], [want[t] for t in sc["TARGETID"]], rtol=1e-5)
    rr = paths.findfile("redrock_cumulative", prod=str(prod), tileid=77, night=night, spectrograph=0)
    rt = Table.read(rr, "TSNR2")
    np.testing.assert_allclose(rt["TSNR2_LRG"], [want[t] for t in rt["TARGETID"]], rtol=1e-5)
    cat = prod / "zcatalog" / "ztile-main-dark-cumulative.fits"
    assert fitsio.read_header(str(cat), 0)["ZCATSORT"].strip() == "TSNR2_LRG"
    ztile = Table.read(cat, "ZCATALOG")
    tiles = Table.read(prod / "tiles-hpx.fits", "TILE_COMPLETENESS")
    snr2time = shipped_snr2time()["LRG"]
    for row in tiles:
        zt = ztile[ztile["TILEID"] == row["TILEID"]]
        limit = COMPLETENESS["fiber_rel_mintfrac"] * COMPLETENESS["mintfrac"] * row["GOALTIME"]
        assert row["GOALTIME"] == 1000.0 and row["TSNR2_TRACER"] == "LRG"
        good = np.char.strip(np.asarray(zt["OBJTYPE"]).astype(str)) == "TGT"
        assert row["NVALID"] <= row["GOODFIBERS"] <= good.sum()
        assert row["NVALID"] >= int((snr2time * zt["TSNR2_LRG"][good] >= limit).sum()) - (good.sum() - row["GOODFIBERS"])
        assert row["DONE"] == int(row["EFFTIME_SPEC"] >= 0.9 * row["GOALTIME"] and row["VALIDFRAC"] >= 0.8)
    # a tile's depth is the sum of its exposures' (b and r cameras only here: about half the nominal)
    exps = Table.read(prod / "exposures-hpx.fits", "EXPOSURES")
    for row in tiles:
        mine = exps[exps["TILEID"] == row["TILEID"]]
        assert row["EFFTIME_SPEC"] == pytest.approx(float(np.sum(mine["EFFTIME_SPEC"])), rel=1e-4)
        assert ((mine["EFFTIME_SPEC"] > 0.2 * mine["EXPTIME"]) & (mine["EFFTIME_SPEC"] < 1.2 * mine["EXPTIME"])).all()


def test_tile_qa_night_report_and_inspection_tools(production, tmp_path):
    """Every cumulative tile gets its tile QA (FIBERQA of every target, PETALQA, scored metrics,
    picture); the night QA report links them with their exposures, and the production index links
    the report. The inspection tools run on the production's own files, and the redrock model they
    draw is the one redrock fitted (its chi2 on the coadd is redrock's CHI2)."""
    import fitsio

    from fiberflow.cli.inspect import load_rr_templates, redrock_model
    from fiberflow.cli.main import main
    from fiberflow.io.spectra import read_spectra_band
    from fiberflow.io.tileqa import TileQA
    from fiberflow.io.zcatalog import read_redrock

    prod, night = production["prod"], production["plan"].night
    for tileid in (77, 78):
        qa = TileQA.read(paths.findfile("tile_qa", prod=str(prod), tileid=tileid, night=night))
        rr = read_redrock(paths.findfile("redrock_cumulative", prod=str(prod), tileid=tileid, night=night, spectrograph=0))
        assert sorted(qa.fiberqa["TARGETID"]) == sorted(rr.redshifts["TARGETID"])
        assert set(qa.fiberqa["FIBER"]) <= set(range(500)) and (qa.fiberqa["FIBER"] >= 0).all()
        assert qa.petalqa["PETAL_LOC"].tolist() == [0] and qa.petalqa["NTARGET"][0] > 10
        assert {str(n).strip() for n in qa.metrics["NAME"]} == {"NZ_EXCESS", "SUCCESS_DEFICIT", "VALID_FRAC",
                                                               "EFFTIME_FRAC", "SKY_RESID_FRAC"}
        assert qa.metric("SKY_RESID_FRAC")["STATUS"].strip() == "NORMAL"  # clean sky fibers in the coadds
        worst = max((str(r["STATUS"]).strip() for r in qa.metrics), key=["NA", "NORMAL", "WARNING", "ALARM"].index)
        assert qa.status == worst and qa.metric("NZ_EXCESS")["VALUE"] >= 0
        if tileid == 78:  # one exposure with b and r only: a third of the goal, every target LOWEFFTIME
            assert qa.metric("EFFTIME_FRAC")["STATUS"].strip() == "ALARM" and qa.metric("VALID_FRAC")["VALUE"] == 0
        assert os.path.getsize(paths.findfile("tile_qa_png", prod=str(prod), tileid=tileid, night=night)) > 20000
    page = open(paths.findfile("nightqa_html", prod=str(prod), night=night)).read()
    for tileid in (77, 78):
        assert f"tile-qa-{tileid}-thru{night}.png" in page
    for e in production["plan"].exposures:
        if e.obstype == "SCIENCE":
            assert f"qa-{e.expid:08d}.html" in page
    assert f"nightqa-{night}.html" in open(paths.findfile("qa_production_html", prod=str(prod))).read()

    coadd = paths.findfile("coadd_cumulative", prod=str(prod), tileid=77, night=night, spectrograph=0)
    png = tmp_path / "spectra.png"
    assert main(["plot-spectra", "-i", coadd, "--spectype", "GALAXY", "--rebin", "3", "-o", str(png)]) == 0
    assert png.stat().st_size > 10000
    rr = read_redrock(coadd.replace("coadd-", "redrock-"))
    templates = load_rr_templates()
    k = int(np.flatnonzero(np.char.strip(rr.redshifts["SPECTYPE"].astype(str)) == "GALAXY")[0])
    chi2 = 0.0
    for band in ("b", "r", "z"):
        wave, flux, ivar, mask, res, _ = read_spectra_band(coadd, band)
        model = redrock_model(rr.redshifts[k], templates, wave, res[k])
        # the bins redrock fits: unmasked, not 5 sigma negative, outside its two sky-line windows
        use = (mask[k] == 0) & (flux[k] * np.sqrt(ivar[k]) >= -5) & ~((wave >= 5572) & (wave <= 5582)) \
            & ~((wave >= 9792) & (wave <= 9795))
        chi2 += float(np.sum((flux[k] - model) ** 2 * ivar[k] * use))
    assert chi2 == pytest.approx(float(rr.redshifts["CHI2"][k]), rel=0.03)  # measured 1.0-2.0% above

    sci = [e.expid for e in production["plan"].exposures if e.obstype == "SCIENCE"][0]
    frames = [paths.findfile(kind, prod=str(prod), night=night, expid=sci, camera=c) for kind in ("frame", "sframe")
              for c in CAMERAS]
    flats = [paths.findfile("fiberflatnight", prod=str(prod), night=night, camera=c) for c in CAMERAS]
    table = tmp_path / "fp.csv"
    assert main(["plot-focalplane", "-i", *frames, "--fiberflat", *flats, "--table", str(table),
                 "-o", str(tmp_path / "fp.png")]) == 0
    assert len(table.read_text().splitlines()) == 1 + 2 * len(fitsio.read(frames[0], "FIBERMAP"))  # r0 only covers 6600
    assert main(["plot-frame", "-i", frames[-1], "--sky-fibers", "--rebin", "5", "-o", str(tmp_path / "sky.png")]) == 0
