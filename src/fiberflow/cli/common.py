"""Helpers shared by the per-camera step commands."""

from __future__ import annotations


def prod_root(cfg):
    """Production root of a configuration, or None when its roots are not set (standalone use)."""
    from ..config import resolve_roots
    from ..errors import ConfigError

    try:
        return resolve_roots(cfg)["prod"]
    except ConfigError:
        return None


def camera_step(args):
    """(config, instrument, camera) of a step command with ``--config`` and ``--camera``.

    Raises DataError when the instrument has no such camera.
    """
    from ..config import load_config
    from ..errors import DataError
    from ..instrument import load_instrument

    cfg = load_config(args.config)
    inst = load_instrument(cfg["instrument"])
    cam = args.camera.lower()
    if cam not in inst.camera_names():
        raise DataError(None, f"instrument {inst.name} has no camera {cam}")
    return cfg, inst, cam


def check_psf(psf, psf_path, inst, image_shape=None, image_path=None):
    """A PSF must have the instrument's fibers and the image's CCD size; DataError otherwise."""
    from ..errors import DataError

    if psf.nfiber != inst.nfiber:
        raise DataError(psf_path, f"PSF has {psf.nfiber} fibers; instrument {inst.name} has {inst.nfiber}")
    if image_shape is not None and tuple(image_shape) != (psf.npix_y, psf.npix_x):
        raise DataError(psf_path, f"PSF is for a {psf.npix_y}x{psf.npix_x} CCD; {image_path} is "
                                  f"{image_shape[0]}x{image_shape[1]}")
