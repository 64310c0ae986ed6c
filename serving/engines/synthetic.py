"""A synthetic engine: realistic token timing without a model, for tests and labelled incidents.

Timing model (all times divided by ``speed``):

- at most ``max_running`` sequences generate at once; the others wait in FIFO order, so the time
  to first token grows with the queue depth;
- prefill takes ``ttft_s + prefill_s_per_token * prompt_tokens`` once a sequence runs;
- each further token takes ``tpot_s * (1 + batch_slowdown * (running - 1))``, so decoding slows
  down as the batch grows.

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
from dataclasses import dataclass

from serving.config import DEFAULT_JSON_PROMPT_PATTERN
from serving.engines.base import (
    OFF_LOOP_TEXT_SIZE,
    EngineError,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    PromptTooLong,
)
from serving.engines.synthetic_json import json_answer
from serving.engines.synthetic_text import (
    count_tokens,
    prose,
    render_chat,
    request_rng,
    split_tokens,
)
from serving.quality import QualityChecker

__all__ = ["SyntheticEngine"]

# Sleeping for less than this is not worth a timer: the delay is carried over to the next token.
_MIN_SLEEP_S = 0.001


@dataclass
class _Sequence:
    due: float  # loop time at which the next token is due
    aborted: bool = False


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
        self._ready = False
        self._slots: asyncio.Semaphore | None = None
        self._sequences: dict[str, _Sequence] = {}
        self._running = 0
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

    def prefill_s(self, prompt_tokens: int) -> float:
        """Modelled time from getting a slot to the first token (before ``speed``)."""
        return self.ttft_s + self.prefill_s_per_token * prompt_tokens

    def token_s(self, running: int) -> float:
        """Modelled time of one further token with ``running`` sequences (before ``speed``)."""
        return self.tpot_s * (1.0 + self.batch_slowdown * max(0, running - 1))

    @property
    def running(self) -> int:
        """Sequences generating now."""
        return self._running

    @property
    def waiting(self) -> int:
        """Sequences waiting for a slot."""
        return len(self._sequences) - self._running

    async def start(self) -> None:
        """Check the parameters and "load the model" (``startup_s``)."""
        self._check_params()
        self._slots = asyncio.Semaphore(self.max_running)
        if self.startup_s > 0 and math.isfinite(self.speed):
            await asyncio.sleep(self.startup_s / self.speed)
        self._ready = True

    async def close(self) -> None:
        """Stop accepting work and abort what runs (idempotent)."""
        self._ready = False
        for sequence in self._sequences.values():
            sequence.aborted = True

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
        if not self._ready or self._slots is None:
            raise EngineError("engine is not started")
        if request.json_schema is not None or request.text_size() > OFF_LOOP_TEXT_SIZE:
            prompt_tokens, pieces, finish = await asyncio.to_thread(self._prepare, request)
        else:
            prompt_tokens, pieces, finish = self._prepare(request)
        if request.request_id in self._sequences:
            raise EngineError(f"request id {request.request_id!r} is already running")
        sequence = _Sequence(due=asyncio.get_running_loop().time())
        self._sequences[request.request_id] = sequence
        try:
            async with self._slots:
                self._running += 1
                try:
                    sequence.due = asyncio.get_running_loop().time()
                    await self._wait(sequence, self.prefill_s(prompt_tokens))
                    for i, piece in enumerate(pieces):
                        if sequence.aborted:
                            raise EngineError(f"request {request.request_id!r} was aborted")
                        if i:
                            await self._wait(sequence, self.token_s(self._running))
                        last = i == len(pieces) - 1
                        yield GenerationChunk(
                            text=piece,
                            prompt_tokens=prompt_tokens,
                            output_tokens=i + 1,
                            finish_reason=finish if last else None,
                        )
                    if not pieces:
                        yield GenerationChunk(
                            text="",
                            prompt_tokens=prompt_tokens,
                            output_tokens=0,
                            finish_reason=finish,
                        )
                finally:
                    self._running -= 1
        finally:
            del self._sequences[request.request_id]

    async def abort(self, request_id: str) -> None:
        """Stop the generation of ``request_id`` before its next token (no-op when unknown)."""
        sequence = self._sequences.get(request_id)
        if sequence is not None:
            sequence.aborted = True
