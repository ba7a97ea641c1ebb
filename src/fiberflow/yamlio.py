"""YAML reading: the safe loader, in its C implementation when PyYAML has one (the workflow
parses the configuration, its schema, the instrument preset and the QA thresholds every time it
plans, and the pure-Python loader is several times slower)."""

from __future__ import annotations

import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: what PyYAML raises for malformed YAML (for callers that turn it into a one-line error)
YAMLError = yaml.YAMLError


def safe_load(stream):
    """``yaml.safe_load`` with the C loader when available. ``stream``: str or open file."""
    return yaml.load(stream, Loader=_LOADER)  # noqa: S506 - a safe loader
