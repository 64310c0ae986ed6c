"""Incident review: the recorded anomaly events, how far off they were, what moved together.

Events come from the running service's REST API (``GET /api/v1/anomalies/history``), so the
review shows what the service recorded. Whether other signals moved at the same time is answered
from the raw series, independently of any model: each value is compared with the same time of
day on the previous days (a seasonal-naive reference) and scaled by how much that difference
varied before the range, giving a robust z-score per series.

Examples
--------
>>> idx = pd.date_range("2026-01-05", periods=4 * 24, freq="h")
>>> hour = idx.hour.to_numpy()
>>> frame = pd.DataFrame({"a": np.sin(hour / 24 * 6.28), "b": np.cos(hour / 24 * 6.28)}, index=idx)
>>> frame.iloc[-3:, 0] += 5.0
>>> z = deviation_scores(frame, idx[-6], idx[-1], reference_days=2)
>>> moved_together(z)["moved"].to_dict()
{'a': True, 'b': False}
"""

from __future__ import annotations

import math
import warnings
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pandas as pd

from detector.core.robust import robust_sigma
from detector.core.timeutil import DAY_S
from detector.service.config import DetectorSettings
from detector.service.source import Source, series_key
from detector.workbench.candidates import Candidate, Replay, replay_history
from detector.workbench.data import column_label, pull_history, readable

__all__ = [
    "EVENT_COLUMNS",
    "deviation_scores",
    "fetch_events",
    "group_events",
    "incident_summary",
    "incident_window",
    "load_events",
    "moved_together",
    "replay_events",
    "review_history",
]

EVENT_COLUMNS = (
    "id",
    "signal",
    "series",
    "start",
    "end",
    "open",
    "duration_min",
    "peak_at",
    "peak_score",
    "actual",
    "expected",
    "lower",
    "upper",
    "off_by",
    "off_by_pct",
    "off_by_bands",
    "detectors",
    "model_version",
)
_PAGE = 1000  # the API's largest page


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()


def _num(x: Any) -> float:
    return float(x) if x is not None else math.nan


def _bands(actual: float, expected: float, lower: float, upper: float) -> float:
    # How many half-band widths away from the expected value: 1.0 is the band's edge.
    width = upper - expected if actual >= expected else expected - lower
    if not (math.isfinite(width) and width > 0):
        return math.nan
    return (actual - expected) / width


def _event_row(item: dict[str, Any], now: pd.Timestamp) -> dict[str, Any]:
    start = pd.Timestamp(item["start"])
    end = pd.Timestamp(item["end"]) if item["end"] else pd.NaT
    actual, expected = _num(item["actual"]), _num(item["expected"])
    lower, upper = _num(item["lower"]), _num(item["upper"])
    off = actual - expected
    return {
        "id": item["id"],
        "signal": item["signal"],
        "series": column_label(item["signal"], series_key(item["labels"])),
        "start": start,
        "end": end,
        "open": item["open"],
        "duration_min": ((end if item["end"] else now) - start).total_seconds() / 60.0,
        "peak_at": pd.Timestamp(item["peak_at"]),
        "peak_score": item["peak_score"],
        "actual": actual,
        "expected": expected,
        "lower": lower,
        "upper": upper,
        "off_by": off,
        "off_by_pct": off / abs(expected) * 100.0 if expected else math.nan,
        "off_by_bands": _bands(actual, expected, lower, upper),
        "detectors": ", ".join(item["detectors"]),
        "model_version": item["model_version"],
    }


def fetch_events(
    api_url: str,
    start: float,
    end: float,
    *,
    signal: str | None = None,
    timeout: float = 10.0,
    page_size: int = _PAGE,
) -> pd.DataFrame:
    """Events overlapping ``[start, end]`` (unix seconds), oldest first; every page is fetched.

    Columns :data:`EVENT_COLUMNS`; times are UTC. ``off_by`` is actual minus expected at the peak,
    ``off_by_pct`` that in percent of the expected value, ``off_by_bands`` in half-widths of the
    expected band (1 is its edge). Pages of ``page_size`` (at most 1000) are fetched until the
    last. Raises ``httpx.HTTPStatusError`` with the API's reason on a bad request,
    ``httpx.HTTPError`` when the service cannot be reached.
    """
    params: dict[str, Any] = {"start": _iso(start), "end": _iso(end), "limit": page_size}
    if signal is not None:
        params["signal"] = signal
    now = pd.Timestamp.now(tz=UTC)
    items: list[dict[str, Any]] = []
    offset: int | None = 0
    with httpx.Client(base_url=api_url.rstrip("/"), timeout=timeout) as client:
        while offset is not None:
            response = client.get("/api/v1/anomalies/history", params={**params, "offset": offset})
            if response.is_error:
                # The API says why in ``detail``; raise_for_status would drop it.
                raise httpx.HTTPStatusError(
                    f"{response.status_code} from {response.url}: {response.text[:500]}",
                    request=response.request,
                    response=response,
                )
            page = response.json()
            items += page["data"]
            offset = page["next_offset"]
    rows = [_event_row(item, now) for item in items]
    table = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    return table.sort_values(["start", "id"], ignore_index=True)


def load_events(
    api_url: str,
    settings: DetectorSettings,
    source: Source,
    start: float,
    end: float,
    *,
    signal: str | None = None,
    offline: bool = False,
) -> pd.DataFrame:
    """The events over ``[start, end]``: the running detector's (:func:`fetch_events`), or, when
    working ``offline`` or when it does not answer (said), :func:`replay_events` over the same
    data."""
    if not offline:
        try:
            return fetch_events(api_url, start, end, signal=signal)
        except httpx.TransportError as exc:
            print(
                f"the detector at {api_url} does not answer ({type(exc).__name__}): showing "
                "the events the configured detector records when replayed over the range"
            )
    return replay_events(settings, source, start, end, signal=signal)


def replay_events(
    settings: DetectorSettings,
    source: Source,
    start: float,
    end: float,
    *,
    signal: str | None = None,
    train_days: float = 7.0,
) -> pd.DataFrame:
    """The events a detector with the configured settings would have recorded over
    ``[start, end]``, fitted on the ``train_days`` before ``start``: :func:`fetch_events`
    without a running service (offline data, or a range the service did not watch).

    Same columns; ``model_version`` is ``"replay"``.
    """
    names = None if signal is None else [signal]
    history = pull_history(settings, start - train_days * DAY_S, end, signals=names, source=source)
    items: list[dict[str, Any]] = []
    for replay in replay_history(history, settings, [Candidate("as configured")], split=start):
        items += _replayed(replay, history[replay.signal].labels, len(items))
    now = pd.Timestamp(end, unit="s", tz=UTC)
    table = pd.DataFrame([_event_row(i, now) for i in items], columns=list(EVENT_COLUMNS))
    return table.sort_values(["start", "id"], ignore_index=True)


def _replayed(replay: Replay, labels: dict[str, dict[str, str]], first_id: int) -> list[dict]:
    """A replay's runs of ``anomalous`` as the API's event records."""
    res, enter = replay.scores, replay.settings.thresholds.enter
    flags = res.signal_anomalous.to_numpy() != 0
    stamps = res.signal_anomalous.index.tz_localize("UTC")
    out = []
    for j, key in enumerate(res.signal_anomalous.columns):
        on = flags[:, j]
        starts = np.flatnonzero(on & ~np.r_[False, on[:-1]])
        stops = np.flatnonzero(on & ~np.r_[on[1:], False])
        for i0, i1 in zip(starts, stops, strict=True):
            scores = res.signal_scores.iloc[i0 : i1 + 1, j].to_numpy()
            peak = i0 + int(np.argmax(scores))
            fired = res.family_scores.xs(key, axis=1, level=0).iloc[i0 : i1 + 1].max() >= enter
            value = {n: getattr(res, n).iat[peak, j] for n in ("actual", "expected", "lower")}
            out.append({
                "id": first_id + len(out) + 1,
                "signal": replay.signal,
                "labels": labels.get(key, {}),
                "start": stamps[i0].isoformat(),
                "end": None if i1 == len(on) - 1 else stamps[i1].isoformat(),
                "open": bool(i1 == len(on) - 1),
                "peak_at": stamps[peak].isoformat(),
                "peak_score": float(scores.max()),
                **{n: float(v) for n, v in value.items()},
                "upper": float(res.upper.iat[peak, j]),
                "detectors": sorted(str(f) for f, hit in fired.items() if hit),
                "model_version": "replay",
            })  # fmt: skip
    return out


def group_events(events: pd.DataFrame, *, gap: str | pd.Timedelta = "15min") -> pd.DataFrame:
    """``events`` numbered by ``incident``: events overlapping in time (within ``gap``) share one.

    Scores mark onsets and re-arm, so one lasting problem can open several short events minutes
    apart; the anomaly alert keeps firing 10 minutes past its last event (``keep_firing_for`` in
    ``configs/rules/anomaly.yml``), so a 15-minute gap groups what one page would have covered.

    Open events count as lasting until now. Incidents are numbered from 1 in time order.
    """
    out = events.sort_values("start", ignore_index=True)
    now = pd.Timestamp.now(tz=UTC)
    ends = out["end"].where(out["end"].notna(), now) if len(out) else out["end"]
    numbers, current, reach = [], 0, None
    for start, end in zip(out["start"], ends, strict=True):
        if reach is None or start > reach + pd.Timedelta(gap):
            current += 1
            reach = end
        reach = max(reach, end)
        numbers.append(current)
    return out.assign(incident=np.asarray(numbers, dtype=np.int64))


def incident_summary(grouped: pd.DataFrame) -> pd.DataFrame:
    """One row per incident of :func:`group_events`: span, signals involved, the strongest event."""
    rows = []
    for number, group in grouped.groupby("incident", sort=True):
        top = group.loc[group["peak_score"].idxmax()]
        rows.append(
            {
                "incident": number,
                "start": group["start"].min(),
                "end": pd.NaT if group["open"].any() else group["end"].max(),
                "events": len(group),
                "signals": ", ".join(sorted(set(group["signal"]))),
                "strongest": top["series"],
                "peak_score": top["peak_score"],
                "off_by_pct": top["off_by_pct"],
            }
        )
    columns = ["incident", "start", "end", "events", "signals", "strongest", "peak_score"]
    return pd.DataFrame(rows, columns=[*columns, "off_by_pct"]).set_index("incident")


def incident_window(
    summary: pd.DataFrame, incident: int | None = None, *, margin: str = "15min"
) -> tuple[float, float]:
    """Unix seconds from ``margin`` before an incident of :func:`incident_summary` to after it.

    ``incident`` defaults to the one with the most events (then the highest peak score); an open
    incident ends now.
    """
    if summary.empty:
        raise ValueError("no incidents in the range")
    if incident is None:
        incident = summary.sort_values(["events", "peak_score"], ascending=False).index[0]
    row = summary.loc[incident]
    end = row["end"] if pd.notna(row["end"]) else pd.Timestamp.now(tz=UTC)
    pad = pd.Timedelta(margin)
    return (row["start"] - pad).timestamp(), (end + pad).timestamp()


def review_history(
    settings: DetectorSettings,
    start: float,
    end: float,
    *,
    reference_days: int = 3,
    source: Source | None = None,
) -> pd.DataFrame:
    """Every configured series over ``[start, end]`` and the reference :func:`deviation_scores`
    needs before it, in one frame named by :func:`~detector.workbench.data.column_label`."""
    history = pull_history(settings, start - 2 * reference_days * DAY_S, end, source=source)
    return readable(history)


def _naive(ts: Any) -> pd.Timestamp:
    stamp = pd.Timestamp(ts, unit="s") if isinstance(ts, int | float) else pd.Timestamp(ts)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tz is not None else stamp


def _days_earlier(frame: pd.DataFrame, days: int, step: pd.Timedelta) -> np.ndarray:
    # The value ``days`` earlier at each row: the nearest row within half a step of it, so a
    # grid that is not aligned to whole days still finds its neighbours.
    shifted = frame.shift(freq=pd.Timedelta(days=days))
    if step <= pd.Timedelta(0):
        return shifted.reindex(frame.index).to_numpy()
    return shifted.reindex(frame.index, method="nearest", tolerance=step / 2).to_numpy()


def deviation_scores(
    frame: pd.DataFrame,
    start: Any,
    end: Any,
    *,
    reference_days: int = 3,
) -> pd.DataFrame:
    """Robust z-score of every column over ``[start, end]`` against the same time on earlier days.

    The reference of a value is the median of the values ``1 .. reference_days`` days earlier;
    the scale is the robust spread (MAD-based) of value minus reference over the
    ``reference_days`` days before ``start``. ``frame`` must reach back ``2 * reference_days``
    days before ``start`` for a full reference; ``start``/``end`` are unix seconds or timestamps
    (naive ones are UTC), as is ``frame``'s index.
    """
    if reference_days < 1:
        raise ValueError(f"reference_days must be at least 1, got {reference_days}")
    t0, t1 = _naive(start), _naive(end)
    index = frame.index if frame.index.tz is None else frame.index.tz_convert(None)
    frame = frame.set_axis(index, axis=0).astype(np.float64)
    step = pd.Timedelta(index.to_series().diff().median()) if len(index) > 1 else pd.Timedelta(0)
    earlier = [_days_earlier(frame, k, step) for k in range(1, reference_days + 1)]
    with warnings.catch_warnings():
        # Rows without any earlier value have no reference (NaN), which is what they should be.
        warnings.simplefilter("ignore", RuntimeWarning)
        reference = np.nanmedian(np.stack(earlier), axis=0)
    residual = frame - reference
    before = residual[(index >= t0 - pd.Timedelta(days=reference_days)) & (index < t0)]
    out = {}
    for column in frame.columns:
        r = before[column].to_numpy()
        r = r[np.isfinite(r)]
        level = np.nanmedian(np.abs(frame[column].to_numpy())) if frame[column].notna().any() else 0
        # A flat series has no spread: a small floor keeps any real change finite and large.
        scale = max(robust_sigma(np.abs(r - np.median(r))) if r.size else 0.0, 1e-3 * level, 1e-9)
        out[column] = residual[column] / scale
    z = pd.DataFrame(out, index=index)
    return z[(index >= t0) & (index <= t1)]


def moved_together(z: pd.DataFrame, *, threshold: float = 4.0) -> pd.DataFrame:
    """Per series of :func:`deviation_scores`: the largest deviation, when, and whether it moved.

    ``moved`` is true when the robust z-score reached ``threshold`` in either direction; rows are
    sorted by the size of the deviation, largest first. Give it the incident's span (see
    :func:`incident_window`): over hours, noise alone reaches 3 or 4 now and then.
    """
    rows = []
    for column in z.columns:
        values = z[column].to_numpy()
        ok = np.isfinite(values)
        if not ok.any():
            rows.append({"series": column, "peak_z": math.nan, "peak_at": pd.NaT, "moved": False})
            continue
        i = int(np.nanargmax(np.where(ok, np.abs(values), -np.inf)))
        rows.append(
            {
                "series": column,
                "peak_z": float(values[i]),
                "peak_at": z.index[i],
                "moved": bool(abs(values[i]) >= threshold),
            }
        )
    table = pd.DataFrame(rows, columns=["series", "peak_z", "peak_at", "moved"])
    order = np.argsort(-np.nan_to_num(np.abs(table["peak_z"].to_numpy()), nan=-1.0), kind="stable")
    return table.iloc[order].set_index("series")
