"""Fault injection in the serving layer, so that it works with any engine.

Kinds and what ``intensity`` means:

=============== ===============================================================================
``latency``     ``mode: fixed`` (default): seconds added before the first token;
                ``mode: proportional``: factor (> 1) stretching every wait for the engine
                (time to first token and each gap between tokens)
``slow_tokens`` seconds added per output token after the first
``errors``      share of requests (0 to 1] failing before generation (HTTP 500, status error)
``corrupt_json`` share of JSON answers (0 to 1] broken by prose put in front of the JSON
``memory``      MiB really allocated (pages touched), growing linearly over ``ramp`` seconds
                (default: the fault's duration), released when the fault ends
``stall``       no token is delivered while the fault runs (intensity unused)
=============== ===============================================================================

A fault is ``pending`` until its start, ``active`` during its window and ``ended`` after it
(or when deleted). Starts and ends are logged, reflected in ``<prefix>_fault_active{kind}``
and kept with their wall-clock times, so evaluations can label incidents.

Faults come from a schedule file (:mod:`serving.fault_spec`) or ``POST /admin/faults``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import mmap
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from serving.engines.base import EngineError, GenerationChunk
from serving.fault_spec import FaultSpec
from serving.metrics import FAULT_KINDS, ServingMetrics

__all__ = ["CORRUPTION_PREFIX", "Fault", "FaultInjector", "InjectedError", "RequestFaults"]

_log = logging.getLogger(__name__)

CORRUPTION_PREFIX = "Sure! Here is the JSON you asked for:\n"
_MIB = 1024 * 1024
_MEMORY_STEP_S = 0.5  # how often a growing memory fault allocates more
_HISTORY = 1000  # ended faults kept for GET /admin/faults


@dataclass
class RequestFaults:
    """What the faults decided for one request at its start."""

    corrupt: bool  # put prose in front of the first chunk (corrupt_json)


class InjectedError(EngineError):
    """A request failed on purpose (``errors`` fault)."""


@dataclass
class Fault:
    """A fault known to the injector, with its planned and actual window."""

    id: int
    spec: FaultSpec
    source: Literal["schedule", "admin"]
    due: float  # monotonic start
    until: float | None  # monotonic end (None: open)
    started_at: float | None = None  # unix time
    ended_at: float | None = None

    @property
    def state(self) -> Literal["pending", "active", "ended"]:
        """Where the fault is in its life."""
        if self.ended_at is not None:
            return "ended"
        return "pending" if self.started_at is None else "active"


class FaultInjector:
    """Keeps the faults, switches them on and off in time, and applies them to requests.

    Parameters
    ----------
    metrics
        Where ``fault_active`` is set (None: no metrics).
    seed
        Seed of the random draws deciding which requests fail or get corrupted.
    memory_max_mb
        Upper bound of the memory all ``memory`` faults hold together.
    """

    def __init__(
        self,
        *,
        metrics: ServingMetrics | None = None,
        seed: int = 0,
        memory_max_mb: int = 2048,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.seed = seed
        self.memory_max_mb = memory_max_mb
        self._clock = clock
        self._wall_offset = time.time() - clock()
        self._rng = random.Random(seed)
        self._faults: dict[int, Fault] = {}
        self._next_id = 1
        self._schedule: list[FaultSpec] = []
        self._active: dict[str, list[Fault]] = {kind: [] for kind in FAULT_KINDS}
        self._memory: dict[int, list[mmap.mmap]] = {}
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # True while a fault acting on every token runs (proportional latency, slow tokens,
        # stall); the request path calls on_chunk only then. A plain attribute: read per token.
        self.engaged = False

    # -- life cycle ---------------------------------------------------------------------------

    def schedule(self, specs: list[FaultSpec]) -> None:
        """Faults to add, relative to :meth:`start`."""
        self._schedule = list(specs)

    async def start(self) -> None:
        """Add the scheduled faults and start switching faults on and off."""
        for spec in self._schedule:
            self.add(spec, source="schedule")
        self._task = asyncio.create_task(self._run(), name="fault-scheduler")

    async def stop(self) -> None:
        """End every fault, release memory and stop the scheduler."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        now = self._clock()
        for fault in self._faults.values():
            if fault.state != "ended":
                self._finish(fault, now)
        self._publish()
        for fault_id in list(self._memory):
            self._release(fault_id)

    # -- admin --------------------------------------------------------------------------------

    def add(self, spec: FaultSpec, *, source: Literal["schedule", "admin"] = "admin") -> Fault:
        """Register ``spec`` starting ``spec.start`` seconds from now; returns the fault."""
        if spec.kind == "memory" and spec.intensity > self.memory_max_mb:
            raise ValueError(
                f"intensity: {spec.intensity:g} MiB exceeds fault_memory_max_mb "
                f"({self.memory_max_mb})"
            )
        now = self._clock()
        due = now + spec.start
        until = None if spec.duration is None else due + spec.duration
        fault = Fault(id=self._next_id, spec=spec, source=source, due=due, until=until)
        self._next_id += 1
        self._faults[fault.id] = fault
        self._advance(now)
        self._changed.set()  # the scheduler recomputes its next wake-up
        return fault

    def end(self, fault_id: int) -> Fault:
        """End (or cancel, when pending) fault ``fault_id`` now; raises KeyError when unknown."""
        fault = self._faults[fault_id]
        if fault.state != "ended":
            self._finish(fault, self._clock())
            self._publish()
        return fault

    def faults(self) -> list[Fault]:
        """Every fault known, oldest first (ended ones up to a bounded history)."""
        return list(self._faults.values())

    def to_unix(self, monotonic: float | None) -> float | None:
        """Wall-clock time of a monotonic instant."""
        return None if monotonic is None else monotonic + self._wall_offset

    def public(self, fault: Fault) -> dict[str, Any]:
        """The JSON record of ``fault`` (spec, state, planned and actual window)."""
        return {
            "id": fault.id,
            **fault.spec.model_dump(),
            "source": fault.source,
            "state": fault.state,
            "start_at": self.to_unix(fault.due),
            "end_at": self.to_unix(fault.until),
            "started_at": fault.started_at,
            "ended_at": fault.ended_at,
        }

    # -- switching ----------------------------------------------------------------------------

    def _finish(self, fault: Fault, now: float) -> None:
        if fault.started_at is not None:
            _log.info("fault %d ended: kind=%s", fault.id, fault.spec.kind)
            self._active[fault.spec.kind].remove(fault)
        else:
            _log.info("fault %d cancelled before it started: kind=%s", fault.id, fault.spec.kind)
        fault.ended_at = self.to_unix(now)
        self._release(fault.id)
        self._changed.set()

    def _advance(self, now: float) -> None:
        changed = False
        for fault in list(self._faults.values()):
            if fault.started_at is None and fault.ended_at is None and fault.due <= now:
                fault.started_at = self.to_unix(now)
                self._active[fault.spec.kind].append(fault)
                spec = fault.spec
                _log.info(
                    "fault %d started: kind=%s intensity=%g mode=%s duration=%s source=%s",
                    fault.id, spec.kind, spec.intensity, spec.mode, spec.duration, fault.source,
                )  # fmt: skip
                changed = True
            if fault.state == "active" and fault.until is not None and fault.until <= now:
                self._finish(fault, now)
                changed = True
        if changed:
            self._publish()
            self._changed.set()
        ended = [f.id for f in self._faults.values() if f.state == "ended"]
        for fault_id in ended[: max(0, len(ended) - _HISTORY)]:
            del self._faults[fault_id]

    def _publish(self) -> None:
        for kind, faults in self._active.items():
            if self.metrics is not None:
                self.metrics.set_fault_active(kind, bool(faults))
        self.engaged = bool(
            self._active["stall"]
            or self._active["slow_tokens"]
            or any(f.spec.mode == "proportional" for f in self._active["latency"])
        )
        if self._active["stall"]:
            self._unstalled.clear()
        else:
            self._unstalled.set()

    def _next_wake(self, now: float) -> float | None:
        times = [f.due for f in self._faults.values() if f.state == "pending"]
        times += [f.until for f in self._active_all() if f.until is not None]
        for fault in self._active["memory"]:
            ramp = self._ramp(fault)
            if ramp > 0 and now < fault.due + ramp:
                times.append(now + min(_MEMORY_STEP_S, max(ramp / 10, 0.02)))
        return min(times, default=None)

    @staticmethod
    def _ramp(fault: Fault) -> float:
        spec = fault.spec
        return spec.ramp if spec.ramp is not None else spec.duration or 0.0

    def _active_all(self) -> list[Fault]:
        return [f for faults in self._active.values() for f in faults]

    async def _run(self) -> None:
        while True:
            now = self._clock()
            self._advance(now)
            await self._grow_memory(now)
            wake = self._next_wake(now)
            self._changed.clear()
            timeout = None if wake is None else max(0.0, wake - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    async def _grow_memory(self, now: float) -> None:
        budget = self.memory_max_mb * _MIB - self.memory_bytes
        for fault in list(self._active["memory"]):
            ramp = self._ramp(fault)
            share = 1.0 if ramp <= 0 else min(1.0, (now - fault.due) / ramp)
            held = sum(len(b) for b in self._memory.get(fault.id, ()))
            want = min(int(fault.spec.intensity * _MIB * share) - held, budget)
            if want >= _MIB:
                # Touching every page makes the allocation resident; done in a thread because
                # hundreds of MiB take tens of milliseconds.
                block = await asyncio.to_thread(_touched_block, want)
                if fault.state == "active":
                    self._memory.setdefault(fault.id, []).append(block)
                    budget -= want

    def _release(self, fault_id: int) -> None:
        for block in self._memory.pop(fault_id, ()):
            block.close()

    @property
    def memory_bytes(self) -> int:
        """Bytes held by memory faults now."""
        return sum(len(b) for blocks in self._memory.values() for b in blocks)

    # -- effects on requests ------------------------------------------------------------------

    def active(self, kind: str) -> list[Fault]:
        """Faults of ``kind`` running now."""
        return self._active[kind]

    def _draw(self, kind: str) -> bool:
        faults = self._active[kind]
        if not faults:
            return False
        share = 1.0 - math.prod(1.0 - f.spec.intensity for f in faults)
        return self._rng.random() < share

    async def begin(self, *, wants_json: bool) -> RequestFaults:
        """Start-of-request faults: maybe fail (``errors``), wait (fixed ``latency``), and
        draw whether a JSON answer gets corrupted.

        Raises :class:`InjectedError` when an ``errors`` fault draws this request.
        """
        if self._draw("errors"):
            raise InjectedError("injected error (fault injection)")
        corrupt = wants_json and self._draw("corrupt_json")
        fixed = sum(f.spec.intensity for f in self._active["latency"] if f.spec.mode == "fixed")
        if fixed > 0:
            await asyncio.sleep(fixed)
        return RequestFaults(corrupt=corrupt)

    async def on_chunk(
        self, plan: RequestFaults, chunk: GenerationChunk, *, waited_s: float, previous_tokens: int
    ) -> GenerationChunk:
        """Per-token faults on one chunk the engine produced after ``waited_s`` seconds."""
        latency = self._active["latency"]
        if latency:
            factor = math.prod(f.spec.intensity for f in latency if f.spec.mode == "proportional")
            if factor > 1:
                await asyncio.sleep((factor - 1.0) * waited_s)
        if previous_tokens and self._active["slow_tokens"]:
            per_token = sum(f.spec.intensity for f in self._active["slow_tokens"])
            await asyncio.sleep(per_token * max(0, chunk.output_tokens - previous_tokens))
        if not self._unstalled.is_set():
            await self._unstalled.wait()
        if plan.corrupt:
            plan.corrupt = False
            chunk = replace(chunk, text=CORRUPTION_PREFIX + chunk.text)
        return chunk


def _touched_block(size: int) -> mmap.mmap:
    # An anonymous mapping of its own, not the heap: unmapping it gives the memory back to the
    # system at once, where freed heap blocks may stay in the process.
    block = mmap.mmap(-1, size)
    block[::4096] = b"\x01" * len(range(0, size, 4096))
    return block
