"""``/health``: 200 when Prometheus answers and every signal has a model, else 503 with why."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse

from detector.service.api.schemas import HealthPublic

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=HealthPublic,
    summary="Liveness and readiness",
    responses={503: {"model": HealthPublic, "description": "not ready; reason says why"}},
)
def read_health(request: Request) -> HealthPublic | JSONResponse:
    """``ok`` or, with status 503, the reason the detector cannot score right now."""
    view = getattr(request.app.state, "view", None)
    ok, reason = view.health() if view is not None else (False, "the detector is not running yet")
    if ok:
        return HealthPublic(status="ok", reason=reason)
    body = HealthPublic(status="unavailable", reason=reason)
    return JSONResponse(body.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
