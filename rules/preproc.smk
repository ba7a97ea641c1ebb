# CCD preprocessing: nightly master bias from ZEROs, then preproc of every camera of every
# ARC, FLAT and SCIENCE exposure (ZERO and DARK exposures only feed calibrations).


def biasnight_inputs(wildcards):
    return [find("raw", night=r["NIGHT"], expid=r["EXPID"]) for r in zeros_of(wildcards.night, wildcards.camera)]


rule biasnight:
    input:
        biasnight_inputs,
    output:
        out("biasnight"),
    params:
        cfg=section_hash(config, "instrument", "preproc"),
        configfile=CONFIGFILE,
    log:
        logfile("biasnight", "{night}-{camera}"),
    benchmark:
        benchfile("biasnight", "{night}-{camera}")
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        "fiberflow biasnight --config {params.configfile} --camera {wildcards.camera} "
        "-i {input} -o {output} > {log} 2>&1"


def preproc_inputs(wildcards):
    night = int(wildcards.night)
    files = {"raw": find("raw", night=night, expid=int(wildcards.expid))}
    if zeros_of(night, wildcards.camera):
        files["biasnight"] = find("biasnight", night=night, camera=wildcards.camera)
    fm = find("fibermap", night=night, expid=int(wildcards.expid))
    if row(night, wildcards.expid)["OBSTYPE"] == "SCIENCE":
        files["fibermap"] = fm
    return files


def preproc_options(wildcards, input):
    opts = []
    if "biasnight" in input.keys():
        opts.append(f"--biasnight {input.biasnight}")
    if "fibermap" in input.keys():
        opts.append(f"--fibermap {input.fibermap}")
    return " ".join(opts)


rule preproc:
    input:
        unpack(preproc_inputs),
    output:
        out("preproc"),
    params:
        cfg=section_hash(config, "instrument", "preproc"),
        configfile=CONFIGFILE,
        opts=preproc_options,
        badamps=lambda wc: badamps(wc.night, wc.expid, wc.camera),
    log:
        logfile("preproc", "{night}/{expid}-{camera}"),
    benchmark:
        benchfile("preproc", "{night}/{expid}-{camera}")
    resources:
        mem_mb=3000,
        runtime=10,
    shell:
        "fiberflow preproc --config {params.configfile} --camera {wildcards.camera} "
        "-i {input.raw} {params.opts} --badamps '{params.badamps}' -o {output} > {log} 2>&1"


def preproc_targets(nights=None):
    """Every preproc file of the given nights (default all)."""
    targets = []
    for night in nights or NIGHTS:
        for r in rows(night, ("ARC", "FLAT", "SCIENCE")):
            for cam in cameras(r):
                targets.append(find("preproc", night=night, expid=r["EXPID"], camera=cam))
    return targets
