"""``/api/v1/signals``: every configured signal with the latest point of each of its series."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from detector.service.api.convert import series_public
from detector.service.api.deps import ViewDep
from detector.service.api.schemas import SIGNAL_PATTERN, SeriesPublic, SignalPublic, SignalsPublic

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/signals", tags=["signals"])


@router.get("", response_model=SignalsPublic, summary="Signals and their latest points")
def read_signals(
    view: ViewDep,
    limit: Annotated[int, Query(ge=1, le=10_000, description="series in this page")] = 1_000,
    offset: Annotated[int, Query(ge=0, description="series skipped before this page")] = 0,
) -> SignalsPublic:
    """Every configured signal, in configuration order: last value, expected, band and score of
    each series, a page of ``limit`` series from ``offset`` (a fleet has thousands)."""
    every = view.series()
    by_signal: dict[str, list[SeriesPublic]] = {name: [] for name in view.signal_names()}
    for s in every[offset : offset + limit]:
        by_signal.setdefault(s.signal, []).append(series_public(s))
    items = [SignalPublic(name=name, series=series) for name, series in by_signal.items()]
    return SignalsPublic(
        data=items, count=len(items), series_total=len(every), limit=limit, offset=offset
    )


@router.get(
    "/{name}",
    response_model=SignalPublic,
    summary="One signal and its latest points",
    responses={404: {"description": "no signal of that name is configured"}},
)
def read_signal(view: ViewDep, name: Annotated[str, Path(pattern=SIGNAL_PATTERN)]) -> SignalPublic:
    """The latest point of each series of one signal."""
    if name not in view.signal_names():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no signal {name!r} is configured")
    return SignalPublic(name=name, series=[series_public(s) for s in view.series(name)])
