"""Authentication and permission checks as FastAPI dependencies.

The key comes from ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; checking it
(hashed lookup, revocation, role, tenant) is :func:`tipline.services.auth.authenticate`.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from tipline.api.context import ServiceContext, get_ctx
from tipline.errors import AuthError
from tipline.services.auth import Permission, Principal, authenticate

_bearer = HTTPBearer(auto_error=False, description="API key as a bearer token")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")


def _key(
    bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
    header: str | None = Depends(_header),
) -> str:
    if bearer is not None and bearer.credentials:
        return bearer.credentials
    if header:
        return header
    raise AuthError("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'")


def principal(
    request: Request, key: str = Depends(_key), ctx: ServiceContext = Depends(get_ctx)
) -> Principal:
    """The authenticated principal of the request (AuthError when the key is bad)."""
    with ctx.sessions() as session:
        who = authenticate(session, key)
    request.state.principal = who
    return who


def require(permission: Permission) -> Callable[..., Principal]:
    """Dependency: the principal, if its role grants ``permission``; else 403."""

    def check(who: Principal = Depends(principal)) -> Principal:
        who.require(permission)
        return who

    return check
