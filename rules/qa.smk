# Quality assurance. qa_frame (per exposure x camera) computes the metrics of every product of
# a frame; it does not read the thresholds, so editing config/qa.yaml reruns only qa_night,
# qa_exposure and qa_production, never a science step. qa_night scores the night against the
# thresholds and the history of earlier nights (dynamic ranges), qa_exposure draws the
# exposure's maps and page, qa_production the production table, trends and index page.

from fiberflow.qa.scoring import load_thresholds


def qa_thresholds_path():
    """config qa.thresholds: absolute, else relative to the working directory, else to the
    workflow's own folder (the shipped config/qa.yaml)."""
    path = config["qa"]["thresholds"]
    if os.path.isabs(path) or os.path.exists(path):
        return os.path.abspath(path)
    return os.path.join(workflow.basedir, path)


QA_THRESHOLDS = qa_thresholds_path()
QA_HISTORY_NIGHTS = load_thresholds(QA_THRESHOLDS)["history"]["nights"]
QA_OBSTYPES = ("ARC", "FLAT", "SCIENCE")


def qa_frame_inputs(wildcards):
    """Every product of one frame that exists for its OBSTYPE."""
    obstype = row(wildcards.night, wildcards.expid)["OBSTYPE"]
    ids = dict(night=wildcards.night, expid=wildcards.expid, camera=wildcards.camera)
    files = {"preproc": find("preproc", **ids)}
    if obstype == "ARC":
        files["psf"] = find("fitpsf", **ids)
        return files
    files["psf"] = find("psf", **ids)
    files["frame"] = find("frame", **ids)
    if obstype == "FLAT":
        files["fiberflat"] = find("fiberflat", **ids)
    if obstype == "SCIENCE":
        for key in ("sky", "sframe", "fluxcalib", "cframe"):
            files[key] = find(key, **ids)
        files["stdstars"] = find(
            "stdstars", night=wildcards.night, expid=wildcards.expid, spectrograph=int(wildcards.camera[1:])
        )
    return files


#: job log of each step of a frame (linked from the QA pages)
QA_STEP_LOGS = {
    "PREPROC": "preproc",
    "PSF": "psf",
    "TRACESHIFT": "traceshift",
    "EXTRACT": "extract",
    "FIBERFLAT": "fiberflat",
    "SKY": "sky",
    "FLUXCALIB": "fluxcalib",
    "CFRAME": "cframe",
}


def qa_frame_options(wildcards, input):
    opts = [f"--{key} {path}" for key, path in input.items()]
    ident = f"{wildcards.night}/{wildcards.expid}-{wildcards.camera}"
    obstype = row(wildcards.night, wildcards.expid)["OBSTYPE"]
    for step, name in QA_STEP_LOGS.items():
        if step == "TRACESHIFT" and obstype == "ARC":
            continue
        opts.append(f"--log {step}={logfile(name, ident)}")
    if obstype == "SCIENCE":
        spec = int(wildcards.camera[1:])
        opts.append(f"--log STDSTARS={logfile('stdstars', f'{wildcards.night}/{wildcards.expid}-{spec}')}")
    return " ".join(opts)


rule qa_frame:
    input:
        unpack(qa_frame_inputs),
    output:
        json=out("qa_frame"),
        png=out("qa_frame_png"),
    params:
        opts=qa_frame_options,
    log:
        logfile("qa_frame", "{night}/{expid}-{camera}"),
    benchmark:
        benchfile("qa_frame", "{night}/{expid}-{camera}")
    resources:
        mem_mb=3000,
        runtime=5,
    shell:
        "fiberflow qa-frame --night {wildcards.night} --expid {wildcards.expid} --camera {wildcards.camera} "
        "--prod {PROD} {params.opts} -o {output.json} --png {output.png} > {log} 2>&1"


def qa_frames_of(night, expid=None):
    """Frame QA files of a night (or of one exposure)."""
    return [
        find("qa_frame", night=night, expid=r["EXPID"], camera=cam)
        for r in rows(night, QA_OBSTYPES)
        if expid is None or int(r["EXPID"]) == int(expid)
        for cam in cameras(r)
    ]


def qa_history(wildcards):
    """Night QA of the earlier production nights within the history window."""
    earlier = [n for n in sorted(NIGHTS) if n < int(wildcards.night) and rows(n, QA_OBSTYPES)]
    return [find("qa_night", night=n) for n in earlier[-QA_HISTORY_NIGHTS:]]


rule qa_night:
    input:
        frames=lambda wc: qa_frames_of(wc.night),
        history=qa_history,
        thresholds=QA_THRESHOLDS,
    output:
        json=out("qa_night"),
        html=out("qa_night_html"),
        trends=out("qa_night_trends"),
        hist=out("qa_night_hist"),
    log:
        logfile("qa_night", "{night}"),
    benchmark:
        benchfile("qa_night", "{night}")
    resources:
        mem_mb=2000,
        runtime=5,
    shell:
        "fiberflow qa-night --night {wildcards.night} --prod {PROD} --thresholds {input.thresholds} "
        "-i {input.frames} --history {input.history} -o {output.json} --html {output.html} "
        "--trends {output.trends} --hist {output.hist} > {log} 2>&1"


rule qa_exposure:
    input:
        nightqa=out("qa_night"),
        frames=lambda wc: qa_frames_of(wc.night, wc.expid),
    output:
        html=out("qa_exposure_html"),
        png=out("qa_exposure_png"),
    log:
        logfile("qa_exposure", "{night}/{expid}"),
    benchmark:
        benchfile("qa_exposure", "{night}/{expid}")
    resources:
        mem_mb=2000,
        runtime=5,
    shell:
        "fiberflow qa-exposure --night {wildcards.night} --expid {wildcards.expid} --prod {PROD} "
        "--nightqa {input.nightqa} -i {input.frames} -o {output.html} --png {output.png} > {log} 2>&1"


def qa_nights():
    return [n for n in NIGHTS if rows(n, QA_OBSTYPES)]


rule qa_production:
    input:
        nights=lambda wc: [find("qa_night", night=n) for n in qa_nights()],
    output:
        html=find("qa_production_html"),
        table=find("qa_production_table"),
        trends=find("qa_production_trends"),
        hist=find("qa_production_hist"),
    log:
        logfile("qa_production", "production"),
    benchmark:
        benchfile("qa_production", "production")
    resources:
        mem_mb=2000,
        runtime=5,
    shell:
        "fiberflow qa-production --prod {PROD} -i {input.nights} -o {output.html} --table {output.table} "
        "--trends {output.trends} --hist {output.hist} > {log} 2>&1"


def qa_targets(nights=None, production=True):
    """Night and exposure QA pages of the given nights (default all) and, with
    ``production``, the production index."""
    targets = []
    for night in nights or qa_nights():
        if not rows(night, QA_OBSTYPES):
            continue
        targets.append(find("qa_night_html", night=night))
        targets += [find("qa_exposure_html", night=night, expid=r["EXPID"]) for r in rows(night, QA_OBSTYPES)]
    if production and qa_nights():
        targets.append(find("qa_production_html"))
    return targets
