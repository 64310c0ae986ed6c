"""``/health`` (200 once the engine can generate, 503 before) and ``/metrics``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from serving.api.deps import StateDep
from serving.api.errors import error_response

__all__ = ["router"]

router = APIRouter(tags=["system"])


@router.get("/health", response_model=None)
async def health(state: StateDep) -> dict[str, Any] | JSONResponse:
    """Ready when the engine can generate."""
    if state.service.engine.ready():
        return {"status": "ok", "model": state.model_name}
    reason = f"engine failed: {state.engine_error}" if state.engine_error else "engine is loading"
    return error_response(503, reason, code="engine_not_ready")


@router.get("/metrics")
def metrics(state: StateDep) -> Response:
    """Prometheus text exposition (a plain ``def``: collecting runs in the thread pool)."""
    return Response(state.exposition.exposition(), media_type=CONTENT_TYPE_LATEST)
