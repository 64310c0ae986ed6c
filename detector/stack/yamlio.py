"""Reading configuration YAML and writing it back readably; Prometheus durations.

Prometheus durations are a sequence of ``<number><unit>`` parts (``1h30m``, ``500ms``); Python's
own parsers in :mod:`detector.timeutil` take one part only, hence the small parser here.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "dump_yaml",
    "format_duration",
    "load_yaml",
    "parse_prometheus_duration",
    "scale_duration",
]

_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_UNIT_S["y"] = 365 * _UNIT_S["d"]
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")


def load_yaml(path: Path) -> Any:
    """The parsed content of a YAML file (anchors and merge keys resolved)."""
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (PromQL, templates) and no anchors for shared objects."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(data: Any, *, header: str = "") -> str:
    """YAML text of ``data`` in the original key order, after ``header`` as ``#`` comment lines."""
    lines = "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines())
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return lines + body


def parse_prometheus_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as ``"90s"``, ``"1h30m"`` or ``"500ms"``.

    >>> parse_prometheus_duration("1h30m"), parse_prometheus_duration("500ms")
    (5400.0, 0.5)
    """
    raw = str(text).strip()
    if not raw or _PART.sub("", raw):
        raise ValueError(f"not a Prometheus duration: {text!r} (use e.g. 30s, 5m, 1h30m)")
    return sum(int(n) * _UNIT_S[unit] for n, unit in _PART.findall(raw))


def format_duration(seconds: float) -> str:
    """The shortest Prometheus duration for a whole number of seconds (rounded up).

    >>> format_duration(90), format_duration(3600), format_duration(0.2)
    ('90s', '1h', '1s')
    """
    whole = max(math.ceil(seconds - 1e-9), 0)
    if whole == 0:
        return "0s"
    for unit in ("h", "m"):
        if whole % _UNIT_S[unit] == 0:
            return f"{whole // int(_UNIT_S[unit])}{unit}"
    return f"{whole}s"


def scale_duration(text: str, factor: float) -> str:
    """A duration multiplied by ``factor``; anything above zero stays at least one second.

    >>> scale_duration("5m", 0.1), scale_duration("30s", 0.01), scale_duration("0s", 0.5)
    ('30s', '1s', '0s')
    """
    seconds = parse_prometheus_duration(text) * factor
    return format_duration(max(seconds, 1.0) if seconds > 0 else 0.0)
