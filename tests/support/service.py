"""Building a detector service in tests: a movable clock, history, settings, fitted service.

The service runs cycles when the test calls ``run_cycle``, at the time the test's
:class:`Clock` says, against a real Prometheus (or VictoriaMetrics) that holds the history.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from detector.registry.store import ModelRegistry
from detector.service.config import DetectorSettings, load_settings
from detector.service.history import EventStore
from detector.service.loop import DetectorService
from support.history import daily_series, grid_times
from support.servers import Series

__all__ = [
    "STEP",
    "Clock",
    "fitted",
    "history",
    "make_service",
    "refuse_writes",
    "settings_for",
]

STEP = 60.0
SIGNALS = [
    {"name": "latency", "query": "llmwatch:latency_p95_seconds", "direction": "up"},
    {"name": "errors", "query": "llmwatch:error_ratio", "direction": "up"},
]


class Clock:
    """The service's notion of now, moved by the test (the database answers for any range)."""

    def __init__(self, now: float) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now


def history(
    end: float, *, days: float = 3.0, spike_at: float | None = None, spike_len: int = 3
) -> list[Series]:
    """Two latency series (model a, b) and one error ratio, daily cycle, ``days`` up to ``end``.

    With ``spike_at``, model a's latency jumps by 1.5 s for ``spike_len`` points from then.
    """
    t = grid_times(end - days * 86_400, end, STEP)
    out = [
        daily_series("llmwatch:latency_p95_seconds", {"model": "a"}, t, base=1.0, seed=1),
        daily_series("llmwatch:latency_p95_seconds", {"model": "b"}, t, base=2.0, seed=2),
        daily_series("llmwatch:error_ratio", {}, t, base=0.02, amplitude=0.1, seed=3),
    ]
    if spike_at is not None:
        hit = np.flatnonzero((t >= spike_at) & (t < spike_at + spike_len * STEP))
        out[0].values[hit] += 1.5
    return out


def settings_for(url: str, tmp_path: Path, **extra: Any) -> DetectorSettings:
    """Settings for a test: 1-minute steps, 3-day window, 1 day of history suffices."""
    values: dict[str, Any] = {
        "prometheus": {"url": url, "timeout": 2},
        "interval": STEP,
        "training_window": "3d",
        "min_train_span": "1d",
        "registry_root": tmp_path / "models",
        "history_db": tmp_path / "history.sqlite",
        "signals": SIGNALS,
    }
    values.update(extra)
    return load_settings(None, **values)


def make_service(settings: DetectorSettings, clock: Clock, **kwargs: Any) -> DetectorService:
    """A service whose fits run on a thread (a test needs no process start-up)."""
    kwargs.setdefault("executor", ThreadPoolExecutor(1))
    return DetectorService(
        settings,
        registry=ModelRegistry(settings.registry_root),
        store=EventStore(settings.history_location, shard=settings.shard),
        clock=clock,
        **kwargs,
    )


def fitted(service: DetectorService) -> DetectorService:
    """Run the first cycle, wait for the fits it queues, install them with a second cycle."""
    service.run_cycle()
    if not service.wait_fits(300):
        raise TimeoutError("fits did not finish")
    service.run_cycle()
    return service


def _query_only(dbapi: Any, _record: Any) -> None:
    dbapi.execute("PRAGMA query_only = ON")


def refuse_writes(store: EventStore, refuse: bool) -> None:
    """Have SQLite itself refuse the history's writes from now on (as a full disk would), or
    take them again: every new connection is read-only, and the pooled ones are dropped."""
    store.engine.dispose()
    if refuse:
        sa.event.listen(store.engine, "connect", _query_only)
    else:
        sa.event.remove(store.engine, "connect", _query_only)
