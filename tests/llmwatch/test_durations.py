"""Tests of the one duration parser that every package uses."""

from __future__ import annotations

import pytest

from llmwatch.durations import format_duration, parse_duration

DAY_S = 86_400.0
WEEK_S = 7 * DAY_S

# -- parse_duration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", 90.0),
        ("30m", 1800.0),
        ("6h", 21600.0),
        ("14d", 14 * DAY_S),
        ("2w", 2 * WEEK_S),
        ("1.5d", 1.5 * DAY_S),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("1y", 365 * DAY_S),
        (" 6H ", 21600.0),
        ("42", 42.0),
        ("0", 0.0),
        ("0s", 0.0),
        (42, 42.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration(text, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "abc",
        "5x",
        "m",
        "h6",
        "30m1h",
        "1h1h",
        "1h 30m",
        "-5m",
        "-1",
        "inf",
        "nan",
        "infh",
        "1e999s",
    ],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("value", [-1, -0.5, float("nan"), float("inf")])
def test_parse_duration_rejects_numbers(value: float) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (0.2, "1s"), (90, "90s"), (3600, "1h"), (5400, "90m")]
)
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == max(float(round(seconds + 0.49)), 0.0)
