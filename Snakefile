# fiberflow production workflow: declarations only.
# Science lives in src/fiberflow; each rule calls a `fiberflow <step>` command.
# Which jobs exist and what each reads is the production plan (fiberflow.workflow.plan);
# the stages: exposure tables, preproc, psf/psfnight, traceshift,
# extraction, the calibration chain (fiberflat, sky, stdstars, fluxcalib, cframe),
# then the tile and healpix coadds (tilepix, spectra, coadd) and QA (metrics, scores, pages).

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


# Scheduling: rules of the per-frame chain and the nightly calibrations take their priority
# from the plan (fiberflow.workflow.plan.Plan.priority: calibrations first, then the arcs' and
# flats' frames, then the science frames up to the cframe; coadds, redrock and QA last).
include: "rules/common.smk"
include: "rules/exptable.smk"
include: "rules/preproc.smk"
include: "rules/psf.smk"
include: "rules/extract.smk"
include: "rules/calib.smk"
include: "rules/healpix.smk"
include: "rules/tiles.smk"
include: "rules/redshift.smk"
include: "rules/catalogs.smk"
include: "rules/qa.smk"


if config["simulate"]["rule"]:

    include: "rules/simulate.smk"


rule all:
    default_target: True
    input:
        PLAN.targets(),


rule night:
    input:
        lambda wc: PLAN.targets([int(wc.night)], production=False),
    output:
        touch(out("night_done")),


# one exposure: snakemake $(fiberflow findfile exposure_done --prod PROD --night N --expid E)
rule exposure:
    input:
        lambda wc: PLAN.exposure_targets(int(wc.night), int(wc.expid)),
    output:
        touch(out("exposure_done")),


# one tile over every night of the production, with the HEALPix pixels it feeds
rule tile:
    input:
        lambda wc: PLAN.tile_targets(int(wc.tileid)),
    output:
        touch(out("tile_done")),


rule healpix:
    input:
        step_targets("tilepix", "spectra", "coadd"),


rule tiles:
    input:
        step_targets("cumulative_coadd", "pernight_coadd"),


rule redshifts:
    input:
        step_targets(
            "redrock", "cumulative_redrock", "pernight_redrock", "ztile", "zpix"
        ),


rule catalogs:
    input:
        step_targets("ztile", "zpix", "summary"),


rule qa:
    input:
        step_targets(
            "qa_night", "qa_exposure", "qa_production", "qc_ingest", "qc_health"
        ),
