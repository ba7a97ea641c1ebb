# Night-time quick-look rules (Snakefile.quicklook): one job per camera of an exposure
# (preproc, boxcar extraction, sky, QA metrics: `fiberflow quicklook`), then the exposure's
# roll-up (scores, check families, QC1 database, page: `fiberflow quicklook-exposure`).
# The plan is fiberflow.workflow.quicklook; every job reads the exposure's qlcalib record,
# written by the watcher before it runs the exposure.


rule quicklook_camera:
    input:
        unpack(lambda wc: QL.camera_inputs(int(wc.night), int(wc.expid), wc.camera)),
    output:
        json=qlout("ql_qa_frame"),
        png=qlout("ql_qa_frame_png"),
    log:
        QL.log("quicklook", "{night}/{expid}-{camera}"),
    benchmark:
        QL.benchmark("quicklook", "{night}/{expid}-{camera}")
    conda:
        CONDA_ENV
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        configfile=CONFIGFILE,
        fibermap=lambda wc, input: (
            f"--fibermap {input.fibermap}" if "fibermap" in input.keys() else ""
        ),
    shell:
        "fiberflow quicklook --config {params.configfile} --night {wildcards.night} --expid {wildcards.expid} "
        "--camera {wildcards.camera} --calib {input.calib} --raw {input.raw} {params.fibermap} "
        "-o {output.json} --png {output.png} > {log} 2>&1"


rule quicklook_exposure:
    input:
        calib=qlout("ql_calib"),
        frames=lambda wc: QL.exposure_inputs(int(wc.night), int(wc.expid)),
    output:
        json=qlout("ql_qa"),
        html=qlout("ql_html"),
    log:
        QL.log("quicklook_exposure", "{night}/{expid}"),
    benchmark:
        QL.benchmark("quicklook_exposure", "{night}/{expid}")
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        configfile=CONFIGFILE,
    shell:
        "fiberflow quicklook-exposure --config {params.configfile} --night {wildcards.night} "
        "--expid {wildcards.expid} --calib {input.calib} -i {input.frames} -o {output.json} "
        "--html {output.html} > {log} 2>&1"
