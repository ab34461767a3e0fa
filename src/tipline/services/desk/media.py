"""A received file as the analyst's desk shows it: a thumbnail rendered on the server
at a reveal level, exactly as review renders media (:mod:`tipline.services.review.media`:
grayscale and blurred at levels 0 and 1, grayscale and sharp at 2, colour at 3; a
video as a contact sheet of frames, never played).

Reveals are recorded in the same table as review's, keyed by the file's evidence-vault
item, so one person's daily exposure counts every file they unblurred, on the desk or
in review, against one limit. A level above 1 is rendered only after a reveal; a reveal
of a new file at level 2+ past the limit is refused. Audited: ``desk.reveal``,
``desk.reveal_refused``, and ``vault.read`` (via desk, with the level) before any byte
is decrypted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tipline.errors import MediaError, NotFoundError, PermissionDeniedError
from tipline.services import audit
from tipline.services.auth import Permission, Principal
from tipline.services.clearinghouse.queue import require
from tipline.services.review.media import (
    MAX_LEVEL,
    MAX_RENDER_BYTES,
    VIEW_LEVEL,
    ExposureLimitError,
    Rendered,
    exposure_in,
    render_evidence,
    revealed_level,
)
from tipline.services.vault import Vault
from tipline.signals.limits import MediaLimits
from tipline.store.base import utcnow
from tipline.store.clearinghouse import IntakeFileRow
from tipline.store.db import transaction
from tipline.store.vault import EvidenceItemRow
from tipline.store.web import ReviewRevealRow

#: longest side of a desk thumbnail, pixels
THUMB_SIDE = 320
TARGET_FILE = "intake_file"


def _file(
    session: Session, who: Principal, file_id: str, report_id: int | None = None
) -> IntakeFileRow:
    require(who, Permission.INTAKE_READ)
    who.require(Permission.EVIDENCE_READ)
    row = session.get(IntakeFileRow, file_id) if len(file_id) <= 32 else None
    if row is None or (report_id is not None and int(row.report_id) != report_id):
        raise NotFoundError(f"no received file {file_id!r} in this report")
    return row


def reveal(
    sessions: sessionmaker[Session],
    who: Principal,
    report_id: int,
    file_id: str,
    level: int,
    *,
    daily_limit: int,
    now: datetime | None = None,
) -> int:
    """Record that ``who`` asked to see ``file_id`` of ``report_id`` at ``level`` (audited as
    ``desk.reveal``); :class:`ExposureLimitError` (audited as ``desk.reveal_refused``)
    when a new file at level 2+ would pass the daily limit."""
    if not 0 <= level <= MAX_LEVEL:
        raise MediaError(f"reveal level must be 0 to {MAX_LEVEL}")
    now = now or utcnow()
    refused = None
    with transaction(sessions) as session:
        row = _file(session, who, file_id, report_id)
        if level >= VIEW_LEVEL and revealed_level(session, who, row.vault_id) < VIEW_LEVEL:
            seen = exposure_in(session, who, daily_limit, now)
            if seen.reached:
                refused = seen
        if refused is None:
            session.add(
                ReviewRevealRow(
                    item_id=row.vault_id, actor=who.key_id, tenant=None, level=level, at=now
                )
            )
            session.flush()
        audit.append(
            session,
            actor=who,
            action="desk.reveal" if refused is None else "desk.reveal_refused",
            target=(TARGET_FILE, file_id),
            details={
                "level": level,
                "report": int(row.report_id),
                "exposure_today": refused.today if refused else None,
            },
        )
    if refused is not None:
        raise ExposureLimitError(
            f"daily exposure limit reached ({refused.today} of {refused.limit} files today): "
            "take a break; the file stays blurred"
        )
    return level


@dataclass(frozen=True, slots=True)
class FileLevels:
    """What the desk may show of each file: the highest level revealed (-1: none)."""

    revealed: dict[str, int]


def revealed_levels(session: Session, who: Principal, files: dict[str, str]) -> FileLevels:
    """``files`` maps file id to vault id; the highest level ``who`` revealed of each."""
    if not files:
        return FileLevels({})
    by_vault = {v: f for f, v in files.items()}
    found: dict[str, int] = {f: -1 for f in files}
    rows = session.execute(
        select(ReviewRevealRow.item_id, ReviewRevealRow.level).where(
            ReviewRevealRow.actor == who.key_id, ReviewRevealRow.item_id.in_(list(by_vault))
        )
    )
    for vault_id, level in rows:
        file_id = by_vault[vault_id]
        found[file_id] = max(found[file_id], int(level))
    return FileLevels(found)


def render(
    sessions: sessionmaker[Session],
    vault: Vault,
    who: Principal,
    file_id: str,
    level: int,
    *,
    default_level: int,
    limits: MediaLimits,
) -> Rendered:
    """The file's thumbnail at ``level`` (a video as its contact sheet): up to the
    analyst's default level (at most 1) and up to what they revealed
    (PermissionDeniedError otherwise). Audited as ``vault.read`` before decrypting."""
    if not 0 <= level <= MAX_LEVEL:
        raise MediaError(f"reveal level must be 0 to {MAX_LEVEL}")
    with transaction(sessions) as session:
        row = _file(session, who, file_id)
        allowed = max(
            min(default_level, VIEW_LEVEL - 1), revealed_level(session, who, row.vault_id)
        )
        if level > allowed:
            raise PermissionDeniedError(f"level {level} was not revealed for this file")
        if row.media is None:
            raise NotFoundError("this file is not a picture or a video")
        item = session.get(EvidenceItemRow, row.vault_id)
        if item is None or item.tenant is not None or item.purged_at is not None:
            raise NotFoundError("the file's content is no longer kept")
        if item.size > MAX_RENDER_BYTES:
            raise MediaError(f"the file is {item.size} bytes, over {MAX_RENDER_BYTES}")
        audit.append(
            session,
            actor=who,
            action="vault.read",
            target=("evidence", item.id),
            details={"via": "desk", "intake_file": file_id, "level": level},
            tenant=item.tenant,
        )
        session.expunge(item)
    return render_evidence(vault, item, level, limits=limits, side=THUMB_SIDE)
