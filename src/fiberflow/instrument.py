"""Instrument presets: how big the spectrograph is, and its detector and wavelength grids.

Presets are YAML files shipped in ``fiberflow/data/instruments`` (``desi`` full size; ``demo``
and ``tiny`` small ones with the same physics). A preset may ``inherit`` another and override
part of it. The workflow config names a preset (or a path to a preset file).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from . import yamlio
from .errors import ConfigError

ARMS = ("b", "r", "z")


def _deep_update(base, extra):
    out = copy.deepcopy(base)
    for key, val in (extra or {}).items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_update(out[key], val)
        else:
            out[key] = copy.deepcopy(val)
    return out


def preset_names():
    """Names of the shipped presets."""
    folder = resources.files("fiberflow") / "data" / "instruments"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _load_raw(name_or_path, _seen=()):
    if os.path.isfile(str(name_or_path)) and str(name_or_path).endswith((".yaml", ".yml")):
        path = str(name_or_path)
        with open(path) as fh:
            data = yamlio.safe_load(fh)
    else:
        folder = resources.files("fiberflow") / "data" / "instruments"
        res = folder / f"{name_or_path}.yaml"
        if not res.is_file():
            raise ConfigError(f"unknown instrument preset {name_or_path!r}; known: {', '.join(preset_names())}")
        path = str(res)
        data = yamlio.safe_load(res.read_text())
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an instrument preset must be a mapping")
    parent = data.pop("inherit", None)
    if parent:
        if parent in _seen:
            raise ConfigError(f"{path}: circular inherit of {parent!r}")
        data = _deep_update(_load_raw(parent, _seen + (parent,)), data)
    return data


@dataclass
class CameraSpec:
    """Per-arm detector and wavelength-grid parameters."""

    arm: str
    wavemin: float
    wavemax: float
    dwave: float
    gain: list
    readnoise: list
    dark: float
    bias_adu: list

    def wavegrid(self):
        """Extraction wavelength grid (nwave,): wavemin..wavemax inclusive in steps of dwave."""
        n = int(round((self.wavemax - self.wavemin) / self.dwave)) + 1
        return self.wavemin + self.dwave * np.arange(n)


@dataclass
class Instrument:
    """A spectrograph configuration.

    Attributes
    ----------
    name : str
    npetal : int
        Number of petals (spectrographs).
    nfiber : int
        Fibers per petal (= spectra per camera).
    bundlesize : int
    arms : list of str
    ccd : dict
        ny, nx (trimmed), nprescan, noverscan, saturation_adu.
    cameras : dict[str, CameraSpec]
    """

    name: str
    npetal: int
    nfiber: int
    bundlesize: int
    arms: list
    ccd: dict
    cameras: dict
    description: str = ""
    raw: dict = field(default_factory=dict)

    @property
    def nbundle(self):
        return self.nfiber // self.bundlesize

    def camera_names(self):
        """``b0 .. z{npetal-1}``."""
        return [f"{a}{p}" for a in self.arms for p in range(self.npetal)]

    def camera(self, name):
        """CameraSpec of a camera name (``r3``) or arm (``r``)."""
        arm = name[0].lower()
        if arm not in self.cameras:
            raise KeyError(f"instrument {self.name} has no arm {arm!r}")
        return self.cameras[arm]

    def wavegrid(self, camera):
        return self.camera(camera).wavegrid()

    def to_dict(self):
        return copy.deepcopy(self.raw)


def load_instrument(name_or_path="desi", overrides=None):
    """Load a preset by name or path, optionally overriding parts of it.

    Raises
    ------
    ConfigError
        Unknown preset or invalid content (the message names the field).
    """
    data = _load_raw(name_or_path)
    if overrides:
        data = _deep_update(data, overrides)
    try:
        cams = {}
        for arm in data["arms"]:
            c = data["cameras"][arm]
            cams[arm] = CameraSpec(arm, float(c["wavemin"]), float(c["wavemax"]), float(c["dwave"]),
                                   list(c["gain"]), list(c["readnoise"]), float(c["dark"]), list(c["bias_adu"]))
            if len(cams[arm].gain) != 4 or len(cams[arm].readnoise) != 4:
                raise ConfigError(f"instrument {data.get('name')}: cameras.{arm}: need 4 gains and 4 read noises")
        inst = Instrument(
            name=str(data["name"]), npetal=int(data["npetal"]), nfiber=int(data["nfiber"]),
            bundlesize=int(data["bundlesize"]), arms=list(data["arms"]), ccd=dict(data["ccd"]),
            cameras=cams, description=str(data.get("description", "")), raw=data,
        )
    except KeyError as exc:
        raise ConfigError(f"instrument preset {name_or_path!r} lacks {exc}") from exc
    if inst.nfiber % inst.bundlesize:
        raise ConfigError(f"instrument {inst.name}: nfiber {inst.nfiber} is not a multiple of bundlesize {inst.bundlesize}")
    if not 1 <= inst.npetal <= 10:
        raise ConfigError(f"instrument {inst.name}: npetal must be 1..10")
    for key in ("ny", "nx"):
        if int(inst.ccd.get(key, 0)) % 2:
            raise ConfigError(f"instrument {inst.name}: ccd.{key} must be even (4 amplifiers)")
    return inst
