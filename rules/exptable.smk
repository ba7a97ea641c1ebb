# Exposure tables: written once per night from the raw headers (the DAG itself is built from
# the raw headers + any operator edits at parse time, see common.smk). `fiberflow exptable`
# refreshes an existing table by hand, keeping edits.


rule exposure_table:
    output:
        out("exposure_table"),
    params:
        configfile=CONFIGFILE,
    log:
        logfile("exposure_table", "{night}-{yyyymm}"),
    benchmark:
        benchfile("exposure_table", "{night}-{yyyymm}")
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "fiberflow exptable --config {params.configfile} --night {wildcards.night} -o {output} > {log} 2>&1"


def exptable_targets(nights=None):
    return [find("exposure_table", night=n) for n in (nights or NIGHTS)]
