# Redshift catalogs (with redshift.enabled) and the production summaries. The catalogs read
# every redrock file of their survey/program (ztile: each tile's latest cumulative files), so a
# new exposure rebuilds them after its tile's and pixels' redrock jobs; the summaries read the
# night QA records, the cframes' fibermaps and the ztile catalogs.


rule ztile:
    input:
        unpack(inputs("ztile")),
    output:
        out("ztile"),
    log:
        logfile("ztile", "{survey}-{program}"),
    benchmark:
        benchfile("ztile", "{survey}-{program}")
    conda:
        CONDA_ENV
    resources:
        mem_mb=lambda wc, input: 1000 + 2 * len(input),
        runtime=15,
    params:
        configfile=CONFIGFILE,
    shell:
        "fiberflow zcatalog --config {params.configfile} --group ztile --survey {wildcards.survey} "
        "--program {wildcards.program} -o {output} {input} > {log} 2>&1"


rule zpix:
    input:
        unpack(inputs("zpix")),
    output:
        out("zpix"),
    log:
        logfile("zpix", "{survey}-{program}"),
    benchmark:
        benchfile("zpix", "{survey}-{program}")
    conda:
        CONDA_ENV
    resources:
        mem_mb=lambda wc, input: 1000 + 2 * len(input),
        runtime=15,
    params:
        configfile=CONFIGFILE,
    shell:
        "fiberflow zcatalog --config {params.configfile} --group zpix --survey {wildcards.survey} "
        "--program {wildcards.program} -o {output} {input} > {log} 2>&1"


rule summary:
    input:
        unpack(inputs("summary")),
    output:
        tiles=out("tiles_summary"),
        tiles_csv=out("tiles_summary_csv"),
        exposures=out("exposures_summary"),
        exposures_csv=out("exposures_summary_csv"),
    log:
        logfile("summary", "{specprod}"),
    benchmark:
        benchfile("summary", "{specprod}")
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        configfile=CONFIGFILE,
    shell:
        "fiberflow summary --config {params.configfile} --qa-night {input.qa_night} "
        "--cframes {input.cframes} --ztile {input.ztile} --tiles-out {output.tiles} "
        "--tiles-csv {output.tiles_csv} --exposures-out {output.exposures} "
        "--exposures-csv {output.exposures_csv} > {log} 2>&1"
