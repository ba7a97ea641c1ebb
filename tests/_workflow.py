"""Helpers of the workflow tests: a real Snakemake run of the project's Snakefile on a tiny
simulated production."""

import os
import subprocess
import sys

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL_PROFILE = os.path.join(PROJECT, "profiles", "local")


def snakemake(root, cfg, *extra):
    """Run the project's workflow in ``root`` with config ``cfg``; returns the CompletedProcess."""
    cmd = [sys.executable, "-m", "snakemake", "-s", os.path.join(PROJECT, "Snakefile"), "--configfile", str(cfg),
           "--directory", str(root), "--cores", "2", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def tiny_config(root, specprod, extra=""):
    """Write ``root/config.yaml`` for the tiny instrument (raw, redux, truth, calib under root,
    plus ``extra`` YAML lines) and its default PSFs (``fiberflow calibinit``); returns its path.
    Redshifts (on by default) are off unless ``extra`` has a redshift section: redrock takes
    about 2 s a target, and the tests that need it ask for it."""
    if "redshift:" not in extra:
        extra = "redshift: {enabled: false}\n" + extra
    cfg = root / "config.yaml"
    cfg.write_text(f"instrument: tiny\nraw: {root / 'raw'}\nredux: {root / 'redux'}\nspecprod: {specprod}\n"
                   f"truth: {root / 'truth'}\ncalibration: {{default_psf: {root / 'calib'}}}\n{extra}")
    res = subprocess.run([sys.executable, "-m", "fiberflow.cli.main", "calibinit", "--config", str(cfg)],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    return str(cfg)


def science(plan):
    """The SCIENCE exposures of a plan."""
    return [e for e in plan.exposures if e.obstype == "SCIENCE"]
