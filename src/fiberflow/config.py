"""Workflow configuration: load, fill defaults, validate against the JSON schema, resolve roots.

Errors name the file and the key path, e.g.
``config/config.yaml: extract.wavesize: -3 is less than the minimum of 5``.
"""

from __future__ import annotations

import copy
import os
from importlib import resources

import yaml

from . import yamlio
from .errors import ConfigError, one_line
from .provenance import config_hash


def schema():
    """The configuration JSON schema (a dict)."""
    text = (resources.files("fiberflow") / "data" / "schemas" / "config.schema.yaml").read_text()
    return yamlio.safe_load(text)


def _fill_defaults(obj, sch):
    if sch.get("type") == "object" and isinstance(obj, dict):
        for key, sub in sch.get("properties", {}).items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                _fill_defaults(obj[key], sub)
    return obj


def validate_config(config, source="<config>"):
    """Validate (and fill defaults of) a configuration mapping in place; return it.

    Raises
    ------
    ConfigError
        Naming ``source`` and the offending key path.
    """
    import jsonschema

    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: the configuration must be a mapping, got {type(config).__name__}")
    # `snakemake --config nights=[20250101,20250102]` gives strings: nights are YYYYMMDD integers
    if isinstance(config.get("nights"), list):
        config["nights"] = [int(n) if isinstance(n, str) and n.strip().isdigit() else n for n in config["nights"]]
    sch = schema()
    _fill_defaults(config, sch)
    validator = jsonschema.Draft202012Validator(sch)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
            lines.append(f"{source}: {where}: {err.message}")
        raise ConfigError("\n".join(lines))
    return config


def load_config(path=None, overrides=None):
    """Read a YAML config file (optional), apply ``overrides`` (dict), validate.

    Returns
    -------
    dict
    """
    config = {}
    source = "<overrides>"
    if path is not None:
        source = str(path)
        if not os.path.exists(source):
            raise ConfigError(f"{source}: config file does not exist")
        with open(source) as fh:
            try:
                config = yamlio.safe_load(fh) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{source}: not valid YAML ({one_line(exc)})") from exc
    if overrides:
        from .instrument import _deep_update

        config = _deep_update(config, overrides)
    config = validate_config(config, source)
    if path is not None:
        anchor_paths(config, os.path.dirname(os.path.abspath(source)))
    return config


#: configuration keys that hold a file or folder; relative ones are relative to the
#: configuration file (so a production folder holding its config can move or be copied)
PATH_KEYS = (("raw",), ("redux",), ("truth",), ("simulate", "plan"), ("calibration", "default_psf"),
             ("calibration", "default_fiberflat"), ("calibration", "default_fluxcalib"), ("calibration", "pixflat"),
             ("psf", "line_list"), ("redshift", "templates"), ("qa", "ledger"))
#: keys whose relative value is looked up beside the configuration file first, then in the
#: working directory, then among the files shipped with fiberflow
LOOKUP_KEYS = (("qa", "thresholds"), ("quicklook", "thresholds"))


def _path_values(config, key_paths):
    """(key path, the mapping holding its last key, value) of every key path whose value is a string."""
    for keys in key_paths:
        holder = config
        for k in keys[:-1]:
            holder = holder.get(k) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and isinstance(holder.get(keys[-1]), str):
            yield keys, holder, holder[keys[-1]]


def anchor_paths(config, base):
    """Make the relative paths of a validated configuration absolute against ``base`` (the
    configuration file's folder), in place; return the configuration.

    Paths in :data:`PATH_KEYS` are always anchored (``~`` expanded); those in
    :data:`LOOKUP_KEYS` only when the file exists there; an instrument given as a path to a
    preset YAML when it exists there. Absolute paths and nulls are left as they are.
    """
    base = os.path.abspath(base)

    def anchored(val):
        return os.path.normpath(os.path.join(base, os.path.expanduser(val)))

    for keys, holder, val in _path_values(config, PATH_KEYS + LOOKUP_KEYS):
        if not val or os.path.isabs(os.path.expanduser(val)):
            continue
        if keys in PATH_KEYS or os.path.exists(anchored(val)):
            holder[keys[-1]] = anchored(val)
    inst = config.get("instrument")
    if isinstance(inst, str) and inst.endswith((".yaml", ".yml")) and not os.path.isabs(inst) \
            and os.path.exists(anchored(inst)):
        config["instrument"] = anchored(inst)
    return config


def relative_paths(config, base):
    """A copy of a configuration whose :data:`PATH_KEYS` paths under ``base`` are relative to it
    again (what :func:`anchor_paths` undoes): what a hash of the configuration should see, so that
    moving the folder of a production with its configuration changes nothing."""
    config = copy.deepcopy(config)
    base = os.path.abspath(base)
    for keys, holder, val in _path_values(config, PATH_KEYS + LOOKUP_KEYS + (("instrument",),)):
        if os.path.isabs(val) and (val == base or val.startswith(base + os.sep)):
            holder[keys[-1]] = os.path.relpath(val, base)
    return config


def resolve_roots(config, base=None, need_prod=True):
    """Absolute raw, production and truth roots from the config, else DESI environment variables.

    Parameters
    ----------
    config : dict
    base : str, optional
        Folder relative config paths are resolved against (default: current directory).
    need_prod : bool
        Require the production roots (False for tools that only touch raw data, e.g. the
        simulator; ``prod`` is then None when they are unset).

    Returns
    -------
    dict with keys ``raw``, ``redux``, ``specprod``, ``prod``, ``truth`` (truth may be None)
    """
    base = base or os.getcwd()

    def pick(key, env):
        val = config.get(key)
        if val is None and env:
            val = os.environ.get(env)
        return val

    raw = pick("raw", "DESI_SPECTRO_DATA")
    redux = pick("redux", "DESI_SPECTRO_REDUX")
    specprod = pick("specprod", "SPECPROD")
    truth = pick("truth", "FIBERFLOW_TRUTH")
    missing = [name for name, val in (("raw (or $DESI_SPECTRO_DATA)", raw), ("redux (or $DESI_SPECTRO_REDUX)", redux),
                                       ("specprod (or $SPECPROD)", specprod)) if not val
               and (need_prod or name.startswith("raw"))]
    if missing:
        raise ConfigError(f"configuration: set {', '.join(missing)}")

    def absolute(p):
        return None if p is None else os.path.normpath(os.path.join(base, os.path.expanduser(p)))

    return {"raw": absolute(raw), "redux": absolute(redux), "specprod": specprod,
            "prod": absolute(os.path.join(redux, specprod)) if redux and specprod else None, "truth": absolute(truth)}


def section_hash(config, *sections):
    """Hash of some config sections (what a step's outputs depend on)."""
    return config_hash({s: config.get(s) for s in sections})


def default_psf_dir(config, base=None, key="default_psf"):
    """Absolute folder of default calibration files (``calibration.default_psf`` or another
    ``calibration`` key such as ``default_fiberflat``), or None when unset."""
    folder = (config.get("calibration") or {}).get(key)
    if not folder:
        return None
    return os.path.normpath(os.path.join(base or os.getcwd(), os.path.expanduser(folder)))


class StepOptions:
    """Base of the per-step option dataclasses: ``from_config(section)`` keeps the keys the
    dataclass knows (the schema validated them) and ignores the others (e.g. ``threads``)."""

    @classmethod
    def from_config(cls, section):
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in (section or {}).items() if k in known})
