# Calibration chain: fiberflat per flat camera, fiberflatnight per night x camera (average of
# the night's flats; a night without flats takes the nearest earlier night's fiberflatnight
# within calibration.fallback_nights, else calibration.default_fiberflat; the header records
# FALLBACK and IN_FLAT), then per science camera the sky model and the sky-subtracted sframe,
# per science spectrograph the standard-star fits (its b, r, z sframes together), per camera
# the flux calibration (average calibration x EXPTIME when too few standards, flagged) and
# the calibrated cframe.


rule fiberflat:
    input:
        frame=out("frame"),
    output:
        out("fiberflat"),
    log:
        logfile("fiberflat", "{night}/{expid}-{camera}"),
    benchmark:
        benchfile("fiberflat", "{night}/{expid}-{camera}")
    priority: priority("fiberflat")
    conda:
        CONDA_ENV
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        cfg=PLAN.config_hash("fiberflat"),
        configfile=CONFIGFILE,
    shell:
        "fiberflow fiberflat --config {params.configfile} --camera {wildcards.camera} "
        "-i {input} -o {output} > {log} 2>&1"


rule fiberflatnight:
    input:
        unpack(inputs("fiberflatnight")),
    output:
        out("fiberflatnight"),
    log:
        logfile("fiberflatnight", "{night}-{camera}"),
    benchmark:
        benchfile("fiberflatnight", "{night}-{camera}")
    priority: priority("fiberflatnight")
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        cfg=PLAN.config_hash("fiberflatnight"),
        configfile=CONFIGFILE,
        opts=options("fiberflatnight"),
    shell:
        "fiberflow fiberflatnight --config {params.configfile} --camera {wildcards.camera} "
        "--night {wildcards.night} {params.opts} -o {output} > {log} 2>&1"


rule sky:
    input:
        frame=out("frame"),
        fiberflat=out("fiberflatnight"),
    output:
        sky=out("sky"),
        sframe=out("sframe"),
    log:
        logfile("sky", "{night}/{expid}-{camera}"),
    benchmark:
        benchfile("sky", "{night}/{expid}-{camera}")
    priority: priority("sky")
    conda:
        CONDA_ENV
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        cfg=PLAN.config_hash("sky"),
        configfile=CONFIGFILE,
    shell:
        "fiberflow sky --config {params.configfile} --camera {wildcards.camera} -i {input.frame} "
        "--fiberflat {input.fiberflat} -o {output.sky} --sframe {output.sframe} > {log} 2>&1"


rule stdstars:
    input:
        unpack(inputs("stdstars")),
    output:
        out("stdstars"),
    log:
        logfile("stdstars", "{night}/{expid}-{spectrograph}"),
    benchmark:
        benchfile("stdstars", "{night}/{expid}-{spectrograph}")
    priority: priority("stdstars")
    conda:
        CONDA_ENV
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        cfg=PLAN.config_hash("stdstars"),
        configfile=CONFIGFILE,
    shell:
        "fiberflow stdstars --config {params.configfile} --spectrograph {wildcards.spectrograph} "
        "--sframes {input} -o {output} > {log} 2>&1"


rule fluxcalib:
    input:
        unpack(inputs("fluxcalib")),
    output:
        out("fluxcalib"),
    log:
        logfile("fluxcalib", "{night}/{expid}-{camera}"),
    benchmark:
        benchfile("fluxcalib", "{night}/{expid}-{camera}")
    priority: priority("fluxcalib")
    conda:
        CONDA_ENV
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        cfg=PLAN.config_hash("fluxcalib"),
        configfile=CONFIGFILE,
        average=AVERAGE_OPTION,
    shell:
        "fiberflow fluxcalib --config {params.configfile} --camera {wildcards.camera} -i {input.sframe} "
        "--stdstars {input.stdstars} {params.average} -o {output} > {log} 2>&1"


rule cframe:
    input:
        sframe=out("sframe"),
        fluxcalib=out("fluxcalib"),
    output:
        out("cframe"),
    log:
        logfile("cframe", "{night}/{expid}-{camera}"),
    benchmark:
        benchfile("cframe", "{night}/{expid}-{camera}")
    priority: priority("cframe")
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        configfile=CONFIGFILE,
    shell:
        "fiberflow cframe --config {params.configfile} --camera {wildcards.camera} -i {input.sframe} "
        "--fluxcalib {input.fluxcalib} -o {output} > {log} 2>&1"
