"""Request bodies of the OpenAI-compatible endpoints.

Fields the server does not use (``user``, ``logit_bias``, penalties, ...) are accepted and
ignored, as OpenAI-compatible servers do, so existing clients work unchanged; values that would
change the answer's shape and are not supported (``n`` > 1, several prompts) are refused.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serving.engines.base import GenerationRequest

__all__ = [
    "ChatCompletionCreate",
    "ChatMessage",
    "CompletionCreate",
    "JsonSchemaFormat",
    "ResponseFormat",
    "StreamOptions",
]


class JsonSchemaFormat(BaseModel):
    """``response_format.json_schema``: a named JSON schema the answer must match."""

    model_config = ConfigDict(populate_by_name=True)

    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """``response_format``: plain text, any JSON object, or JSON matching a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs a json_schema object")
        return self


class StreamOptions(BaseModel):
    """``stream_options``: whether the last event carries token usage."""

    include_usage: bool = False


class _GenerationCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=1, description="only 1 is supported")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    response_format: ResponseFormat | None = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def _generation(self, request_id: str, **content: Any) -> GenerationRequest:
        # max_tokens is resolved at admission (InferenceService.admit), which knows the prompt.
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        fmt = self.response_format
        return GenerationRequest(
            request_id=request_id,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=stop,
            seed=self.seed,
            json_object=fmt is not None and fmt.type == "json_object",
            json_schema=(
                fmt.json_schema.schema_
                if fmt is not None and fmt.type == "json_schema" and fmt.json_schema is not None
                else None
            ),
            **content,
        )

    def requested_max_tokens(self) -> int | None:
        """The output token limit the client asked for (None: the server's default)."""
        return self.max_tokens


class CompletionCreate(_GenerationCreate):
    """``POST /v1/completions``."""

    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return value

    def generation(self, request_id: str) -> GenerationRequest:
        """The engine request (``max_tokens`` is resolved at admission)."""
        prompt = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        return self._generation(request_id, prompt=prompt)


class _TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One chat message; content parts must be text."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        """The content as one string."""
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatCompletionCreate(_GenerationCreate):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    def requested_max_tokens(self) -> int | None:
        """``max_completion_tokens`` (the newer name) or ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens

    def generation(self, request_id: str) -> GenerationRequest:
        """The engine request (``max_tokens`` is resolved at admission)."""
        messages = [{"role": m.role, "content": m.text()} for m in self.messages]
        return self._generation(request_id, messages=messages)
