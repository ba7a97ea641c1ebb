# HEALPix stage: tilepix (per science exposure, early), spectra and coadd (per pixel).
# Which cframes feed which pixel comes from the exposures' fibermaps (tilepix maps, see
# fiberflow.healpixmap), known at parse time: no checkpoint, no cframe read to build the DAG.
# Only exposures whose LASTSTEP is `all` go to the healpix stage.

import fiberflow.healpixmap as ffhpx

NSIDE = int(config["healpix"]["nside"])
_HPX = {}


def healpix_exposures(nights=None):
    """Science exposures that feed the healpix stage: a tile, LASTSTEP all, some camera."""
    return [
        (night, r)
        for night in nights or NIGHTS
        for r in rows(night, ("SCIENCE",))
        if r["LASTSTEP"] == "all" and int(r["TILEID"]) >= 0 and cameras(r)
    ]


def pixel_groups(nights=None):
    """(survey, program, pix) -> [(night, expid, petal)], from the tilepix maps (cached)."""
    key = tuple(sorted(nights or NIGHTS))
    if key not in _HPX:
        exposures = [
            {
                "NIGHT": night,
                "EXPID": r["EXPID"],
                "SURVEY": r["SURVEY"],
                "PROGRAM": r["PROGRAM"],
                "petals": {int(c[1:]) for c in cameras(r)},
                "fibermap": find("fibermap", night=night, expid=r["EXPID"]),
                "tilepix": find("tilepix", night=night, expid=r["EXPID"], tileid=r["TILEID"]),
            }
            for night, r in healpix_exposures(list(key))
        ]
        _HPX[key] = ffhpx.pixel_groups(
            exposures, NSIDE, config["healpix"]["survey"], config["healpix"]["program"]
        )
    return _HPX[key]


def spectra_inputs(wildcards):
    """Every cframe of every (exposure, petal) whose fibers touch the pixel."""
    feeds = pixel_groups().get((wildcards.survey, wildcards.program, int(wildcards.pix)))
    if not feeds:
        raise ValueError(
            f"no science exposure of the production has fibers in {wildcards.survey}/"
            f"{wildcards.program} nside-{NSIDE} pixel {wildcards.pix}"
        )
    out = []
    for night, expid, petal in feeds:
        r = row(night, expid)
        out += [
            find("cframe", night=night, expid=expid, camera=cam)
            for cam in cameras(r)
            if int(cam[1:]) == petal
        ]
    return out


rule tilepix:
    input:
        raw_pattern("fibermap"),
    output:
        out("tilepix"),
    params:
        configfile=CONFIGFILE,
        nside=NSIDE,
    log:
        logfile("tilepix", "{night}/{expid}-{tileid}"),
    benchmark:
        benchfile("tilepix", "{night}/{expid}-{tileid}")
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "fiberflow tilepix --config {params.configfile} --nside {params.nside} --fibermap {input} -o {output} > {log} 2>&1"


rule spectra:
    input:
        spectra_inputs,
    output:
        out("spectra"),
    params:
        cfg=section_hash(config, "instrument"),
        configfile=CONFIGFILE,
        nside=NSIDE,
    log:
        logfile("spectra", "{survey}/{program}/{pixgroup}/{pix}"),
    benchmark:
        benchfile("spectra", "{survey}/{program}/{pixgroup}/{pix}")
    resources:
        mem_mb=lambda wc, input: 2000 + 60 * len(input),
        runtime=lambda wc, input: 5 + len(input) // 10,
    shell:
        "fiberflow spectra --config {params.configfile} --nside {params.nside} --pix {wildcards.pix} "
        "--survey {wildcards.survey} --program {wildcards.program} -o {output} {input} > {log} 2>&1"


rule coadd:
    input:
        out("spectra"),
    output:
        out("coadd"),
    params:
        cfg=section_hash(config, "healpix"),
        configfile=CONFIGFILE,
    log:
        logfile("coadd", "{survey}/{program}/{pixgroup}/{pix}"),
    benchmark:
        benchfile("coadd", "{survey}/{program}/{pixgroup}/{pix}")
    resources:
        mem_mb=lambda wc, input: 2000 + 3 * int(os.path.getsize(input[0]) / 1e6) if os.path.exists(input[0]) else 4000,
        runtime=15,
    shell:
        "fiberflow coadd --config {params.configfile} -i {input} -o {output} > {log} 2>&1"


def tilepix_targets(nights=None):
    """The tilepix map of every science exposure that feeds the healpix stage."""
    return [
        find("tilepix", night=night, expid=r["EXPID"], tileid=r["TILEID"])
        for night, r in healpix_exposures(nights)
    ]


def healpix_targets(nights=None):
    """Spectra and coadd of every pixel touched by the given nights (default: all).
    A pixel's files always gather every night of the production."""
    touched = set(pixel_groups(nights))
    return [
        find(kind, survey=s, program=p, pix=pix)
        for (s, p, pix) in sorted(touched)
        for kind in ("spectra", "coadd")
    ]
