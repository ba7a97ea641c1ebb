"""Exposure tables: what was observed on a night, and what operators decided to do with it.

``exposure_tables/{yyyymm}/exposure_table_{night}.csv`` has one row per raw exposure, made
from the raw headers (DESI's columns): EXPID, NIGHT, OBSTYPE, EXPTIME, TILEID, PROGRAM,
SURVEY, MJD-OBS, AIRMASS, CAMWORD (cameras present), LASTSTEP, BADCAMWORD, BADAMPS, COMMENTS.

Operators edit LASTSTEP (``all``, ``skysub``, ``fluxcalib``, ``ignore``), BADCAMWORD (cameras
to drop, DESI camword syntax), BADAMPS (``r0B,z3A``: camera + amplifier) and COMMENTS, in the
CSV or in ``override_{night}.yaml`` (``{expid: {laststep: ignore, badcamword: r0, ...}}``),
which wins. Rebuilding the table after new raw data arrive keeps those edits.

Camwords (DESI): ``a`` + petals for all three arms, then ``b``/``r``/``z`` + petals for single
arms, e.g. ``a0123z5`` = b0..b3, r0..r3, z0..z3 and z5.
"""

from __future__ import annotations

import csv
import functools
import glob
import os
import re

import yaml

from .. import paths, yamlio
from ..errors import ConfigError, DataError, one_line

COLUMNS = ["EXPID", "NIGHT", "OBSTYPE", "EXPTIME", "TILEID", "PROGRAM", "SURVEY", "MJD-OBS", "AIRMASS", "CAMWORD",
           "LASTSTEP", "BADCAMWORD", "BADAMPS", "COMMENTS"]
EDITABLE = ("LASTSTEP", "BADCAMWORD", "BADAMPS", "COMMENTS")
LASTSTEPS = ("all", "skysub", "fluxcalib", "ignore")


# ---------------------------------------------------------------------------- camwords
def parse_camword(word):
    """Camword -> sorted list of cameras (``a01r2`` -> b0 b1 r0 r1 r2 z0 z1)."""
    word = (word or "").strip()
    if not word:
        return []
    if not re.fullmatch(r"([abrz]\d+)+", word):
        raise ConfigError(f"invalid camword {word!r} (expected e.g. a0123 or r0z5)")
    cams = set()
    for arm, digits in re.findall(r"([abrz])(\d+)", word):
        for d in digits:
            for a in ("brz" if arm == "a" else arm):
                cams.add(f"{a}{d}")
    return sorted(cams, key=lambda c: ("brz".index(c[0]), int(c[1:])))


def create_camword(cameras):
    """Cameras -> camword (petals with all three arms grouped under ``a``)."""
    by_petal = {}
    for c in cameras:
        by_petal.setdefault(int(c[1:]), set()).add(c[0])
    full = sorted(p for p, arms in by_petal.items() if arms == {"b", "r", "z"})
    word = ("a" + "".join(str(p) for p in full)) if full else ""
    for arm in "brz":
        rest = sorted(p for p, arms in by_petal.items() if arm in arms and p not in full)
        if rest:
            word += arm + "".join(str(p) for p in rest)
    return word


def parse_badamps(text):
    """``r0B,z3A`` -> {camera: set(amps)}."""
    out = {}
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        m = re.fullmatch(r"([brz]\d)([A-D])", item)
        if not m:
            raise ConfigError(f"invalid BADAMPS entry {item!r} (expected camera + amplifier, e.g. r0B)")
        out.setdefault(m.group(1), set()).add(m.group(2))
    return out


# ---------------------------------------------------------------------------- building
def raw_exposures(raw_root, night):
    """Raw files of a night: {expid: path}, from the file names only (fast)."""
    pattern = os.path.join(raw_root, str(night), "*", "desi-*.fits.fz")
    out = {}
    for path in glob.glob(pattern):
        m = re.search(r"desi-(\d{8})\.fits\.fz$", path)
        if m and os.path.basename(os.path.dirname(path)) == m.group(1):
            out[int(m.group(1))] = path
    return dict(sorted(out.items()))


def row_from_raw(path):
    """Exposure-table row from a raw file's headers."""
    from ..io.raw import raw_cameras, read_raw_header

    hdr = read_raw_header(path)
    for key in ("EXPID", "NIGHT", "OBSTYPE"):
        if key not in hdr:
            raise DataError(path, f"raw header lacks {key}")
    return {
        "EXPID": int(hdr["EXPID"]), "NIGHT": int(hdr["NIGHT"]), "OBSTYPE": str(hdr["OBSTYPE"]).strip().upper(),
        "EXPTIME": float(hdr.get("EXPTIME", 0.0)), "TILEID": int(hdr.get("TILEID", -1)),
        "PROGRAM": str(hdr.get("PROGRAM", "")).strip(), "SURVEY": str(hdr.get("SURVEY", "")).strip(),
        "MJD-OBS": float(hdr.get("MJD-OBS", 0.0)), "AIRMASS": float(hdr.get("AIRMASS", 1.0)),
        "CAMWORD": create_camword(raw_cameras(path)), "LASTSTEP": "all", "BADCAMWORD": "", "BADAMPS": "",
        "COMMENTS": "",
    }


def _normalise(row, where):
    out = {c: row.get(c, "") for c in COLUMNS}
    try:
        out["EXPID"] = int(out["EXPID"])
        out["NIGHT"] = int(out["NIGHT"])
        out["EXPTIME"] = float(out["EXPTIME"] or 0.0)
        out["TILEID"] = int(out["TILEID"] if out["TILEID"] not in ("", None) else -1)
        out["MJD-OBS"] = float(out["MJD-OBS"] or 0.0)
        out["AIRMASS"] = float(out["AIRMASS"] or 1.0)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: bad value in row {row} ({exc})") from exc
    out["OBSTYPE"] = str(out["OBSTYPE"]).strip().upper()
    for c in ("PROGRAM", "SURVEY", "CAMWORD", "BADCAMWORD", "BADAMPS", "COMMENTS"):
        out[c] = "" if out[c] is None else str(out[c]).strip()
    out["LASTSTEP"] = str(out["LASTSTEP"] or "all").strip().lower()
    if out["LASTSTEP"] not in LASTSTEPS:
        raise ConfigError(f"{where}: exposure {out['EXPID']}: LASTSTEP {out['LASTSTEP']!r} not in {LASTSTEPS}")
    parse_camword(out["BADCAMWORD"])
    parse_camword(out["CAMWORD"])
    parse_badamps(out["BADAMPS"])
    return out


def read_table(path):
    """Read an exposure-table CSV -> list of row dicts (validated)."""
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("EXPID", "OBSTYPE") if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(path, f"exposure table lacks column(s) {', '.join(missing)}")
            return [_normalise(r, path) for r in reader]
    except OSError as exc:
        raise DataError(path, f"cannot read exposure table ({exc.strerror})") from exc


def write_table(path, rows):
    """Write rows as CSV atomically (sorted by EXPID)."""
    from ..io.fitsutil import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS)
            w.writeheader()
            for r in sorted(rows, key=lambda r: r["EXPID"]):
                w.writerow(r)
    return path


def read_override(path):
    """Override YAML -> {expid: {COLUMN: value}} (upper-cased editable columns only)."""
    if not path or not os.path.exists(path):
        return {}
    try:
        with open(path) as fh:
            data = yamlio.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({one_line(exc)})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must map expid -> {{laststep, badcamword, badamps, comments}}")
    out = {}
    for expid, edits in data.items():
        if not isinstance(edits, dict):
            raise ConfigError(f"{path}: entry {expid} must be a mapping")
        bad = sorted(k for k in edits if k.upper() not in EDITABLE)
        if bad:
            raise ConfigError(f"{path}: exposure {expid}: unknown key(s) {', '.join(bad)} (editable: "
                              f"{', '.join(e.lower() for e in EDITABLE)})")
        out[int(expid)] = {k.upper(): v for k, v in edits.items()}
    return out


def build_table(raw_root, night, existing=None):
    """Rows for every raw exposure of a night, keeping operator edits of ``existing`` rows."""
    keep = {r["EXPID"]: r for r in (existing or [])}
    rows = []
    for expid, path in raw_exposures(raw_root, night).items():
        try:
            row = row_from_raw(path)
            if (row["NIGHT"], row["EXPID"]) != (int(night), int(expid)):
                # a file of another exposure in this exposure's folder: never reduced as this one
                raise DataError(path, f"raw header says NIGHT {row['NIGHT']} EXPID {row['EXPID']}, its folder "
                                      f"{night}/{expid:08d}")
        except DataError as exc:
            why = exc.problem if exc.problem.startswith("raw header says") else f"unreadable raw header: {exc.problem}"
            row = {"EXPID": expid, "NIGHT": int(night), "OBSTYPE": "UNKNOWN", "EXPTIME": 0.0, "TILEID": -1,
                   "PROGRAM": "", "SURVEY": "", "MJD-OBS": 0.0, "AIRMASS": 1.0, "CAMWORD": "",
                   "LASTSTEP": "ignore", "BADCAMWORD": "", "BADAMPS": "", "COMMENTS": why}
        if expid in keep:
            for c in EDITABLE:
                row[c] = keep[expid][c]
        rows.append(_normalise(row, path))
    return rows


def night_table(raw_root, prod, night):
    """The effective table of a night: the CSV when it exists (edits), new raw exposures added
    from their headers, then the override file applied.

    Returns
    -------
    list of dict rows
    """
    csv_path = paths.findfile("exposure_table", prod=prod, night=night) if prod else None
    existing = read_table(csv_path) if csv_path and os.path.exists(csv_path) else []
    known = {r["EXPID"] for r in existing}
    rows = list(existing)
    new = [e for e in raw_exposures(raw_root, night) if e not in known]
    if new:
        rows += [r for r in build_table(raw_root, night) if r["EXPID"] in new]
    if prod:
        apply_override(rows, read_override(paths.findfile("exposure_override", prod=prod, night=night)))
    return sorted(rows, key=lambda r: r["EXPID"])


def apply_override(rows, override):
    """Apply :func:`read_override` edits to table rows in place (validated)."""
    for r in rows:
        if r["EXPID"] in override:
            for k, v in override[r["EXPID"]].items():
                r[k] = "" if v is None else str(v)
            r.update(_normalise(r, "override"))
    return rows


def flux_calibrated(row):
    """True when a science exposure goes through flux calibration: LASTSTEP ``fluxcalib`` or
    ``all`` (``skysub`` stops at the sky-subtracted sframe; only ``all`` feeds the HEALPix stage)."""
    return row["LASTSTEP"] in ("fluxcalib", "all")


def cameras_of(row, instrument_cameras):
    """Cameras to process for a row: present (CAMWORD) minus BADCAMWORD, within the instrument.
    (Cached on the three columns it reads: the workflow asks once per job when it plans.)"""
    return list(_cameras_of(row["LASTSTEP"], row["CAMWORD"], row["BADCAMWORD"], tuple(instrument_cameras)))


@functools.lru_cache(maxsize=4096)
def _cameras_of(laststep, camword, badcamword, instrument_cameras):
    if laststep == "ignore":
        return ()
    present = set(parse_camword(camword)) if camword else set(instrument_cameras)
    bad = set(parse_camword(badcamword))
    return tuple(c for c in instrument_cameras if c in present and c not in bad)


def nights_with_raw(raw_root):
    """Nights (int) that have a folder of raw data."""
    if not raw_root or not os.path.isdir(raw_root):
        return []
    return sorted(int(n) for n in os.listdir(raw_root) if re.fullmatch(r"\d{8}", n))


def nights_apart(night1, night2):
    """Days between two YYYYMMDD nights (absolute)."""
    from datetime import date

    def d(n):
        n = int(n)
        return date(n // 10000, n // 100 % 100, n % 100)

    return abs((d(night2) - d(night1)).days)
