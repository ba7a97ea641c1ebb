"""The production plan exists once: Snakemake's DAG holds exactly the jobs of
``fiberflow.workflow.plan.Plan``, each with the same outputs, inputs and log, on a tiny
two-night production with operator edits (a fallback night, LASTSTEP skysub and ignore, a bad
camera, bad amplifiers) and on the benchmark's synthetic DESI-size night (10 petals x b/r/z,
40 exposures). Counts per rule could agree while files differ; these tests compare the sets.
"""

import os
import re
import subprocess
import sys

import pytest
from _workflow import PROJECT, snakemake, tiny_config

from fiberflow import paths
from fiberflow.config import load_config
from fiberflow.workflow.plan import Plan
from fiberflow.workflow.status import job_states

NIGHT_A, NIGHT_B = 20250801, 20250802
PLANS = [
    {"night": NIGHT_A, "first_expid": 2100, "exposures": [
        {"obstype": "ZERO", "count": 1}, {"obstype": "ARC", "exptime": 5.0}, {"obstype": "FLAT", "exptime": 120.0},
        {"obstype": "SCIENCE", "tileid": 80, "exptime": 900.0}, {"obstype": "SCIENCE", "tileid": 81, "exptime": 900.0},
        {"obstype": "SCIENCE", "tileid": 83, "exptime": 600.0}, {"obstype": "DARK", "exptime": 300.0}]},
    {"night": NIGHT_B, "first_expid": 2200, "exposures": [
        {"obstype": "ZERO", "count": 1}, {"obstype": "SCIENCE", "tileid": 82, "exptime": 900.0}]},
]


def dry_run_jobs(text):
    """Jobs of a ``snakemake -n`` listing: (rule, outputs, inputs, log) per job, target rules left out."""
    jobs = set()
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        m = re.match(r"(?:local)?rule (\w+):", block)
        if not m or m.group(1) in ("all", "night", "exposure", "tile", "healpix", "qa"):
            continue
        fields = dict(re.findall(r"^    (input|output|log): (.*)$", block, re.M))
        jobs.add((m.group(1), frozenset(fields["output"].split(", ")),
                  frozenset(fields["input"].split(", ")) if "input" in fields else frozenset(),
                  fields.get("log", "")))
    return jobs


def plan_jobs(plan):
    return {(j.step, frozenset(j.outputs), frozenset(j.needs), j.log) for j in plan.jobs}


def compare(snake, planned):
    only_snake, only_plan = snake - planned, planned - snake
    assert not only_snake and not only_plan, (
        f"{len(only_snake)} job(s) only in Snakemake's DAG, e.g. {sorted(only_snake, key=str)[:2]}; "
        f"{len(only_plan)} only in the plan, e.g. {sorted(only_plan, key=str)[:2]}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from fiberflow.sim.night import simulate_night
    from fiberflow.sim.plan import parse_plan

    root = tmp_path_factory.mktemp("plan")
    for p in PLANS:
        simulate_night(parse_plan(p), "tiny", 5, str(root / "raw"), str(root / "truth"), cameras=["b0", "r0"])
    cfg = tiny_config(root, "plan")
    prod = root / "redux" / "plan"
    override = paths.findfile("exposure_override", prod=str(prod), night=NIGHT_A)
    os.makedirs(os.path.dirname(override))
    with open(override, "w") as fh:  # the operator's edits of night A
        fh.write("2104: {laststep: skysub}\n2105: {badcamword: r0, badamps: b0B}\n2106: {laststep: ignore}\n")
    return {"root": root, "cfg": cfg, "prod": prod}


def test_every_coadd_flavour_and_redrock_are_planned_as_snakemake_runs_them(tiny):
    """All coadd flavours and redshifts on: the same comparison, and each coadd has its redrock."""
    root = tiny["root"]
    cfg = root / "config-all.yaml"
    cfg.write_text(open(tiny["cfg"]).read().replace("redshift: {enabled: false}\n", "") + "coadds: {flavours: [cumulative, pernight, healpix]}\n"
                   "redshift: {enabled: true}\n")
    res = snakemake(root, cfg, "-n", "--forceall")
    assert res.returncode == 0, res.stderr[-3000:]
    plan = Plan(load_config(str(cfg)), workdir=str(root), configfile=str(cfg))
    compare(dry_run_jobs(res.stdout + res.stderr), plan_jobs(plan))
    for flavour in ("", "cumulative_", "pernight_"):
        coadds = {j.output for j in plan.steps(f"{flavour}coadd")}
        fitted = {j.inputs["coadd"] for j in plan.steps(f"{flavour}redrock")}
        assert coadds and coadds == fitted, flavour
    assert set(plan.targets()) >= {j.output for j in plan.jobs if j.step.endswith("redrock")}


def test_snakemake_runs_exactly_the_planned_jobs(tiny):
    root, cfg = tiny["root"], tiny["cfg"]
    res = snakemake(root, cfg, "-n", "--forceall")
    assert res.returncode == 0, res.stderr[-3000:]
    plan = Plan(load_config(cfg), workdir=str(root), configfile=cfg)
    snake = dry_run_jobs(res.stdout + res.stderr)
    compare(snake, plan_jobs(plan))
    steps = {j.step for j in plan.jobs}
    assert {"biasnight", "psf", "psfnight", "fiberflat", "sky", "stdstars", "spectra", "qa_production"} <= steps
    # the edits and the fallback are in the plan itself
    assert not [j for j in plan.jobs if j.ids.get("expid") == 2106], "ignored exposure planned"
    assert not [j for j in plan.steps("cframe") if j.ids["expid"] == 2104], "skysub exposure calibrated"
    assert [j.ids["camera"] for j in plan.steps("sky") if j.ids["expid"] == 2105] == ["b0"]
    assert plan.job("preproc", night=NIGHT_A, expid=2105, camera="b0").options.split(" --qa ")[0].endswith("--badamps B")
    fallback = plan.job("psfnight", night=NIGHT_B, camera="r0")
    assert fallback.inputs == {"fallback": paths.findfile("psfnight", prod=str(tiny["prod"]), night=NIGHT_A,
                                                          camera="r0")}
    assert fallback.options == "--fallback " + fallback.inputs["fallback"]
    with pytest.raises(ValueError, match="plans no sky job for night=20250801, expid=2105, camera=r0"):
        plan.job("sky", night=NIGHT_A, expid="00002105", camera="r0")
    # status sees the same jobs: nothing is done, the jobs without produced inputs are ready
    states = {j.step: j.state for j in job_states(plan, str(root))}
    assert states["exposure_table"] == "ready" and states["biasnight"] == "ready", states
    assert states["cframe"] == "waiting" and states["qa_production"] == "waiting", states


def test_one_night_target_plans_its_jobs_and_fallbacks(tiny):
    """The `night` target of night B plans every job of night B and, through the fallbacks,
    night A's nightly PSF and fiberflat with the jobs they need."""
    root, cfg = tiny["root"], tiny["cfg"]
    target = paths.findfile("night_done", prod=str(tiny["prod"]), night=NIGHT_B)
    res = snakemake(root, cfg, "-n", "--forceall", target)
    assert res.returncode == 0, res.stderr[-3000:]
    snake = dry_run_jobs(res.stdout + res.stderr)
    plan = Plan(load_config(cfg), workdir=str(root), configfile=cfg)
    outputs = {o for _r, outs, _i, _l in snake for o in outs}
    assert set(plan.targets([NIGHT_B], production=False)) <= outputs
    assert {j.output for j in plan.jobs if j.night == NIGHT_B} <= outputs
    night_a = {(j.step, j.output) for j in plan.jobs if j.night == NIGHT_A}
    pulled = {step for step, o in night_a if o in outputs}
    assert {"psfnight", "psf", "fiberflatnight", "fiberflat"} <= pulled, pulled


def test_desi_size_night_plans_the_same_jobs(tmp_path):
    """The benchmark's synthetic DESI night: about 8,000 jobs, every one the same in both."""
    sys.path.insert(0, os.path.join(PROJECT, "benchmarks"))
    try:
        from bench_workflow import make_production
    finally:
        sys.path.pop(0)
    cfg = make_production(str(tmp_path), 1, 40)
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", os.path.join(PROJECT, "Snakefile"),
                          "--configfile", cfg, "--directory", str(tmp_path), "--cores", "1", "-n", "--forceall"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    snake = dry_run_jobs(res.stdout + res.stderr)
    plan = Plan(load_config(cfg), workdir=str(tmp_path), configfile=cfg)
    assert len(plan.jobs) > 7000
    compare(snake, plan_jobs(plan))


def test_a_job_that_cannot_run_as_configured_fails_alone(tiny):
    """Without calibration.default_psf, night B (no arc, and psf.fallback_nights 0) has no PSF to
    start from: the plan still builds, that job names the problem when asked for, status says
    failed with the reason, and night A's jobs are unaffected."""
    cfg = load_config(tiny["cfg"])
    cfg["calibration"]["default_psf"] = None
    cfg["calibration"]["fallback_nights"] = 0
    plan = Plan(cfg, workdir=str(tiny["root"]))
    with pytest.raises(ValueError, match="calibration.default_psf is not set"):
        plan.job("psfnight", night=NIGHT_B, camera="r0")
    assert plan.job("psfnight", night=NIGHT_A, camera="r0").inputs["psfs"]
    states = {(j.step, j.night): (j.state, j.reason) for j in job_states(plan, str(tiny["root"]))}
    assert states[("psfnight", NIGHT_B)][0] == "failed" and "default_psf" in states[("psfnight", NIGHT_B)][1]
    assert states[("psfnight", NIGHT_A)][0] == "waiting"


def test_tile_qa_history_reference_reads_the_earlier_nights_tile_qa(tiny):
    """``tile_qa.reference: history``: a tile's QA reads the latest tile QA of every other tile of
    earlier nights (Snakemake's DAG agrees); the first night's tiles have none."""
    root = tiny["root"]
    thr = root / "qa-history.yaml"
    thr.write_text(open(os.path.join(PROJECT, "config", "qa.yaml")).read().replace(
        "  reference: null\n", "  reference: history\n  history_min_tiles: 1\n"))
    cfg = root / "config-history.yaml"
    cfg.write_text(open(tiny["cfg"]).read().replace("redshift: {enabled: false}\n", "redshift: {enabled: true}\n")
                   + f"qa: {{thresholds: {thr}}}\n")
    res = snakemake(root, cfg, "-n", "--forceall")
    assert res.returncode == 0, res.stderr[-3000:]
    plan = Plan(load_config(str(cfg)), workdir=str(root), configfile=str(cfg))
    compare(dry_run_jobs(res.stdout + res.stderr), plan_jobs(plan))
    qa = {(j.ids["tileid"], j.ids["night"]): j for j in plan.steps("tile_qa")}
    first = sorted(t for t, n in qa if n == NIGHT_A)
    assert first and (82, NIGHT_B) in qa
    assert all(qa[(t, NIGHT_A)].inputs["history"] == [] for t in first)
    assert qa[(82, NIGHT_B)].inputs["history"] == [qa[(t, NIGHT_A)].output for t in first]


def test_certification_orders_the_nightly_calibrations_and_breakpoints_cut_the_fallbacks(tiny):
    """Night A's psfnight / fiberflatnight are certified from their exposures' frame QA (the
    thresholds and earlier certifications only order them; the ledger's decision is in the
    options); night B (no arc, no flat) falls back to night A's,
    unless a breakpoint on night B cuts the chain (then the nominal PSF, and no fiberflat: no
    default one is configured)
    and the QA history too."""
    import copy

    cfg = load_config(tiny["cfg"])
    plan = Plan(cfg, workdir=str(tiny["root"]), configfile=tiny["cfg"])
    for step in ("psfnight", "fiberflatnight"):
        job = plan.job(step, night=NIGHT_A, camera="r0")
        obstype = "ARC" if step == "psfnight" else "FLAT"
        qa = [paths.findfile("qa_frame", prod=str(tiny["prod"]), night=NIGHT_A, expid=r["EXPID"], camera="r0")
              for r in plan.rows(NIGHT_A, (obstype,))]
        assert job.inputs["qa"] == qa and {"thresholds", "history", "fallback"} & set(job.ordering) == \
            {"thresholds", "history"} | ({"fallback"} if "fallback" in job.inputs else set())
        assert f"--qa {' '.join(qa)}" in job.options and "--ledger-decision auto" in job.options
        cert = paths.findfile("certification", prod=str(tiny["prod"]), night=NIGHT_A, calibration=step)
        assert plan.job("certify", night=NIGHT_A, calibration=step).output == cert
        fb = plan.job(step, night=NIGHT_B, camera="r0")
        assert fb.inputs["fallback"] == paths.findfile(step, prod=str(tiny["prod"]), night=NIGHT_A, camera="r0")
        assert not fb.ordering  # a night without its own: the fallback is a real input
    assert plan.job("qa_night", night=NIGHT_B).inputs["history"] == [
        paths.findfile("qa_night", prod=str(tiny["prod"]), night=NIGHT_A)]
    cut = copy.deepcopy(cfg)
    cut["calibration"]["breakpoints"] = [NIGHT_B]
    plan = Plan(cut, workdir=str(tiny["root"]), configfile=tiny["cfg"])
    assert plan.job("psfnight", night=NIGHT_B, camera="r0").inputs["fallback"] == plan.default_psf("r0")
    assert plan.job("fiberflatnight", night=NIGHT_B, camera="r0").inputs == {}  # its command says why
    assert plan.job("qa_night", night=NIGHT_B).inputs["history"] == []
    off = copy.deepcopy(cfg)
    off["calibration"]["certify"] = False
    plan = Plan(off, workdir=str(tiny["root"]), configfile=tiny["cfg"])
    assert not plan.steps("certify") and "qa" not in plan.job("psfnight", night=NIGHT_A, camera="r0").inputs


def test_snakemake_schedules_the_nightly_calibrations_first(tiny):
    """Every job's Snakemake priority is the plan's (Plan.priority): the nightly calibrations
    (40) before the zeros', arcs' and flats' frames (30), the science preprocs (20) and the rest of the
    science chain (10); coadds, redrock and QA last (0)."""
    root, cfg = tiny["root"], tiny["cfg"]
    res = snakemake(root, cfg, "-n", "--forceall")
    assert res.returncode == 0, res.stderr[-3000:]
    seen = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", res.stdout + res.stderr):
        m = re.match(r"(?:local)?rule (\w+):", block)
        out = re.search(r"^    output: (.*)$", block, re.M)
        if m and out:
            pr = re.search(r"^    priority: (\d+)$", block, re.M)
            for path in out.group(1).split(", "):
                seen[path] = int(pr.group(1)) if pr else 0
    plan = Plan(load_config(cfg), workdir=str(root), configfile=cfg)
    want = {j.output: plan.priority(j.step, **j.ids) for j in plan.jobs}
    assert {k: seen.get(k) for k in want} == want

    def prio(step, **ids):
        return plan.priority(step, night=NIGHT_A, **ids)

    arc, flat, sci = 2101, 2102, 2103
    assert prio("psfnight", camera="b0") == prio("fiberflatnight", camera="b0") == 40
    assert prio("preproc", expid=arc, camera="b0") == prio("psf", expid=arc, camera="b0") == 30
    assert prio("extract", expid=flat, camera="b0") == prio("fiberflat", expid=flat, camera="b0") == 30
    assert prio("qa_frame", expid=2100, camera="b0") == 30  # a zero: it certifies the master bias
    assert prio("preproc", expid=sci, camera="b0") == 20
    assert prio("extract", expid=sci, camera="b0") == prio("cframe", expid=sci, camera="b0") == 10
    assert {plan.priority(j.step, **j.ids) for j in plan.jobs if j.step in ("spectra", "coadd", "qa_night")} == {0}
