"""``fiberflow findfile`` / ``fiberflow parsepath``: the path table from the command line."""

from __future__ import annotations

import json
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
        p.add_argument("--raw", help="raw root (default $DESI_SPECTRO_DATA)")
        p.add_argument("--prod", help="production root (default $DESI_SPECTRO_REDUX/$SPECPROD)")
        p.add_argument("--truth", help="truth root")
        p.add_argument("--relative", action="store_true", help="print the path relative to its root")
    else:
        p.add_argument("paths", nargs="+")
    p.set_defaults(_name=name)


def run(args):
    from .. import paths

    if args._name == "findfile":
        ids = {k: getattr(args, k) for k in ("night", "expid", "camera", "spectrograph", "survey", "program", "pix",
                                          "tileid")}
        ids = {k: v for k, v in ids.items() if v is not None}
        try:
            if args.relative:
                print(paths.relpath(args.filetype, **ids))
            else:
                print(paths.findfile(args.filetype, raw=args.raw, prod=args.prod, truth=args.truth, **ids))
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
