# Thin adapters of the quick-look workflow (Snakefile.quicklook): the configuration check, the
# quick-look plan (fiberflow.workflow.quicklook) and the output patterns under {prod}/quicklook.

import os
import sys

import fiberflow.paths as ffpaths
from fiberflow.config import anchor_paths, validate_config
from fiberflow.workflow.quicklook import QuickLook


envvars:
    "PATH",


_BINDIR = os.path.dirname(sys.executable)
if os.path.exists(os.path.join(_BINDIR, "fiberflow")):
    os.environ["PATH"] = _BINDIR + os.pathsep + os.environ.get("PATH", "")

validate_config(config, source="config")
CONFIGFILE = os.path.abspath(workflow.configfiles[-1]) if workflow.configfiles else ""
anchor_paths(config, os.path.dirname(CONFIGFILE) if CONFIGFILE else os.getcwd())
QL = QuickLook(config, configfile=CONFIGFILE)
CONDA_ENV = os.path.join(workflow.basedir, "envs", "fiberflow.yaml")


wildcard_constraints:
    **ffpaths.wildcard_constraints(),


def qlout(filetype):
    return ffpaths.wildcard_pattern(filetype, QL.prod)
