"""``fiberflow calibinit``: write the default calibration files a production starts from.

Today: the nominal GAUSS-HERMITE PSF of every camera (``psf-{camera}.fits``), derived from
the real DESI r0 PSF for the configured instrument (see :mod:`fiberflow.sim.optics`), into
the folder ``calibration.default_psf`` (or ``-o``). The psf step starts its fits from them
and psfnight falls back to them on nights without a usable arc.
"""

from __future__ import annotations

import os


def add_arguments(p, name):
    p.add_argument("--config", default=None, help="workflow configuration (instrument, calibration.default_psf)")
    p.add_argument("-o", "--outdir", default=None, help="output folder (default: calibration.default_psf)")
    p.add_argument("--overwrite", action="store_true", help="rewrite files that exist")


def write_default_psfs(inst, outdir, overwrite=False, log=print):
    """Nominal PSF of every camera of ``inst`` into ``outdir``; returns the paths."""
    from ..io.psf import read_psf
    from ..provenance import step_header
    from ..reference import real_psf_path
    from ..sim.optics import nominal_psf

    src = real_psf_path()
    rpsf = read_psf(src)
    os.makedirs(outdir, exist_ok=True)
    written = []
    cache = {}
    for cam in inst.camera_names():
        path = os.path.join(outdir, f"psf-{cam}.fits")
        if os.path.exists(path) and not overwrite:
            written.append(path)
            continue
        arm = cam[0]
        if arm not in cache:
            cache[arm] = nominal_psf(rpsf, inst, arm)
        psf = cache[arm].copy()
        psf.meta["CAMERA"] = cam
        # the petal's fibers (DESI numbering): frames extracted with it get SPECMIN/SPECMAX right
        psf.meta["FIBERMIN"] = int(cam[1:]) * inst.nfiber
        psf.meta["FIBERMAX"] = psf.meta["FIBERMIN"] + inst.nfiber - 1
        psf.header.update(step_header("calibinit", {"camera": cam, "instrument": inst.name}, [src], camera=cam))
        psf.write(path)
        written.append(path)
    log(f"calibinit: nominal PSFs of {len(written)} cameras of instrument {inst.name} in {outdir}")
    return written


def run(args):
    from ..config import default_psf_dir, load_config
    from ..errors import ConfigError
    from ..instrument import load_instrument

    cfg = load_config(args.config)
    outdir = args.outdir or default_psf_dir(cfg)
    if not outdir:
        raise ConfigError("calibinit: give -o or set calibration.default_psf in the configuration")
    write_default_psfs(load_instrument(cfg["instrument"]), os.path.abspath(outdir), args.overwrite)
    return 0
