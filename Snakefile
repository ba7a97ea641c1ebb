# fiberflow production workflow: declarations only.
# Science lives in src/fiberflow; each rule calls a `fiberflow <step>` command.
# Stages arrive issue by issue: exposure tables, preproc, psf/psfnight, traceshift,
# extraction, the calibration chain (fiberflat, sky, stdstars, fluxcalib, cframe),
# then the healpix stage (tilepix, spectra, coadd) and QA (metrics, scores, pages).

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/exptable.smk"
include: "rules/preproc.smk"
include: "rules/psf.smk"
include: "rules/extract.smk"
include: "rules/calib.smk"
include: "rules/healpix.smk"
include: "rules/qa.smk"


if config["simulate"]["rule"]:

    include: "rules/simulate.smk"


rule all:
    default_target: True
    input:
        exptable_targets(),
        preproc_targets(),
        psf_targets(),
        traceshift_targets(),
        extract_targets(),
        fiberflat_targets(),
        sky_targets(),
        cframe_targets(),
        tilepix_targets(),
        healpix_targets(),
        qa_targets(),


rule night:
    input:
        lambda wc: exptable_targets([int(wc.night)])
        + preproc_targets([int(wc.night)])
        + psf_targets([int(wc.night)])
        + traceshift_targets([int(wc.night)])
        + extract_targets([int(wc.night)])
        + fiberflat_targets([int(wc.night)])
        + sky_targets([int(wc.night)])
        + cframe_targets([int(wc.night)])
        + tilepix_targets([int(wc.night)])
        + healpix_targets([int(wc.night)])
        + qa_targets([int(wc.night)], production=False),
    output:
        touch(out("night_done")),


# one exposure: snakemake $(fiberflow findfile exposure_done --prod PROD --night N --expid E)
rule exposure:
    input:
        lambda wc: exposure_targets(int(wc.night), int(wc.expid)),
    output:
        touch(out("exposure_done")),


# one tile over every night of the production, with the HEALPix pixels it feeds
rule tile:
    input:
        lambda wc: tile_targets(int(wc.tileid)),
    output:
        touch(out("tile_done")),


rule healpix:
    input:
        tilepix_targets(),
        healpix_targets(),


rule qa:
    input:
        qa_targets(),
