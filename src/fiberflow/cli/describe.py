"""``fiberflow describe PRODUCT``: print a product's datamodel (HDUs, dtypes, units)."""

from __future__ import annotations

import sys

PRODUCTS = {
    "preproc": ("fiberflow.io.image", "PreprocImage"),
    "pixflat": ("fiberflow.io.image", "PixFlat"),
    "frame": ("fiberflow.io.frame", "Frame"),
    "fiberflat": ("fiberflow.io.calib", "FiberFlat"),
    "sky": ("fiberflow.io.calib", "SkyModel"),
    "fluxcalib": ("fiberflow.io.calib", "FluxCalib"),
    "stdstars": ("fiberflow.io.calib", "StdStars"),
    "spectra": ("fiberflow.io.spectra", "Spectra"),
}


def add_arguments(p, name):
    p.add_argument("product", choices=sorted(PRODUCTS) + ["all"])


def run(args):
    import importlib

    names = sorted(PRODUCTS) if args.product == "all" else [args.product]
    for n in names:
        mod, cls = PRODUCTS[n]
        print(getattr(importlib.import_module(mod), cls).describe())
        print()
    return 0


def main(argv=None):
    from .main import main as _main

    return _main(["describe"] + list(argv or sys.argv[1:]))
