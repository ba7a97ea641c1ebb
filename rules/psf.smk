# PSF and wavelength calibration: a PSF fit per arc camera (starting from the nominal PSF),
# then one nightly PSF per camera (clipped mean of the night's arc PSFs). A night without arcs
# takes the nearest earlier night's psfnight (within calibration.fallback_nights), else the
# default PSF; the header records FALLBACK and IN_PSF.


rule psf:
    input:
        preproc=out("preproc"),
        start=lambda wc: default_psf(wc.camera),
    output:
        out("fitpsf"),
    params:
        cfg=section_hash(config, "instrument", "psf"),
        configfile=CONFIGFILE,
    log:
        logfile("psf", "{night}/{expid}-{camera}"),
    benchmark:
        benchfile("psf", "{night}/{expid}-{camera}")
    resources:
        mem_mb=4000,
        runtime=15,
    shell:
        "fiberflow psf --config {params.configfile} --camera {wildcards.camera} "
        "-i {input.preproc} --start {input.start} -o {output} > {log} 2>&1"


def psfnight_inputs(wildcards):
    arcs = [r for r in rows(wildcards.night, ("ARC",)) if wildcards.camera in cameras(r)]
    if arcs:
        return {
            "psfs": [
                find("fitpsf", night=wildcards.night, expid=r["EXPID"], camera=wildcards.camera)
                for r in arcs
            ]
        }
    earlier = fallback_night(wildcards.night, "ARC", wildcards.camera)
    if earlier is not None:
        return {"fallback": find("psfnight", night=earlier, camera=wildcards.camera)}
    return {"fallback": default_psf(wildcards.camera)}


def psfnight_options(wildcards, input):
    if "fallback" in input.keys():
        return f"--fallback {input.fallback}"
    return "-i " + " ".join(input.psfs)


rule psfnight:
    input:
        unpack(psfnight_inputs),
    output:
        out("psfnight"),
    params:
        cfg=section_hash(config, "instrument", "psf"),
        configfile=CONFIGFILE,
        opts=psfnight_options,
    log:
        logfile("psfnight", "{night}-{camera}"),
    benchmark:
        benchfile("psfnight", "{night}-{camera}")
    resources:
        mem_mb=2000,
        runtime=5,
    shell:
        "fiberflow psfnight --config {params.configfile} --camera {wildcards.camera} "
        "--night {wildcards.night} {params.opts} -o {output} > {log} 2>&1"


def psf_targets(nights=None):
    """Nightly PSFs of every camera that some exposure of the night uses (default all nights)."""
    return [
        find("psfnight", night=night, camera=cam)
        for night in nights or NIGHTS
        for cam in night_cameras(night)
    ]


rule traceshift:
    input:
        preproc=out("preproc"),
        psf=lambda wc: find("psfnight", night=wc.night, camera=wc.camera),
    output:
        out("psf"),
    params:
        cfg=section_hash(config, "instrument", "traceshift"),
        configfile=CONFIGFILE,
    log:
        logfile("traceshift", "{night}/{expid}-{camera}"),
    benchmark:
        benchfile("traceshift", "{night}/{expid}-{camera}")
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        "fiberflow traceshift --config {params.configfile} --camera {wildcards.camera} "
        "-i {input.preproc} --psf {input.psf} -o {output} > {log} 2>&1"


def traceshift_targets(nights=None):
    """Shifted PSFs of every camera of every flat and science exposure."""
    targets = []
    for night in nights or NIGHTS:
        for r in rows(night, ("FLAT", "SCIENCE")):
            for cam in cameras(r):
                targets.append(find("psf", night=night, expid=r["EXPID"], camera=cam))
    return targets
