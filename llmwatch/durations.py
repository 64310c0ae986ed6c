"""The one duration syntax of llmwatch: Prometheus durations, plus decimals and bare seconds.

The detector's config, the CLI options, the serving fault specs and the demo's Prometheus files
all go through :func:`parse_duration`, so ``"1h30m"`` means the same everywhere.
"""

from __future__ import annotations

import argparse
import math
import re

__all__ = ["duration_argument", "format_duration", "parse_duration"]

_UNIT_S = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86_400.0,
    "w": 604_800.0,
    "y": 365 * 86_400.0,
}
# Units from the largest down, each at most once, as Prometheus writes them ("1h30m", "2d12h").
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_ORDER = ("y", "w", "d", "h", "m", "s", "ms")


def _not_a_duration(text: object, why: str = "use e.g. 500ms, 90s, 30m, 1h30m, 1.5d, 2w") -> str:
    return f"not a duration: {text!r} ({why})"


def _compound(raw: str, text: object) -> float:
    parts = _PART.findall(raw)
    if not parts or "".join(n + u for n, u in parts) != raw:
        raise ValueError(_not_a_duration(text))
    ranks = [_ORDER.index(unit) for _, unit in parts]
    if ranks != sorted(set(ranks)):
        raise ValueError(_not_a_duration(text, "units from the largest down, each once"))
    return sum(float(n) * _UNIT_S[unit] for n, unit in parts)


def parse_duration(text: str | float) -> float:
    """Seconds in a duration: ``"90s"``, ``"1h30m"``, ``"500ms"``, ``"1.5d"``, ``"2w"`` or ``42``.

    >>> parse_duration("6h"), parse_duration("1h30m"), parse_duration("1.5d"), parse_duration(42)
    (21600.0, 5400.0, 129600.0, 42.0)
    >>> parse_duration("500ms")
    0.5
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    elif isinstance(text, str):
        raw = text.strip().lower()
        try:
            value = float(raw)
        except ValueError:
            value = _compound(raw, text)
    else:
        raise ValueError(_not_a_duration(text))
    if not math.isfinite(value) or value < 0:
        raise ValueError(_not_a_duration(text, "must be finite and not negative"))
    return value


def duration_argument(text: str) -> float:
    """:func:`parse_duration` as an argparse ``type``: a bad value is a usage error.

    >>> duration_argument("90s")
    90.0
    """
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def format_duration(seconds: float) -> str:
    """The shortest Prometheus duration for a whole number of seconds (rounded up).

    >>> format_duration(90), format_duration(3600), format_duration(5400), format_duration(0.2)
    ('90s', '1h', '90m', '1s')
    """
    whole = max(math.ceil(seconds - 1e-9), 0)
    if whole == 0:
        return "0s"
    for unit in ("h", "m"):
        if whole % _UNIT_S[unit] == 0:
            return f"{whole // int(_UNIT_S[unit])}{unit}"
    return f"{whole}s"
