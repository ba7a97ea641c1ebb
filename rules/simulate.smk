# Simulated raw data (fiberflow simulate), for demo and validation productions only
# (config simulate.rule: true): one job per planned exposure writes its raw file, its
# fibermap (science) and its truth; the target rule `simulate` asks for every
# exposure of the configured nights. Run `snakemake simulate` first: the exposure tables, and with them the
# reduction's jobs, are read from the raw data when the workflow is parsed.


rule simulate_exposure:
    input:
        unpack(inputs("simulate_exposure")),
    output:
        raw=raw_pattern("raw"),
    log:
        logfile("simulate", "{night}/{expid}"),
    benchmark:
        benchfile("simulate", "{night}/{expid}")
    conda:
        CONDA_ENV
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        configfile=CONFIGFILE,
        cfg=PLAN.config_hash("simulate_exposure"),
    shell:
        "fiberflow simulate --config {params.configfile} --night {wildcards.night} "
        "--expid {wildcards.expid} > {log} 2>&1"


# target: the raw data of every configured night
rule simulate:
    input:
        PLAN.simulate_targets(),
