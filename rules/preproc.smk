# CCD preprocessing: nightly master bias from ZEROs, then preproc of every camera of every
# ARC, FLAT and SCIENCE exposure (ZERO and DARK exposures only feed calibrations).


rule biasnight:
    input:
        unpack(inputs("biasnight")),
    output:
        out("biasnight"),
    log:
        logfile("biasnight", "{night}-{camera}"),
    benchmark:
        benchfile("biasnight", "{night}-{camera}")
    priority: priority("biasnight")
    conda:
        CONDA_ENV
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        cfg=PLAN.config_hash("biasnight"),
        configfile=CONFIGFILE,
    shell:
        "fiberflow biasnight --config {params.configfile} --camera {wildcards.camera} "
        "-i {input} -o {output} > {log} 2>&1"


rule preproc:
    input:
        unpack(inputs("preproc")),
    output:
        out("preproc"),
    log:
        logfile("preproc", "{night}/{expid}-{camera}"),
    benchmark:
        benchfile("preproc", "{night}/{expid}-{camera}")
    priority: priority("preproc")
    conda:
        CONDA_ENV
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        cfg=PLAN.config_hash("preproc"),
        configfile=CONFIGFILE,
        opts=options("preproc"),
    shell:
        "fiberflow preproc --config {params.configfile} --camera {wildcards.camera} "
        "-i {input.raw} {params.opts} -o {output} > {log} 2>&1"
