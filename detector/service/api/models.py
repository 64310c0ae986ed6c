"""``/api/v1/models``: the model served for each signal, and queuing a refit."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, status

from detector.service.api.convert import model_public
from detector.service.api.deps import RetrainAuth, ViewDep
from detector.service.api.schemas import ModelsPublic, RetrainCreate, RetrainJobPublic
from detector.service.views import RetrainUnavailable

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/models", tags=["models"])


@router.get("", response_model=ModelsPublic, summary="Models in service")
def read_models(view: ViewDep) -> ModelsPublic:
    """Version, training window, coverage and evaluation figures of each signal's model, and
    the registry folder they come from (where a notebook must publish for the service to see)."""
    items = [model_public(m) for m in view.models()]
    return ModelsPublic(data=items, count=len(items), registry_root=str(view.registry_root()))


@router.post(
    "/retrain",
    response_model=RetrainJobPublic,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Queue a refit",
    responses={
        400: {"description": "the body is not valid JSON"},
        401: {"description": "no bearer token, or a wrong one"},
        403: {"description": "no api_token is configured"},
        404: {"description": "no signal of that name is configured"},
        409: {"description": "a refit cannot be queued now (one is already running)"},
    },
)
def retrain(
    view: ViewDep,
    _auth: RetrainAuth,
    body: Annotated[RetrainCreate | None, Body()] = None,
) -> RetrainJobPublic:
    """Refit one signal (or all of them when no body or no ``signal`` is sent) in the
    background; the new model is published to the registry and swapped in when ready."""
    signal = body.signal if body is not None else None
    if signal is not None and signal not in view.signal_names():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no signal {signal!r} is configured")
    try:
        job = view.request_retrain(signal)
    except RetrainUnavailable as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return RetrainJobPublic(job_id=job, signal=signal)
