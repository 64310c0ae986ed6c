"""The detector service's web app: REST API, ``/metrics`` and ``/health`` around the schedule.

:func:`create_app` builds the FastAPI app; its lifespan starts the service (loading models and
running cycles on a background thread) and stops it, both off the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from detector.service.api import create_api
from detector.service.config import DetectorSettings
from detector.service.exporter import ServiceCollector
from detector.service.loop import DetectorService

__all__ = ["create_app"]


def create_app(
    settings: DetectorSettings,
    *,
    service: DetectorService | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The app of ``llmwatch detect``.

    Parameters
    ----------
    settings : DetectorSettings
        Configuration; the service is built from it at startup unless ``service`` is given.
    service : DetectorService, optional
        A service built by the caller (tests); it is started and stopped with the app.
    registry : CollectorRegistry, optional
        Where the metrics collector registers (default: a fresh one).
    """
    metrics = registry if registry is not None else CollectorRegistry(auto_describe=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = service or await anyio.to_thread.run_sync(lambda: DetectorService(settings))
        collector = ServiceCollector(svc, metrics)
        await anyio.to_thread.run_sync(svc.start)
        app.state.view, app.state.events = svc, svc.store
        try:
            yield
        finally:
            app.state.view = None
            metrics.unregister(collector)
            await anyio.to_thread.run_sync(svc.stop)
            app.state.events = None

    token = settings.api_token.get_secret_value() if settings.api_token else None
    app = create_api(None, None, retrain_token=token, lifespan=lifespan)

    # A plain def: FastAPI runs it in a worker thread, and collecting only reads a snapshot.
    @app.get("/metrics", include_in_schema=False)
    def read_metrics() -> Response:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    return app
