"""``/admin/faults``: list, add and end injected faults (loopback clients, bearer token).

A request whose ``Host`` is not ``127.0.0.1``, ``localhost``, ``[::1]`` or the bind host (any
port) gets 400, as from Starlette's ``TrustedHostMiddleware``: a web page the operator opens could
otherwise reach the API through DNS rebinding (its own name resolving to 127.0.0.1), from a
loopback client address and without a token when none is set. A client that is not on a loopback
address gets 403; with ``admin_token`` set, a request without ``Authorization: Bearer <token>``
(or with a wrong one) gets 401. An empty token (allowed only when the server binds a loopback
address) skips the token check.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request

from serving.api.deps import StateDep
from serving.config import is_loopback
from serving.fault_spec import FaultSpec

__all__ = ["admin_hosts", "host_name", "require_admin", "router"]

_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
# A Host header: a bracketed IPv6 address or a name, then an optional port.
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[^:\[\]]+)(?::[0-9]*)?")


def host_name(header: str) -> str | None:
    """The host part of a ``Host`` header, lower-cased, without the port; None when malformed.

    >>> host_name("LocalHost:8080"), host_name("[::1]:80"), host_name("attacker.example")
    ('localhost', '[::1]', 'attacker.example')
    >>> host_name("a:b:c") is None, host_name("") is None
    (True, True)
    """
    match = _HOST.fullmatch(header.strip().lower())
    return match.group(1) if match else None


def admin_hosts(bind_host: str) -> frozenset[str]:
    """The ``Host`` names the admin API answers: loopback names and the bind host.

    >>> sorted(admin_hosts("::1")), "[fe80::1]" in admin_hosts("FE80::1")
    (['127.0.0.1', '[::1]', 'localhost'], True)
    """
    try:
        address = ipaddress.ip_address(bind_host)
    except ValueError:
        return _LOOPBACK_NAMES | {bind_host.lower()}
    return _LOOPBACK_NAMES | {f"[{address}]" if address.version == 6 else str(address)}


async def require_admin(request: Request, state: StateDep) -> None:
    """Refuse foreign ``Host`` names (400), non-loopback clients (403), bad tokens (401)."""
    given = request.headers.get("host", "")
    allowed = admin_hosts(state.settings.host)
    if host_name(given) not in allowed:
        raise HTTPException(
            400,
            f"the admin API answers requests addressed to {', '.join(sorted(allowed))} (any "
            f"port) only, not to Host {given!r} (protection against DNS rebinding)",
        )
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
