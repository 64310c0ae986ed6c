"""After its source was down, the service treats the first rows as missing (``recovery_settle``).

A Prometheus that comes back evaluates its recording rules before it has scraped anything, so
rate windows that end before the gap give values that are too low for a few seconds: artefacts
of the outage, not of the server. Here the artefact is written into the TSDB as a spike right
after the outage (the same real Prometheus, killed and restarted); the service must not raise
it, unless settling is turned off.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from support.service import STEP, Clock, fitted, history, make_service, settings_for

pytestmark = pytest.mark.integration


@pytest.fixture
def now() -> float:
    return float(np.floor(time.time() / STEP) * STEP)


@pytest.mark.parametrize(("settle", "events"), [("3m", 0), (0, 1)], ids=["settle", "off"])
def test_an_artefact_right_after_an_outage_raises_nothing(
    prometheus_factory, tmp_path, now, settle, events
) -> None:
    begin = now - 3600
    down, back = begin + 2 * STEP, begin + 6 * STEP
    # The spike: two rows just after the source answers again.
    prom = prometheus_factory(backfill=history(now - 60, spike_at=back + STEP, spike_len=2))
    clock = Clock(begin)
    settings = settings_for(prom.url, tmp_path, recovery_settle=settle)
    service = fitted(make_service(settings, clock))
    try:
        assert service.store.query().total == 0
        while clock.now < down:
            clock.now += STEP
            service.run_cycle()
        prom.kill()
        while clock.now < back:
            clock.now += STEP
            service.run_cycle()
        assert not service.health()[0]
        prom.start()
        for _ in range(8):
            clock.now += STEP
            service.run_cycle()
        assert service.health() == (True, "ok")
        found = service.store.query(signal="latency").items
        assert len(found) == events
        if events:
            assert found[0].start == pytest.approx(back + STEP, abs=STEP)
    finally:
        service.stop()
