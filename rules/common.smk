# Shared workflow helpers: configuration validation, roots, wildcard constraints and
# output patterns, all taken from the library so that no file name is spelled twice.

import fiberflow.paths as ffpaths
from fiberflow.config import resolve_roots, validate_config
from fiberflow.instrument import load_instrument

# validate (and fill defaults of) the configuration; errors name the bad key
validate_config(config, source="config")

ROOTS = resolve_roots(config)
INSTRUMENT = load_instrument(config["instrument"])
CAMERAS = INSTRUMENT.camera_names()


wildcard_constraints:
    **ffpaths.wildcard_constraints(),


def out(filetype):
    """Snakemake output pattern of a production file type (relative to the production root)."""
    return ffpaths.wildcard_pattern(filetype)


def raw_pattern(filetype):
    """Pattern of a raw-data file type under the raw root."""
    return ffpaths.wildcard_pattern(filetype, ROOTS["raw"])
