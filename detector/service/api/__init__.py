"""The detector's REST API: one router per resource, reading the service through ServiceView.

Build it with :func:`create_api` (or add the routes to an existing app with :func:`include_api`).
"""

from detector.service.api.app import ROUTERS, create_api, include_api

__all__ = ["ROUTERS", "create_api", "include_api"]
