"""Seed a running stack's Prometheus with history at the levels its live traffic shows.

:func:`calibrate_and_seed` waits for the calibration, measures the live signals
(:mod:`demo.calibrate`), stops Prometheus, writes days of history as TSDB blocks into
its data folder (:mod:`demo.synth`, :mod:`demo.backfill`) and starts it
again on the same data with the full configuration: the live data continue the history, and the
calibration's own minute stays in it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from demo.backfill import PROMTOOL, backfill_prometheus
from demo.calibrate import SeriesLevel, measure_levels
from demo.launch import StackLauncher
from demo.synth import history_series
from llmwatch.durations import parse_duration

__all__ = ["SeedReport", "calibrate_and_seed"]

# The load generator's start-up and the first answers' latency: no steady rate before this.
_LOAD_SETTLE_S = 10.0
# promtool keeps the cores busy for seconds; the live traffic must not notice.
_PROMTOOL_NICE = 15


@dataclass(frozen=True)
class SeedReport:
    """What the calibration measured and what was written."""

    levels: list[SeriesLevel]
    series: int
    points: int
    start: float
    end: float
    seconds: float  # Prometheus was down this long


def calibrate_and_seed(stack: StackLauncher, since: float) -> SeedReport:
    """Measure the live signals for ``options.calibration_s``, then seed Prometheus.

    ``since`` is when the load started; the calibration starts once the load has settled and
    Prometheus (started with ``calibration=True``) has scraped twice.
    """
    opts = stack.options
    scrape = parse_duration(opts.scrape_interval)
    begin = max(since + _LOAD_SETTLE_S, stack.prometheus_started + 2 * scrape)
    while time.time() < begin + opts.calibration_s:
        stack.supervisor.check()
        time.sleep(0.5)
    end = time.time()
    rules = next(p for p in stack.configs.rule_files if p.name == "recording.yml")
    levels = measure_levels(
        stack.url("prometheus"),
        rules,
        start=begin,
        end=end,
        resolution=scrape,
        short_window=max(5.0, 2 * scrape),
    )
    began = time.monotonic()
    stack.supervisor.get("prometheus").stop()
    # The history ends before the first live sample: blocks must not overlap the head.
    last = since - 1.0
    days, step = opts.history_days, opts.step
    series = history_series(levels, end=last, days=days, step=step, seed=opts.seed)
    backfill_prometheus(stack.prometheus_data, series, promtool=PROMTOOL, nice=_PROMTOOL_NICE)
    stack.start_prometheus()
    return SeedReport(
        levels=levels,
        series=len(series),
        points=sum(s.timestamps.size for s in series),
        start=float(series[0].timestamps[0]) if series else last,
        end=last,
        seconds=time.monotonic() - began,
    )
