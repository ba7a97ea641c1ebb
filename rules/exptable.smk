# Exposure tables: written once per night from the raw headers (the DAG itself is built from
# the raw headers + any operator edits at parse time, by fiberflow.workflow.plan). `fiberflow exptable`
# refreshes an existing table by hand, keeping edits.


rule exposure_table:
    output:
        out("exposure_table"),
    log:
        logfile("exposure_table", "{night}-{yyyymm}"),
    benchmark:
        benchfile("exposure_table", "{night}-{yyyymm}")
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        configfile=CONFIGFILE,
    shell:
        "fiberflow exptable --config {params.configfile} --night {wildcards.night} -o {output} > {log} 2>&1"
