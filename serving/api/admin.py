"""``/admin/faults``: list, add and end injected faults (loopback clients, bearer token).

A client that is not on a loopback address gets 403; with ``admin_token`` set, a request without
``Authorization: Bearer <token>`` (or with a wrong one) gets 401. An empty token (allowed only
when the server binds a loopback address) skips the token check.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request

from serving.api.deps import StateDep
from serving.config import is_loopback
from serving.fault_spec import FaultSpec

__all__ = ["require_admin", "router"]


async def require_admin(request: Request, state: StateDep) -> None:
    """Refuse non-loopback clients (403) and missing or wrong bearer tokens (401)."""
    host = request.client.host if request.client else ""
    if not is_loopback(host):
        raise HTTPException(403, "the admin API answers loopback clients only")
    token = state.settings.admin_token.get_secret_value()
    if token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401,
                "a valid admin bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.get("/faults")
async def list_faults(state: StateDep) -> dict[str, Any]:
    """Every fault (pending, active, ended) with its planned and actual window."""
    injector = state.faults
    faults = [injector.public(f) for f in injector.faults()]
    active = sorted({f["kind"] for f in faults if f["state"] == "active"})
    return {
        "now": time.time(),  # the server's clock, to line the windows up with other data
        "faults": faults,
        "active_kinds": active,
        "memory_bytes": injector.memory_bytes,
    }


@router.post("/faults", status_code=201)
async def add_fault(spec: FaultSpec, state: StateDep) -> dict[str, Any]:
    """Add a fault starting ``start`` seconds from now (default: now)."""
    try:
        fault = state.faults.add(spec, source="admin")
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    return state.faults.public(fault)


@router.delete("/faults/{fault_id}")
async def end_fault(fault_id: int, state: StateDep) -> dict[str, Any]:
    """End an active fault, or cancel a pending one, now."""
    try:
        fault = state.faults.end(fault_id)
    except KeyError:
        raise HTTPException(404, f"no fault with id {fault_id}") from None
    return state.faults.public(fault)
