# fiberflow production workflow: declarations only.
# Science lives in src/fiberflow; each rule calls a `fiberflow <step>` command.
# Rules arrive stage by stage (issues 4-9): preproc, arcs, flats, science, healpix, qa, simulate.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
