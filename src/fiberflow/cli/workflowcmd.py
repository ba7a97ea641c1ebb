"""``fiberflow workflow``: where the installed workflow is (its Snakefile, rules and profiles).

For a production outside the source tree, e.g.
``snakemake -s $(fiberflow workflow --snakefile) --profile $(fiberflow workflow --profile local) --configfile prod.yaml``.
"""

from __future__ import annotations

import os

from ..errors import ConfigError


def add_arguments(p, name):
    g = p.add_mutually_exclusive_group()
    g.add_argument("--snakefile", action="store_true", help="print the Snakefile's path")
    g.add_argument("--profile", default=None, metavar="NAME",
                   help="print the folder of a shipped Snakemake profile (local, slurm, nersc, testslurm)")


def run(args):
    from ..reference import workflow_dir

    root = workflow_dir()
    if args.snakefile:
        print(os.path.join(root, "Snakefile"))
    elif args.profile:
        path = os.path.join(root, "profiles", args.profile)
        if not os.path.isdir(path):
            names = sorted(os.listdir(os.path.join(root, "profiles")))
            raise ConfigError(f"{path}: no such profile (shipped: {', '.join(names)})")
        print(path)
    else:
        print(root)
    return 0


def main(argv=None):
    import sys

    from .main import main as _main

    return _main(["workflow"] + list(argv if argv is not None else sys.argv[1:]))
