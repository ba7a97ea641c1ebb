# Quality assurance. qa_frame (per exposure x camera) computes the metrics of every product of
# a frame; it does not read the thresholds, so editing config/qa.yaml reruns only certify,
# qa_night, qa_exposure, qa_production and qc_ingest, never a science step (a certification
# that the edit changes only orders psfnight / fiberflatnight: `fiberflow status` flags the
# files made under the other decision). certify scores the frame QA of a night's ZEROs, arcs
# or flats and decides on its nightly calibration before the science uses it. qa_night scores the
# thresholds and the history of earlier nights (dynamic ranges), qa_exposure draws the
# exposure's maps and page, qa_production the production table, trends and index page.


rule qa_frame:
    input:
        unpack(inputs("qa_frame")),
    output:
        json=out("qa_frame"),
        png=out("qa_frame_png"),
        blink=out("qa_frame_blink"),
    log:
        logfile("qa_frame", "{night}/{expid}-{camera}"),
    benchmark:
        benchfile("qa_frame", "{night}/{expid}-{camera}")
    priority: priority("qa_frame")
    conda:
        CONDA_ENV
    resources:
        mem_mb=3000,
        runtime=5,
    params:
        opts=options("qa_frame"),
    shell:
        "fiberflow qa-frame --night {wildcards.night} --expid {wildcards.expid} --camera {wildcards.camera} "
        "{params.opts} -o {output.json} --png {output.png} --blink {output.blink} > {log} 2>&1"


# certification of a nightly calibration (biasnight, psfnight, fiberflatnight) from its exposures'
# frame QA, before psfnight / fiberflatnight use it; the ledger's entries of the night are in the
# options (an edit reruns this job and the calibrations whose decision it changed)
rule certify:
    input:
        unpack(inputs("certify")),
    output:
        out("certification"),
    log:
        logfile("certify", "{night}-{calibration}"),
    benchmark:
        benchfile("certify", "{night}-{calibration}")
    priority: priority("certify")
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        configfile=CONFIGFILE,
        opts=options("certify"),
    shell:
        "fiberflow certify --calibration {wildcards.calibration} --night {wildcards.night} "
        "--config {params.configfile} --thresholds {input.thresholds} -i {input.frames} "
        "--history {input.history} {params.opts} -o {output} > {log} 2>&1"


rule qa_night:
    input:
        unpack(inputs("qa_night")),
    output:
        json=out("qa_night"),
        html=out("qa_night_html"),
        trends=out("qa_night_trends"),
        hist=out("qa_night_hist"),
    log:
        logfile("qa_night", "{night}"),
    benchmark:
        benchfile("qa_night", "{night}")
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        prod=lambda wc, output: prod_of(output[0]),
    shell:
        "fiberflow qa-night --night {wildcards.night} --prod {params.prod} --thresholds {input.thresholds} "
        "-i {input.frames} --history {input.history} --certification {input.certification} "
        "-o {output.json} --html {output.html} "
        "--trends {output.trends} --hist {output.hist} > {log} 2>&1"


rule qa_exposure:
    input:
        unpack(inputs("qa_exposure")),
    output:
        html=out("qa_exposure_html"),
        png=out("qa_exposure_png"),
    log:
        logfile("qa_exposure", "{night}/{expid}"),
    benchmark:
        benchfile("qa_exposure", "{night}/{expid}")
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        prod=lambda wc, output: prod_of(output[0]),
    shell:
        "fiberflow qa-exposure --night {wildcards.night} --expid {wildcards.expid} --prod {params.prod} "
        "--nightqa {input.nightqa} -i {input.frames} -o {output.html} --png {output.png} > {log} 2>&1"


rule qa_production:
    input:
        unpack(inputs("qa_production")),
    output:
        html=PLAN.find("qa_production_html"),
        table=PLAN.find("qa_production_table"),
        trends=PLAN.find("qa_production_trends"),
        hist=PLAN.find("qa_production_hist"),
    log:
        logfile("qa_production", "production"),
    benchmark:
        benchfile("qa_production", "production")
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        prod=lambda wc, output: prod_of(output[0]),
    shell:
        "fiberflow qa-production --prod {params.prod} -i {input.nights} --nightqa {input.nightqa} "
        "-o {output.html} --table {output.table} --trends {output.trends} --hist {output.hist} > {log} 2>&1"


# tile QA of each cumulative tile (with redshift.enabled): FIBERQA / PETALQA / scored anomalies
# against the tile QA reference, and its picture, beside the tile's coadds
rule tile_qa:
    input:
        unpack(inputs("tile_qa")),
    output:
        fits=out("tile_qa"),
        png=out("tile_qa_png"),
    log:
        logfile("tile_qa", "{tileid}/{night}"),
    benchmark:
        benchfile("tile_qa", "{tileid}/{night}")
    conda:
        CONDA_ENV
    resources:
        mem_mb=1500,
        runtime=10,
    params:
        configfile=CONFIGFILE,
        opts=options("tile_qa"),
    shell:
        "fiberflow tile-qa --config {params.configfile} --thresholds {input.thresholds} -i {input.redrock} "
        "--coadd {input.coadd} --history {input.history} {params.opts} -o {output.fits} --png {output.png} "
        "> {log} 2>&1"


# the night QA report: every tile QA of the night with its picture, scores and exposures
rule nightqa:
    input:
        unpack(inputs("nightqa")),
    output:
        out("nightqa_html"),
    log:
        logfile("nightqa", "{night}"),
    benchmark:
        benchfile("nightqa", "{night}")
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        prod=lambda wc, output: prod_of(output[0]),
    shell:
        "fiberflow nightqa --night {wildcards.night} --prod {params.prod} --qa-night {input.qa_night} "
        "--tile-qa {input.tile_qa} -o {output} > {log} 2>&1"


# the night's QC1 parameters (night QA record, tile QAs) into the QC1 database; the output is a receipt
rule qc_ingest:
    input:
        unpack(inputs("qc_ingest")),
    output:
        out("qc_ingest"),
    log:
        logfile("qc_ingest", "{night}"),
    benchmark:
        benchfile("qc_ingest", "{night}")
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        configfile=CONFIGFILE,
    shell:
        "fiberflow qc ingest --config {params.configfile} --receipt {output} {input.qa_night} {input.tile_qa} "
        "{input.certification} "
        "> {log} 2>&1"


# the health check: every QC1 parameter of the production's last night against its history in
# the database (breakpoints cut it), with a trend plot per parameter under qa/health/trends/
rule qc_health:
    input:
        unpack(inputs("qc_health")),
    output:
        html=out("qc_health_html"),
        table=out("qc_health_table"),
    log:
        logfile("qc_health", "production"),
    benchmark:
        benchfile("qc_health", "production")
    conda:
        CONDA_ENV
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        configfile=CONFIGFILE,
    shell:
        "fiberflow qc health --config {params.configfile} --thresholds {input.thresholds} "
        "--receipts {input.receipts} -o {output.table} --html {output.html} > {log} 2>&1"
