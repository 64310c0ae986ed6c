"""OpenAI response bodies: completions and chat completions, whole and as stream events."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ResponseShape", "error_body", "sse"]

Kind = Literal["completion", "chat"]


def error_body(
    message: str, *, type_: str, param: str | None = None, code: str | int | None = None
) -> dict[str, Any]:
    """The OpenAI error object ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def sse(payload: dict[str, Any] | str) -> bytes:
    """One server-sent event carrying ``payload`` (JSON, or a literal such as ``[DONE]``)."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def _usage(prompt_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": prompt_tokens + output_tokens,
    }


@dataclass
class ResponseShape:
    """Builds the bodies of one response (``kind`` completion or chat) with a shared id.

    Examples
    --------
    >>> shape = ResponseShape("chat", "m")
    >>> shape.whole("hi", "stop", 3, 1)["choices"][0]["message"]
    {'role': 'assistant', 'content': 'hi'}
    """

    kind: Kind
    model: str
    id: str = field(default="")
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        if not self.id:
            prefix = "chatcmpl" if self.kind == "chat" else "cmpl"
            self.id = f"{prefix}-{uuid.uuid4().hex}"

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def whole(
        self, text: str, finish_reason: str, prompt_tokens: int, output_tokens: int
    ) -> dict[str, Any]:
        """The non-streaming response body."""
        if self.kind == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            body = self._envelope("chat.completion")
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
            body = self._envelope("text_completion")
        body["choices"] = [choice]
        body["usage"] = _usage(prompt_tokens, output_tokens)
        return body

    def chunk(
        self, text: str | None, finish_reason: str | None = None, *, role: bool = False
    ) -> bytes:
        """One stream event with a text delta (``role``: the chat stream's opening event)."""
        if self.kind == "chat":
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None}
            body = self._envelope("chat.completion.chunk")
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None}
            body = self._envelope("text_completion")
        choice["finish_reason"] = finish_reason
        body["choices"] = [choice]
        return sse(body)

    def usage_chunk(self, prompt_tokens: int, output_tokens: int) -> bytes:
        """The last event when ``stream_options.include_usage`` is set: no choices, the usage."""
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        body = self._envelope(obj)
        body["choices"] = []
        body["usage"] = _usage(prompt_tokens, output_tokens)
        return sse(body)
