"""QA in a real Snakemake production of simulated nights with injected faults.

Night A is clean (its ZEROs and a DARK too). Night B has one fault per science exposure (dead amplifier on r0, broken
fiber, a bright star in a sky fiber, too few standards). Night C has a tilted flat lamp. Each
fault must turn the right metric red on the right cameras, and the night page must name the
right first bad step; night A must have no alarm. Editing a threshold reruns only QA rules.
The night and production pages are opened in a real browser (chromium).
"""

import json
import os
import re
import shutil
import time

import pytest
from _browser import browser_or_skip, check_page
from _workflow import LOCAL_PROFILE, PROJECT, science, snakemake, tiny_config

from fiberflow import paths

NIGHT_A, NIGHT_B, NIGHT_C = 20250701, 20250702, 20250703
CAMERAS = ["b0", "r0"]
SKY_FIBER = 13  # a sky fiber of the tiny instrument (fiberflow.sim.targets._special_fibers)

# fault -> (night, science exposure index, first bad step, metric, cameras)
FAULTS = {
    "dead_amp": (NIGHT_B, 0, "PREPROC", "LITFRAC_REL_AMP", ["r0"]),
    "broken_fibers": (NIGHT_B, 1, "EXTRACT", "NLOWTHRU", ["b0", "r0"]),
    "sky_contamination": (NIGHT_B, 2, "SKY", "NSKY_OUTLIER", ["b0", "r0"]),
    "few_stdstars": (NIGHT_B, 3, "STDSTARS", "NSTARS", ["b0", "r0"]),
}
# fault -> the petal-level QA bit (QAFIBERSTATUS) it must set on petal 0
FAULT_BITS = {"sky_contamination": "BADPETALSKY", "few_stdstars": "BADPETALSTDSTAR"}


def _plan(night, first, science, flat_faults=None, dark=False):
    return {"night": night, "first_expid": first, "exposures": [
        {"obstype": "ZERO", "count": 2}, *([{"obstype": "DARK", "exptime": 1800.0}] if dark else []),
        {"obstype": "ARC", "exptime": 5.0},
        {"obstype": "FLAT", "exptime": 120.0, "faults": flat_faults or {}},
        *({"obstype": "SCIENCE", "tileid": 90 + i, "exptime": 900.0, "faults": f} for i, f in enumerate(science))]}




@pytest.fixture(scope="module")
def production(tmp_path_factory):
    from fiberflow.sim.night import simulate_night
    from fiberflow.sim.plan import parse_plan

    root = tmp_path_factory.mktemp("qaprod")
    plans = [
        _plan(NIGHT_A, 1300, [{}], dark=True),
        _plan(NIGHT_B, 1400, [{"dead_amp": {"camera": "r0", "amp": "B"}}, {"broken_fibers": [7]},
                              {"sky_contamination": [SKY_FIBER]}, {"few_stdstars": 1}]),
        _plan(NIGHT_C, 1500, [{}], flat_faults={"bad_flat_lamp": True}),
    ]
    for p in plans:
        simulate_night(parse_plan(p), "tiny", 7, str(root / "raw"), str(root / "truth"), cameras=CAMERAS)
    shutil.copy(os.path.join(PROJECT, "config", "qa.yaml"), root / "qa.yaml")
    cfg = tiny_config(root, "qa", f"qa: {{thresholds: {root / 'qa.yaml'}, review_fraction: 0.0}}\n")
    res = snakemake(root, cfg, "--profile", LOCAL_PROFILE, "qa")
    assert res.returncode == 0, res.stderr[-3000:]
    prod = root / "redux" / "qa"
    return {"root": root, "cfg": cfg, "prod": prod, "plans": [parse_plan(p) for p in plans]}


def _night(prod, night):
    with open(paths.findfile("qa_night", prod=str(prod), night=night)) as fh:
        return json.load(fh)




def test_clean_night_has_no_alarm(production):
    rec = _night(production["prod"], NIGHT_A)
    assert rec["NALARM"] == 0 and rec["FIRST_BAD"] is None, rec["FIRST_BAD"]
    assert rec["STATUS"] in ("NORMAL", "WARNING")
    assert {e["OBSTYPE"] for e in rec["EXPOSURES"]} == {"ZERO", "DARK", "ARC", "FLAT", "SCIENCE"}
    # ZEROs and the DARK are scored against the night's master bias
    dark = next(e for e in rec["EXPOSURES"] if e["OBSTYPE"] == "DARK")
    for cam in CAMERAS:
        assert dark["FRAMES"][cam]["STEP_STATUS"]["BIAS"] == "NORMAL"
        assert dark["FRAMES"][cam]["SCORES"]["BIAS"]["DARK_RATE_AMP"]["STATUS"] == "NORMAL"
    sci = [e for e in rec["EXPOSURES"] if e["OBSTYPE"] == "SCIENCE"][0]
    assert sci["EFFTIME"] is not None and sci["EFFTIME"] > 0
    assert all(q == 0 for e in rec["EXPOSURES"] for q in e["QAFIBERSTATUS"].values())


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_turns_its_metric_red_and_names_the_first_bad_step(production, fault):
    night, k, step, metric, cams = FAULTS[fault]
    plan = production["plans"][[NIGHT_A, NIGHT_B, NIGHT_C].index(night)]
    expid = science(plan)[k].expid
    assert fault in science(plan)[k].faults
    rec = _night(production["prod"], night)
    exp = next(e for e in rec["EXPOSURES"] if e["EXPID"] == expid)
    fb = exp["FIRST_BAD"]
    assert fb is not None and fb["STEP"] == step, fb
    assert fb["CAMERAS"] == cams and metric in fb["METRICS"], fb
    for cam in CAMERAS:
        st = exp["FRAMES"][cam]["SCORES"][step][metric]["STATUS"]
        assert st == ("ALARM" if cam in cams else "NORMAL"), (cam, st)
    assert exp["PETALS"]["0"] == "ALARM"
    if fault in FAULT_BITS:
        from fiberflow.bitmasks import fibermask

        assert FAULT_BITS[fault] in fibermask.names(exp["QAFIBERSTATUS"]["0"]), exp["PETAL_QA"]
        page = open(paths.findfile("qa_exposure_html", prod=str(production["prod"]), night=night, expid=expid)).read()
        assert re.search(rf"petal 0</td>.*?{FAULT_BITS[fault]}", page, re.DOTALL)
    # the night page names it, with every camera, value and range in its out-of-range table
    html = open(paths.findfile("qa_night_html", prod=str(production["prod"]), night=night)).read()
    assert re.search(rf">{expid}</a>.*?{step} \(", html, re.DOTALL)
    for cam in cams:
        assert re.search(rf'<tr class="flag"><td>{expid}</td><td>{cam}</td><td>{step}</td><td>{metric}</td><td>'
                         rf'[^<]+</td><td>[^<]+</td><td>[^<]+</td><td class="st ALARM">ALARM</td></tr>', html), cam
    # and the production index, on the night's row
    index = open(paths.findfile("qa_production_html", prod=str(production["prod"]))).read()
    row = re.search(rf">{night}</a></td>.*?</tr>", index, re.DOTALL).group(0)
    assert re.search(rf"ALARM {step} {metric} {', '.join(cams)} \(exp [^)]*{expid}", row), row


def test_bad_flat_is_the_first_bad_step_of_its_night(production):
    rec = _night(production["prod"], NIGHT_C)
    plan = production["plans"][2]
    flat = next(e.expid for e in plan.exposures if e.obstype == "FLAT")
    assert rec["FIRST_BAD"]["STEP"] == "FIBERFLAT" and flat in rec["FIRST_BAD"]["EXPIDS"]
    assert "GRADIENT" in rec["FIRST_BAD"]["METRICS"]
    # the science did not use the rejected flat (an earlier night's instead): nothing blames it
    sci = next(e for e in rec["EXPOSURES"] if e["OBSTYPE"] == "SCIENCE")
    assert sci["FIRST_BAD"] is None or sci["FIRST_BAD"]["STEP"] != "FIBERFLAT", sci["FIRST_BAD"]
    html = open(paths.findfile("qa_night_html", prod=str(production["prod"]), night=NIGHT_C)).read()
    assert "First bad step: FIBERFLAT" in html
    assert re.search(r"fiberflatnight-r0</td><td class=\"st REJECTED\">REJECTED</td><td>not used", html)


def test_the_bad_flat_lamp_night_rejects_its_fiberflats_and_the_clean_night_certifies(production):
    """Certification from the nights' scores: night C's fiberflatnight is REJECTED with the flat's
    GRADIENT alarm as the reason; night A has nothing rejected and nothing to review but the random
    share of green calibrations."""
    from fiberflow.qa import certify

    rec = _night(production["prod"], NIGHT_C)
    flat = next(e.expid for e in production["plans"][2].exposures if e.obstype == "FLAT")
    final = certify.decide(certify.automatic(rec, review_fraction=0.0), [])
    flats = [d for d in final if d["CALIBRATION"] == "fiberflatnight"]
    bad = [d for d in flats if d["STATUS"] == "REJECTED"]
    assert bad and all(not d["USABLE"] for d in bad) and any(f"{flat}:GRADIENT=ALARM" in d["REASON"] for d in bad), flats
    assert {d["STATUS"] for d in final if d["CALIBRATION"] != "fiberflatnight"} <= {"AUTO", "REVIEW"}
    clean = certify.automatic(_night(production["prod"], NIGHT_A), review_fraction=0.0)
    assert {d["CALIBRATION"] for d in clean} == set(certify.CALIBRATIONS)
    assert {d["STATUS"] for d in clean} <= {"AUTO", "REVIEW"} and "REJECTED" not in {d["STATUS"] for d in clean}


def _certification(prod, night, calibration):
    with open(paths.findfile("certification", prod=str(prod), night=night, calibration=calibration)) as fh:
        return {d["CAMERA"]: d for d in json.load(fh)["DECISIONS"]}


def _job_stats(stdout):
    table = stdout[stdout.index("Job stats"):].split("\n\n")[0]
    return {r: int(n) for r, n in re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.MULTILINE) if r != "total"}


def test_a_rejected_flat_is_replaced_by_the_previous_nights_until_the_ledger_certifies_it(production):
    """The closed QC loop in the workflow: night C's flats are REJECTED by the certify job before
    the science uses them, so its fiberflatnight is night B's (FALLBACK, the certification in the
    header) and the science is flat-fielded with it; the clean nights are all AUTO. A ledger entry
    certifying r0's flat reruns exactly the r0 fiberflatnight and what depends on it."""
    from fiberflow.io.calib import read_fiberflat

    prod = production["prod"]
    for night in (NIGHT_A, NIGHT_B):
        for calib in ("biasnight", "psfnight", "fiberflatnight"):
            assert {d["STATUS"] for d in _certification(prod, night, calib).values()} == {"AUTO"}, (night, calib)
    flats = _certification(prod, NIGHT_C, "fiberflatnight")
    flat = next(e.expid for e in production["plans"][2].exposures if e.obstype == "FLAT")
    assert flats["r0"]["STATUS"] == "REJECTED" and f"{flat}:GRADIENT=ALARM" in flats["r0"]["REASON"], flats
    for cam in CAMERAS:
        ffc = read_fiberflat(paths.findfile("fiberflatnight", prod=str(prod), night=NIGHT_C, camera=cam))
        ffb = read_fiberflat(paths.findfile("fiberflatnight", prod=str(prod), night=NIGHT_B, camera=cam))
        rejected = flats[cam]["STATUS"] == "REJECTED"
        assert bool(ffc.header["FALLBACK"]) == rejected and ffc.header["CERTSTAT"] == flats[cam]["STATUS"]
        if rejected:
            assert ffc.header["IN_FLAT"] == f"fiberflatnight-{cam}-{NIGHT_B}.fits"
            assert (ffc.fiberflat == ffb.fiberflat).all()
    # the science of night C was flat-fielded with that file
    expid = science(production["plans"][2])[0].expid
    from astropy.io import fits

    hdr = fits.getheader(paths.findfile("sframe", prod=str(prod), night=NIGHT_C, expid=expid, camera="r0"))
    assert hdr["IN_FFLAT"].endswith(f"fiberflatnight-r0-{NIGHT_C}.fits")

    # a reviewer certifies r0's flat: exactly its fiberflatnight and what depends on it rerun
    ledger = prod / "calibnight" / "certification.yaml"
    ledger.write_text(f"- {{calibration: fiberflatnight, night: {NIGHT_C}, camera: r0, decision: CERTIFIED,\n"
                      "   who: qc-scientist, when: 2026-12-04, reason: gradient within the science tolerance}\n")
    res = snakemake(production["root"], production["cfg"], "qa", "-n")
    assert res.returncode == 0, res.stderr[-2000:]
    stats = _job_stats(res.stdout)
    assert stats["certify"] == 1 and stats["fiberflatnight"] == 1 and stats["sky"] == 1, stats
    assert not {"preproc", "psf", "psfnight", "traceshift", "extract", "fiberflat", "biasnight"} & set(stats), stats
    res = snakemake(production["root"], production["cfg"], "qa")
    assert res.returncode == 0, res.stderr[-2000:]
    flats = _certification(prod, NIGHT_C, "fiberflatnight")
    assert flats["r0"]["STATUS"] == "CERTIFIED" and flats["r0"]["SOURCE"] == "ledger:qc-scientist"
    assert flats["r0"]["AUTO_STATUS"] == "REJECTED"
    ffc = read_fiberflat(paths.findfile("fiberflatnight", prod=str(prod), night=NIGHT_C, camera="r0"))
    assert not ffc.header["FALLBACK"] and ffc.header["CERTSTAT"] == "CERTIFIED" and ffc.header["NFLATS"] == 1
    res = snakemake(production["root"], production["cfg"], "qa", "-n")
    assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr, res.stdout[-2000:]
    # rejecting night A's r0 master bias would redo exactly night A's r0 preprocessing (its arc,
    # flat and science exposure) with night A's certification of the bias; taking it back, nothing
    certified = ledger.read_text()
    ledger.write_text(certified + f"- {{calibration: biasnight, night: {NIGHT_A}, camera: r0, decision: REJECTED,\n"
                                  "   who: qc-scientist, when: 2026-12-04, reason: hot columns}\n")
    res = snakemake(production["root"], production["cfg"], "qa", "-n")
    assert res.returncode == 0, res.stderr[-2000:]
    stats = _job_stats(res.stdout)
    nexp = len([e for e in production["plans"][0].exposures if e.obstype in ("ARC", "FLAT", "SCIENCE")])
    # (night A's three certifications: the bias's by its ledger entry, the others by their new r0 frames)
    assert stats["preproc"] == nexp and stats["certify"] == 3 and "biasnight" not in stats, stats
    redone = re.findall(r"output: \S*/(preproc-[brz]\d)-\d{8}\.fits", res.stdout)
    assert redone == ["preproc-r0"] * nexp, redone
    ledger.write_text(certified)
    res = snakemake(production["root"], production["cfg"], "qa", "-n")
    assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr, res.stdout[-2000:]


def test_production_table_loads_in_one_line(production):
    import pandas as pd

    df = pd.read_csv(paths.findfile("qa_production_table", prod=str(production["prod"])))
    nframes = sum(len(p.exposures) for p in production["plans"])  # ZERO, DARK, ARC, FLAT, SCIENCE
    assert len(df) == nframes * len(CAMERAS)
    assert {"NIGHT", "EXPID", "CAMERA", "STATUS", "SKY_NSKY_OUTLIER", "PREPROC_NOISE_RATIO_AMP_B",
            "QAFIBERSTATUS", "QABITS"} <= set(df.columns)
    assert (df[df.NIGHT == NIGHT_A].STATUS != "ALARM").all()
    cframe = paths.findfile("cframe", prod=str(production["prod"]), night=NIGHT_B,
                            expid=science(production["plans"][1])[3].expid, camera="r0")
    import fitsio

    from fiberflow.bitmasks import fibermask

    fm = fitsio.read(cframe, "FIBERMAP")
    assert (fm["FIBERSTATUS"] & fibermask.mask("BADPETALSTDSTAR")).all()


def test_pages_in_a_real_browser(production, tmp_path):
    prod = production["prod"]
    driver = browser_or_skip(tmp_path / "chrome")
    try:
        for night in (NIGHT_B, NIGHT_C):
            page = paths.findfile("qa_night_html", prod=str(prod), night=night)
            nimg, nlink = check_page(driver, page, str(prod / "qa" / f"screenshot-night-{night}.png"))
            assert nimg == 2 and nlink > 10
        nimg, nlink = check_page(driver, paths.findfile("qa_production_html", prod=str(prod)),
                                 str(prod / "qa" / "screenshot-production.png"))
        assert nimg == 2 and nlink >= 4
        exp = science(production["plans"][1])[0].expid
        check_page(driver, paths.findfile("qa_exposure_html", prod=str(prod), night=NIGHT_B, expid=exp))
        # blinking: one strip per camera (frame | sframe | sky model, 600 px each, one grey
        # scale); a button shows a panel, the toggle cycles through them
        state = "var d=document.querySelector('.blink');var i=d.querySelector('img');" \
                "return [getComputedStyle(i).objectPosition, d.querySelector('.shown').textContent, i.naturalWidth];"
        nblink = driver.execute_script("return document.querySelectorAll('.blink').length;")
        assert nblink == len(CAMERAS)
        assert driver.execute_script(state) == ["0px 0px", "frame", 1800]
        driver.execute_script("document.querySelector('.blink button:nth-of-type(2)').click();")
        assert driver.execute_script(state)[:2] == ["-600px 0px", "sframe"]
        driver.execute_script("document.querySelector('.blink .toggle').click();")
        seen = set()
        for _ in range(12):
            time.sleep(0.25)
            seen.add(driver.execute_script(state)[1])
        assert seen == {"frame", "sframe", "sky model"}, seen
        driver.save_screenshot(str(prod / "qa" / "screenshot-exposure-blink.png"))
    finally:
        driver.quit()
    assert os.path.getsize(prod / "qa" / "screenshot-production.png") > 1000


def test_editing_a_threshold_reruns_only_the_qa_rules(production):
    root, cfg = production["root"], production["cfg"]
    thr = root / "qa.yaml"
    text = thr.read_text()
    new = text.replace("GRADIENT: {normal: [-0.03, 0.03], warning: [-0.05, 0.05]",
                       "GRADIENT: {normal: [-0.3, 0.3], warning: [-0.5, 0.5]")
    assert new != text
    thr.write_text(new)
    res = snakemake(root, cfg, "qa", "-n")
    assert res.returncode == 0, res.stderr[-2000:]
    table = res.stdout[res.stdout.index("Job stats"):].split("\n\n")[0]
    rules = set(re.findall(r"^(\w+)\s+\d+\s*$", table, re.MULTILINE)) - {"total"}
    # the certifications are rescored too, but a changed decision does not re-associate the
    # calibrations (their certification only orders them): the ledger does that
    assert rules == {"certify", "qa_night", "qa_exposure", "qa_production", "qc_ingest", "qc_health", "qa"}, table
    res = snakemake(root, cfg, "qa")
    assert res.returncode == 0, res.stderr[-2000:]
    rec = _night(production["prod"], NIGHT_C)
    flat = next(e for e in rec["EXPOSURES"] if e["OBSTYPE"] == "FLAT")
    assert flat["FRAMES"]["r0"]["SCORES"]["FIBERFLAT"]["GRADIENT"]["STATUS"] == "NORMAL"
    # `fiberflow status` shows the states, and flags a rescored flat whose file was made under the
    # other decision (used / not used)
    import subprocess
    import sys

    from fiberflow.io.calib import read_fiberflat

    res = subprocess.run([sys.executable, "-m", "fiberflow.cli.main", "status", "--config", cfg, "-d", str(root),
                          "--json"], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    certs = [c for c in json.loads(res.stdout)["certification"] if c["NIGHT"] == NIGHT_C]
    flats = {c["CAMERA"]: c for c in certs if c["CALIBRATION"] == "fiberflatnight"}
    assert flats["r0"]["STATUS"] == "CERTIFIED" and not flats["r0"]["STALE"]
    fallback = {cam for cam in CAMERAS if read_fiberflat(paths.findfile(
        "fiberflatnight", prod=str(production["prod"]), night=NIGHT_C, camera=cam)).header["FALLBACK"]}
    assert {cam for cam, c in flats.items() if c["STALE"]} == {
        cam for cam, c in flats.items() if (cam in fallback) != (c["STATUS"] == "REJECTED")}
    res = subprocess.run([sys.executable, "-m", "fiberflow.cli.main", "status", "--config", cfg, "-d", str(root)],
                         capture_output=True, text=True, check=False)
    assert "nightly calibrations:" in res.stdout and f"{NIGHT_C} fiberflatnight-r0  CERTIFIED" in res.stdout, res.stdout


def test_qc1_database_holds_every_scored_metric_of_the_nights(production):
    """The workflow's ``qc_ingest`` jobs put the three nights' QA records into the production's QC1
    database: every scored number is a row with the version of the thresholds that scored it (the
    edited ones after the threshold edit above: the rerun re-ingested), a receipt per night, and a
    metric's history shows the faults."""
    from fiberflow.io import qcdb
    from fiberflow.qa.scoring import thresholds_version

    prod = production["prod"]
    files = [paths.findfile("qa_night", prod=str(prod), night=n) for n in (NIGHT_A, NIGHT_B, NIGHT_C)]
    res = snakemake(production["root"], production["cfg"], "qa")
    assert res.returncode == 0, res.stderr[-2000:]
    for n, f in zip((NIGHT_A, NIGHT_B, NIGHT_C), files):
        receipt = json.load(open(paths.findfile("qc_ingest", prod=str(prod), night=n)))
        assert [p["PRODUCT"] for p in receipt["PRODUCTS"] if p["KIND"] == "night"] == [os.path.relpath(f, prod)]
        assert {p["KIND"] for p in receipt["PRODUCTS"]} == {"night", "certification"}
    db = qcdb.default_path(str(prod))
    conn = qcdb.connect(db)
    assert [p["NIGHT"] for p in qcdb.products(conn)] == [NIGHT_A, NIGHT_B, NIGHT_C]
    rows = qcdb.query(conn)
    nscored = sum(sum(1 for st in fr["SCORES"].values() for s in st.values()
                      if isinstance(s.get("VALUE"), (int, float)) and not isinstance(s.get("VALUE"), bool))
                  for f in files for e in json.load(open(f))["EXPOSURES"] for fr in e["FRAMES"].values())
    assert sum(r["KIND"] == "frame" for r in rows) <= nscored and sum(r["KIND"] == "frame" for r in rows) > 0.9 * nscored
    assert {r["THRESHOLDS"] for r in rows} == {thresholds_version(production["root"] / "qa.yaml")}
    night, k, step, metric, cams = FAULTS["sky_contamination"]
    expid = science(production["plans"][1])[k].expid
    hist = qcdb.query(conn, metric=metric, camera="r0")
    assert [r["STATUS"] for r in hist if r["EXPID"] == expid] == ["ALARM"]
    assert all(r["STATUS"] == "NORMAL" for r in hist if r["NIGHT"] == NIGHT_A)
    # the certification states came in with the night (the ledger's decision on r0's flat of night C)
    state = {(r["CALIBRATION"], r["CAMERA"]): r for r in qcdb.certification(conn, night=NIGHT_C)}
    assert state[("fiberflatnight", "r0")]["STATUS"] == "CERTIFIED" and state[("fiberflatnight", "r0")]["USABLE"]
    assert {r["STATUS"] for r in qcdb.certification(conn, night=NIGHT_A)} == {"AUTO"}
    conn.close()
    # the health check of the last night against the database: every parameter of night C, those
    # with enough history judged, a trend plot each, linked from the production page
    import csv

    with open(paths.findfile("qc_health_table", prod=str(prod))) as fh:
        health = list(csv.DictReader(fh))
    assert health and {r["NIGHT"] for r in health} == {str(NIGHT_C)}
    judged = [r for r in health if r["STATUS"] != "NA"]
    assert judged and all(int(r["HIST_N"]) >= 5 and r["HIST_FIRST"] == str(NIGHT_A) for r in judged)
    page = open(paths.findfile("qc_health_html", prod=str(prod))).read()
    assert "trends/trend-SKY-SKYCHI2.png" in page
    assert "health/index.html" in open(paths.findfile("qa_production_html", prod=str(prod))).read()
