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


def test_qc_certify_stores_the_decisions_and_a_ledger_recertifies(tmp_path, capsys):
    """``fiberflow qc certify``: the automatic decisions of a night into the database (and JSON);
    a ledger entry re-certifies the rejected flat on the next run; a broken ledger is refused in
    one line before anything is stored."""
    import json

    from fiberflow.cli.main import main
    from fiberflow.io import qcdb

    qa = tmp_path / "qa-night-20250101.json"
    qa.write_text(json.dumps(_night(("ALARM", "NORMAL"))))
    db, ledger = tmp_path / "qc1.sqlite", tmp_path / "certification.yaml"
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
    ledger.write_text("- {calibration: fiberflatnight, night: 20250101, camera: b0, decision: maybe,\n"
                      "   who: sb, when: 2026-12-03, reason: x}\n")
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(ledger) in err[0] and "not CERTIFIED or REJECTED" in err[0]
    assert {r["STATUS"] for r in qcdb.certification(conn) if r["CALIBRATION"] == "fiberflatnight"} == \
        {"CERTIFIED", "AUTO"}  # unchanged by the refused run
    conn.close()
