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
