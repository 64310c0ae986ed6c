"""Reading configuration YAML and writing it back readably; scaling the durations in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmwatch.durations import format_duration, parse_duration

__all__ = ["dump_yaml", "load_yaml", "scale_duration"]


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


def scale_duration(text: str, factor: float) -> str:
    """A duration multiplied by ``factor``; anything above zero stays at least one second.

    >>> scale_duration("5m", 0.1), scale_duration("30s", 0.01), scale_duration("0s", 0.5)
    ('30s', '1s', '0s')
    """
    seconds = parse_duration(text) * factor
    return format_duration(max(seconds, 1.0) if seconds > 0 else 0.0)
