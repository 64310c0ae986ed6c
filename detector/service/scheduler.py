"""When each signal is refitted, and the worker that fits it without holding scoring back.

Fits run :func:`detector.service.training.train_signal` in an executor — by default one spawned
process, so a long fit shares neither the interpreter lock nor any other lock with the scoring
thread — and
publish to the registry; the service then installs the published version. Safe to call from the
scoring thread and from API threads (retrain requests) at once.

A worker that dies (the out-of-memory killer, ``kill -9``) breaks its pool: the fits in flight
report the failure, and the next fit starts a new worker. The worker in turn dies with the
service: the kernel signals it when its parent goes, so no orphan holds the memory of a fit.
"""

from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing
import os
import signal
import threading
import uuid
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from detector.registry.store import ModelRegistry, ModelVersion
from detector.service.config import DetectorSettings
from detector.service.source import Source
from detector.service.training import train_signal
from detector.service.views import RetrainUnavailable

__all__ = ["FitResult", "FitScheduler", "die_with_parent"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitResult:
    """A finished fit: the published version, or None (no series could fit, or it failed)."""

    job: str
    signal: str
    version: ModelVersion | None
    error: str | None = None


class FitScheduler:
    """Due times per signal, and fit jobs in flight.

    Parameters
    ----------
    settings : DetectorSettings
        Signals, training window and shard of the fits.
    source, registry :
        Passed to each fit (pickled into the worker process).
    executor : Executor, optional
        Where fits run; default a one-process pool started on first use (spawn: the service
        has threads, which a forked child must not inherit).
    """

    def __init__(
        self,
        settings: DetectorSettings,
        source: Source,
        registry: ModelRegistry,
        executor: Executor | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.registry = registry
        self._executor = executor
        self._own_executor = executor is None
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, str], Future] = {}  # (job id, signal) -> future
        self._next: dict[str, float] = {}

    def set_next(self, signal: str, at: float) -> None:
        """Refit ``signal`` at (or after) ``at``."""
        with self._lock:
            self._next[signal] = at

    def next_fit(self, signal: str) -> float:
        """When ``signal`` is next due (``-inf``: never scheduled, so now)."""
        with self._lock:
            return self._next.get(signal, -math.inf)

    def submit_due(self, now: float, earliest: dict[str, float]) -> list[str]:
        """Queue every signal due by ``now`` (``earliest`` may bring a due time forward)."""
        queued = []
        with self._lock:
            for sig in self.settings.signals:
                due = min(self._next.get(sig.name, now), earliest.get(sig.name, math.inf))
                if due <= now and not self._running(sig.name):
                    queued.append(self._submit(sig.name, now))
        return queued

    def request(self, names: list[str], now: float) -> str:
        """Queue a fit of each of ``names`` not already fitting; one job id for all of them."""
        job = uuid.uuid4().hex[:12]
        with self._lock:
            idle = [n for n in names if not self._running(n)]
            if not idle:
                what = repr(names[0]) if len(names) == 1 else "every signal"
                raise RetrainUnavailable(f"a fit of {what} is already running")
            for name in idle:
                self._submit(name, now, job)
        return job

    def running(self, signal: str) -> bool:
        """Whether a fit of ``signal`` is queued or running."""
        with self._lock:
            return self._running(signal)

    def collect(self) -> list[FitResult]:
        """Fits finished since the last call."""
        with self._lock:
            done = {k: f for k, f in self._jobs.items() if f.done()}
            for key in done:
                del self._jobs[key]
        out = []
        for (job, name), future in done.items():
            try:
                out.append(FitResult(job, name, future.result()))
            except BrokenProcessPool as exc:
                _log.error("%s: fit job %s lost: the fit worker died (%s)", name, job, exc)
                out.append(FitResult(job, name, None, f"the fit worker died: {exc}"))
            except Exception as exc:  # a fit can fail in many ways; the old model keeps serving
                _log.error("%s: fit job %s failed: %s", name, job, exc)
                out.append(FitResult(job, name, None, str(exc)))
        return out

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the fits in flight have finished; False on timeout."""
        with self._lock:
            pending = list(self._jobs.values())
        _, not_done = wait(pending, timeout=timeout)
        return not not_done

    def job_running(self, job: str) -> bool:
        """Whether any fit of ``job`` is still in flight."""
        with self._lock:
            return any(j == job and not f.done() for (j, _), f in self._jobs.items())

    def shutdown(self) -> None:
        """Stop the worker if this scheduler started it; queued fits are dropped."""
        if self._executor is not None and self._own_executor:
            with self._lock:
                busy = any(not f.done() for f in self._jobs.values())
            # An idle worker is joined (a clean exit); a fit in progress is not waited for.
            self._executor.shutdown(wait=not busy, cancel_futures=True)
            self._executor = None

    def _running(self, signal: str) -> bool:
        return any(name == signal for _, name in self._jobs)

    def _worker(self) -> Executor:
        if self._executor is None:
            context = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(
                max_workers=1, mp_context=context, initializer=die_with_parent
            )
        return self._executor

    def _submit(self, signal: str, now: float, job: str | None = None) -> str:
        job = job or uuid.uuid4().hex[:12]
        fit = (train_signal, self.settings, self.settings.signal(signal), self.source)
        try:
            future = self._worker().submit(*fit, self.registry, end=now)
        except BrokenExecutor:
            if not self._own_executor:
                raise
            # The worker died (killed, out of memory): its pool takes no more work.
            _log.warning("starting a new fit worker in place of the one that died")
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
            future = self._worker().submit(*fit, self.registry, end=now)
        self._jobs[(job, signal)] = future
        self._next[signal] = math.inf  # until the job reports back
        _log.info("%s: fit job %s queued", signal, job)
        return job


def die_with_parent() -> None:
    """Make this (worker) process end when its parent does (Linux; elsewhere a no-op).

    ``prctl(PR_SET_PDEATHSIG)`` has the kernel send SIGTERM at the parent's death, however it
    dies; a parent already gone by the time this runs is checked for after the call.
    """
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the worker outlives a killed parent
        return
    if os.getppid() != parent:
        os._exit(1)


_PR_SET_PDEATHSIG = 1
