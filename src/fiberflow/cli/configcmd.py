"""``fiberflow config FILE``: validate a configuration and print it with defaults filled.

``fiberflow config check FILE [--profile DIR]``: what a production made from it would meet
before it runs: folders that do not exist, nights without exposures, missing starting
calibrations, placeholder Slurm settings in a profile. One line per finding (``ERROR``: the
workflow cannot run as configured; ``WARNING``: it would run, probably not as meant); exit 1
when there is an error or a warning.
"""

from __future__ import annotations

import os
import re
import sys


def add_arguments(p, name):
    p.add_argument("words", nargs="*", metavar="[check] FILE",
                   help="the configuration file (default config/config.yaml); `check FILE` checks a production's "
                        "folders, nights and calibrations too")
    p.add_argument("--profile", default=None, help="with check: a Snakemake profile folder to check for placeholders")


#: values that mark an unedited placeholder in a shipped profile
PLACEHOLDER = re.compile(r"^<.*>$|^(your|change)[-_ ]?|^x+$|^todo$", re.I)


def run(args):
    words = list(args.words)
    if words and words[0] == "check":
        path = words[1] if len(words) > 1 else "config/config.yaml"
        return _check(path, args.profile)
    import yaml

    from ..config import load_config
    from ..instrument import load_instrument

    cfg = load_config(words[0] if words else "config/config.yaml")
    inst = load_instrument(cfg["instrument"])
    print(yaml.safe_dump(cfg, sort_keys=False), end="")
    print(f"# instrument {inst.name}: {inst.npetal} petal(s) x {len(inst.arms)} cameras, "
          f"{inst.nfiber} fibers per petal, CCD {inst.ccd['ny']}x{inst.ccd['nx']}")
    return 0


def check_config(path, profile=None):
    """Findings about a production configuration: list of (level, message), level ERROR or WARNING.

    Raises
    ------
    ConfigError
        The file is not a valid configuration (the message names the key).
    """
    from ..config import load_config, resolve_roots
    from ..instrument import load_instrument
    from ..workflow.exptable import nights_with_raw, raw_exposures

    cfg = load_config(path)
    found = []
    inst = load_instrument(cfg["instrument"])
    roots = resolve_roots(cfg)
    raw = roots["raw"]
    if not os.path.isdir(raw):
        found.append(("ERROR", f"raw: {raw} does not exist (set raw: in {path}, or $DESI_SPECTRO_DATA)"))
    else:
        nights = [int(n) for n in cfg["nights"]] or nights_with_raw(raw)
        if not nights:
            found.append(("ERROR", f"raw: {raw} holds no night folder (YYYYMMDD): the production would have 0 nights"))
        for night in nights:
            n = len(raw_exposures(raw, night))
            if n == 0:
                found.append(("WARNING", f"night {night}: no exposure under {os.path.join(raw, str(night))} "
                                          f"(desi-EXPID.fits.fz in EXPID folders)"))
    redux = roots["redux"]
    if not os.path.isdir(redux):
        parent = os.path.dirname(redux)
        level = "WARNING" if os.path.isdir(parent) else "ERROR"
        found.append((level, f"redux: {redux} does not exist" + (" (the first run creates it)" if level == "WARNING"
                                                                 else f", nor its parent {parent}")))
    cal = cfg["calibration"]
    for key in ("default_psf", "default_fiberflat", "default_fluxcalib", "pixflat"):
        folder = cal.get(key)
        if folder and not os.path.isdir(folder):
            found.append(("ERROR", f"calibration.{key}: {folder} does not exist"))
    if not cal.get("default_psf"):
        found.append(("WARNING", "calibration.default_psf is not set: nights without a usable arc cannot be reduced "
                                 "(write the nominal PSFs with `fiberflow calibinit --config " + path + "`)"))
    elif os.path.isdir(cal["default_psf"]):
        miss = [c for c in inst.camera_names() if not os.path.exists(os.path.join(cal["default_psf"], f"psf-{c}.fits"))]
        if miss:
            found.append(("ERROR", f"calibration.default_psf: {cal['default_psf']} lacks psf-{{camera}}.fits of "
                                   f"{len(miss)} camera(s) ({', '.join(miss[:6])}{' ...' if len(miss) > 6 else ''}); "
                                   f"`fiberflow calibinit --config {path}` writes them"))
    if cfg.get("truth") and not os.path.isdir(roots["truth"] or ""):
        found.append(("WARNING", f"truth: {roots['truth']} does not exist (only simulated productions have one)"))
    if profile:
        found += check_profile(profile)
    return found


def check_profile(folder):
    """Placeholder or empty Slurm settings in a Snakemake profile's config.yaml."""
    import yaml

    path = os.path.join(folder, "config.yaml")
    if not os.path.exists(path):
        return [("ERROR", f"{folder}: not a Snakemake profile (no config.yaml)")]
    with open(path) as fh:
        prof = yaml.safe_load(fh) or {}
    found = []

    def visit(obj, where):
        if isinstance(obj, dict):
            for k, v in obj.items():
                visit(v, f"{where}.{k}" if where else str(k))
        elif isinstance(obj, list):
            for v in obj:
                visit(v, where)
        elif isinstance(obj, str) and PLACEHOLDER.search(obj.strip()):
            found.append(("ERROR", f"{path}: {where}: {obj!r} is a placeholder; set your site's value"))

    visit(prof, "")
    return found


def _check(path, profile):
    found = check_config(path, profile)
    for level, msg in found:
        print(f"{level}: {msg}")
    if not found:
        print(f"{path}: OK (folders exist, every night has exposures, starting calibrations present"
              + (", profile has no placeholder" if profile else "") + ")")
    return 1 if found else 0


def main(argv=None):
    from .main import main as _main

    return _main(["config"] + list(argv or sys.argv[1:]))
