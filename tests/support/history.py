"""Synthetic signal history for tests and benches: daily seasonality, noise, optional faults.

The functions live in :mod:`demo.backfill`, where the demo uses them too.
"""

from __future__ import annotations

from demo.backfill import daily_series, grid_times

__all__ = ["daily_series", "grid_times"]
