"""``/api/v1/anomalies``: what is anomalous now, and the recorded history of events."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from detector.service.api.convert import anomaly_public, event_public
from detector.service.api.deps import EventsDep, ViewDep
from detector.service.api.schemas import SIGNAL_PATTERN, AnomaliesPublic, EventsPublic
from detector.service.history import EventError

__all__ = ["parse_time", "router"]

router = APIRouter(prefix="/api/v1/anomalies", tags=["anomalies"])

_MAX_UNIX = 253_402_300_799.0  # 9999-12-31T23:59:59Z
_TIME_HELP = "ISO-8601 (UTC unless it names a zone) or unix seconds"
_UNPROCESSABLE = 422  # named differently across Starlette versions


def parse_time(name: str, text: str) -> float:
    """Unix seconds from ISO-8601 or unix-seconds text; ``ValueError`` naming ``name`` if not.

    >>> parse_time("start", "1970-01-01T00:01:00Z"), parse_time("start", "60.5")
    (60.0, 60.5)
    """
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            stamp = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{name}={text!r} is neither ISO-8601 nor unix seconds") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        try:
            value = stamp.timestamp()
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"{name}={text!r} is out of range") from None
    if not (math.isfinite(value) and 0.0 <= value <= _MAX_UNIX):
        raise ValueError(f"{name}={text!r} is out of range (1970 to 9999)")
    return value


@router.get("", response_model=AnomaliesPublic, summary="Anomalies open now")
def read_active(
    view: ViewDep,
    signal: Annotated[str | None, Query(max_length=128, description="only this signal")] = None,
) -> AnomaliesPublic:
    """Every series whose decision is anomalous now, highest score first."""
    items = [anomaly_public(a) for a in view.active_anomalies() if signal in (None, a.signal)]
    return AnomaliesPublic(data=items, count=len(items))


@router.get(
    "/history",
    response_model=EventsPublic,
    summary="Recorded anomaly events",
    responses={422: {"description": "a bad time, signal name, limit or offset"}},
)
def read_history(
    events: EventsDep,
    start: Annotated[str | None, Query(max_length=64, description=_TIME_HELP)] = None,
    end: Annotated[str | None, Query(max_length=64, description=_TIME_HELP)] = None,
    signal: Annotated[str | None, Query(pattern=SIGNAL_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> EventsPublic:
    """Events overlapping ``[start, end]`` (open ones last until now), newest first, a page at
    a time: follow ``next_offset`` until it is null."""
    try:
        t0 = parse_time("start", start) if start is not None else None
        t1 = parse_time("end", end) if end is not None else None
        page = events.query(start=t0, end=t1, signal=signal, limit=limit, offset=offset)
    except (ValueError, EventError) as exc:
        raise HTTPException(_UNPROCESSABLE, str(exc)) from None
    return EventsPublic(
        data=[event_public(e) for e in page.items],
        count=page.total,
        limit=page.limit,
        offset=page.offset,
        next_offset=page.next_offset,
    )
