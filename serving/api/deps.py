"""What the routers share: the serving state on ``app.state.serving`` and its dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry

from serving.config import ServingSettings
from serving.faults import FaultInjector
from serving.metrics import MergedRegistry
from serving.service import InferenceService

__all__ = ["ServiceDep", "ServingState", "StateDep", "get_service", "get_state"]


@dataclass
class ServingState:
    """Everything the endpoints use, built by :func:`serving.app.create_app`."""

    settings: ServingSettings
    service: InferenceService
    faults: FaultInjector
    exposition: MergedRegistry
    registry: CollectorRegistry
    model_name: str
    created: int  # unix time the app was built (the model's "created" in /v1/models)
    engine_error: str | None = None  # why the engine failed to start, once it has


# async on purpose: FastAPI runs plain ``def`` dependencies in its thread pool, a thread hop
# per request for a dictionary lookup.
async def get_state(request: Request) -> ServingState:
    """The app's serving state."""
    return request.app.state.serving


async def get_service(request: Request) -> InferenceService:
    """The app's inference service."""
    return request.app.state.serving.service


StateDep = Annotated[ServingState, Depends(get_state)]
ServiceDep = Annotated[InferenceService, Depends(get_service)]
