"""The serving app factory: an OpenAI-compatible FastAPI app around any engine.

``create_app(settings, engine)`` builds metrics, fault injector, quality checks and the
request service, and refuses request bodies over ``settings.max_body_bytes`` (413, before they
are parsed: :mod:`serving.api.limits`); the lifespan starts the engine in the background
(``/health`` answers 503 until it is ready, so probes and scrapes work while a model loads),
starts the fault schedule and the GPU poller, and on shutdown stops them and closes the engine.

Engines that register metrics in prometheus_client's global registry (vLLM's ``vllm:*``) are
exported on the same ``/metrics`` by passing ``extra_registries=[prometheus_client.REGISTRY]``;
an engine with a ``metrics_registry`` of its own (the synthetic engine's ``vllm:*``) is exported
without asking. Families already produced by the app's registry (``process_*``, ``python_*``)
are not repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.types import Scope

from serving.api import admin, openai, system
from serving.api.deps import ServingState
from serving.api.errors import GENERATION_PATHS, install_error_handlers
from serving.api.limits import BodyLimit
from serving.config import ServingSettings
from serving.engines.base import Engine
from serving.fault_spec import load_schedule
from serving.faults import FaultInjector
from serving.metrics import MergedRegistry, ServingMetrics
from serving.quality import QualityChecker
from serving.service import InferenceService

__all__ = ["create_app"]

_log = logging.getLogger(__name__)


def create_app(
    settings: ServingSettings,
    engine: Engine,
    registry: CollectorRegistry | None = None,
    *,
    extra_registries: Sequence[CollectorRegistry] = (),
    on_engine_failure: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """Build the serving app.

    Parameters
    ----------
    settings
        Serving configuration; ``settings.faults_file`` is read and validated here.
    engine
        The engine; started by the app's lifespan, closed at shutdown.
    registry
        Registry of the serving metrics (a fresh one when None).
    extra_registries
        Further registries exported on ``/metrics`` (e.g. the global one for vLLM); the
        engine's ``metrics_registry``, where it has one, is exported before them.
    on_engine_failure
        Called when ``engine.start()`` fails (the CLI stops the server); ``/health`` then
        reports the failure.

    Raises
    ------
    FaultScheduleError
        ``settings.faults_file`` is malformed.
    """
    registry = CollectorRegistry() if registry is None else registry
    state, metrics = _build_state(settings, engine, registry, extra_registries)
    app = FastAPI(
        title="llmwatch serving",
        description="OpenAI-compatible LLM server with metrics, quality checks and fault injection",
        lifespan=_lifespan(state, metrics, engine, on_engine_failure),
    )
    app.state.serving = state
    install_error_handlers(app)
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_body_bytes, on_refused=_rejection_counter(metrics)
    )
    app.include_router(openai.router)
    app.include_router(system.router)
    app.include_router(admin.router)
    return app


def _build_state(
    settings: ServingSettings,
    engine: Engine,
    registry: CollectorRegistry,
    extra_registries: Sequence[CollectorRegistry],
) -> tuple[ServingState, ServingMetrics]:
    """Metrics, fault injector (with its schedule), quality checks and the request service."""
    metrics = ServingMetrics(
        registry, settings.metric_prefix, gpu_poll_interval_s=settings.gpu_poll_interval_s
    )
    faults = FaultInjector(
        metrics=metrics, seed=settings.fault_seed, memory_max_mb=settings.fault_memory_max_mb
    )
    if settings.faults_file is not None:
        faults.schedule(load_schedule(settings.faults_file))
    quality = QualityChecker(
        json_prompt_pattern=settings.json_prompt_pattern,
        loop_max_ngram=settings.loop_max_ngram,
        loop_min_repeats=settings.loop_min_repeats,
        loop_min_words=settings.loop_min_words,
    )
    service = InferenceService(
        engine=engine,
        metrics=metrics,
        faults=faults,
        quality=quality,
        max_in_flight=settings.max_running + settings.max_queue,
        timeout_s=settings.request_timeout_s,
        default_max_tokens=settings.default_max_tokens,
    )
    # Optional on the engine protocol: only an engine that keeps its metrics apart has one.
    own = getattr(engine, "metrics_registry", None)
    engine_registries = [own] if isinstance(own, CollectorRegistry) else []
    state = ServingState(
        settings=settings,
        service=service,
        faults=faults,
        exposition=MergedRegistry(registry, [*engine_registries, *extra_registries]),
        registry=registry,
        model_name=settings.served_model_name or engine.model_name,
        created=int(time.time()),
    )
    return state, metrics


def _lifespan(
    state: ServingState,
    metrics: ServingMetrics,
    engine: Engine,
    on_engine_failure: Callable[[BaseException], None] | None,
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """Start metrics, faults and (in the background) the engine; stop them all at shutdown."""
    faults = state.faults

    async def start_engine() -> None:
        try:
            await engine.start()
        except Exception as exc:
            state.engine_error = f"{type(exc).__name__}: {exc}"
            _log.exception("the engine failed to start")
            if on_engine_failure is not None:
                on_engine_failure(exc)
            return
        _log.info("engine ready: %s", state.model_name)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics.start()
        await faults.start()
        starting = asyncio.create_task(start_engine(), name="engine-start")
        try:
            yield
        finally:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            await faults.stop()
            await engine.close()
            metrics.stop()

    return lifespan


def _rejection_counter(metrics: ServingMetrics) -> Callable[[Scope], None]:
    def body_refused(scope: Scope) -> None:
        # A generation request is counted whatever refuses it (every request once).
        if scope["path"] in GENERATION_PATHS:
            metrics.count("rejected")

    return body_refused
