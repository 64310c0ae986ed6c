"""What the other replicas of a sharded deployment record, read from the history they share.

Each replica scores its own shard of the series and writes their events; the open ones in the
shared history are therefore every shard's current anomalies. A replica's ``/api/v1/anomalies``
lists its own from memory (the freshest values) and the others' from the history, as they were
last recorded. A recording replica updates an open event every cycle, so one that has not been
updated for ``stale_after`` belongs to a replica that has stopped: it is shown, marked stale,
until that replica (or its restart) closes it.
"""

from __future__ import annotations

from detector.service.config import Shard
from detector.service.history_reader import Event, EventReader
from detector.service.views import ActiveAnomaly

__all__ = ["peer_anomalies", "recorded_anomaly"]


def recorded_anomaly(event: Event, *, now: float, stale_after: float) -> ActiveAnomaly:
    """An open event of the history as the API shows an anomaly, its values the latest recorded."""
    return ActiveAnomaly(
        event_id=event.id,
        signal=event.signal,
        labels=dict(event.labels),
        since=event.start,
        peak_score=event.peak.score,
        point=event.last,
        families=list(event.families),
        contributions=dict(event.contributions),
        explained_by=event.explained_by,
        load_factor=event.load_factor,
        shard=event.shard,
        stale=now - event.last.at > stale_after,
    )


def peer_anomalies(
    history: EventReader, shard: Shard, *, now: float, stale_after: float
) -> list[ActiveAnomaly]:
    """The open events of the series other shards own; none when there is one shard."""
    if shard.count == 1:
        return []
    events = history.open_events(lambda signal, labels: not shard.owns(signal, labels))
    return [recorded_anomaly(e, now=now, stale_after=stale_after) for e in events]
