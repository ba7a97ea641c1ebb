# Extraction: every camera of every flat and science exposure, with the exposure's shifted PSF.


rule extract:
    input:
        preproc=out("preproc"),
        psf=out("psf"),
    output:
        **({"model": out("model")} if config["extract"].get("model") else {}),
        frame=out("frame"),
    log:
        logfile("extract", "{night}/{expid}-{camera}"),
    benchmark:
        benchfile("extract", "{night}/{expid}-{camera}")
    priority: priority("extract")
    conda:
        CONDA_ENV
    threads: config["extract"].get("threads", 2)
    resources:
        mem_mb=4000,
        runtime=30,
        # MPI over bundles when a profile sets a launcher, e.g. profiles/nersc:
        # set-resources: extract: {mpi: "srun --mpi=pmi2", tasks: 4}
        mpi="",
        tasks=1,
    params:
        cfg=PLAN.config_hash("extract"),
        configfile=CONFIGFILE,
        launch=lambda wc, resources: mpi_launch(resources),
        model=MODEL_OPTION,
    shell:
        "{params.launch}fiberflow extract --config {params.configfile} --camera {wildcards.camera} "
        "-i {input.preproc} --psf {input.psf} -o {output.frame} {params.model} --nthreads {threads} > {log} 2>&1"
