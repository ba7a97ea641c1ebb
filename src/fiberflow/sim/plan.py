"""Observing plans: which exposures a simulated night has.

A plan is YAML (or a dict)::

    night: 20250101          # YYYYMMDD
    first_expid: 1000        # optional; default derived from the night
    exposures:
      - {obstype: ZERO, count: 3}
      - {obstype: DARK, exptime: 300}
      - {obstype: ARC, exptime: 5}
      - {obstype: FLAT, exptime: 120}
      - {obstype: SCIENCE, tileid: 1001, exptime: 900, airmass: 1.1, seeing: 1.1, skylevel: 1.0}
      - {obstype: SCIENCE, tileid: 1001, exptime: 900, faults: {broken_fibers: [7]}}

``cosmics: false`` switches cosmic rays off for an exposure (validation runs).

Faults (per exposure, all off by default): ``dead_amp: {camera: r0, amp: B}``,
``noisy_amp: {camera: ..., amp: ...}``, ``broken_fibers: [fiber, ...]``,
``sky_contamination: [fiber, ...]`` (a bright star added to those sky fibers),
``bad_flat_lamp: true`` (flat illumination with a 10% gradient across the petal),
``few_stdstars: N`` (only N standards flagged in the fibermap),
``scattered_light: {camera: r0, x: mm, y: mm, radius: mm, wave: A, sigma: A, level: L}`` (a
localized glow, e.g. a red LED: fibers within about 3 ``radius`` of focal-plane position
(x, y), sky fibers included, receive extra light of Gaussian spectral shape centred at ``wave``,
``level`` times the camera's median sky per sample at the centre, falling off as a Gaussian of
``radius`` with the distance; defaults radius 60 mm, wave 6600, sigma 60, level 1).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import yaml

from .. import yamlio
from ..errors import ConfigError, one_line

OBSTYPES = ("ZERO", "DARK", "ARC", "FLAT", "SCIENCE")
DEFAULT_EXPTIME = {"ZERO": 0.0, "DARK": 300.0, "ARC": 5.0, "FLAT": 120.0, "SCIENCE": 900.0}
FAULT_KEYS = ("dead_amp", "noisy_amp", "broken_fibers", "sky_contamination", "bad_flat_lamp", "few_stdstars",
              "scattered_light")
#: keys of the scattered_light fault (see the module documentation)
SCATTERED_LIGHT_KEYS = {"camera": str, "x": float, "y": float, "radius": float, "wave": float, "sigma": float,
                        "level": float}
EXPOSURE_KEYS = ("obstype", "count", "exptime", "tileid", "program", "survey", "airmass", "seeing", "skylevel",
                 "transparency", "cosmics", "faults")
#: seconds between exposures (readout + overheads)
OVERHEAD_S = 120.0


@dataclass
class ExposureSpec:
    """One planned exposure."""

    expid: int
    obstype: str
    exptime: float
    mjd: float
    tileid: int = -1
    program: str = ""
    survey: str = ""
    airmass: float = 1.0
    seeing: float = 1.1
    skylevel: float = 1.0
    transparency: float = 1.0
    cosmics: bool = True
    faults: dict = field(default_factory=dict)

    @property
    def flavor(self):
        return self.obstype.lower()


@dataclass
class Plan:
    night: int
    exposures: list

    def expids(self):
        return [e.expid for e in self.exposures]

    def exposure(self, expid):
        for e in self.exposures:
            if e.expid == int(expid):
                return e
        raise ConfigError(f"plan of night {self.night} has no exposure {expid} (has {self.expids()})")


def night_date(night):
    """datetime.date of a YYYYMMDD night; ConfigError when invalid."""
    try:
        return datetime.datetime.strptime(str(int(night)), "%Y%m%d").date()
    except ValueError as exc:
        raise ConfigError(f"night {night!r} is not a valid YYYYMMDD date") from exc


def default_first_expid(night):
    """100 exposure ids per night counted from 2020-01-01 (unique across nights)."""
    return 100 * ((night_date(night) - datetime.date(2020, 1, 1)).days + 1)


def night_start_mjd(night):
    """MJD of 19:00 MST (02:00 UTC next day) on the evening of ``night``."""
    d = night_date(night)
    mjd0 = (datetime.date(d.year, d.month, d.day) - datetime.date(1858, 11, 17)).days
    return mjd0 + 1 + 2.0 / 24.0


def default_plan(night, nzero=2, dark=True, ntile=2, repeats=2, nflat=1, flat_exptime=120.0):
    """The demo night: zeros, a dark, an arc, ``nflat`` flats of ``flat_exptime`` seconds, then
    science on ``ntile`` tiles, the first observed ``repeats`` times (so coadds have several
    inputs)."""
    exps = [{"obstype": "ZERO", "count": nzero}]
    if dark:
        exps.append({"obstype": "DARK", "exptime": 300.0})
    exps += [{"obstype": "ARC", "exptime": 5.0}, {"obstype": "FLAT", "exptime": float(flat_exptime), "count": int(nflat)}]
    base_tile = 1000 + (night_date(night).toordinal() % 900)
    for t in range(ntile):
        for r in range(repeats if t == 0 else 1):
            exps.append({"obstype": "SCIENCE", "tileid": base_tile + t, "exptime": 900.0,
                         "airmass": round(1.05 + 0.1 * t + 0.03 * r, 3), "seeing": round(1.0 + 0.15 * r, 3),
                         "skylevel": 1.0 + 0.1 * t})
    return {"night": int(night), "exposures": exps}


def parse_plan(data, where="plan"):
    """Validate a plan mapping and expand it into :class:`Plan`.

    Raises
    ------
    ConfigError
        Naming the offending exposure and key.
    """
    if not isinstance(data, dict) or "night" not in data or "exposures" not in data:
        raise ConfigError(f"{where}: a plan needs 'night' and 'exposures'")
    night = int(data["night"])
    night_date(night)
    expid = int(data.get("first_expid", default_first_expid(night)))
    mjd = night_start_mjd(night)
    out = []
    for i, item in enumerate(data["exposures"]):
        here = f"{where}: exposures[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{here}: must be a mapping")
        unknown = sorted(set(item) - set(EXPOSURE_KEYS))
        if unknown:
            raise ConfigError(f"{here}: unknown key(s) {', '.join(unknown)}")
        obstype = str(item.get("obstype", "")).upper()
        if obstype not in OBSTYPES:
            raise ConfigError(f"{here}: obstype must be one of {', '.join(OBSTYPES)}, got {item.get('obstype')!r}")
        faults = dict(item.get("faults") or {})
        bad = sorted(set(faults) - set(FAULT_KEYS))
        if bad:
            raise ConfigError(f"{here}: unknown fault(s) {', '.join(bad)} (known: {', '.join(FAULT_KEYS)})")
        if "scattered_light" in faults:
            sl = faults["scattered_light"]
            if not isinstance(sl, dict) or not {"camera", "x", "y"} <= set(sl) or set(sl) - set(SCATTERED_LIGHT_KEYS):
                raise ConfigError(f"{here}: scattered_light needs camera, x, y (and optionally radius, wave, sigma, "
                                  f"level), not {sl!r}")
            try:
                faults["scattered_light"] = {k: SCATTERED_LIGHT_KEYS[k](v) for k, v in sl.items()}
            except (TypeError, ValueError):
                raise ConfigError(f"{here}: scattered_light values must be numbers (camera a name): {sl!r}") from None
        exptime = float(item.get("exptime", DEFAULT_EXPTIME[obstype]))
        if exptime < 0 or (obstype != "ZERO" and exptime <= 0):
            raise ConfigError(f"{here}: exptime must be positive")
        if obstype == "SCIENCE" and "tileid" not in item:
            raise ConfigError(f"{here}: a SCIENCE exposure needs a tileid")
        for _ in range(int(item.get("count", 1))):
            out.append(ExposureSpec(
                expid=expid, obstype=obstype, exptime=exptime, mjd=mjd,
                tileid=int(item.get("tileid", -1)),
                program=str(item.get("program", "dark" if obstype == "SCIENCE" else f"calib {obstype.lower()}")),
                survey=str(item.get("survey", "main" if obstype == "SCIENCE" else "")),
                airmass=float(item.get("airmass", 1.0 if obstype != "SCIENCE" else 1.1)),
                seeing=float(item.get("seeing", 1.1)), skylevel=float(item.get("skylevel", 1.0)),
                transparency=float(item.get("transparency", 1.0)), cosmics=bool(item.get("cosmics", True)),
                faults=faults,
            ))
            expid += 1
            mjd += (exptime + OVERHEAD_S) / 86400.0
    return Plan(night, out)


def load_plan(path):
    """Read and validate a plan YAML file."""
    try:
        with open(path) as fh:
            data = yamlio.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read plan ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({one_line(exc)})") from exc
    return parse_plan(data, where=str(path))
