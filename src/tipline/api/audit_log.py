"""Audit records for API requests: every access to media and every write.

Writes are audited by the services, in the transaction of the write. Media access needs
no other write, so it goes through the per-process group-commit :class:`~tipline.services.
audit.Batcher`: many concurrent requests share one head lock and one commit, and each
request still waits until its own record is committed before it answers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tipline.api.context import ServiceContext
from tipline.services import audit
from tipline.services.auth import Principal

_BATCHER = "audit_batcher"


def batcher(ctx: ServiceContext) -> audit.Batcher:
    """This process's audit group-commit writer (closed with the context)."""
    found = ctx.services.get(_BATCHER)
    if isinstance(found, audit.Batcher):
        return found
    made = audit.Batcher(ctx.engine)
    found = ctx.services.setdefault(_BATCHER, made)
    if found is not made:  # another request made one first
        made.close()
    assert isinstance(found, audit.Batcher)
    return found


def media_access(
    ctx: ServiceContext,
    who: Principal,
    action: str,
    details: dict[str, Any] | None = None,
    *,
    target: tuple[str, str] | None = None,
) -> asyncio.Future[int]:
    """Queue one media-access record now; await the result (its seq) before answering.

    Queue it before the work it covers, so the two overlap; the record is durable once
    the awaitable resolves (it raises when the write failed).
    """
    future = batcher(ctx).submit(actor=who, action=action, target=target, details=details)
    # shielded: a cancelled request (client gone) must not withdraw the queued record
    return asyncio.shield(asyncio.wrap_future(future))


async def record_media_access(
    ctx: ServiceContext,
    who: Principal,
    action: str,
    details: dict[str, Any] | None = None,
    *,
    target: tuple[str, str] | None = None,
) -> None:
    """Append one audit record for a media access and wait until it is committed."""
    await media_access(ctx, who, action, details, target=target)
