"""Certification of the nightly calibrations: automatic decisions from the night's scores, the
random share of green ones sent to review, and the human ledger that overrides them."""

import pytest

from fiberflow.errors import ConfigError
from fiberflow.qa import certify as C


def _frame(step, status, metric="GRADIENT"):
    return {"STEP_STATUS": {"PREPROC": "NORMAL", step: status},
            "SCORES": {step: {metric: {"VALUE": 0.1, "STATUS": status}, "OTHER": {"VALUE": 1, "STATUS": "NORMAL"}}}}


def _night(flat_status=("NORMAL", "NORMAL"), night=20250101):
    cams = ("b0", "r0")
    return {"NIGHT": night, "EXPOSURES": [
        {"EXPID": 1, "OBSTYPE": "ZERO", "FRAMES": {c: _frame("BIAS", "NORMAL", "BIAS_AMP") for c in cams}},
        {"EXPID": 2, "OBSTYPE": "ARC", "FRAMES": {c: _frame("PSF", "NORMAL", "RMS_WAVE") for c in cams}},
        {"EXPID": 3, "OBSTYPE": "FLAT", "FRAMES": {c: _frame("FIBERFLAT", s) for c, s in zip(cams, flat_status)}},
        {"EXPID": 4, "OBSTYPE": "FLAT", "FRAMES": {c: _frame("FIBERFLAT", "NORMAL") for c in cams}},
        {"EXPID": 5, "OBSTYPE": "SCIENCE", "FRAMES": {c: _frame("SKY", "ALARM", "NSKY_OUTLIER") for c in cams}}]}


def _by(decisions):
    return {(d["CALIBRATION"], d["CAMERA"]): d for d in decisions}


def test_alarm_rejects_warning_reviews_and_green_is_auto():
    d = _by(C.automatic(_night(("ALARM", "WARNING")), review_fraction=0.0))
    assert len(d) == 6  # three calibrations x two cameras; science frames judge none
    rej = d[("fiberflatnight", "b0")]
    assert rej["STATUS"] == "REJECTED" and rej["EXPIDS"] == [3, 4] and "3:GRADIENT=ALARM" in rej["REASON"]
    assert d[("fiberflatnight", "r0")]["STATUS"] == "REVIEW" and "3:GRADIENT=WARNING" in d[("fiberflatnight", "r0")]["REASON"]
    assert {d[(c, cam)]["STATUS"] for c in ("biasnight", "psfnight") for cam in ("b0", "r0")} == {"AUTO"}
    final = _by(C.decide(list(d.values()), []))
    assert not final[("fiberflatnight", "b0")]["USABLE"] and final[("fiberflatnight", "r0")]["USABLE"]


def test_a_random_share_of_green_calibrations_goes_to_review_reproducibly():
    assert {d["STATUS"] for d in C.automatic(_night(), review_fraction=1.0)} == {"REVIEW"}
    drawn = [C.drawn_for_review("fiberflatnight", 20250101 + k, "r0", 0.2) for k in range(2000)]
    assert 0.17 < sum(drawn) / len(drawn) < 0.23
    assert drawn == [C.drawn_for_review("fiberflatnight", 20250101 + k, "r0", 0.2) for k in range(2000)]


def test_the_ledger_overrides_and_its_last_entry_wins():
    auto = C.automatic(_night(("ALARM", "NORMAL")), review_fraction=0.0)
    ledger = C.parse_ledger([
        {"calibration": "fiberflatnight", "night": 20250101, "camera": "B0", "decision": "certified",
         "who": "sb", "when": "2026-12-03", "reason": "lamp tilt within the science tolerance"},
        {"calibration": "psfnight", "night": "20250101", "camera": "r0", "decision": "REJECTED",
         "who": "qa", "when": "2026-12-03T10:00:00", "reason": "arc lines saturated"},
        {"calibration": "psfnight", "night": 20250101, "camera": "r0", "decision": "CERTIFIED",
         "who": "qa2", "when": "2026-12-04", "reason": "rechecked: fine"}])
    final = _by(C.decide(auto, ledger))
    flat = final[("fiberflatnight", "b0")]
    assert flat["STATUS"] == "CERTIFIED" and flat["USABLE"] and flat["AUTO_STATUS"] == "REJECTED"
    assert flat["SOURCE"] == "ledger:sb" and "lamp tilt" in flat["REASON"]
    assert final[("psfnight", "r0")]["STATUS"] == "CERTIFIED" and final[("psfnight", "r0")]["SOURCE"] == "ledger:qa2"


@pytest.mark.parametrize("entry, message", [
    ({"calibration": "flat", "night": 20250101, "camera": "b0", "decision": "CERTIFIED", "who": "a", "when": "2026-01-01",
      "reason": "x"}, "is not one of"),
    ({"calibration": "psfnight", "night": 20250101, "camera": "b0", "decision": "maybe", "who": "a", "when": "2026-01-01",
      "reason": "x"}, "not CERTIFIED or REJECTED"),
    ({"calibration": "psfnight", "night": 20250101, "camera": "b0", "decision": "REJECTED", "who": "a",
      "when": "yesterday", "reason": "x"}, "not an ISO date"),
    ({"calibration": "psfnight", "night": 20250101, "camera": "b0", "decision": "REJECTED", "who": "",
      "when": "2026-01-01", "reason": "x"}, "must not be empty"),
    ({"calibration": "psfnight", "night": 20250101, "decision": "REJECTED", "who": "a", "when": "2026-01-01",
      "reason": "x", "extra": 1}, "missing camera; unknown extra"),
])
def test_a_bad_ledger_entry_is_named(entry, message):
    with pytest.raises(ConfigError, match=message) as exc:
        C.parse_ledger([entry], where="calibnight/certification.yaml")
    assert "certification.yaml: entry 1" in str(exc.value)


def test_qc_certify_stores_the_decisions_and_a_ledger_recertifies(qc_database, tmp_path, capsys):
    """``fiberflow qc certify``: the automatic decisions of a night into the database (and JSON);
    a ledger entry re-certifies the rejected flat on the next run; a broken ledger is refused in
    one line before anything is stored."""
    import json

    from fiberflow.cli.main import main
    from fiberflow.io import qcdb

    qa = tmp_path / "qa-night-20250101.json"
    qa.write_text(json.dumps(_night(("ALARM", "NORMAL"))))
    db, ledger = qc_database, tmp_path / "certification.yaml"
    args = ["qc", "certify", "--db", str(db), "--night", "20250101", "--qa-night", str(qa), "--ledger", str(ledger),
            "--review-fraction", "0"]
    assert main(args + ["-o", str(tmp_path / "cert.json")]) == 0  # no ledger file yet: an empty ledger
    assert "fiberflatnight-b0-20250101: REJECTED" in capsys.readouterr().out
    conn = qcdb.connect(str(db))
    state = {(r["CALIBRATION"], r["CAMERA"]): r for r in qcdb.certification(conn, night=20250101)}
    assert state[("fiberflatnight", "b0")]["STATUS"] == "REJECTED" and not state[("fiberflatnight", "b0")]["USABLE"]
    assert json.loads((tmp_path / "cert.json").read_text())["DECISIONS"][0]["SOURCE"] == "auto"
    ledger.write_text("- {calibration: fiberflatnight, night: 20250101, camera: b0, decision: CERTIFIED,\n"
                      "   who: sb, when: 2026-12-03, reason: tilt within tolerance}\n")
    assert main(args) == 0
    state = {(r["CALIBRATION"], r["CAMERA"]): r for r in qcdb.certification(conn, night=20250101)}
    flat = state[("fiberflatnight", "b0")]
    assert flat["STATUS"] == "CERTIFIED" and flat["USABLE"] and flat["AUTO_STATUS"] == "REJECTED"
    assert flat["SOURCE"] == "ledger:sb"
    capsys.readouterr()
    assert main(["qc", "calibrations", "--db", str(db), "--who", "sb", "--format", "json"]) == 0
    mine = json.loads(capsys.readouterr().out)
    assert [(r["CALIBRATION"], r["CAMERA"], r["STATUS"]) for r in mine] == [("fiberflatnight", "b0", "CERTIFIED")]
    assert main(["qc", "calibrations", "--db", str(db), "--status", "REJECTED"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[1:] == []
    capsys.readouterr()
    ledger.write_text("- {calibration: fiberflatnight, night: 20250101, camera: b0, decision: maybe,\n"
                      "   who: sb, when: 2026-12-03, reason: x}\n")
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(ledger) in err[0] and "not CERTIFIED or REJECTED" in err[0]
    assert {r["STATUS"] for r in qcdb.certification(conn) if r["CALIBRATION"] == "fiberflatnight"} == \
        {"CERTIFIED", "AUTO"}  # unchanged by the refused run
    conn.close()


def _write_flat(path, night, seed):
    import os
    import sys

    import numpy as np

    sys.path.insert(0, os.path.dirname(__file__))
    import _factories as fac

    ff = fac.fiberflat(nspec=25, rng=np.random.default_rng(seed))
    ff.header.update({"CAMERA": "r0", "NIGHT": night})
    ff.write(str(path))
    return ff


def test_fiberflatnight_takes_its_fallback_when_its_flats_are_rejected(tmp_path, capsys):
    """``fiberflow fiberflatnight --qa``: the night's own flats certified from their frame QA as the
    certify job does; an ALARM (a tilted lamp) -> the fallback is copied (FALLBACK, IN_FLAT, the
    certification in the header); the ledger's CERTIFIED -> the night's own; no fallback, or the
    frame QA of another camera: one line, exit 1, no file."""
    import os

    import numpy as np
    from _workflow import PROJECT

    from fiberflow.cli.main import main
    from fiberflow.io.calib import read_fiberflat
    from fiberflow.io.datamodel import write_json

    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"instrument: tiny\nraw: {tmp_path / 'raw'}\nredux: {tmp_path / 'redux'}\nspecprod: t\n")
    _write_flat(tmp_path / "fiberflat-r0-own.fits", 20250102, 1)
    fallback = _write_flat(tmp_path / "fiberflatnight-r0-20250101.fits", 20250101, 2)
    qa = {}
    for cam, gradient in (("r0", 0.2), ("b0", 0.0)):
        qa[cam] = str(tmp_path / f"qa-{cam}-00000007.json")
        write_json(qa[cam], "qa_frame", {"NIGHT": 20250102, "EXPID": 7, "CAMERA": cam, "OBSTYPE": "FLAT",
                                         "METRICS": {"FIBERFLAT": {"GRADIENT": gradient}}})
    out = tmp_path / "out" / "fiberflatnight-r0-20250102.fits"
    base = ["fiberflatnight", "--config", str(cfg), "--camera", "r0", "--night", "20250102",
            "-i", str(tmp_path / "fiberflat-r0-own.fits"), "--thresholds", os.path.join(PROJECT, "config", "qa.yaml"),
            "-o", str(out)]
    fb = ["--fallback", str(tmp_path / "fiberflatnight-r0-20250101.fits")]
    assert main(base + fb + ["--qa", qa["r0"]]) == 0
    assert "REJECTED (FIBERFLAT ALARM: 7:GRADIENT=ALARM); taking the fallback" in capsys.readouterr().out
    got = read_fiberflat(str(out))
    assert got.header["FALLBACK"] and fb[1].endswith(got.header["IN_FLAT"]) and got.header["CERTSTAT"] == "REJECTED"
    assert got.header["CERTSRC"] == "auto" and np.array_equal(got.fiberflat, fallback.fiberflat)
    out.unlink()
    # the ledger certifies it: the night's own flat
    assert main(base + fb + ["--qa", qa["r0"], "--ledger-decision", "CERTIFIED"]) == 0
    got = read_fiberflat(str(out))
    assert not got.header["FALLBACK"] and got.header["CERTSTAT"] == "CERTIFIED" and got.header["NFLATS"] == 1
    assert got.header["CERTSRC"] == "ledger"
    out.unlink()
    capsys.readouterr()
    for args, words in ((base + ["--qa", qa["r0"]], [str(tmp_path), "REJECTED", "no earlier night's"]),
                        (base + fb + ["--qa", qa["b0"]], [qa["b0"], "not of a FLAT r0 of night 20250102"])):
        assert main(args) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and all(w in err[0] for w in words), err
        assert not out.exists()


def test_certify_refuses_frames_of_another_obstype_or_night(tmp_path, capsys):
    import os

    from _workflow import PROJECT

    from fiberflow.cli.main import main
    from fiberflow.io.datamodel import write_json

    qa = tmp_path / "qa-r0-00000005.json"
    write_json(str(qa), "qa_frame", {"NIGHT": 20250102, "EXPID": 5, "CAMERA": "r0", "OBSTYPE": "SCIENCE",
                                     "METRICS": {}})
    args = ["certify", "--calibration", "fiberflatnight", "--night", "20250102", "-i", str(qa),
            "--thresholds", os.path.join(PROJECT, "config", "qa.yaml"), "--ledger", str(tmp_path / "none.yaml"),
            "-o", str(tmp_path / "cert.json")]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(qa) in err[0] and "not of a FLAT of night 20250102" in err[0], err
    assert not (tmp_path / "cert.json").exists()


def test_preproc_takes_an_earlier_master_bias_when_the_nights_is_rejected(tmp_path, capsys):
    """``fiberflow preproc --qa``: the night's master bias certified from its ZEROs' frame QA; a
    hot-pixel ALARM -> the earlier night's master bias (BIASFB, CERTSTAT in the header), without
    one -> overscan only; the ledger's CERTIFIED -> the night's own."""
    import os

    import numpy as np
    from _workflow import PROJECT

    from fiberflow import paths
    from fiberflow.cli.main import main
    from fiberflow.io.datamodel import write_json
    from fiberflow.io.image import BiasNight, PreprocImage
    from fiberflow.sim.night import simulate_night
    from fiberflow.sim.plan import parse_plan

    night = 20250105
    simulate_night(parse_plan({"night": night, "first_expid": 50, "exposures": [
        {"obstype": "ZERO", "count": 2}, {"obstype": "ARC", "exptime": 5.0}]}), "tiny", 3, str(tmp_path / "raw"),
        str(tmp_path / "truth"), cameras=["r0"])
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"instrument: tiny\nraw: {tmp_path / 'raw'}\nredux: {tmp_path / 'redux'}\nspecprod: t\n")
    raw = lambda e: paths.findfile("raw", raw=str(tmp_path / "raw"), night=night, expid=e)  # noqa: E731
    own = str(tmp_path / "biasnight-r0-own.fits")
    assert main(["biasnight", "--config", str(cfg), "--camera", "r0", "-i", raw(50), raw(51), "-o", own]) == 0
    b = BiasNight.read(own)
    earlier = str(tmp_path / "biasnight-r0-20250104.fits")
    BiasNight(b.image + 7.0, b.mask, dict(b.header, NIGHT=20250104)).write(earlier)
    qa = str(tmp_path / "qa-r0-00000050.json")
    write_json(qa, "qa_frame", {"NIGHT": night, "EXPID": 50, "CAMERA": "r0", "OBSTYPE": "ZERO",
                                "METRICS": {"BIAS": {"HOT_FRAC": 0.2}}})
    base = ["preproc", "--config", str(cfg), "--camera", "r0", "-i", raw(52), "--biasnight", own, "--no-cosmics",
            "--qa", qa, "--thresholds", os.path.join(PROJECT, "config", "qa.yaml")]
    images = {}
    for name, extra in (("fallback", ["--fallback-bias", earlier]), ("overscan", []),
                        ("ledger", ["--fallback-bias", earlier, "--ledger-decision", "CERTIFIED"])):
        out = str(tmp_path / f"preproc-{name}.fits")
        assert main(base + extra + ["-o", out]) == 0
        images[name] = PreprocImage.read(out)
    assert "master bias is REJECTED (BIAS ALARM: 50:HOT_FRAC=ALARM); taking" in capsys.readouterr().out
    assert images["fallback"].header["CERTSTAT"] == "REJECTED" and images["fallback"].header["BIASFB"] == \
        os.path.basename(earlier)
    assert images["overscan"].header["BIASFB"] == "none" and images["ledger"].header["CERTSTAT"] == "CERTIFIED"
    assert "BIASFB" not in images["ledger"].header
    good = images["ledger"].mask == 0
    # the earlier bias is 7 ADU higher: the image is 7 x gain lower
    gain = float(np.median(images["ledger"].image[good] - images["fallback"].image[good])) / 7.0
    assert 0.5 < gain < 3.0


def test_the_average_flux_calibration_is_certified_from_its_qc1_parameters():
    by = lambda n, s, thr=None, ledger=(): C.certify_average({"NAVERAGE": n, "SCATTER": s}, "r0", 20250110, thr,  # noqa: E731
                                                             ledger)
    assert by(8, 0.02)["STATUS"] == "AUTO" and by(8, 0.02)["USABLE"]
    assert by(4, 0.02)["STATUS"] == "REVIEW" and "NAVERAGE=4:WARNING" in by(4, 0.02)["REASON"]
    bad = by(8, 0.3)
    assert bad["STATUS"] == "REJECTED" and not bad["USABLE"] and "SCATTER=0.3:ALARM" in bad["REASON"]
    loose = {"certification": {"fluxcalib-average": {"SCATTER": {"normal": [0, 0.5]}}}}
    assert by(8, 0.3, loose)["STATUS"] == "AUTO"
    ledger = C.parse_ledger([{"calibration": "fluxcalib-average", "night": 20250110, "camera": "r0",
                              "decision": "CERTIFIED", "who": "sb", "when": "2026-12-04", "reason": "checked"}])
    ok = by(8, 0.3, None, ledger)
    assert ok["STATUS"] == "CERTIFIED" and ok["AUTO_STATUS"] == "REJECTED" and ok["SOURCE"] == "ledger:sb"
