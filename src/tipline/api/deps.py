"""Authentication and permission checks as FastAPI dependencies.

The key comes from ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; checking it
(hashed lookup, revocation, role, tenant) is :func:`tipline.services.auth.authenticate`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Awaitable, Callable

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from tipline.api.context import ServiceContext, get_ctx
from tipline.errors import AuthError
from tipline.services.auth import Permission, Principal, Role, authenticate
from tipline.services.database import in_transaction

_bearer = HTTPBearer(auto_error=False, description="API key as a bearer token")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")


async def _key(
    bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
    header: str | None = Depends(_header),
) -> str:
    if bearer is not None and bearer.credentials:
        return bearer.credentials
    if header:
        return header
    raise AuthError("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'")


#: Seconds a successful key check is reused (a revoked key stops working within this).
AUTH_CACHE_SECONDS = 2.0
_AUTH_CACHE_MAX = 4096


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def _cached_only(ctx: ServiceContext, key: str) -> Principal | None:
    cache: dict[bytes, tuple[float, Principal]] = ctx.services.setdefault("auth_cache", {})
    hit = cache.get(_digest(key))
    if hit is not None and time.monotonic() - hit[0] < AUTH_CACHE_SECONDS:
        return hit[1]
    return None


def _cached(ctx: ServiceContext, key: str) -> Principal:
    # Keyed by the SHA-256 of the presented key: the cache never holds secrets.
    digest = _digest(key)
    cache: dict[bytes, tuple[float, Principal]] = ctx.services.setdefault("auth_cache", {})
    now = time.monotonic()
    hit = cache.get(digest)
    if hit is not None and now - hit[0] < AUTH_CACHE_SECONDS:
        return hit[1]
    who = in_transaction(ctx.sessions, authenticate, key)
    if len(cache) >= _AUTH_CACHE_MAX:
        cache.clear()
    cache[digest] = (now, who)
    return who


async def principal(
    request: Request, key: str = Depends(_key), ctx: ServiceContext = Depends(get_ctx)
) -> Principal:
    """The authenticated principal of the request (AuthError when the key is bad).

    A valid key's principal is reused for :data:`AUTH_CACHE_SECONDS` (one database
    lookup per key per worker every two seconds instead of one per request); bad keys
    are never cached. The dependencies here are ``async`` so that a request does not
    hop to the thread pool for each of them; the database lookup (a cache miss) runs
    on a worker thread.
    """
    who = _cached_only(ctx, key)
    if who is None:
        who = await run_in_threadpool(_cached, ctx, key)
    request.state.principal = who
    return who


def require(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """Dependency: the principal, if its role grants ``permission``; else 403."""

    async def check(who: Principal = Depends(principal)) -> Principal:
        who.require(permission)
        return who

    return check


#: Audit actor of keyless requests let in by the HMA compatibility setting.
HMA_COMPAT_ACTOR = "hma-compat"


def hma_compat_principal(request: Request, ctx: ServiceContext) -> Principal | None:
    """The principal of a keyless request on an HMA route: the configured
    ``hma_compat_role`` and ``hma_compat_tenant`` when the setting is on and the client
    address is in ``hma_compat_networks``; None otherwise."""
    settings = ctx.settings
    if settings.hma_compat_role is None or request.client is None:
        return None
    try:
        address = ipaddress.ip_address(request.client.host)
    except ValueError:
        return None
    allowed = any(
        address in ipaddress.ip_network(net, strict=False) for net in settings.hma_compat_networks
    )
    if not allowed:
        return None
    return Principal(
        key_id=HMA_COMPAT_ACTOR,
        role=Role(settings.hma_compat_role),
        tenant=settings.hma_compat_tenant,
    )


def require_hma(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """Like :func:`require`, for the HMA routes: a request without a key gets the HMA
    compatibility principal (:func:`hma_compat_principal`) when that is switched on."""

    async def check(
        request: Request,
        bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
        header: str | None = Depends(_header),
        ctx: ServiceContext = Depends(get_ctx),
    ) -> Principal:
        if (bearer is not None and bearer.credentials) or header:
            who = await principal(request, await _key(bearer, header), ctx)
        else:
            found = hma_compat_principal(request, ctx)
            if found is None:
                await _key(bearer, header)  # raises AuthError: a key is required
                raise AssertionError("unreachable")
            who = found
            request.state.principal = who
        who.require(permission)
        return who

    return check
