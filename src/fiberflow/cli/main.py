"""``fiberflow`` entry point. Building the parser imports only argparse-level code, so
``fiberflow --help`` compiles nothing and stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import FiberflowError
from . import guard

#: command -> (module, one-line help). Steps add themselves here as they land.
COMMANDS = {
    "findfile": ("fiberflow.cli.findfile", "print the path of one file of the production (DESI names)"),
    "parsepath": ("fiberflow.cli.findfile", "print the file type and identifiers of a path"),
    "describe": ("fiberflow.cli.describe", "print the datamodel of a product"),
    "config": ("fiberflow.cli.configcmd", "validate a configuration file and print it with defaults"),
    "simulate": ("fiberflow.cli.simulate", "simulate a night of raw exposures (DESI layout) with truth files"),
    "biasnight": ("fiberflow.cli.preproc", "nightly master bias of one camera from the night's ZERO exposures"),
    "preproc": ("fiberflow.cli.preproc", "preprocess one camera of a raw exposure (overscan, bias, gain, masks, ivar)"),
    "calibinit": ("fiberflow.cli.calibinit", "write the default calibration files (nominal PSFs) a production starts from"),
    "psf": ("fiberflow.cli.psf", "fit the PSF and wavelength solution of one camera of an arc exposure"),
    "psfnight": ("fiberflow.cli.psf", "nightly PSF of one camera from the night's arc PSFs (or a fallback)"),
    "traceshift": ("fiberflow.cli.psf", "move the nightly PSF onto one camera of a flat or science exposure"),
    "extract": ("fiberflow.cli.extract", "extract the spectra of one camera of a flat or science exposure"),
    "fiberflat": ("fiberflow.cli.fiberflat", "fiberflat of one camera of an extracted flat exposure"),
    "fiberflatnight": ("fiberflow.cli.fiberflat", "nightly fiberflat of one camera (average of the night's flats, or a fallback)"),
    "sky": ("fiberflow.cli.sky", "fiberflat, sky model and sky subtraction of one camera of a science exposure"),
    "stdstars": ("fiberflow.cli.fluxcalib", "fit the standard stars of one spectrograph (its b, r, z sframes)"),
    "fluxcalib": ("fiberflow.cli.fluxcalib", "flux calibration of one camera from the spectrograph's standard stars"),
    "cframe": ("fiberflow.cli.fluxcalib", "apply the flux calibration: the calibrated cframe of one camera"),
    "fluxcalib-average": ("fiberflow.cli.fluxcalib",
                          "average calibration per second of one camera from good fluxcalib files (the fallback "
                          "for too few standards)"),
    "tilepix": ("fiberflow.cli.healpix", "which HEALPix pixels each petal of an exposure covers (from its raw fibermap)"),
    "spectra": ("fiberflow.cli.healpix", "regroup the cframe fibers of one HEALPix pixel into a spectra file"),
    "coadd": ("fiberflow.cli.healpix", "coadd a pixel's spectra: one spectrum per target"),
    "redrock": ("fiberflow.cli.redshift", "redshifts of one coadd (HEALPix pixel or tile petal) with DESI's redrock"),
    "zcatalog": ("fiberflow.cli.zcatalog", "redshift catalog (ztile or zpix) of redrock files, with ZCAT_NSPEC / ZCAT_PRIMARY"),
    "summary": ("fiberflow.cli.zcatalog", "production summaries tiles-/exposures-{specprod} (FITS + CSV)"),
    "validate-redshifts": ("fiberflow.cli.validate",
                           "a simulated production's redshift catalog against the truth (success table, "
                           "pipeline-induced failures)"),
    "tsnr-ensemble": ("fiberflow.cli.tsnr", "build the template signal-to-noise (TSNR2) ensembles from the shipped templates"),
    "tile-qa": ("fiberflow.cli.tileqa", "tile QA of one cumulative tile (FIBERQA, PETALQA, scored anomalies, picture)"),
    "tile-qa-reference": ("fiberflow.cli.tileqa",
                          "n(z) and redshift success of a good production, the reference of the tile QA"),
    "certify": ("fiberflow.cli.certify", "certify a nightly calibration (biasnight, psfnight, fiberflatnight) of a night "
                "from its exposures' frame QA and the ledger"),
    "qc": ("fiberflow.cli.qc", "the QC1 database: ingest QA records, a metric's history, the products held"),
    "nightqa": ("fiberflow.cli.tileqa", "night QA report: every tile QA of a night with its exposures (nightqa-{night}.html)"),
    "plot-spectra": ("fiberflow.cli.inspect", "plot spectra of a coadd or spectra file (by TARGETID, FIBER or "
                     "SPECTYPE) with redrock's model"),
    "plot-frame": ("fiberflow.cli.inspect", "plot some fibers of a frame / sframe / cframe (e.g. the sky fibers)"),
    "plot-focalplane": ("fiberflow.cli.inspect", "median flux in a wavelength window against focal-plane position, "
                        "as residuals, for one exposure"),
    "qa-frame": ("fiberflow.cli.qa", "QA metrics and coversheet of one camera of an exposure"),
    "qa-night": ("fiberflow.cli.qa", "score a night's QA against the thresholds; night page and plots"),
    "qa-exposure": ("fiberflow.cli.qa", "QA page and focal-plane maps of one exposure"),
    "qa-production": ("fiberflow.cli.qa", "production QA table (CSV), index page and trend plots"),
    "quicklook": ("fiberflow.cli.quicklook", "night-time quick-look of one camera of an exposure (preproc, boxcar "
                  "extraction, sky, QA) with the calibrations of its qlcalib record"),
    "quicklook-exposure": ("fiberflow.cli.quicklook", "score an exposure's quick-look, ingest it into the QC1 database "
                           "and write its record and page"),
    "watch": ("fiberflow.cli.watch", "night-time watcher: quick-look of each exposure as its raw files arrive"),
    "serve": ("fiberflow.cli.serve", "live monitor of the night-time quick-look: web pages and a JSON API (127.0.0.1)"),
    "exptable": ("fiberflow.cli.exptable", "write or update a night's exposure table from the raw headers"),
    "status": ("fiberflow.cli.ops", "done / running / ready / waiting / failed jobs per step of a production"),
    "rebuild": ("fiberflow.cli.rebuild", "remake chosen products (PATH ...), optionally from an earlier step; "
                "prints the job count first"),
    "dag": ("fiberflow.cli.ops", "draw the rule graph and one night's job DAG, or one exposure's chain (--expid), as SVG"),
    "workflow": ("fiberflow.cli.workflowcmd", "print where the installed workflow is (Snakefile, profiles)"),
    "demo": ("fiberflow.cli.demo", "simulate the demo night and reduce it end to end under ./demo"),
}


def build_parser(only=None):
    """The command-line parser. With ``only`` (a command name, or "" for none) only that
    command's module is imported and given its arguments; the others are listed by name."""
    parser = argparse.ArgumentParser(prog="fiberflow", description="DESI-like multi-fiber spectroscopic reductions")
    parser.add_argument("--version", action="version", version=f"fiberflow {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (also: FIBERFLOW_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name, (modname, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if only is None or name == only:
            mod = importlib.import_module(modname)
            mod.add_arguments(p, name)
            p.set_defaults(_module=mod)
    return parser


def _command_of(argv):
    """The command named on a command line (the first argument that is not an option), or ""."""
    return next((a for a in argv if not a.startswith("-")), "")


def main(argv=None):
    """Run a command; return the exit code (0 success, 1 data/config error, 2 usage)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=_command_of(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    import os

    debug = args.debug or os.environ.get("FIBERFLOW_DEBUG", "") not in ("", "0")
    try:
        if args.command in guard.NOT_STEPS:
            return int(args._module.run(args) or 0)
        guard.check_outputs(args)
        from ..io.fitsutil import all_or_none

        with all_or_none():
            return int(args._module.run(args) or 0)
    except FiberflowError as exc:
        if debug:
            raise
        print(f"fiberflow {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # permissions, disk full, fitsio I/O status: one line, nothing half written
        if debug:
            raise
        print(f"fiberflow {args.command}: error: {guard.os_error_line(exc)}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - a bug: still one line; --debug shows where
        if debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"fiberflow {args.command}: error: unexpected {type(exc).__name__}: {msg} (a bug: rerun with "
              "`fiberflow --debug ...` or FIBERFLOW_DEBUG=1 for the traceback, and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
