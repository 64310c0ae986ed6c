"""The FastAPI application of the detector's REST API (OpenAPI at ``/docs``)."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError

from detector.service.api import anomalies, health, models, signals
from detector.service.history import EventStore
from detector.service.views import ServiceView

__all__ = ["ROUTERS", "create_api", "include_api"]

ROUTERS = (anomalies.router, signals.router, models.router, health.router)


def include_api(
    app: FastAPI,
    *,
    view: ServiceView | None,
    events: EventStore | None,
    retrain_token: str | None,
) -> FastAPI:
    """Add the API's routes to ``app`` and put what they read into ``app.state``.

    ``view``/``events`` may be None and set later (``app.state.view = ...``, e.g. in a lifespan);
    the routes answer 503 until then. An empty ``retrain_token`` turns the retrain endpoint off.
    """
    app.state.view = view
    app.state.events = events
    app.state.retrain_token = retrain_token or None
    for router in ROUTERS:
        app.include_router(router)
    for error in (OperationalError, InterfaceError):
        app.add_exception_handler(error, _history_down)
    return app


async def _history_down(request: Request, exc: Exception) -> JSONResponse:
    # The database is down or unreachable (a PostgreSQL restart, a locked file): the answer
    # would be missing events, so none is given; a retry later gets them all.
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return JSONResponse(
        {"detail": f"the anomaly history does not answer: {reason}"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "30"},
    )


def create_api(
    view: ServiceView | None,
    events: EventStore | None,
    *,
    retrain_token: str | None,
    lifespan: Callable[[FastAPI], Any] | None = None,
) -> FastAPI:
    """A FastAPI app serving the anomaly, signal, model and health routes.

    ``/metrics`` and the service's start and stop belong to the caller: pass its ``lifespan``
    and mount the exporter on the returned app.
    """
    app = FastAPI(
        title="llmwatch detector",
        version=importlib.metadata.version("llmwatch"),
        description="Anomalies, signals and models of the llmwatch detector service.",
        lifespan=lifespan,
    )
    return include_api(app, view=view, events=events, retrain_token=retrain_token)
