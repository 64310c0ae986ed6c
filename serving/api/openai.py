"""``/v1``: completions and chat completions (whole or streamed as server-sent events), models.

A streamed response starts once the first token is there, so that a request failing before its
first token still gets a proper status code (400, 500, 504); later failures arrive as an
``{"error": ...}`` event followed by ``data: [DONE]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from serving.api.deps import ServingState, StateDep
from serving.api.responses import ResponseShape, error_body, sse
from serving.api.schemas import ChatCompletionCreate, CompletionCreate
from serving.api.streaming import ClientGone, EventStreamResponse, cancel_on_disconnect
from serving.engines.base import GenerationChunk
from serving.service import GenerationFailed, GenerationTimeout, Ticket

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["openai"])

_CLIENT_CLOSED = 499  # nginx's "client closed request"; nobody receives it, access logs show it


@router.get("/models")
async def list_models(state: StateDep) -> dict[str, Any]:
    """The one model this server serves."""
    engine = state.service.engine
    model = {
        "id": state.model_name,
        "object": "model",
        "created": state.created,
        "owned_by": "llmwatch",
        "max_model_len": engine.max_model_len,
    }
    return {"object": "list", "data": [model]}


# The generation endpoints read the state from the request rather than through ``StateDep``:
# resolving a dependency costs tens of microseconds, paid on every generation.
@router.post("/completions", response_model=None)
async def create_completion(
    body: CompletionCreate, request: Request
) -> Response | EventStreamResponse:
    """OpenAI ``POST /v1/completions``."""
    state: ServingState = request.app.state.serving
    return await _generate(request, state, body, ResponseShape("completion", state.model_name))


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionCreate, request: Request
) -> Response | EventStreamResponse:
    """OpenAI ``POST /v1/chat/completions``."""
    state: ServingState = request.app.state.serving
    return await _generate(request, state, body, ResponseShape("chat", state.model_name))


async def _generate(
    request: Request,
    state: ServingState,
    body: CompletionCreate | ChatCompletionCreate,
    shape: ResponseShape,
) -> Response | EventStreamResponse:
    service = state.service
    ticket = await service.admit(body.generation(shape.id), max_tokens=body.requested_max_tokens())
    chunks = service.stream(ticket)
    try:
        async with cancel_on_disconnect(request.receive):
            if body.stream:
                first = await anext(chunks, None)
            else:
                async with contextlib.aclosing(chunks):
                    text = "".join([chunk.text async for chunk in chunks])
    except ClientGone:
        return Response(status_code=_CLIENT_CLOSED)
    if not body.stream:
        finish = ticket.finish_reason or "stop"
        return JSONResponse(shape.whole(text, finish, ticket.prompt_tokens, ticket.output_tokens))
    usage = bool(body.stream_options and body.stream_options.include_usage)
    return EventStreamResponse(_events(shape, ticket, first, chunks, usage=usage))


async def _events(
    shape: ResponseShape,
    ticket: Ticket,
    first: GenerationChunk | None,
    chunks: AsyncGenerator[GenerationChunk, None],
    *,
    usage: bool,
) -> AsyncGenerator[bytes, None]:
    async with contextlib.aclosing(chunks):
        try:
            if shape.kind == "chat":
                yield shape.chunk("", role=True)
            chunk = first
            while chunk is not None:
                if chunk.text:
                    yield shape.chunk(chunk.text)
                chunk = await anext(chunks, None)
            yield shape.chunk(None, ticket.finish_reason or "stop")
            if usage:
                yield shape.usage_chunk(ticket.prompt_tokens, ticket.output_tokens)
        except GenerationTimeout as exc:
            yield sse(error_body(str(exc), type_="timeout_error", code="timeout"))
        except GenerationFailed as exc:
            yield sse(error_body(str(exc), type_="server_error", code="generation_failed"))
        yield sse("[DONE]")
