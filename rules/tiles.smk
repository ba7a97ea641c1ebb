# Tile coadds (DESI's tiles/cumulative and tiles/pernight): per tile, night and petal, the
# spectra of every fiber of the petal from every exposure of the tile up to that night
# (cumulative) or of that night alone (pernight), and their coadd. Which exposures feed each
# file is the production plan's (LASTSTEP all); coadds.flavours chooses the flavours.


rule cumulative_spectra:
    input:
        unpack(inputs("cumulative_spectra")),
    output:
        out("spectra_cumulative"),
    log:
        logfile("cumulative_spectra", "{tileid}/{night}/{spectrograph}"),
    benchmark:
        benchfile("cumulative_spectra", "{tileid}/{night}/{spectrograph}")
    conda:
        CONDA_ENV
    resources:
        mem_mb=lambda wc, input: 2000 + 60 * len(input),
        runtime=lambda wc, input: 5 + len(input) // 10,
    params:
        cfg=PLAN.config_hash("cumulative_spectra"),
        configfile=CONFIGFILE,
    shell:
        "fiberflow spectra --config {params.configfile} --tile {wildcards.tileid} --night {wildcards.night} "
        "--spectrograph {wildcards.spectrograph} --group cumulative -o {output} {input} > {log} 2>&1"


rule cumulative_coadd:
    input:
        spectra=out("spectra_cumulative"),
    output:
        out("coadd_cumulative"),
    log:
        logfile("cumulative_coadd", "{tileid}/{night}/{spectrograph}"),
    benchmark:
        benchfile("cumulative_coadd", "{tileid}/{night}/{spectrograph}")
    conda:
        CONDA_ENV
    resources:
        mem_mb=lambda wc: 1500 + config["healpix"]["coadd_max_rows"],
        runtime=15,
    params:
        cfg=PLAN.config_hash("cumulative_coadd"),
        configfile=CONFIGFILE,
    shell:
        "fiberflow coadd --config {params.configfile} -i {input} -o {output} > {log} 2>&1"


rule pernight_spectra:
    input:
        unpack(inputs("pernight_spectra")),
    output:
        out("spectra_pernight"),
    log:
        logfile("pernight_spectra", "{tileid}/{night}/{spectrograph}"),
    benchmark:
        benchfile("pernight_spectra", "{tileid}/{night}/{spectrograph}")
    conda:
        CONDA_ENV
    resources:
        mem_mb=lambda wc, input: 2000 + 60 * len(input),
        runtime=lambda wc, input: 5 + len(input) // 10,
    params:
        cfg=PLAN.config_hash("pernight_spectra"),
        configfile=CONFIGFILE,
    shell:
        "fiberflow spectra --config {params.configfile} --tile {wildcards.tileid} --night {wildcards.night} "
        "--spectrograph {wildcards.spectrograph} --group pernight -o {output} {input} > {log} 2>&1"


rule pernight_coadd:
    input:
        spectra=out("spectra_pernight"),
    output:
        out("coadd_pernight"),
    log:
        logfile("pernight_coadd", "{tileid}/{night}/{spectrograph}"),
    benchmark:
        benchfile("pernight_coadd", "{tileid}/{night}/{spectrograph}")
    conda:
        CONDA_ENV
    resources:
        mem_mb=lambda wc: 1500 + config["healpix"]["coadd_max_rows"],
        runtime=15,
    params:
        cfg=PLAN.config_hash("pernight_coadd"),
        configfile=CONFIGFILE,
    shell:
        "fiberflow coadd --config {params.configfile} -i {input} -o {output} > {log} 2>&1"
