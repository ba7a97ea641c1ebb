"""``fiberflow simulate``: write a simulated night (raw files + truth) for an instrument preset."""

from __future__ import annotations

import os
import time


def add_arguments(p, name):
    p.add_argument("--config", default=None, help="workflow configuration (instrument, roots, simulate.seed/plan)")
    p.add_argument("--night", type=int, default=None, help="night YYYYMMDD (required unless the plan names it)")
    p.add_argument("--plan", default=None, help="observing-plan YAML (default: the built-in demo plan)")
    p.add_argument("--instrument", default=None, help="instrument preset (overrides the config)")
    p.add_argument("--seed", type=int, default=None, help="random seed (overrides the config)")
    p.add_argument("--raw", default=None, help="raw data root (overrides the config / $DESI_SPECTRO_DATA)")
    p.add_argument("--truth", default=None, help="truth root (overrides the config / $FIBERFLOW_TRUTH)")
    p.add_argument("--expid", type=int, nargs="*", default=None, help="only these exposures of the plan")
    p.add_argument("--cameras", nargs="*", default=None, help="only these cameras (e.g. b0 r0)")
    p.add_argument("--projection", choices=("fine", "grid"), default="fine",
                   help="fine: half-pixel bins with sub-bin structure (default, as a real CCD); grid: light on "
                        "the extraction grid's bin centres, so the extraction's truth is exact (validation)")
    p.add_argument("--psf-shape", type=float, default=0.0,
                   help="rms of seeded offsets of the true PSFs' higher-order Gauss-Hermite terms from the nominal "
                        "(default 0: the nominal shape; PSF-fit validation)")
    p.add_argument("--pixflat", type=float, default=0.0,
                   help="rms of the pixels' fixed relative response (default 0: uniform); the true pixel flats "
                        "go to {truth}/pixflat/ for calibration.pixflat")
    p.add_argument("--print-plan", action="store_true", help="print the expanded plan and exit")
    p.add_argument("--replay", type=float, default=None, metavar="SPEED",
                   help="deliver the exposures into the raw folder one by one at the night's cadence (EXPTIME + "
                        "120 s) divided by SPEED, each file half-written for a while, a checksum file last "
                        "(fiberflow.sim.replay): a night for the watcher")


def run(args):
    import yaml

    from ..config import load_config, resolve_roots
    from ..errors import ConfigError
    from ..instrument import load_instrument
    from ..sim.night import simulate_night
    from ..sim.plan import default_plan, load_plan, parse_plan

    overrides = {}
    for key in ("instrument", "raw", "truth"):
        if getattr(args, key):
            overrides[key] = os.path.abspath(getattr(args, key)) if key != "instrument" else getattr(args, key)
    cfg = load_config(args.config, overrides=overrides)
    roots = resolve_roots(cfg, need_prod=False)
    seed = args.seed if args.seed is not None else cfg["simulate"]["seed"]
    plan_file = args.plan or cfg["simulate"]["plan"]
    if plan_file:
        plan = load_plan(plan_file)
        if args.night is not None and args.night != plan.night:
            raise ConfigError(f"{plan_file}: plan is for night {plan.night}, not {args.night}")
    else:
        if args.night is None:
            raise ConfigError("simulate: give --night (or a --plan that names its night)")
        plan = parse_plan(default_plan(args.night), where="built-in plan")
    if args.print_plan:
        rows = [{"expid": e.expid, "obstype": e.obstype, "exptime": e.exptime, "tileid": e.tileid,
                 "faults": e.faults or None} for e in plan.exposures]
        print(yaml.safe_dump({"night": plan.night, "exposures": rows}, sort_keys=False), end="")
        return 0
    for key in ("raw", "truth"):
        if not roots[key]:
            raise ConfigError(f"simulate: no {key} root (give --{key}, set it in the config or the environment)")
    inst = load_instrument(cfg["instrument"])
    if args.cameras:
        bad = sorted(set(args.cameras) - set(inst.camera_names()))
        if bad:
            raise ConfigError(f"simulate: instrument {inst.name} has no camera(s) {', '.join(bad)}")
    if args.expid:
        missing = sorted(set(args.expid) - set(plan.expids()))
        if missing:
            raise ConfigError(f"simulate: exposure(s) {missing} not in the plan of night {plan.night} ({plan.expids()})")
    if not args.psf_shape >= 0:
        raise ConfigError(f"simulate: --psf-shape must be >= 0, not {args.psf_shape}")
    if not 0 <= args.pixflat < 0.2:
        raise ConfigError(f"simulate: --pixflat must be in [0, 0.2), not {args.pixflat}")
    t0 = time.time()
    if args.replay is not None:
        from ..sim.replay import replay_night

        if not args.replay > 0:
            raise ConfigError(f"simulate: --replay SPEED must be > 0, not {args.replay}")
        if args.expid:
            raise ConfigError("simulate: --replay delivers the whole plan; drop --expid")
        written = replay_night(plan, inst, seed, roots["raw"], roots["truth"], args.replay, cameras=args.cameras,
                               log=lambda m: print(m, flush=True), projection=args.projection,
                               psf_shape=args.psf_shape, pixflat=args.pixflat)
        print(f"replayed night {plan.night} ({inst.name}, seed {seed}) at {args.replay:g}x: {len(written)} file(s) "
              f"in {time.time() - t0:.1f} s")
        return 0
    written = simulate_night(plan, inst, seed, roots["raw"], roots["truth"], cameras=args.cameras, expids=args.expid,
                             projection=args.projection, psf_shape=args.psf_shape, pixflat=args.pixflat)
    nraw = sum(p.endswith(".fits.fz") for p in written)
    print(f"simulated night {plan.night} ({inst.name}, seed {seed}): {nraw} raw exposure(s), "
          f"{len(written) - nraw} other file(s) in {time.time() - t0:.1f} s")
    print(f"  raw   {roots['raw']}/{plan.night}")
    print(f"  truth {roots['truth']}/{plan.night}")
    return 0
