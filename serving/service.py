"""One request's life: admission, generation through the faults, deadline, checks and metrics.

The HTTP layer calls :meth:`InferenceService.admit` and then iterates
:meth:`InferenceService.stream`; every request is counted exactly once in
``<prefix>_requests_total{status}``:

=================== ========================================================================
``rejected``        refused before generation: invalid request (400), body over the size limit
                    (413), prompt too long for the context (400), queue full (429), engine not
                    ready (503)
``success``         generation completed (and the JSON check, when JSON was asked, passed)
``json_parse_error`` generation completed, JSON was asked, the answer is not valid JSON
``error``           the engine failed, or an ``errors`` fault was injected (500)
``timeout``         the request ran past ``request_timeout_s`` (504, the engine request is
                    aborted), **or the client disconnected before the answer was complete**
=================== ========================================================================

A disconnect counts as ``timeout`` because a client almost always disconnects when it gave up
waiting (its own timeout, a user pressing stop on a slow answer): it is a latency symptom, not a
server failure, and counting it as ``error`` would page for a client's decision. Like a timeout,
it aborts the engine request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from serving.engines.base import (
    OFF_LOOP_TEXT_SIZE,
    Engine,
    EngineError,
    GenerationChunk,
    GenerationRequest,
    PromptTooLong,
)
from serving.faults import FaultInjector, RequestFaults
from serving.json_schema import SchemaRefused
from serving.metrics import ServingMetrics, Status
from serving.quality import JsonCheck, QualityChecker, QualityResult

__all__ = ["GenerationFailed", "GenerationTimeout", "InferenceService", "Rejected", "Ticket"]

_log = logging.getLogger(__name__)


class Rejected(Exception):
    """The request is refused before generation (already counted as ``rejected``)."""

    def __init__(
        self, status_code: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param
        self.code = code


class GenerationTimeout(Exception):
    """The request exceeded its deadline; the engine request was aborted (HTTP 504)."""


class GenerationFailed(Exception):
    """The engine (or an injected fault) failed the request (HTTP 500)."""


class _Expired(Exception):
    """The deadline passed while the request was outside its awaits."""


class _Deadline:
    """Cancels the generating task at the deadline, but only while it waits for the engine.

    ``waiting`` brackets the awaits on the engine and the faults; when the deadline passes
    outside them (the consumer is sending), the next token raises :class:`_Expired` instead.
    """

    __slots__ = ("expired", "task", "waiting")

    def __init__(self) -> None:
        self.expired = False
        self.waiting = False
        self.task: asyncio.Task[object] | None = None

    def expire(self) -> None:
        self.expired = True
        if self.waiting and self.task is not None:
            self.task.cancel()


@dataclass
class Ticket:
    """An admitted request, until it is finished and counted."""

    request: GenerationRequest
    prompt_tokens: int
    json_check: JsonCheck
    started: float  # loop time of admission
    deadline: float
    quality: QualityResult | None = None  # set when the generation completed
    finish_reason: str | None = None  # the engine's (stop or length)
    output_tokens: int = 0
    done: bool = False

    @property
    def wants_json(self) -> bool:
        """Whether the request asked for JSON."""
        return self.json_check.asked


class InferenceService:
    """Admission control, deadline, quality checks and metrics around an engine.

    Parameters
    ----------
    engine, metrics, faults, quality
        The parts this service ties together.
    max_in_flight
        Admitted requests at most (running plus waiting); beyond: 429.
    timeout_s
        Deadline of a request from admission to its last token.
    default_max_tokens
        ``max_tokens`` of requests that do not set it (capped by the remaining context).
    """

    def __init__(
        self,
        *,
        engine: Engine,
        metrics: ServingMetrics,
        faults: FaultInjector,
        quality: QualityChecker,
        max_in_flight: int,
        timeout_s: float,
        default_max_tokens: int = 256,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.faults = faults
        self.quality = quality
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.default_max_tokens = default_max_tokens
        self._in_flight = 0

    @property
    def _timeout_message(self) -> str:
        return f"the request exceeded its timeout ({self.timeout_s:g} s)"

    @property
    def in_flight(self) -> int:
        """Requests admitted and not finished."""
        return self._in_flight

    def reject(self, status_code: int, message: str, **details: str | None) -> Rejected:
        """Count a refused request and return the exception to raise."""
        self.metrics.count("rejected")
        return Rejected(status_code, message, **details)

    def _inspect(self, request: GenerationRequest) -> tuple[JsonCheck, int]:
        # The schema first: a refused one costs no tokenisation.
        return self.quality.json_check(request), self.engine.count_prompt_tokens(request)

    async def admit(self, request: GenerationRequest, *, max_tokens: int | None) -> Ticket:
        """Validate ``request`` against the engine and the queue; raises :class:`Rejected`.

        ``max_tokens`` None takes the default, capped by the context left after the prompt.
        A long prompt is tokenised, and a schema checked (seconds for a large one), in a worker
        thread.
        """
        if not self.engine.ready():
            raise self.reject(503, "the engine is not ready yet", code="engine_not_ready")
        limit = self.engine.max_model_len
        if max_tokens is not None and max_tokens > limit:
            raise self.reject(
                400,
                f"max_tokens ({max_tokens}) exceeds the context length ({limit})",
                param="max_tokens",
            )
        try:
            if request.json_schema is not None or request.text_size() > OFF_LOOP_TEXT_SIZE:
                json_check, prompt_tokens = await asyncio.to_thread(self._inspect, request)
            else:
                json_check, prompt_tokens = self._inspect(request)
        except SchemaRefused as exc:
            raise self.reject(400, str(exc), param="response_format") from None
        room = limit - prompt_tokens
        if max_tokens is None:
            max_tokens = min(self.default_max_tokens, room)
        if room < 1 or max_tokens > room:
            raise self.reject(
                400,
                f"the prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds the "
                f"context length ({limit})",
                param="messages" if request.messages is not None else "prompt",
                code="context_length_exceeded",
            )
        if self._in_flight >= self.max_in_flight:
            raise self.reject(
                429,
                f"the server is at its queue limit ({self.max_in_flight} requests)",
                code="queue_full",
            )
        self._in_flight += 1
        self.metrics.in_flight.inc()
        started = asyncio.get_running_loop().time()
        return Ticket(
            request=dataclasses.replace(request, max_tokens=max_tokens),
            prompt_tokens=prompt_tokens,
            json_check=json_check,
            started=started,
            deadline=started + self.timeout_s,
        )

    def _finish(self, ticket: Ticket, status: Status, end: float) -> None:
        if ticket.done:
            return
        ticket.done = True
        self._in_flight -= 1
        self.metrics.in_flight.dec()
        self.metrics.count(status)
        if status != "rejected":
            self.metrics.inference_duration.observe(end - ticket.started)

    async def stream(self, ticket: Ticket) -> AsyncGenerator[GenerationChunk, None]:
        """Generate ``ticket``'s answer chunk by chunk, counting the request when it ends.

        Raises :class:`GenerationTimeout`, :class:`GenerationFailed`, or :class:`Rejected` (the
        engine found the prompt too long). Closing the iterator early (client disconnect)
        aborts the engine request and counts ``timeout``.
        """
        loop = asyncio.get_running_loop()
        metrics, faults = self.metrics, self.faults
        request = ticket.request
        status: Status = "timeout"  # what an interruption (cancel, close) counts as
        first_at: float | None = None
        last: GenerationChunk | None = None
        parts: list[str] = []
        chunks = self.engine.generate(request)
        # One timer per request instead of asyncio.timeout around every token: it only cancels
        # the task while the task waits inside this generator (never in the consumer's code).
        deadline = _Deadline()
        timer = loop.call_at(ticket.deadline, deadline.expire)
        try:
            deadline.task = asyncio.current_task()  # the consumer's task, for the whole stream
            plan = await self._begin_faults(ticket, deadline)
            # The per-token path: plain attribute reads and writes only (it runs for every token).
            while True:
                if deadline.expired:
                    raise _Expired
                deadline.waiting = True
                try:
                    asked = loop.time() if faults.engaged else None
                    chunk = await anext(chunks)
                    if faults.engaged or plan.corrupt:
                        chunk = await faults.on_chunk(
                            plan,
                            chunk,
                            waited_s=0.0 if asked is None else loop.time() - asked,
                            previous_tokens=last.output_tokens if last else 0,
                        )
                except StopAsyncIteration:
                    break
                finally:
                    deadline.waiting = False
                if first_at is None:
                    first_at = loop.time()
                    metrics.time_to_first_token.observe(first_at - ticket.started)
                parts.append(chunk.text)
                last = chunk
                yield chunk
            status = self._completed(ticket, "".join(parts), last, first_at, loop.time())
        except asyncio.CancelledError:
            # Our own deadline (and no other cancellation pending): a timeout, not a cancel.
            if deadline.expired and deadline.task is not None and deadline.task.uncancel() == 0:
                raise GenerationTimeout(self._timeout_message) from None
            raise
        except Exception as exc:
            status, error = self._failure(exc, request.request_id)
            raise error from None
        finally:
            await self._settle(ticket, status, chunks, timer)

    async def _begin_faults(self, ticket: Ticket, deadline: _Deadline) -> RequestFaults:
        """The request's start-of-request faults; the deadline may cancel the wait for them."""
        deadline.waiting = True
        try:
            return await self.faults.begin(wants_json=ticket.wants_json)
        finally:
            deadline.waiting = False

    async def _settle(
        self,
        ticket: Ticket,
        status: Status,
        chunks: AsyncIterator[GenerationChunk],
        timer: asyncio.TimerHandle,
    ) -> None:
        """Stop the deadline, abort the engine request unless it completed, count the request."""
        timer.cancel()
        if status not in ("success", "json_parse_error"):
            await self._abort(ticket.request.request_id, chunks)
        self._finish(ticket, status, asyncio.get_running_loop().time())

    def _failure(self, exc: Exception, request_id: str) -> tuple[Status, Exception]:
        """What a request that raised ``exc`` counts as, and the exception to raise instead.

        Called from the ``except`` clause, so that the log's traceback is ``exc``'s.
        """
        if isinstance(exc, _Expired):
            return "timeout", GenerationTimeout(self._timeout_message)
        if isinstance(exc, PromptTooLong):
            return "rejected", Rejected(400, str(exc), code="context_length_exceeded")
        if isinstance(exc, EngineError):
            return "error", GenerationFailed(str(exc))
        _log.exception("request %s failed", request_id)
        return "error", GenerationFailed(f"internal error: {type(exc).__name__}")

    def _completed(
        self,
        ticket: Ticket,
        text: str,
        last: GenerationChunk | None,
        first_at: float | None,
        end: float,
    ) -> Status:
        """Record a completed generation; the status it counts as."""
        metrics = self.metrics
        quality = self.quality.evaluate(
            ticket.request, text, last and last.finish_reason, ticket.json_check
        )
        output_tokens = last.output_tokens if last else 0
        ticket.quality = quality
        ticket.finish_reason = (last and last.finish_reason) or "stop"
        ticket.output_tokens = output_tokens
        metrics.prompt_tokens.observe(last.prompt_tokens if last else ticket.prompt_tokens)
        metrics.output_tokens.observe(output_tokens)
        if first_at is not None and output_tokens > 1:
            metrics.time_per_output_token.observe((end - first_at) / (output_tokens - 1))
        metrics.finished(quality.finish)
        if quality.json_problem:
            _log.debug(
                "request %s: JSON check failed: %s", ticket.request.request_id, quality.json_problem
            )
        return "json_parse_error" if quality and not quality.json_ok else "success"

    async def _abort(self, request_id: str, chunks: AsyncIterator[GenerationChunk]) -> None:
        # Close our side first (the engine's generator sees GeneratorExit), then tell the engine,
        # so no generation keeps running after its request is gone.
        close = getattr(chunks, "aclose", None)  # async generators have it; bare iterators not
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
        try:
            await self.engine.abort(request_id)
        except Exception:
            _log.exception("aborting request %s failed", request_id)
