"""``fiberflow describe PRODUCT|FILE|all``: the datamodel of every file fiberflow writes.

A product with a typed reader/writer (``fiberflow.io``) describes itself (HDUs, dtypes, units);
the others (DESI-format PSFs and redrock files, raw data, JSON/CSV records, pages, pictures,
markers) are described in ``data/datamodel/products.yaml``. Every entry also says where the file
lives (``fiberflow.paths``) and which step writes it. Given an existing FILE, the command
names its file type from its path and lists what the file holds against the datamodel.
"""

from __future__ import annotations

import os
import sys

#: file type -> (module, class) of its typed reader/writer
PRODUCTS = {
    "preproc": ("fiberflow.io.image", "PreprocImage"),
    "ql_preproc": ("fiberflow.io.image", "PreprocImage"),
    "biasnight": ("fiberflow.io.image", "BiasNight"),
    "pixflat": ("fiberflow.io.image", "PixFlat"),
    "model": ("fiberflow.io.image", "ModelImage"),
    "frame": ("fiberflow.io.frame", "Frame"),
    "sframe": ("fiberflow.io.frame", "Frame"),
    "cframe": ("fiberflow.io.frame", "Frame"),
    "ql_frame": ("fiberflow.io.frame", "Frame"),
    "ql_sframe": ("fiberflow.io.frame", "Frame"),
    "fiberflat": ("fiberflow.io.calib", "FiberFlat"),
    "fiberflatnight": ("fiberflow.io.calib", "FiberFlat"),
    "ql_fiberflat": ("fiberflow.io.calib", "FiberFlat"),
    "sky": ("fiberflow.io.calib", "SkyModel"),
    "ql_sky": ("fiberflow.io.calib", "SkyModel"),
    "fluxcalib": ("fiberflow.io.calib", "FluxCalib"),
    "stdstars": ("fiberflow.io.calib", "StdStars"),
    "spectra": ("fiberflow.io.spectra", "Spectra"),
    "coadd": ("fiberflow.io.spectra", "Spectra"),
    "spectra_cumulative": ("fiberflow.io.spectra", "Spectra"),
    "coadd_cumulative": ("fiberflow.io.spectra", "Spectra"),
    "spectra_pernight": ("fiberflow.io.spectra", "Spectra"),
    "coadd_pernight": ("fiberflow.io.spectra", "Spectra"),
    "tile_qa": ("fiberflow.io.tileqa", "TileQA"),
    "tile_qa_reference": ("fiberflow.io.tileqa", "TileQAReference"),
    "tsnr_ensemble": ("fiberflow.io.tsnr", "TsnrEnsemble"),
    "ztile": ("fiberflow.io.zcatalog", "ZCatalog"),
    "zpix": ("fiberflow.io.zcatalog", "ZCatalog"),
    "tiles_summary": ("fiberflow.io.zcatalog", "TilesSummary"),
    "exposures_summary": ("fiberflow.io.zcatalog", "ExposuresSummary"),
    "truth": ("fiberflow.sim.truth", "TruthFrame"),
    "truth_stdstars": ("fiberflow.sim.truth", "TruthStdStars"),
    "truth_targets": ("fiberflow.sim.truth", "TruthTargets"),
}


#: where the products without a path of the production lie
ELSEWHERE = {"pixflat": "{calibration.pixflat}/pixflat-{camera}.fits (configuration)",
             "tile_qa_reference": "shipped with fiberflow (data/reference), or `fiberflow tile-qa-reference -o FILE`",
             "tsnr_ensemble": "shipped with fiberflow (data/reference), or `fiberflow tsnr-ensemble -o FILE`"}


def add_arguments(p, name):
    p.add_argument("product", metavar="PRODUCT|FILE|all",
                   help="a file type (`fiberflow describe all` lists them), or an existing file to describe")


def documented():
    """The datamodel file's entries (dict file type -> entry)."""
    from importlib import resources

    from .. import yamlio

    return yamlio.safe_load((resources.files("fiberflow") / "data" / "datamodel" / "products.yaml").read_text())


def names():
    """Every file type describe knows: those of the path table, plus products without a path."""
    from .. import paths

    return sorted(set(paths.filetypes()) | set(PRODUCTS))


def _writer(filetype):
    from ..workflow.plan import OUTPUTS

    from .main import COMMANDS

    steps = [s for s, fts in OUTPUTS.items() if filetype in fts]
    if steps:
        cmd = steps[0].replace("_", "-")
        return f"written by the {steps[0]} rule" + (f" (`fiberflow {cmd}`)" if cmd in COMMANDS else "")
    if filetype.startswith("ql_"):
        return "written by the night-time quick-look (`fiberflow watch`)"
    if filetype.startswith("truth") or filetype in ("raw", "fibermap"):
        return "raw data and truth: written by `fiberflow simulate` for simulated nights"
    return ""


def _pattern(filetype):
    """Where a file type lives: '{root}/pattern' (expid as 8 digits), or '' when it has no path."""
    from .. import paths

    try:
        root, _tmpl = paths._lookup(filetype)
    except (KeyError, ValueError):
        return ""
    return "{" + {"prod": "prod", "raw": "raw", "truth": "truth"}.get(root, root) + "}/" + paths.wildcard_pattern(filetype)


def expected_hdus(filetype, entry=None):
    """EXTNAMEs the datamodel gives a FITS file type (templated band names kept as {B}_...), or None."""
    if filetype in PRODUCTS:
        import importlib

        mod, cls = PRODUCTS[filetype]
        return [spec.extname for spec in getattr(importlib.import_module(mod), cls).datamodel().values()]
    docs = documented()
    entry = entry or docs.get(filetype) or {}
    if entry.get("same_as"):
        return expected_hdus(entry["same_as"])
    if entry.get("product"):
        return expected_hdus(entry["product"])
    return list(entry["hdus"]) if entry.get("hdus") else None


def describe(filetype):
    """The datamodel of one file type as text."""
    import importlib

    docs = documented()
    head = [f"{filetype}: {_pattern(filetype) or ELSEWHERE.get(filetype, '(no fixed path)')}"]
    who = _writer(filetype)
    if who:
        head.append(who)
    if filetype in PRODUCTS:
        mod, cls = PRODUCTS[filetype]
        return "\n".join(head + ["", getattr(importlib.import_module(mod), cls).describe()])
    entry = docs.get(filetype)
    if entry is None:
        return "\n".join(head + ["(no datamodel: not a fiberflow product)"])
    lines = head + [f"{entry['title']} [{entry['format']}]"]
    target = entry.get("same_as") or entry.get("product")
    if target:
        lines.append(f"same layout as {target}:")
        lines.append(describe(target).split("\n", 1)[1] if target in PRODUCTS or target in docs else target)
        return "\n".join(lines)
    for key in ("hdus", "keys"):
        for name, text in (entry.get(key) or {}).items():
            if isinstance(text, str) and text.startswith("as ") and text[3:] in docs:  # "as fitpsf"
                text = docs[text[3:]]["hdus"].get(name, text)
            lines.append(f"  {name:14s} {text}")
    return "\n".join(lines)


def file_hdus(path):
    """(EXTNAME, what) of every HDU of a FITS file."""
    import fitsio

    out = []
    with fitsio.FITS(path) as fx:
        for h in fx:
            name = h.get_extname() or "PRIMARY"
            if h.get_exttype() == "BINARY_TBL":
                out.append((name, f"table of {h.get_nrows()} rows: {', '.join(h.get_colnames()[:10])}"
                                  + (" ..." if len(h.get_colnames()) > 10 else "")))
            else:
                dims = h.get_dims()
                out.append((name, f"image {tuple(dims)}" if dims else "empty"))
    return out


def compare(filetype, hdus):
    """HDUs of a file the datamodel does not name, and required ones it lacks: (extra, missing)."""
    import re

    expected = expected_hdus(filetype)
    if expected is None:
        return [], []
    pats = [re.compile("^" + re.sub(r"\\\{[A-Z_]+\\\}", "[A-Z0-9]+", re.escape(e)) + "$") for e in expected]
    names_ = [n for n, what in hdus if not (n == "PRIMARY" and what == "empty")]
    extra = [n for n in names_ if not any(p.match(n) for p in pats)]
    required = set()
    if filetype in PRODUCTS:
        import importlib

        mod, cls = PRODUCTS[filetype]
        required = {spec.extname for spec in getattr(importlib.import_module(mod), cls).datamodel().values()
                    if spec.required}
    else:
        required = {e for e in expected if "{" not in e and e != "PRIMARY"}
    missing = [e for e in sorted(required) if "{" not in e and e not in names_]
    return extra, missing


def run(args):
    from .. import paths
    from ..errors import ConfigError

    what = args.product
    if what == "all":
        for n in names():
            print(describe(n))
            print()
        return 0
    if os.path.exists(what) and not os.path.isdir(what):
        try:
            filetype, _ids = paths.parse_path(what)
        except ValueError as exc:
            raise ConfigError(f"{what}: not a file fiberflow writes ({exc})") from None
        print(describe(filetype))
        if what.endswith((".fits", ".fits.fz", ".fits.gz")):
            hdus = file_hdus(what)
            print(f"\nthis file ({os.path.basename(what)}):")
            for name, info in hdus:
                print(f"  {name:14s} {info}")
            extra, missing = compare(filetype, hdus)
            if extra or missing:
                print(f"  against the datamodel: extra {extra or '-'}, missing {missing or '-'}")
        return 0
    if what not in names():
        raise ConfigError(f"describe: {what!r} is neither a file type ({', '.join(names())}) nor an existing file")
    print(describe(what))
    return 0


def main(argv=None):
    from .main import main as _main

    return _main(["describe"] + list(argv or sys.argv[1:]))
