"""A synthetic engine: realistic token timing without a model, for tests and labelled incidents.

Timing model (all times divided by ``speed``):

- at most ``max_running`` sequences generate at once, and together they hold no more than
  ``kv_cache_tokens`` tokens (prompts and outputs) in a paged KV cache; the others wait in FIFO
  order, so the time to first token grows with the queue depth;
- prefill takes ``ttft_s + prefill_s_per_token * prompt_tokens`` once a sequence runs;
- each further token takes ``tpot_s * (1 + batch_slowdown * (running - 1))``, so decoding slows
  down as the batch grows;
- a sequence whose next token finds the KV cache full preempts the sequence admitted last, which
  waits again and then recomputes its prompt and output so far (a prefill of all of them), as
  vLLM does (:mod:`serving.engines.kv_cache`).

The engine exports vLLM's own engine metrics under vLLM's names (running and waiting requests,
KV-cache usage, preemptions, queue, prefill, decode and inter-token times, prompt tokens:
:mod:`serving.engines.engine_metrics`) in :attr:`SyntheticEngine.metrics_registry`, which the
serving app exports on ``/metrics``.

The text comes from :mod:`serving.engines.synthetic_text` and
:mod:`serving.engines.synthetic_json` and depends only on ``seed`` and the request (prompt or
messages, request seed, JSON constraints): the same request gives the same answer. JSON requests
get JSON (matching simple schemas, built no further than ``max_tokens``); prose answers are about
``mean_output_tokens`` long and, for a ``loop_share`` of requests, degenerate into a loop. Long
prompts and schema answers are prepared in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from serving.config import DEFAULT_JSON_PROMPT_PATTERN
from serving.engines.base import (
    OFF_LOOP_TEXT_SIZE,
    EngineError,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    PromptTooLong,
)
from serving.engines.engine_metrics import EngineMetrics
from serving.engines.kv_cache import KvScheduler, Slot
from serving.engines.synthetic_json import json_answer
from serving.engines.synthetic_text import (
    count_tokens,
    prose,
    render_chat,
    request_rng,
    split_tokens,
)
from serving.quality import QualityChecker

__all__ = ["DEFAULT_KV_CACHE_TOKENS", "SyntheticEngine"]

# Sleeping for less than this is not worth a timer: the delay is carried over to the next token.
_MIN_SLEEP_S = 0.001
# 2,048 blocks of 16 tokens: a full batch of 16 sequences fills it at 2,048 tokens each, so
# ordinary chat traffic leaves it mostly free and only long prompts and outputs preempt.
DEFAULT_KV_CACHE_TOKENS = 32_768


@dataclass
class _Sequence:
    slot: Slot
    due: float  # loop time at which the next token is due
    queued: float  # loop time of arrival
    aborted: bool = False
    admissions: int = 0  # the slot's admissions this sequence has prefilled for
    # Loop times of the first scheduling and of the first and latest token (vLLM's phases).
    times: dict[str, float] = field(default_factory=dict)


class SyntheticEngine:
    """Engine protocol implementation with modelled latency and deterministic output.

    Parameters
    ----------
    model_name, max_model_len
        Name reported in responses and the context length (prompt plus output tokens).
    max_running
        Sequences generating at once; further requests wait.
    speed
        Time runs ``speed`` times faster (tests use 20 to 100); ``math.inf`` never waits.
    seed
        Seed of the generated text.
    ttft_s, prefill_s_per_token, tpot_s, batch_slowdown
        Timing model (see the module docstring).
    mean_output_tokens
        Typical length of a prose answer (log-normal around it).
    loop_share
        Share of prose answers that repeat one sentence until ``max_tokens``.
    startup_s
        Time :meth:`start` takes (model loading).
    kv_cache_tokens
        Tokens the KV cache holds (at least ``max_model_len``, as vLLM requires); default
        :data:`DEFAULT_KV_CACHE_TOKENS`, or ``max_model_len`` where that is larger.
    registry
        Where the ``vllm:*`` metrics are registered (default: a registry of the engine's own,
        :attr:`metrics_registry`).

    Examples
    --------
    >>> import asyncio
    >>> engine = SyntheticEngine(speed=math.inf)
    >>> async def demo():
    ...     await engine.start()
    ...     request = GenerationRequest(request_id="r1", prompt="Say hi", max_tokens=5)
    ...     return [chunk async for chunk in engine.generate(request)][-1]
    >>> last = asyncio.run(demo())
    >>> last.output_tokens, last.finish_reason
    (5, 'length')
    """

    def __init__(
        self,
        *,
        model_name: str = "synthetic",
        max_model_len: int = 4096,
        max_running: int = 16,
        speed: float = 1.0,
        seed: int = 0,
        ttft_s: float = 0.04,
        prefill_s_per_token: float = 0.0002,
        tpot_s: float = 0.025,
        batch_slowdown: float = 0.04,
        mean_output_tokens: int = 120,
        loop_share: float = 0.0,
        startup_s: float = 0.0,
        kv_cache_tokens: int | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.model_name = model_name
        self.max_model_len = max_model_len
        self.max_running = max_running
        self.speed = speed
        self.seed = seed
        self.ttft_s = ttft_s
        self.prefill_s_per_token = prefill_s_per_token
        self.tpot_s = tpot_s
        self.batch_slowdown = batch_slowdown
        self.mean_output_tokens = mean_output_tokens
        self.loop_share = loop_share
        self.startup_s = startup_s
        self.kv_cache_tokens = kv_cache_tokens
        self._ready = False
        self._scheduler: KvScheduler | None = None
        self._sequences: dict[str, _Sequence] = {}
        self.metrics_registry = CollectorRegistry() if registry is None else registry
        self._metrics = EngineMetrics(
            self.metrics_registry,
            model_name=model_name,
            max_model_len=max_model_len,
            running=lambda: self.running,
            waiting=lambda: self.waiting,
            kv_usage=lambda: self.kv_cache_usage,
        )
        # Recognises prompts that ask for JSON in words (the server's default convention).
        self._json_in_words = QualityChecker(json_prompt_pattern=DEFAULT_JSON_PROMPT_PATTERN)

    def _check_params(self) -> None:
        if self.max_running < 1:
            raise ValueError(f"max_running={self.max_running!r}: must be at least 1")
        if not self.speed > 0:
            raise ValueError(f"speed={self.speed!r}: must be positive")
        if not 0.0 <= self.loop_share <= 1.0:
            raise ValueError(f"loop_share={self.loop_share!r}: must be in [0, 1]")
        if min(self.ttft_s, self.prefill_s_per_token, self.tpot_s, self.batch_slowdown) < 0:
            raise ValueError("timing parameters must not be negative")
        if self.kv_capacity() < self.max_model_len:
            raise ValueError(
                f"kv_cache_tokens={self.kv_cache_tokens!r}: must hold max_model_len "
                f"({self.max_model_len}) tokens, or the longest request could never run"
            )

    def kv_capacity(self) -> int:
        """Tokens the KV cache holds: ``kv_cache_tokens`` or its default."""
        if self.kv_cache_tokens is not None:
            return self.kv_cache_tokens
        return max(DEFAULT_KV_CACHE_TOKENS, self.max_model_len)

    def prefill_s(self, prompt_tokens: int) -> float:
        """Modelled time from getting a slot to the first token (before ``speed``)."""
        return self.ttft_s + self.prefill_s_per_token * prompt_tokens

    def token_s(self, running: int) -> float:
        """Modelled time of one further token with ``running`` sequences (before ``speed``)."""
        return self.tpot_s * (1.0 + self.batch_slowdown * max(0, running - 1))

    @property
    def running(self) -> int:
        """Sequences generating now."""
        return 0 if self._scheduler is None else self._scheduler.running

    @property
    def waiting(self) -> int:
        """Sequences waiting to be admitted (preempted ones included)."""
        return 0 if self._scheduler is None else self._scheduler.waiting

    @property
    def kv_cache_usage(self) -> float:
        """Share of the KV cache in use, 0 to 1."""
        return 0.0 if self._scheduler is None else self._scheduler.usage()

    @property
    def preemptions(self) -> int:
        """Preemptions since :meth:`start`."""
        return 0 if self._scheduler is None else self._scheduler.preemptions

    async def start(self) -> None:
        """Check the parameters and "load the model" (``startup_s``)."""
        self._check_params()
        self._scheduler = KvScheduler(
            max_running=self.max_running,
            capacity_tokens=self.kv_capacity(),
            on_preempt=self._metrics.preempted,
        )
        if self.startup_s > 0 and math.isfinite(self.speed):
            await asyncio.sleep(self.startup_s / self.speed)
        self._ready = True

    async def close(self) -> None:
        """Stop accepting work and abort what runs (idempotent)."""
        self._ready = False
        for sequence in self._sequences.values():
            self._abort(sequence)

    def ready(self) -> bool:
        """True once :meth:`start` has completed."""
        return self._ready

    def _prompt(self, request: GenerationRequest) -> str:
        return request.prompt if request.messages is None else render_chat(request.messages)

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """Word pieces of the prompt (chat messages rendered with the template first)."""
        return count_tokens(self._prompt(request) or "")

    def _answer(self, request: GenerationRequest) -> tuple[list[str], FinishReason]:
        rng = request_rng(
            self.seed,
            request.prompt,
            request.messages,
            request.seed,
            request.json_object,
            request.json_schema,
        )
        target = max(1, round(rng.lognormvariate(math.log(self.mean_output_tokens), 0.5)))
        loop = rng.random() < self.loop_share
        # An instruction-following model: JSON asked for in words is answered in JSON too.
        if request.json_object or self._json_in_words.asks_for_json(request):
            # Past max_tokens by the longest stop sequence: one that starts before the limit is
            # then found as in the whole answer.
            longest_stop = max(map(len, request.stop), default=0)
            schema = request.json_schema
            text = json_answer(rng, schema=schema, max_tokens=request.max_tokens + longest_stop)
        else:
            text = prose(rng, target, loop_tokens=request.max_tokens if loop else None)
        cut = min((i for i in (text.find(s) for s in request.stop if s) if i >= 0), default=-1)
        pieces = split_tokens(text[:cut] if cut >= 0 else text)
        if len(pieces) > request.max_tokens:
            return pieces[: request.max_tokens], "length"
        return pieces, "stop"

    def _prepare(self, request: GenerationRequest) -> tuple[int, list[str], FinishReason]:
        """Prompt tokens, answer pieces and finish reason; raises :class:`PromptTooLong`."""
        prompt_tokens = self.count_prompt_tokens(request)
        if prompt_tokens + request.max_tokens > self.max_model_len:
            raise PromptTooLong(
                f"prompt ({prompt_tokens} tokens) plus max_tokens ({request.max_tokens}) exceeds "
                f"the context length ({self.max_model_len})"
            )
        return (prompt_tokens, *self._answer(request))

    async def _wait(self, sequence: _Sequence, delay_s: float) -> None:
        if not math.isfinite(self.speed):
            return
        loop = asyncio.get_running_loop()
        # Deadlines rather than sleeps, so timer overshoot does not accumulate over tokens.
        sequence.due = max(sequence.due, loop.time() - _MIN_SLEEP_S) + delay_s / self.speed
        remaining = sequence.due - loop.time()
        if remaining >= _MIN_SLEEP_S:
            await asyncio.sleep(remaining)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream the answer token by token; raises :class:`EngineError` when aborted."""
        scheduler = self._scheduler
        if not self._ready or scheduler is None:
            raise EngineError("engine is not started")
        if request.json_schema is not None or request.text_size() > OFF_LOOP_TEXT_SIZE:
            prompt_tokens, pieces, finish = await asyncio.to_thread(self._prepare, request)
        else:
            prompt_tokens, pieces, finish = self._prepare(request)
        if request.request_id in self._sequences:
            raise EngineError(f"request id {request.request_id!r} is already running")
        now = asyncio.get_running_loop().time()
        sequence = _Sequence(slot=Slot(tokens=prompt_tokens), due=now, queued=now)
        self._sequences[request.request_id] = sequence
        scheduler.enqueue(sequence.slot)
        try:
            # The first token comes out of the prefill, even for an empty answer.
            await self._next_token(scheduler, sequence, request.request_id)
            for i, piece in enumerate(pieces):
                if i:
                    await self._next_token(scheduler, sequence, request.request_id)
                last = i == len(pieces) - 1
                if last:
                    self._finished(sequence, prompt_tokens)
                yield GenerationChunk(
                    text=piece,
                    prompt_tokens=prompt_tokens,
                    output_tokens=i + 1,
                    finish_reason=finish if last else None,
                )
            if not pieces:
                self._finished(sequence, prompt_tokens)
                yield GenerationChunk(
                    text="", prompt_tokens=prompt_tokens, output_tokens=0, finish_reason=finish
                )
        finally:
            scheduler.release(sequence.slot)
            del self._sequences[request.request_id]

    async def _next_token(
        self, scheduler: KvScheduler, sequence: _Sequence, request_id: str
    ) -> None:
        """Wait until the sequence's next token is out: admission, prefill or decode, and the
        recomputation after any preemption on the way."""
        slot = sequence.slot
        loop = asyncio.get_running_loop()
        while True:
            while not slot.running:
                self._check_aborted(sequence, request_id)
                slot.wake.clear()
                await slot.wake.wait()
            self._check_aborted(sequence, request_id)
            sequence.times.setdefault("scheduled", loop.time())
            if not scheduler.grow(slot):
                continue  # preempted itself: the newest sequence, and the cache is full
            # A new admission (the first, or one after a preemption) prefills every token held.
            prefill = slot.admissions != sequence.admissions
            sequence.admissions = slot.admissions
            delay = self.prefill_s(slot.tokens) if prefill else self.token_s(scheduler.running)
            await self._wait(sequence, delay)
            if slot.running and slot.admissions == sequence.admissions:
                break
        slot.tokens += 1
        now = loop.time()
        if "first" not in sequence.times:
            sequence.times["first"] = now
        else:
            self._metrics.token_gap(now - sequence.times["latest"])
        sequence.times["latest"] = now

    def _check_aborted(self, sequence: _Sequence, request_id: str) -> None:
        if sequence.aborted:
            raise EngineError(f"request {request_id!r} was aborted")

    def _finished(self, sequence: _Sequence, prompt_tokens: int) -> None:
        times = sequence.times
        self._metrics.finished(
            queue_s=times["scheduled"] - sequence.queued,
            prefill_s=times["first"] - times["scheduled"],
            decode_s=times["latest"] - times["first"],
            prompt_tokens=prompt_tokens,
        )

    def _abort(self, sequence: _Sequence) -> None:
        sequence.aborted = True
        sequence.slot.wake.set()  # a queued sequence wakes up to end

    async def abort(self, request_id: str) -> None:
        """Stop the generation of ``request_id`` before its next token (no-op when unknown)."""
        sequence = self._sequences.get(request_id)
        if sequence is not None:
            self._abort(sequence)
