# HEALPix stage: tilepix (per science exposure, early), spectra and coadd (per pixel).
# Which cframes feed which pixel comes from the exposures' fibermaps (tilepix maps, see
# fiberflow.workflow.tilepix), known at parse time: no checkpoint, no cframe read to build the DAG.
# Only exposures whose LASTSTEP is `all` go to the healpix stage.


rule tilepix:
    input:
        fibermap=raw_pattern("fibermap"),
    output:
        out("tilepix"),
    log:
        logfile("tilepix", "{night}/{expid}-{tileid}"),
    benchmark:
        benchfile("tilepix", "{night}/{expid}-{tileid}")
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        configfile=CONFIGFILE,
        nside=PLAN.nside,
    shell:
        "fiberflow tilepix --config {params.configfile} --nside {params.nside} --fibermap {input} -o {output} > {log} 2>&1"


rule spectra:
    input:
        unpack(inputs("spectra")),
    output:
        out("spectra"),
    log:
        logfile("spectra", "{survey}/{program}/{pixgroup}/{pix}"),
    benchmark:
        benchfile("spectra", "{survey}/{program}/{pixgroup}/{pix}")
    conda:
        CONDA_ENV
    resources:
        mem_mb=lambda wc, input: 2000 + 60 * len(input),
        runtime=lambda wc, input: 5 + len(input) // 10,
    params:
        cfg=PLAN.config_hash("spectra"),
        configfile=CONFIGFILE,
        nside=PLAN.nside,
    shell:
        "fiberflow spectra --config {params.configfile} --nside {params.nside} --pix {wildcards.pix} "
        "--survey {wildcards.survey} --program {wildcards.program} -o {output} {input} > {log} 2>&1"


rule coadd:
    input:
        spectra=out("spectra"),
    output:
        out("coadd"),
    log:
        logfile("coadd", "{survey}/{program}/{pixgroup}/{pix}"),
    benchmark:
        benchfile("coadd", "{survey}/{program}/{pixgroup}/{pix}")
    conda:
        CONDA_ENV
    resources:
        # targets in chunks of healpix.coadd_max_rows spectra (500: ~0.4 GB on the densest pixel)
        mem_mb=lambda wc: 1500 + config["healpix"]["coadd_max_rows"],
        runtime=15,
    params:
        cfg=PLAN.config_hash("coadd"),
        configfile=CONFIGFILE,
    shell:
        "fiberflow coadd --config {params.configfile} -i {input} -o {output} > {log} 2>&1"
