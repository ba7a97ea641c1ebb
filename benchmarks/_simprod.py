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


def simulate_cameras(cfg, plan, cameras, cores):
    """Simulate the plan's exposures for ``cameras`` only, in ``cores`` processes, each a share of
    the exposures (the simulation's randomness is keyed by exposure and camera and the shared truth
    files are written atomically, so the night is the one a single process would write).

    Returns
    -------
    number of processes used
    """
    from fiberflow.sim.plan import load_plan

    ff = [sys.executable, "-m", "fiberflow.cli.main"]
    expids = load_plan(plan).expids()
    procs = [subprocess.Popen(ff + ["simulate", "--config", cfg, "--plan", plan, "--cameras", *cameras, "--expid",
                                    *map(str, expids[k::cores])], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
             for k in range(min(cores, len(expids)))]
    for proc in procs:
        err = proc.communicate()[1]
        if proc.returncode != 0:
            raise SystemExit(f"simulate failed (exit {proc.returncode}):\n{err[-3000:]}")
    return len(procs)


def reduce_simulated_night(root, night, exposures, specprod, cores, instrument="demo", config=None, check=True,
                           petals=None):
    """Simulate ``exposures`` of ``night`` and reduce them (default target) under ``root``.

    Parameters
    ----------
    config : dict, optional
        Configuration sections added to the production's (e.g. redshift, coadds).
    check : bool
        Raise when Snakemake fails (else carry on with what was made).
    petals : int, optional
        Simulate only the first ``petals`` petals (b, r, z each; in ``cores`` processes) instead of
        every camera of the instrument through the workflow's ``simulate`` rule.

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
                        **({} if petals else {"simulate": {"rule": True, "plan": plan}}), **(config or {})},
                       fh, sort_keys=False)
    t = time.time()
    subprocess.run([sys.executable, "-m", "fiberflow.cli.main", "calibinit", "--config", cfg], check=True)
    snake = [sys.executable, "-m", "snakemake", "-s", os.path.join(workflow_dir(), "Snakefile"), "--configfile", cfg,
             "--directory", root, "--cores", str(cores), "--quiet", "--keep-going"]
    if petals:
        simulate_cameras(cfg, plan, [f"{arm}{p}" for p in range(petals) for arm in "brz"], cores)
    else:
        subprocess.run(snake + ["simulate"], check=True)
    t_sim = time.time() - t
    t = time.time()
    subprocess.run(snake, check=check)
    return cfg, t_sim, time.time() - t
