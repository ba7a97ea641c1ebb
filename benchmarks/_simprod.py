"""A simulated production for the benchmark and validation scripts: write the night's plan and
the configuration under ``root``, make the nominal PSFs, simulate the night with the workflow's
``simulate`` rule and reduce it with Snakemake."""

import os
import subprocess
import sys
import time

import yaml


def calibration_exposures():
    """Two zeros, an arc and three 180 s flats (the demo night's calibrations)."""
    return [{"obstype": "ZERO", "count": 2}, {"obstype": "ARC", "exptime": 5.0},
            {"obstype": "FLAT", "exptime": 180.0, "count": 3}]


def reduce_simulated_night(root, night, exposures, specprod, cores, instrument="demo", config=None, check=True):
    """Simulate ``exposures`` of ``night`` and reduce them (default target) under ``root``.

    Parameters
    ----------
    config : dict, optional
        Configuration sections added to the production's (e.g. redshift, coadds).
    check : bool
        Raise when Snakemake fails (else carry on with what was made).

    Returns
    -------
    (config path, seconds to simulate, seconds to reduce)
    """
    from fiberflow.reference import workflow_dir

    plan = os.path.join(root, "plan.yaml")
    with open(plan, "w") as fh:
        yaml.safe_dump({"night": night, "exposures": exposures}, fh)
    cfg = os.path.join(root, "config.yaml")
    with open(cfg, "w") as fh:
        yaml.safe_dump({"instrument": instrument, "raw": f"{root}/raw", "redux": f"{root}/redux",
                        "specprod": specprod, "truth": f"{root}/truth", "nights": [night],
                        "calibration": {"default_psf": f"{root}/calib"},
                        "simulate": {"rule": True, "plan": plan}, **(config or {})}, fh, sort_keys=False)
    t = time.time()
    subprocess.run([sys.executable, "-m", "fiberflow.cli.main", "calibinit", "--config", cfg], check=True)
    snake = [sys.executable, "-m", "snakemake", "-s", os.path.join(workflow_dir(), "Snakefile"), "--configfile", cfg,
             "--directory", root, "--cores", str(cores), "--quiet", "--keep-going"]
    subprocess.run(snake + ["simulate"], check=True)
    t_sim = time.time() - t
    t = time.time()
    subprocess.run(snake, check=check)
    return cfg, t_sim, time.time() - t
