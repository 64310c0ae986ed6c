"""Per-incident outcomes and the sensitivity table: what was found, when, and which signal paged."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from detector.evaluation.sensitivity import incident_outcome, sensitivity_table

INDEX = pd.date_range("2026-01-05", periods=60, freq="1min")


def _signals(**on: tuple[int, int]) -> pd.DataFrame:
    out = pd.DataFrame(0, index=INDEX, columns=["latency_p99_seconds", "requests_per_second"])
    for name, (a, b) in on.items():
        out.iloc[a:b, out.columns.get_loc(name)] = 1
    return out


def test_an_outcome_records_delay_share_and_the_signals_that_paged() -> None:
    decisions = np.zeros(60, dtype=int)
    decisions[12:25] = 1
    signals = _signals(requests_per_second=(12, 25), latency_p99_seconds=(40, 45))
    out = incident_outcome(
        INDEX, decisions, INDEX[10], INDEX[29], visible=INDEX[11], signals=signals
    )
    assert (out.detected, out.delay_s, out.delay_visible_s, out.share) == (True, 120.0, 60.0, 0.65)
    # The latency alarm came after the incident: only the request rate paged during it.
    assert out.paged == ("requests_per_second",)


def test_a_missed_incident_has_no_delay() -> None:
    out = incident_outcome(INDEX, np.zeros(60), INDEX[10], INDEX[29], visible=INDEX[10])
    assert not out.detected and math.isnan(out.delay_s) and out.share == 0.0 and out.paged == ()


def test_the_table_counts_latency_pages_per_kind() -> None:
    decisions = np.ones(60, dtype=int)
    surge = _signals(requests_per_second=(0, 60))
    slow = _signals(latency_p99_seconds=(0, 60), requests_per_second=(0, 60))
    outcomes = [
        incident_outcome(INDEX, decisions, INDEX[5], INDEX[9], visible=INDEX[5], kind="surge",
                         strength="large", step_s=60.0, signals=surge),
        incident_outcome(INDEX, decisions, INDEX[5], INDEX[9], visible=INDEX[5], kind="surge",
                         strength="large", step_s=60.0, signals=slow),
    ]  # fmt: skip
    row = sensitivity_table(outcomes).loc[("surge", "large")]
    assert row.incidents == 2 and row.rate == 1.0
    assert row.latency_paged == 1
    assert row.paged_by == "requests_per_second 2, latency_p99_seconds 1"
