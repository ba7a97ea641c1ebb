# PSF and wavelength calibration: a PSF fit per arc camera (starting from the nominal PSF),
# then one nightly PSF per camera (clipped mean of the night's arc PSFs). A night without arcs
# takes the nearest earlier night's psfnight (within calibration.fallback_nights), else the
# default PSF; the header records FALLBACK and IN_PSF.


rule psf:
    input:
        unpack(inputs("psf")),
    output:
        out("fitpsf"),
    log:
        logfile("psf", "{night}/{expid}-{camera}"),
    benchmark:
        benchfile("psf", "{night}/{expid}-{camera}")
    priority: priority("psf")
    conda:
        CONDA_ENV
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        cfg=PLAN.config_hash("psf"),
        configfile=CONFIGFILE,
    shell:
        "fiberflow psf --config {params.configfile} --camera {wildcards.camera} "
        "-i {input.preproc} --start {input.start} -o {output} > {log} 2>&1"


rule psfnight:
    input:
        unpack(inputs("psfnight")),
    output:
        out("psfnight"),
    log:
        logfile("psfnight", "{night}-{camera}"),
    benchmark:
        benchfile("psfnight", "{night}-{camera}")
    priority: priority("psfnight")
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        cfg=PLAN.config_hash("psfnight"),
        configfile=CONFIGFILE,
        opts=options("psfnight"),
    shell:
        "fiberflow psfnight --config {params.configfile} --camera {wildcards.camera} "
        "--night {wildcards.night} {params.opts} -o {output} > {log} 2>&1"


rule traceshift:
    input:
        preproc=out("preproc"),
        psf=out("psfnight"),
    output:
        out("psf"),
    log:
        logfile("traceshift", "{night}/{expid}-{camera}"),
    benchmark:
        benchfile("traceshift", "{night}/{expid}-{camera}")
    priority: priority("traceshift")
    conda:
        CONDA_ENV
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        cfg=PLAN.config_hash("traceshift"),
        configfile=CONFIGFILE,
    shell:
        "fiberflow traceshift --config {params.configfile} --camera {wildcards.camera} "
        "-i {input.preproc} --psf {input.psf} -o {output} > {log} 2>&1"
