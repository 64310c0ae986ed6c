"""The service's ``llmwatch_*`` metrics, built at scrape time from its current state.

A custom collector (registered on the ``CollectorRegistry`` it is given) yields gauge families
each time Prometheus scrapes, from the service's :class:`~detector.service.views.ServiceView`: a
series that is gone or stale simply is not in the next scrape, so nothing is left frozen at its last
value.

Labels: every per-series metric carries ``signal`` and the source series' own labels; scores
also carry ``detector`` (a family name, or ``ensemble`` for the series' combined score that the
``anomalous`` decision follows). A source label that collides with one of ours (``signal``,
``detector``, ``version``) or is reserved (``__*``) is exported as ``source_<name>``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from detector.service.views import ServiceView

__all__ = [
    "ENSEMBLE",
    "RESERVED_LABELS",
    "ServiceCollector",
    "export_labels",
]

ENSEMBLE = "ensemble"
RESERVED_LABELS = frozenset({"signal", "detector", "version"})


def export_labels(labels: dict[str, str]) -> dict[str, str]:
    """Source labels renamed where they would collide with the exporter's own.

    >>> export_labels({"signal": "x", "gpu": "0"})
    {'source_signal': 'x', 'gpu': '0'}
    """
    out = {}
    for name, value in labels.items():
        if name in RESERVED_LABELS or name.startswith("__"):
            name = "source_" + name.lstrip("_")
        out[name] = value
    return out


class ServiceCollector(Collector):
    """Yields DESIGN.md §5's metrics from ``view`` at every scrape.

    Parameters
    ----------
    view : ServiceView
        The running service (or anything shaped like it).
    registry : CollectorRegistry
        Where to register; ``None`` leaves registration to the caller.
    clock : callable
        Unix seconds now, for model ages.
    """

    def __init__(
        self,
        view: ServiceView,
        registry: CollectorRegistry | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.view = view
        self.clock = clock
        if registry is not None:
            registry.register(self)

    def describe(self) -> list[Metric]:
        """Nothing: the families are known only at scrape time (avoids a collect at register)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The metric families, built from the view's current state."""
        per_series = {
            "score": GaugeMetricFamily(
                "llmwatch_anomaly_score",
                "Calibrated anomaly score in [0, 1], per series and detector family",
            ),
            "expected": GaugeMetricFamily(
                "llmwatch_expected_value",
                "Value the seasonal baseline expects now (at the current load for the signals "
                "of llmwatch_load_factor)",
            ),
            "load": GaugeMetricFamily(
                "llmwatch_load_factor",
                "What the current load does to the expectation of a load-aware signal (1: the "
                "training window's typical load); absent for signals expected by time of day",
            ),
            "lower": GaugeMetricFamily("llmwatch_expected_lower", "Lower edge of the normal band"),
            "upper": GaugeMetricFamily("llmwatch_expected_upper", "Upper edge of the normal band"),
            "anomalous": GaugeMetricFamily(
                "llmwatch_anomalous", "1 while the series is anomalous (after hysteresis), else 0"
            ),
            "peak": GaugeMetricFamily(
                "llmwatch_event_peak_score",
                "Highest score of the series' open anomaly event; absent while none is open",
            ),
        }
        for status in self.view.series():
            if status.stale or status.point.at is None:
                continue
            base = {"signal": status.signal, **export_labels(status.labels)}
            if status.model_version is not None:
                scores = {ENSEMBLE: status.point.score, **status.family_scores}
                for family, value in scores.items():
                    per_series["score"].add_sample(
                        "llmwatch_anomaly_score", {**base, "detector": family}, value
                    )
                per_series["anomalous"].add_sample(
                    "llmwatch_anomalous", base, float(status.anomalous)
                )
                if status.event_peak is not None:
                    per_series["peak"].add_sample(
                        "llmwatch_event_peak_score", base, status.event_peak
                    )
                if status.load_factor is not None and math.isfinite(status.load_factor):
                    per_series["load"].add_sample("llmwatch_load_factor", base, status.load_factor)
            point = status.point
            for key, value in (
                ("expected", point.expected),
                ("lower", point.lower),
                ("upper", point.upper),
            ):
                if value is not None:
                    per_series[key].add_sample(f"llmwatch_{_NAMES[key]}", base, value)
        yield from per_series.values()
        yield from self._models()
        yield from self._runs()

    def _models(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "llmwatch_model_info", "1 for the model version each signal is served with"
        )
        age = GaugeMetricFamily(
            "llmwatch_model_age_seconds", "Seconds since the served model was fitted"
        )
        now = self.clock()
        for model in self.view.models():
            if model.version is None:
                continue
            for family in model.families:
                info.add_sample(
                    "llmwatch_model_info",
                    {"signal": model.signal, "detector": family, "version": model.version},
                    1.0,
                )
            if model.created_at is not None:
                age.add_sample(
                    "llmwatch_model_age_seconds",
                    {"signal": model.signal},
                    max(now - model.created_at, 0.0),
                )
        yield info
        yield age

    def _runs(self) -> Iterator[Metric]:
        stats = self.view.run_stats()
        last = GaugeMetricFamily(
            "llmwatch_last_run_timestamp_seconds", "When the last scoring cycle finished"
        )
        duration = GaugeMetricFamily(
            "llmwatch_run_duration_seconds", "Seconds the last scoring cycle took"
        )
        if stats.last_run is not None:
            last.add_metric([], stats.last_run)
        if stats.duration is not None:
            duration.add_metric([], stats.duration)
        up = GaugeMetricFamily(
            "llmwatch_up", "1 when the last cycle's queries all succeeded, else 0"
        )
        up.add_metric([], float(stats.up))
        yield from (last, duration, up)
        for kind, name, doc, label, values in (
            (
                CounterMetricFamily,
                "llmwatch_query_errors",
                _QUERY_ERRORS,
                "signal",
                stats.query_errors,
            ),
            (
                CounterMetricFamily,
                "llmwatch_cycle_errors",
                _CYCLE_ERRORS,
                "stage",
                stats.cycle_errors,
            ),
            (
                CounterMetricFamily,
                "llmwatch_invalid_points",
                _INVALID,
                "signal",
                stats.invalid_points,
            ),
            (
                GaugeMetricFamily,
                "llmwatch_series_refused",
                _REFUSED,
                "signal",
                stats.refused_series,
            ),
        ):
            family = kind(name, doc, labels=[label])
            for key, count in values.items():
                family.add_metric([key], float(count))
            yield family


_NAMES = {"expected": "expected_value", "lower": "expected_lower", "upper": "expected_upper"}
_QUERY_ERRORS = "Failed source queries"
_CYCLE_ERRORS = "Failures of a cycle stage (pull, score, record, fit, publish)"
_INVALID = "Source values that are not finite numbers (infinite), taken as missing"
_REFUSED = "Series of a signal not tracked because they are over max_series"
