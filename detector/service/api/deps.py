"""Dependencies of the API routes, as ``Annotated`` aliases.

The application keeps what the routes read in ``app.state``: ``view`` (a
:class:`~detector.service.views.ServiceView`), ``events`` (an
:class:`~detector.service.history.EventStore`) and ``retrain_token`` (the bearer token of the one
write, or None). A service lifespan may set them
after the app is built; until then the routes answer 503.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from detector.service.history import EventStore
from detector.service.views import ServiceView

__all__ = ["EventsDep", "RetrainAuth", "ViewDep", "get_events", "get_view", "require_token"]

_bearer = HTTPBearer(auto_error=False, description="the detector's api_token")


def get_view(request: Request) -> ServiceView:
    """The running service's view; 503 until the service has started."""
    view = getattr(request.app.state, "view", None)
    if view is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the detector is not running yet")
    return view


def get_events(request: Request) -> EventStore:
    """The anomaly history; 503 until it is open."""
    events = getattr(request.app.state, "events", None)
    if events is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the anomaly history is not open")
    return events


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Let the request through only with ``Authorization: Bearer <api_token>``."""
    token = getattr(request.app.state, "retrain_token", None)
    if not token:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "retraining over the API is off: no api_token is configured"
        )
    given = credentials.credentials if credentials is not None else ""
    # Constant-time comparison, so the token cannot be guessed from response times.
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "wrong bearer token" if given else "a bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )


ViewDep = Annotated[ServiceView, Depends(get_view)]
EventsDep = Annotated[EventStore, Depends(get_events)]
RetrainAuth = Annotated[None, Depends(require_token)]
