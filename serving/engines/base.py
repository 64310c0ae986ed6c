"""The async protocol every inference engine implements.

The serving layer (HTTP, metrics, quality checks, fault injection) only talks to an engine through
:class:`Engine`, so the same instrumentation measures the real vLLM engine and the synthetic one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "OFF_LOOP_TEXT_SIZE",
    "Engine",
    "EngineError",
    "GenerationChunk",
    "GenerationRequest",
    "PromptTooLong",
]

FinishReason = Literal["stop", "length"]

# Requests whose prompt is longer than this (characters, see GenerationRequest.text_size) are
# tokenised in a worker thread: a megabyte takes tens of milliseconds, an event-loop stall.
# Shorter ones stay on the loop: under a millisecond, not worth a thread of the shared pool.
OFF_LOOP_TEXT_SIZE = 16_384


class EngineError(RuntimeError):
    """The engine failed to produce an answer (the request counts as ``error``)."""


class PromptTooLong(ValueError):
    """The prompt plus ``max_tokens`` does not fit the model's context (HTTP 400)."""


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    """One generation, already validated by the HTTP layer.

    Exactly one of ``prompt`` (``/v1/completions``) and ``messages`` (``/v1/chat/completions``,
    rendered by the engine with the model's chat template) is set.
    """

    request_id: str
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # JSON output constraints: ``json_object`` asks for any JSON object, ``json_schema`` for one
    # matching the schema (vLLM enforces them with structured outputs).
    json_object: bool = False
    json_schema: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def text_size(self) -> int:
        """Characters of the prompt, or of all message contents: what tokenising reads.

        >>> messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None}]
        >>> GenerationRequest(request_id="r", messages=messages).text_size()
        2
        """
        if self.messages is None:
            return len(self.prompt or "")
        return sum(len(str(m.get("content") or "")) for m in self.messages)


@dataclass(frozen=True, kw_only=True)
class GenerationChunk:
    """Text produced since the previous chunk, with cumulative token counts.

    The last chunk of a generation has ``finish_reason`` set.
    """

    text: str
    prompt_tokens: int
    output_tokens: int
    finish_reason: FinishReason | None = None


@runtime_checkable
class Engine(Protocol):
    """An async text-generation engine.

    An engine may also carry a ``metrics_registry`` (a ``CollectorRegistry`` with metrics of its
    own); the serving app exports it on ``/metrics``. Optional, so not a protocol member: the
    vLLM engine has none, its metrics live in prometheus_client's global registry.
    """

    model_name: str
    max_model_len: int

    async def start(self) -> None:
        """Load the model; returns once the engine can generate."""

    async def close(self) -> None:
        """Release the engine (idempotent)."""

    def ready(self) -> bool:
        """True once :meth:`start` has completed and the engine can generate."""

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """Number of prompt tokens ``request`` would use (after the chat template)."""

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream the generation of ``request``; raises :class:`EngineError` on failure."""

    async def abort(self, request_id: str) -> None:
        """Stop a running generation (timeouts, client disconnects); no-op when unknown."""
