"""``fiberflow certify``: certify one nightly calibration (biasnight, psfnight, fiberflatnight) of
every camera of a night from the frame QA of its exposures, before the night's science uses it.

The frames are scored as the night QA scores them (thresholds, dynamic ranges from the history
of earlier certifications of the same calibration), then :func:`fiberflow.qa.certify.certify_night`
decides AUTO / REVIEW / REJECTED per camera and applies the ledger. The workflow's ``certify``
rule runs it; psfnight and fiberflatnight read the result (``--certification``) and take their
fallback in place of a REJECTED one.
"""

from __future__ import annotations


def add_arguments(p, name):
    from ..qa.certify import CALIBRATIONS

    p.add_argument("--calibration", required=True, choices=tuple(CALIBRATIONS))
    p.add_argument("--night", type=int, required=True)
    p.add_argument("-i", "--infiles", nargs="+", required=True,
                   help="frame QA JSON (qa-{camera}-{expid}.json) of the night's exposures of that calibration")
    p.add_argument("--history", nargs="*", default=[],
                   help="earlier nights' certification records of the same calibration (dynamic thresholds)")
    p.add_argument("--thresholds", required=True, help="QA thresholds YAML (config/qa.yaml)")
    p.add_argument("--config", default=None, help="workflow configuration (qa.ledger, qa.review_fraction)")
    p.add_argument("--ledger", default=None,
                   help="certification ledger YAML (default: qa.ledger, else {prod}/calibnight/certification.yaml)")
    p.add_argument("--ledger-digest", default=None,
                   help="digest of the ledger's entries for this calibration and night that the workflow planned "
                        "with; refused if the ledger changed since")
    p.add_argument("--review-fraction", type=float, default=None,
                   help="share of green calibrations sent to review (default: qa.review_fraction, 0.2)")
    p.add_argument("-o", "--outfile", required=True, help="certification-{calibration}-{night}.json")


def run(args):
    import os

    from ..config import load_config
    from ..errors import ConfigError, DataError
    from ..io.datamodel import read_json, write_json
    from ..qa import certify
    from ..qa.scoring import load_thresholds, thresholds_version
    from ..qa.tables import history_from_nights

    cfg = load_config(args.config) if args.config else None
    path = args.ledger or (certify.ledger_path(cfg) if cfg else None)
    fraction = args.review_fraction if args.review_fraction is not None else \
        float(cfg["qa"]["review_fraction"] if cfg else 0.2)
    if not 0 <= fraction <= 1:
        raise ConfigError(f"--review-fraction {fraction}: must be between 0 and 1")
    ledger = certify.load_ledger(path)
    mine = certify.ledger_entries(ledger, args.calibration, args.night)
    if args.ledger_digest is not None and certify.ledger_digest(mine) != args.ledger_digest:
        raise ConfigError(f"{path}: the entries of {args.calibration} {args.night} changed after the workflow was "
                          "planned; run snakemake again")
    thr = load_thresholds(args.thresholds)
    obstype = certify.CALIBRATIONS[args.calibration][0]
    frames = []
    for f in args.infiles:
        fr = read_json(f, "qa_frame", "frame QA JSON")
        if int(fr.get("NIGHT", -1)) != args.night or fr.get("OBSTYPE") != obstype:
            raise DataError(f, f"is the frame QA of a {fr.get('OBSTYPE')} of night {fr.get('NIGHT')}, not of a "
                               f"{obstype} of night {args.night} ({args.calibration})")
        frames.append(fr)
    earlier = []
    for f in args.history:
        rec = read_json(f, "certification", "certification record")
        if rec.get("CALIBRATION") != args.calibration or "EXPOSURES" not in rec:
            raise DataError(f, f"is not a certification record of {args.calibration}")
        if int(rec["NIGHT"]) < args.night:
            earlier.append(rec)
    history = history_from_nights(earlier, thr["history"]["nights"])
    rec = certify.certify_night(args.night, args.calibration, frames, thr, history, mine, fraction)
    rec.update({"LEDGER": os.path.abspath(path) if path else None, "THRESHOLDS": os.path.abspath(args.thresholds),
                "THRESHOLDS_VERSION": thresholds_version(args.thresholds),
                "HISTORY_NIGHTS": sorted(int(r["NIGHT"]) for r in earlier)})
    write_json(args.outfile, "certification", rec)
    for d in rec["DECISIONS"]:
        print(f"{d['CALIBRATION']}-{d['CAMERA']}-{d['NIGHT']}: {d['STATUS']} ({d['REASON']})")
    return 0
