"""DESI's data-QA walkthrough (tile 7951, night 20211014) as a test, on a real Snakemake production.

A night of three tiles; on the middle one a localized glow (the ``scattered_light`` fault: a red
light entering the fibers near one sky fiber of r0, over ~200 A around 6600 A) spoils that sky
fiber. The test walks the way the tutorial's QA scientist does, in order:

1. the tile QA flags the tile (the sky fibers of its petal carry flux in their coadd) and names
   the fiber and the wavelength;
2. the night QA names SKY on r0 as the first bad step of that exposure (NSKY_OUTLIER, the sky
   fiber's windowed residual);
3. the focal-plane residual data (``plot-focalplane``, the window against its flanks) localize the
   fibers the glow entered, as the simulator's truth gives them;
4. the other tiles of the night stay green (a clean night's tile QA has no alarm).
"""

import csv
import json
import re

import numpy as np
import pytest
from _workflow import LOCAL_PROFILE, science, snakemake, tiny_config

from fiberflow import paths

NIGHT, SEED = 20250801, 11
CAMERAS = ["b0", "r0", "z0"]
TILES, FAULTY = (80, 81, 82), 81
SKY_FIBER = 13  # a sky fiber of the tiny instrument (fiberflow.sim.targets._special_fibers)


def _glow():
    """The fault: centred on sky fiber 13 of the faulty tile, 30 mm wide, twice the sky at 6600 A."""
    from fiberflow.sim.night import Simulator
    from fiberflow.sim.plan import ExposureSpec

    fm = Simulator("tiny", SEED).science_targets(ExposureSpec(expid=1, obstype="SCIENCE", tileid=FAULTY, exptime=1100.0,
                                                              mjd=60700.0, program="dark"), 0)[0]
    assert str(fm["OBJTYPE"][SKY_FIBER]).strip() == "SKY"
    return {"camera": "r0", "x": float(fm["FIBER_X"][SKY_FIBER]), "y": float(fm["FIBER_Y"][SKY_FIBER]),
            "radius": 30.0, "wave": 6600.0, "sigma": 60.0, "level": 2.0}


@pytest.fixture(scope="module")
def production(tmp_path_factory):
    from fiberflow.sim.night import simulate_night
    from fiberflow.sim.plan import parse_plan

    root = tmp_path_factory.mktemp("walk")
    glow = _glow()
    plan = parse_plan({"night": NIGHT, "first_expid": 1700, "exposures": [
        {"obstype": "ZERO", "count": 2}, {"obstype": "ARC", "exptime": 5.0}, {"obstype": "FLAT", "exptime": 120.0},
        *({"obstype": "SCIENCE", "tileid": t, "exptime": 1100.0,
           "faults": {"scattered_light": glow} if t == FAULTY else {}} for t in TILES)]})
    simulate_night(plan, "tiny", SEED, str(root / "raw"), str(root / "truth"), cameras=CAMERAS)
    cfg = tiny_config(root, "walk", "redshift: {enabled: true}\n")
    prod = root / "redux" / "walk"
    # what the QA scientist opens: the tile QA of every tile and the night QA report (no HEALPix redshifts)
    targets = [paths.findfile("tile_qa", prod=str(prod), tileid=t, night=NIGHT) for t in TILES]
    targets.append(paths.findfile("nightqa_html", prod=str(prod), night=NIGHT))
    res = snakemake(root, cfg, "--profile", LOCAL_PROFILE, *targets)
    assert res.returncode == 0, res.stderr[-3000:]
    expids = {e.tileid: e.expid for e in science(plan)}
    return {"root": root, "prod": prod, "plan": plan, "glow": glow, "expids": expids}


def test_scattered_light_walkthrough(production, tmp_path, capsys):
    from fiberflow.cli.main import main
    from fiberflow.io.tileqa import TileQA
    from fiberflow.sim.lightpath import scattered_light

    prod, expids, glow = production["prod"], production["expids"], production["glow"]

    # 1. the tile QA flags the tile, and says where: petal 0, the sky fiber, ~6600 A
    qa = TileQA.read(paths.findfile("tile_qa", prod=str(prod), tileid=FAULTY, night=NIGHT))
    assert qa.status == "ALARM" and qa.metric("SKY_RESID_FRAC")["STATUS"].strip() == "ALARM", qa.metrics
    detail = qa.metric("SKY_RESID_FRAC")["DETAIL"]
    m = re.search(r"fiber (\d+) (-?[\d.]+) sig at ([\d.]+) A", detail)
    assert m and int(m.group(1)) == SKY_FIBER and float(m.group(2)) > 8, detail
    assert abs(float(m.group(3)) - glow["wave"]) < 100, detail
    row = qa.fiberqa[qa.fiberqa["FIBER"] == SKY_FIBER][0]
    assert row["SKY_RESID_SIG"] > 8 and qa.petalqa["STATUS"][0].strip() == "ALARM"
    # the tutorial's signature: redrock takes the bump at 6600 A for Lyman alpha (z = 6600 / 1216 - 1)
    assert str(row["SPECTYPE"]).strip() == "QSO" and abs(row["Z"] - (glow["wave"] / 1215.67 - 1)) < 0.15, row
    others = qa.fiberqa[(np.char.strip(qa.fiberqa["OBJTYPE"].astype(str)) == "SKY") & (qa.fiberqa["FIBER"] != SKY_FIBER)]
    assert len(others) >= 1 and np.all(np.abs(others["SKY_RESID_SIG"]) < 8)

    # 2. the night QA: that exposure's first bad step is SKY on r0 (the sky fiber's windowed residual)
    with open(paths.findfile("qa_night", prod=str(prod), night=NIGHT)) as fh:
        rec = json.load(fh)
    by_expid = {e["EXPID"]: e for e in rec["EXPOSURES"]}
    bad = by_expid[expids[FAULTY]]
    fb = bad["FIRST_BAD"]
    assert fb is not None and fb["STEP"] == "SKY" and fb["CAMERAS"] == ["r0"] and "NSKY_OUTLIER" in fb["METRICS"], fb
    sky = bad["FRAMES"]["r0"]["SCORES"]["SKY"]
    assert sky["NSKY_OUTLIER"]["STATUS"] == "ALARM"
    for cam in ("b0", "z0"):
        assert bad["FRAMES"][cam]["STEP_STATUS"]["SKY"] == "NORMAL"
    page = open(paths.findfile("nightqa_html", prod=str(prod), night=NIGHT)).read()
    assert f"tile-qa-{FAULTY}-thru{NIGHT}.png" in page and re.search(rf">{expids[FAULTY]}</a>.*?SKY", page, re.DOTALL)

    # 3. the focal plane (r0 frame after the fiberflat, 6500-6700 A against its 200 A flanks)
    #    localizes the fibers the light entered
    flat = paths.findfile("fiberflatnight", prod=str(prod), night=NIGHT, camera="r0")
    resid = {}
    for tile in (FAULTY, TILES[0]):
        frame = paths.findfile("frame", prod=str(prod), night=NIGHT, expid=expids[tile], camera="r0")
        table = tmp_path / f"fp-{tile}.csv"
        assert main(["plot-focalplane", "-i", frame, "--fiberflat", flat, "--flank", "200", "--table", str(table),
                     "-o", str(tmp_path / f"fp-{tile}.png")]) == 0
        rows = list(csv.DictReader(open(table)))
        resid[tile] = {int(r["fiber"]): float(r["residual"]) for r in rows}
        if tile == FAULTY:
            x = np.array([float(r["x"]) for r in rows])
            y = np.array([float(r["y"]) for r in rows])
            fibers = np.array([int(r["fiber"]) for r in rows])
    # the truth: how much of the glow each fiber received (relative to the sky fiber's)
    amp = scattered_light(np.array([glow["wave"]]), x, y, np.ones(1), glow)[:, 0] / glow["level"]
    # (a fiber whose window a masked CCD defect covers has no value, and is not ranked)
    measured = {f for f, v in resid[FAULTY].items() if np.isfinite(v)}
    lit = set(fibers[amp > 0.3].tolist()) & measured
    assert SKY_FIBER in lit and 3 <= len(lit) < len(fibers) // 2 and len(measured) >= 0.8 * len(fibers)
    order = sorted(measured, key=lambda f: -resid[FAULTY][f])
    assert set(order[:len(lit)]) == lit, (order[:len(lit)], lit)
    assert min(resid[FAULTY][f] for f in lit) > 5 * np.nanmax(np.abs(list(resid[TILES[0]].values())))
    # and the tutorial's next look, the sky fibers of the sframe
    sframe = paths.findfile("sframe", prod=str(prod), night=NIGHT, expid=expids[FAULTY], camera="r0")
    assert main(["plot-frame", "-i", sframe, "--sky-fibers", "--rebin", "10", "-o", str(tmp_path / "sky.png")]) == 0

    # 4. the other tiles of the night stay green
    for tile in TILES:
        if tile == FAULTY:
            continue
        clean = TileQA.read(paths.findfile("tile_qa", prod=str(prod), tileid=tile, night=NIGHT))
        assert clean.status == "NORMAL" and int(clean.header["NALARM"]) == 0, clean.metrics
        assert by_expid[expids[tile]]["FIRST_BAD"] is None, by_expid[expids[tile]]["FIRST_BAD"]
        assert str(clean.header["REFSRC"]).startswith("shipped")

    # the production's history as the reference: tiles of the same night never count (the shipped
    # reference stays); a coadd of another tile is refused before any work, in one line
    redrock = paths.findfile("redrock_cumulative", prod=str(prod), tileid=FAULTY, night=NIGHT, spectrograph=0)
    coadd = paths.findfile("coadd_cumulative", prod=str(prod), tileid=FAULTY, night=NIGHT, spectrograph=0)
    history = [paths.findfile("tile_qa", prod=str(prod), tileid=t, night=NIGHT) for t in TILES if t != FAULTY]
    out = tmp_path / "tile-qa-again.fits"
    assert main(["tile-qa", "-i", redrock, "--coadd", coadd, "--history", *history, "-o", str(out)]) == 0
    again = TileQA.read(out)
    assert str(again.header["REFSRC"]).startswith("shipped") and again.status == "ALARM"
    other = paths.findfile("coadd_cumulative", prod=str(prod), tileid=TILES[0], night=NIGHT, spectrograph=0)
    capsys.readouterr()
    assert main(["tile-qa", "-i", redrock, "--coadd", other, "-o", str(tmp_path / "refused.fits")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and other in err[0] and f"is of tile {TILES[0]}" in err[0], err
    assert not (tmp_path / "refused.fits").exists()
