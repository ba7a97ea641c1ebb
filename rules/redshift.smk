# Redshifts: DESI's redrock on every coadd (HEALPix pixels and tile petals), with the redrock
# templates shipped with fiberflow (or redshift.templates); only with redshift.enabled. Under a
# Slurm profile with an MPI launcher (set-resources: redrock: {mpi: "srun --mpi=pmi2", tasks: N})
# the targets are spread over N ranks, else redshift.ncpu processes.


rule redrock:
    input:
        coadd=out("coadd"),
    output:
        out("redrock"),
    log:
        logfile("redrock", "{survey}/{program}/{pixgroup}/{pix}"),
    benchmark:
        benchfile("redrock", "{survey}/{program}/{pixgroup}/{pix}")
    conda:
        CONDA_ENV
    threads: config["redshift"]["ncpu"]
    resources:
        mem_mb=4000,
        runtime=60,
        mpi="",
        tasks=1,
    params:
        cfg=PLAN.config_hash("redrock"),
        configfile=CONFIGFILE,
        launch=lambda wc, resources: mpi_launch(resources),
    shell:
        "{params.launch}fiberflow redrock --config {params.configfile} -i {input.coadd} -o {output} "
        "--ncpu {threads} > {log} 2>&1"


rule cumulative_redrock:
    input:
        coadd=out("coadd_cumulative"),
    output:
        out("redrock_cumulative"),
    log:
        logfile("cumulative_redrock", "{tileid}/{night}/{spectrograph}"),
    benchmark:
        benchfile("cumulative_redrock", "{tileid}/{night}/{spectrograph}")
    conda:
        CONDA_ENV
    threads: config["redshift"]["ncpu"]
    resources:
        mem_mb=4000,
        runtime=60,
        mpi="",
        tasks=1,
    params:
        cfg=PLAN.config_hash("cumulative_redrock"),
        configfile=CONFIGFILE,
        launch=lambda wc, resources: mpi_launch(resources),
    shell:
        "{params.launch}fiberflow redrock --config {params.configfile} -i {input.coadd} -o {output} "
        "--ncpu {threads} > {log} 2>&1"


rule pernight_redrock:
    input:
        coadd=out("coadd_pernight"),
    output:
        out("redrock_pernight"),
    log:
        logfile("pernight_redrock", "{tileid}/{night}/{spectrograph}"),
    benchmark:
        benchfile("pernight_redrock", "{tileid}/{night}/{spectrograph}")
    conda:
        CONDA_ENV
    threads: config["redshift"]["ncpu"]
    resources:
        mem_mb=4000,
        runtime=60,
        mpi="",
        tasks=1,
    params:
        cfg=PLAN.config_hash("pernight_redrock"),
        configfile=CONFIGFILE,
        launch=lambda wc, resources: mpi_launch(resources),
    shell:
        "{params.launch}fiberflow redrock --config {params.configfile} -i {input.coadd} -o {output} "
        "--ncpu {threads} > {log} 2>&1"
