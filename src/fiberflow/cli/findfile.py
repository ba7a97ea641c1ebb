"""``fiberflow findfile`` / ``fiberflow parsepath``: the path table from the command line."""

from __future__ import annotations

import json
import os
import sys


def add_arguments(p, name):
    if name == "findfile":
        from ..paths import filetypes

        p.add_argument("filetype", choices=filetypes())
        p.add_argument("--night", type=int)
        p.add_argument("--expid", type=int)
        p.add_argument("--camera")
        p.add_argument("--spectrograph", type=int)
        p.add_argument("--survey")
        p.add_argument("--program")
        p.add_argument("--pix", type=int)
        p.add_argument("--tileid", type=int)
        p.add_argument("--calibration", choices=["biasnight", "psfnight", "fiberflatnight"],
                       help="the nightly calibration of a certification record")
        p.add_argument("--config", help="a production's configuration: its roots, as the workflow resolves them")
        p.add_argument("--raw", help="raw root (default: the config's, else $DESI_SPECTRO_DATA)")
        p.add_argument("--prod", help="production root (default: the config's, else $DESI_SPECTRO_REDUX/$SPECPROD)")
        p.add_argument("--truth", help="truth root")
        p.add_argument("--relative", action="store_true", help="print the path relative to its root")
    else:
        p.add_argument("paths", nargs="+")
    p.set_defaults(_name=name)


def run(args):
    from .. import paths

    if args._name == "findfile":
        ids = {k: getattr(args, k) for k in ("night", "expid", "camera", "spectrograph", "survey", "program", "pix",
                                          "tileid", "calibration")}
        ids = {k: v for k, v in ids.items() if v is not None}
        raw, prod, truth = args.raw, args.prod, args.truth
        if args.config:
            from ..config import load_config, resolve_roots

            roots = resolve_roots(load_config(args.config), need_prod=False)
            raw, prod, truth = raw or roots["raw"], prod or roots["prod"], truth or roots["truth"]
        # absolute, as the workflow's rule outputs are: the path works as a Snakemake target from anywhere
        raw, prod, truth = (os.path.abspath(r) if r else r for r in (raw, prod, truth))
        try:
            if args.relative:
                print(paths.relpath(args.filetype, **ids))
            else:
                print(paths.findfile(args.filetype, raw=raw, prod=prod, truth=truth, **ids))
        except ValueError as exc:
            print(f"fiberflow findfile: error: {exc}", file=sys.stderr)
            return 1
        return 0
    status = 0
    for path in args.paths:
        try:
            ft, ids = paths.parse_path(path)
            print(json.dumps({"path": path, "filetype": ft, **ids}))
        except ValueError as exc:
            print(f"fiberflow parsepath: error: {exc}", file=sys.stderr)
            status = 1
    return status


def main(argv=None):
    from .main import main as _main

    return _main(["findfile"] + list(argv or sys.argv[1:]))
