"""The one record of a scored point: what one series showed at one time, and what was expected.

The ensemble scores arrays of rows; everything after it (the service's state, the events in the
history, the REST API and the exporter) carries a point as this record, so its fields are
defined once and a value is never copied field by field from one record type to the next.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ScoredPoint", "finite_or_none"]


def finite_or_none(x: float | None) -> float | None:
    """``x`` as a float, or None where it is missing or not finite (JSON and SQL have no NaN).

    >>> finite_or_none(1), finite_or_none(float("nan")), finite_or_none(None)
    (1.0, None, None)
    """
    return float(x) if x is not None and math.isfinite(x) else None


@dataclass(frozen=True, slots=True)
class ScoredPoint:
    """One series at one time: the value, its expectation and band, and the calibrated score.

    ``at`` is None (and everything else empty) before a series' first scored point; values that
    are missing or not finite are None; ``score`` is in [0, 1], 0 for a point that could not be
    scored.

    >>> ScoredPoint.of(60.0, 2.0, 1.0, 0.5, float("nan"), 0.99)
    ScoredPoint(at=60.0, actual=2.0, expected=1.0, lower=0.5, upper=None, score=0.99)
    """

    at: float | None = None
    actual: float | None = None
    expected: float | None = None
    lower: float | None = None
    upper: float | None = None
    score: float = 0.0

    @classmethod
    def of(
        cls,
        at: float,
        actual: float,
        expected: float,
        lower: float,
        upper: float,
        score: float,
    ) -> ScoredPoint:
        """A point from raw numbers (numpy scalars included), non-finite values as None."""
        return cls(
            at=float(at),
            actual=finite_or_none(actual),
            expected=finite_or_none(expected),
            lower=finite_or_none(lower),
            upper=finite_or_none(upper),
            score=float(score) if math.isfinite(score) else 0.0,
        )
