# Extraction: every camera of every flat and science exposure, with the exposure's shifted PSF.


rule extract:
    input:
        preproc=out("preproc"),
        psf=out("psf"),
    output:
        frame=out("frame"),
        **({"model": out("model")} if config["extract"].get("model") else {}),
    params:
        cfg=section_hash(config, "instrument", "extract"),
        configfile=CONFIGFILE,
        model=lambda wc, output: f"--model {output.model}" if "model" in output.keys() else "",
        launch=lambda wc, resources: mpi_launch(resources),
    log:
        logfile("extract", "{night}/{expid}-{camera}"),
    benchmark:
        benchfile("extract", "{night}/{expid}-{camera}")
    threads: config["extract"].get("threads", 2)
    resources:
        mem_mb=4000,
        runtime=30,
        # MPI over bundles when a profile sets a launcher, e.g. profiles/nersc:
        # set-resources: extract: {mpi: "srun --mpi=pmi2", tasks: 4}
        mpi="",
        tasks=1,
    shell:
        "{params.launch}fiberflow extract --config {params.configfile} --camera {wildcards.camera} "
        "-i {input.preproc} --psf {input.psf} -o {output.frame} {params.model} --nthreads {threads} > {log} 2>&1"


def extract_targets(nights=None):
    """Frames of every camera of every flat and science exposure."""
    targets = []
    for night in nights or NIGHTS:
        for r in rows(night, ("FLAT", "SCIENCE")):
            for cam in cameras(r):
                targets.append(find("frame", night=night, expid=r["EXPID"], camera=cam))
    return targets
