# Calibration chain: fiberflat per flat camera, fiberflatnight per night x camera (average of
# the night's flats; a night without flats takes the nearest earlier night's fiberflatnight
# within calibration.fallback_nights, else calibration.default_fiberflat; the header records
# FALLBACK and IN_FLAT), then per science camera the sky model and the sky-subtracted sframe,
# per science spectrograph the standard-star fits (its b, r, z sframes together), per camera
# the flux calibration (average calibration x EXPTIME when too few standards, flagged) and
# the calibrated cframe.


rule fiberflat:
    input:
        out("frame"),
    output:
        out("fiberflat"),
    params:
        cfg=section_hash(config, "instrument", "fiberflat"),
        configfile=CONFIGFILE,
    log:
        logfile("fiberflat", "{night}/{expid}-{camera}"),
    benchmark:
        benchfile("fiberflat", "{night}/{expid}-{camera}")
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        "fiberflow fiberflat --config {params.configfile} --camera {wildcards.camera} "
        "-i {input} -o {output} > {log} 2>&1"


def default_fiberflat(camera):
    """calibration.default_fiberflat/fiberflat-{camera}.fits, or None when not configured."""
    if not DEFAULT_FIBERFLAT_DIR:
        return None
    return os.path.join(DEFAULT_FIBERFLAT_DIR, f"fiberflat-{camera}.fits")


def fiberflatnight_inputs(wildcards):
    flats = [r for r in rows(wildcards.night, ("FLAT",)) if wildcards.camera in cameras(r)]
    if flats:
        return {
            "flats": [
                find("fiberflat", night=wildcards.night, expid=r["EXPID"], camera=wildcards.camera)
                for r in flats
            ]
        }
    earlier = fallback_night(wildcards.night, "FLAT", wildcards.camera)
    if earlier is not None:
        return {"fallback": find("fiberflatnight", night=earlier, camera=wildcards.camera)}
    default = default_fiberflat(wildcards.camera)
    return {"fallback": default} if default else {}


def fiberflatnight_options(wildcards, input):
    if "fallback" in input.keys():
        return f"--fallback {input.fallback}"
    if "flats" in input.keys():
        return "-i " + " ".join(input.flats)
    return ""


rule fiberflatnight:
    input:
        unpack(fiberflatnight_inputs),
    output:
        out("fiberflatnight"),
    params:
        cfg=section_hash(config, "instrument", "fiberflat"),
        configfile=CONFIGFILE,
        opts=fiberflatnight_options,
    log:
        logfile("fiberflatnight", "{night}-{camera}"),
    benchmark:
        benchfile("fiberflatnight", "{night}-{camera}")
    resources:
        mem_mb=2000,
        runtime=5,
    shell:
        "fiberflow fiberflatnight --config {params.configfile} --camera {wildcards.camera} "
        "--night {wildcards.night} {params.opts} -o {output} > {log} 2>&1"


rule sky:
    input:
        frame=out("frame"),
        fiberflat=lambda wc: find("fiberflatnight", night=wc.night, camera=wc.camera),
    output:
        sky=out("sky"),
        sframe=out("sframe"),
    params:
        cfg=section_hash(config, "instrument", "sky"),
        configfile=CONFIGFILE,
    log:
        logfile("sky", "{night}/{expid}-{camera}"),
    benchmark:
        benchfile("sky", "{night}/{expid}-{camera}")
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        "fiberflow sky --config {params.configfile} --camera {wildcards.camera} -i {input.frame} "
        "--fiberflat {input.fiberflat} -o {output.sky} --sframe {output.sframe} > {log} 2>&1"


def fiberflat_targets(nights=None):
    """Nightly fiberflats of every camera that has flat or science exposures."""
    targets = []
    for night in nights or NIGHTS:
        cams = {c for r in rows(night, ("FLAT", "SCIENCE")) for c in cameras(r)}
        targets += [find("fiberflatnight", night=night, camera=c) for c in sorted(cams)]
    return targets


def sky_targets(nights=None):
    """Sky-subtracted frames of every camera of every science exposure."""
    return [
        find("sframe", night=night, expid=r["EXPID"], camera=cam)
        for night in nights or NIGHTS
        for r in rows(night, ("SCIENCE",))
        for cam in cameras(r)
    ]


def spectrograph_sframes(wildcards):
    """The sframes of every camera of one spectrograph of an exposure."""
    r = row(wildcards.night, wildcards.expid)
    return [
        find("sframe", night=wildcards.night, expid=wildcards.expid, camera=cam)
        for cam in cameras(r)
        if int(cam[1:]) == int(wildcards.spectrograph)
    ]


rule stdstars:
    input:
        spectrograph_sframes,
    output:
        out("stdstars"),
    params:
        cfg=section_hash(config, "instrument", "stdstars"),
        configfile=CONFIGFILE,
    log:
        logfile("stdstars", "{night}/{expid}-{spectrograph}"),
    benchmark:
        benchfile("stdstars", "{night}/{expid}-{spectrograph}")
    resources:
        mem_mb=4000,
        runtime=20,
    shell:
        "fiberflow stdstars --config {params.configfile} --spectrograph {wildcards.spectrograph} "
        "--sframes {input} -o {output} > {log} 2>&1"


def average_fluxcalib(camera):
    """calibration.default_fluxcalib/fluxcalib-avg-{camera}.fits, or None when not configured."""
    if not DEFAULT_FLUXCALIB_DIR:
        return None
    return os.path.join(DEFAULT_FLUXCALIB_DIR, f"fluxcalib-avg-{camera}.fits")


def fluxcalib_inputs(wildcards):
    inputs = {
        "sframe": find("sframe", night=wildcards.night, expid=wildcards.expid, camera=wildcards.camera),
        "stdstars": find(
            "stdstars",
            night=wildcards.night,
            expid=wildcards.expid,
            spectrograph=int(wildcards.camera[1:]),
        ),
    }
    avg = average_fluxcalib(wildcards.camera)
    if avg:
        inputs["average"] = avg
    return inputs


rule fluxcalib:
    input:
        unpack(fluxcalib_inputs),
    output:
        out("fluxcalib"),
    params:
        cfg=section_hash(config, "instrument", "fluxcalib"),
        configfile=CONFIGFILE,
        average=lambda wc, input: f"--average {input.average}" if "average" in input.keys() else "",
    log:
        logfile("fluxcalib", "{night}/{expid}-{camera}"),
    benchmark:
        benchfile("fluxcalib", "{night}/{expid}-{camera}")
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        "fiberflow fluxcalib --config {params.configfile} --camera {wildcards.camera} -i {input.sframe} "
        "--stdstars {input.stdstars} {params.average} -o {output} > {log} 2>&1"


rule cframe:
    input:
        sframe=out("sframe"),
        fluxcalib=out("fluxcalib"),
    output:
        out("cframe"),
    params:
        configfile=CONFIGFILE,
    log:
        logfile("cframe", "{night}/{expid}-{camera}"),
    benchmark:
        benchfile("cframe", "{night}/{expid}-{camera}")
    resources:
        mem_mb=2000,
        runtime=5,
    shell:
        "fiberflow cframe --config {params.configfile} --camera {wildcards.camera} -i {input.sframe} "
        "--fluxcalib {input.fluxcalib} -o {output} > {log} 2>&1"


def cframe_targets(nights=None):
    """Flux-calibrated frames of every camera of every science exposure."""
    return [
        find("cframe", night=night, expid=r["EXPID"], camera=cam)
        for night in nights or NIGHTS
        for r in rows(night, ("SCIENCE",))
        for cam in cameras(r)
    ]
