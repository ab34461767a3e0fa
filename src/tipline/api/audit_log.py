"""Audit records for API requests: every access to media and every write.

A thin adapter over :func:`tipline.services.audit.append` (the hash-chained log).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from tipline.api.context import ServiceContext
from tipline.services import audit
from tipline.services.auth import Principal


def record(
    session: Session,
    who: Principal,
    action: str,
    *,
    target: tuple[str, str] | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one audit record in ``session``'s transaction (commits with the write)."""
    audit.append(session, actor=who, action=action, target=target, details=details or {})


def record_media_access(
    ctx: ServiceContext,
    who: Principal,
    action: str,
    details: dict[str, Any] | None = None,
    *,
    target: tuple[str, str] | None = None,
) -> None:
    """Append one audit record for a media access in its own short transaction."""
    with ctx.sessions() as session, session.begin():
        record(session, who, action, target=target, details=details)
