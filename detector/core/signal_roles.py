"""Which signals are latencies and which are load, by name: what load-aware expectations use.

Kept apart from :mod:`detector.core.load` so that the service's configuration can resolve its
defaults without importing any model code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["auto_explained_by", "is_latency_like"]

_LATENCY_LIKE = re.compile(
    r"latency|ttft|time_to_first|queue_time|inter_token|itl|tpot|prefill|decode|duration"
)
_LOAD_LIKE = re.compile(r"requests_per_second|request_rate|\brps\b|tokens_per_request")
# Shares of a capacity that requests in flight occupy (the KV cache), and those requests.
_CAPACITY_LIKE = re.compile(r"kv_cache|cache_usage")
_IN_FLIGHT = re.compile(r"requests_running")
_TOKENS = re.compile(r"tokens_per_request")


def is_latency_like(name: str) -> bool:
    """Whether a signal's name says it is a latency (see :func:`auto_explained_by`)."""
    return bool(_LATENCY_LIKE.search(name))


def auto_explained_by(columns: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Latency-like and capacity-like columns (by name) -> what explains them among ``columns``.

    Latency-like: names with latency, ttft, queue_time, inter_token, itl, tpot, prefill, decode
    or duration; they follow the load: request rates and tokens per request (prompt or output),
    never requests running or waiting (:mod:`detector.core.load` says why). Capacity-like: a KV
    cache's use, which follows the requests running and their tokens (what occupies it).

    >>> auto_explained_by(["latency_p95_seconds", "requests_per_second", "requests_running"])
    {'latency_p95_seconds': ('requests_per_second',)}
    >>> auto_explained_by(["kv_cache_usage_ratio", "requests_running", "requests_per_second"])
    {'kv_cache_usage_ratio': ('requests_running',)}
    """
    names = [str(c) for c in columns]
    load = tuple(n for n in names if _LOAD_LIKE.search(n))
    held = tuple(n for n in names if _IN_FLIGHT.search(n) or _TOKENS.search(n))
    out = {}
    for n in names:
        if _LATENCY_LIKE.search(n) and load and n not in load:
            out[n] = load
        elif _CAPACITY_LIKE.search(n) and any(_IN_FLIGHT.search(h) for h in held):
            out[n] = held
    return out
