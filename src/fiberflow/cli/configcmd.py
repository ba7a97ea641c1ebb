"""``fiberflow config FILE``: validate a configuration and print it with defaults filled."""

from __future__ import annotations

import sys


def add_arguments(p, name):
    p.add_argument("configfile", nargs="?", default="config/config.yaml")


def run(args):
    import yaml

    from ..config import load_config
    from ..instrument import load_instrument

    cfg = load_config(args.configfile)
    inst = load_instrument(cfg["instrument"])
    print(yaml.safe_dump(cfg, sort_keys=False), end="")
    print(f"# instrument {inst.name}: {inst.npetal} petal(s) x {len(inst.arms)} cameras, "
          f"{inst.nfiber} fibers per petal, CCD {inst.ccd['ny']}x{inst.ccd['nx']}")
    return 0


def main(argv=None):
    from .main import main as _main

    return _main(["config"] + list(argv or sys.argv[1:]))
