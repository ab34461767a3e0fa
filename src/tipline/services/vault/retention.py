"""Retention, legal holds and the purge job.

An item is kept until its ``retain_until`` (storage or report time plus the retention
period, extendable per item) and for as long as any legal hold on it is active. The
purge job erases expired items: first, in one transaction per item, the wrapped data
key is deleted and the row marked purged (audited as ``vault.purge``), so the content
is unreadable from that commit on even in backups; then the file is removed. A file
left behind by a crash is an orphan that the next purge deletes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import ColumnElement, Engine, Exists, and_, exists, func, select, update
from sqlalchemy.orm import Session, sessionmaker
from ulid import ULID

from tipline.errors import ConflictError, InputError
from tipline.services import audit, jobs
from tipline.services.auth import Permission, Principal, Role, tenant_clause
from tipline.services.vault._model import (
    TARGET,
    EvidenceInfo,
    EvidenceKind,
    HoldInfo,
    Vault,
    get_row,
    holds_of,
)
from tipline.store.db import transaction
from tipline.store.reports import ReportFileRow
from tipline.store.vault import EvidenceHoldRow, EvidenceItemRow

#: job kind of the purge job (``tipline worker`` runs it daily)
PURGE_JOB_KIND = "vault.purge"
#: the actor purge jobs run as
WORKER = Principal(key_id="worker", role=Role.ADMIN)
#: files without a row are deleted by purge once this old (a store in flight has a file
#: before its row commits)
ORPHAN_GRACE = timedelta(days=1)
#: purge jobs run daily at this time (UTC)
PURGE_AT = time(3, 0, tzinfo=UTC)


def place_hold(
    sessions: sessionmaker[Session], item_id: str, *, reason: str, actor: Principal
) -> HoldInfo:
    """Place a legal hold (needs EVIDENCE_ADMIN; audited as ``vault.hold``)."""
    reason = reason.strip()
    if not 1 <= len(reason) <= 2000:
        raise InputError("a hold needs a reason of 1-2000 characters")
    with transaction(sessions) as session:
        row = get_row(session, item_id, actor, Permission.EVIDENCE_ADMIN)
        if row.purged_at is not None:
            raise ConflictError(f"vault item {item_id} was purged; nothing to hold")
        hold = EvidenceHoldRow(
            id=str(ULID()),
            item_id=item_id,
            reason=reason,
            placed_at=datetime.now(UTC),
            placed_by=actor.key_id,
        )
        session.add(hold)
        session.flush()
        audit.append(
            session,
            actor=actor,
            action="vault.hold",
            target=(TARGET, item_id),
            details={"hold_id": hold.id, "reason": reason},
            tenant=row.tenant,
        )
        return HoldInfo.of(hold)


def release_hold(
    sessions: sessionmaker[Session],
    item_id: str,
    *,
    actor: Principal,
    hold_id: str | None = None,
) -> list[HoldInfo]:
    """Release one hold (``hold_id``) or every active hold of the item; audited as
    ``vault.release`` per hold. ConflictError when nothing active matches."""
    with transaction(sessions) as session:
        row = get_row(session, item_id, actor, Permission.EVIDENCE_ADMIN)
        active = [
            h
            for h in holds_of(session, item_id)
            if h.released_at is None and (hold_id is None or h.id == hold_id)
        ]
        if not active:
            which = f"hold {hold_id!r}" if hold_id else "legal hold"
            raise ConflictError(f"vault item {item_id} has no active {which}")
        now = datetime.now(UTC)
        for hold in active:
            hold.released_at = now
            hold.released_by = actor.key_id
        session.flush()
        for hold in active:
            audit.append(
                session,
                actor=actor,
                action="vault.release",
                target=(TARGET, item_id),
                details={"hold_id": hold.id},
                tenant=row.tenant,
            )
        return [HoldInfo.of(h) for h in active]


def extend_retention(
    sessions: sessionmaker[Session],
    item_id: str,
    *,
    until: datetime,
    actor: Principal,
) -> EvidenceInfo:
    """Keep an item until ``until`` (aware; later than its current date, retention
    never shrinks); needs EVIDENCE_ADMIN; audited as ``vault.extend``."""
    if until.tzinfo is None:
        raise InputError("the new retention date needs a time zone")
    with transaction(sessions) as session:
        row = get_row(session, item_id, actor, Permission.EVIDENCE_ADMIN)
        if row.purged_at is not None:
            raise ConflictError(f"vault item {item_id} was purged")
        if until <= row.retain_until:
            raise ConflictError(
                f"retention can only be extended: vault item {item_id} is kept until "
                f"{row.retain_until.isoformat()}"
            )
        before = row.retain_until
        row.retain_until = until
        session.flush()
        info = EvidenceInfo.of(row, holds_of(session, item_id))
        audit.append(
            session,
            actor=actor,
            action="vault.extend",
            target=(TARGET, item_id),
            details={"from": before.isoformat(), "to": until.isoformat()},
            tenant=row.tenant,
        )
    return info


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What :func:`purge` did."""

    purged: list[str] = field(default_factory=list)
    #: expired items kept because of an active legal hold
    held: int = 0
    #: files removed that had no row (older than ORPHAN_GRACE) or a purged row
    files_removed: int = 0


def _active_hold() -> Exists:
    return exists().where(
        EvidenceHoldRow.item_id == EvidenceItemRow.id, EvidenceHoldRow.released_at.is_(None)
    )


def _expired(now: datetime) -> ColumnElement[bool]:
    return and_(
        EvidenceItemRow.purged_at.is_(None), EvidenceItemRow.retain_until <= now, ~_active_hold()
    )


def purge(
    sessions: sessionmaker[Session],
    vault: Vault,
    *,
    actor: Principal,
    now: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PurgeReport:
    """Erase every item past its retention without an active hold (needs
    EVIDENCE_ADMIN; a tenant's actor purges only its tenant's items). Each item: wrapped
    key deleted and row marked purged in one transaction with its ``vault.purge`` audit
    record; then its file is removed. An actor of no tenant also removes orphan files.
    ``progress(done, total)`` after each item."""
    actor.require(Permission.EVIDENCE_ADMIN)
    now = now or vault.clock()
    mine = tenant_clause(actor, EvidenceItemRow.tenant, include_shared=False)
    with sessions() as session:
        due = list(
            session.execute(
                select(EvidenceItemRow.id).where(_expired(now), mine).order_by(EvidenceItemRow.id)
            ).scalars()
        )
        held = session.execute(
            select(func.count()).where(
                EvidenceItemRow.purged_at.is_(None),
                EvidenceItemRow.retain_until <= now,
                _active_hold(),
                mine,
            )
        ).scalar_one()
    purged: list[str] = []
    for done, item_id in enumerate(due, 1):
        with transaction(sessions) as session:
            # re-checked in the UPDATE itself: a hold placed since the SELECT wins
            result = session.execute(
                update(EvidenceItemRow)
                .where(EvidenceItemRow.id == item_id, _expired(now))
                .values(wrapped_key=None, purged_at=now, purged_by=actor.key_id)
                .returning(
                    EvidenceItemRow.tenant,
                    EvidenceItemRow.sha256,
                    EvidenceItemRow.size,
                    EvidenceItemRow.retain_until,
                ),
                execution_options={"synchronize_session": False},
            ).first()
            if result is not None:
                audit.append(
                    session,
                    actor=actor,
                    action="vault.purge",
                    target=(TARGET, item_id),
                    details={
                        "reason": "retention expired",
                        "retain_until": result.retain_until.isoformat(),
                        "sha256": result.sha256,
                        "size": result.size,
                    },
                    tenant=result.tenant,
                )
        if result is not None:
            vault.blobs.delete(item_id)
            purged.append(item_id)
        if progress is not None:
            progress(done, len(due))
    removed = _remove_stray_files(sessions, vault, actor, now) if actor.tenant is None else 0
    return PurgeReport(purged, int(held), removed)


def purge_unreported_media(
    session: Session,
    submission_id: str,
    *,
    tenant: str | None,
    actor: str | Principal,
    reason: str,
    now: datetime | None = None,
) -> tuple[list[str], int]:
    """Erase, in the caller's transaction, the media kept for the tenant's submission
    that no report carries (kept only for review): the wrapped data key is deleted
    and the row marked purged, each audited as ``vault.purge`` with ``reason``, so the
    content is unreadable from the commit on (the next purge job removes the files).
    Items on an active legal hold are kept (audited as ``vault.purge_held``). Returns
    the purged ids and the number kept on hold."""
    now = now or datetime.now(UTC)
    actor_id = actor.key_id if isinstance(actor, Principal) else actor
    mine = and_(
        EvidenceItemRow.submission_id == submission_id,
        EvidenceItemRow.tenant.is_(None) if tenant is None else EvidenceItemRow.tenant == tenant,
        EvidenceItemRow.kind == EvidenceKind.MEDIA.value,
        EvidenceItemRow.purged_at.is_(None),
        EvidenceItemRow.report_id.is_(None),
        EvidenceItemRow.reported_at.is_(None),
        ~EvidenceItemRow.id.in_(select(ReportFileRow.evidence_id)),
    )
    held = list(
        session.execute(
            select(EvidenceItemRow.id).where(mine, _active_hold()).order_by(EvidenceItemRow.id)
        ).scalars()
    )
    purged = session.execute(
        update(EvidenceItemRow)
        .where(mine, ~_active_hold())
        .values(wrapped_key=None, purged_at=now, purged_by=actor_id)
        .returning(EvidenceItemRow.id, EvidenceItemRow.sha256, EvidenceItemRow.size),
        execution_options={"synchronize_session": False},
    ).all()
    for row in sorted(purged, key=lambda r: r.id):
        audit.append(
            session,
            actor=actor,
            action="vault.purge",
            target=(TARGET, row.id),
            details={
                "reason": reason,
                "submission_id": submission_id,
                "sha256": row.sha256,
                "size": row.size,
            },
            tenant=tenant,
        )
    for item_id in held:
        audit.append(
            session,
            actor=actor,
            action="vault.purge_held",
            target=(TARGET, item_id),
            details={"reason": reason, "submission_id": submission_id},
            tenant=tenant,
        )
    return sorted(r.id for r in purged), len(held)


def _remove_stray_files(
    sessions: sessionmaker[Session], vault: Vault, actor: Principal, now: datetime
) -> int:
    """Delete files of purged items (a crash between commit and unlink) and files with
    no row older than :data:`ORPHAN_GRACE` (a store whose transaction never committed)."""
    present = list(vault.blobs.ids())
    if not present:
        return 0
    known: dict[str, bool] = {}
    with sessions() as session:
        for start in range(0, len(present), 500):
            part = present[start : start + 500]
            for item_id, purged_at in session.execute(
                select(EvidenceItemRow.id, EvidenceItemRow.purged_at).where(
                    EvidenceItemRow.id.in_(part)
                )
            ):
                known[item_id] = purged_at is not None
    stray = []
    for item_id in present:
        if item_id in known:
            if known[item_id]:
                stray.append(item_id)
            continue
        try:
            mtime = datetime.fromtimestamp(vault.blobs.path(item_id).stat().st_mtime, UTC)
        except FileNotFoundError:
            continue
        if now - mtime >= ORPHAN_GRACE:
            stray.append(item_id)
    if not stray:
        return 0
    for item_id in stray:
        vault.blobs.delete(item_id)
    with transaction(sessions) as session:
        audit.append(
            session,
            actor=actor,
            action="vault.purge_files",
            details={"files": len(stray), "items": stray[:100]},
        )
    return len(stray)


def next_purge_time(after: datetime) -> datetime:
    """The first daily purge time (:data:`PURGE_AT`) strictly after ``after``."""
    at = datetime.combine(after.astimezone(UTC).date(), PURGE_AT)
    return at if at > after else at + timedelta(days=1)


def schedule_purge(session: Session, *, at: datetime) -> str:
    """Enqueue the purge job for ``at`` (once per day: the key is the date)."""
    return jobs.enqueue(
        session,
        PURGE_JOB_KIND,
        {},
        idempotency_key=f"{PURGE_JOB_KIND}:{at.astimezone(UTC):%Y-%m-%d}",
        run_at=at,
    )


def enqueue_purge(sessions: sessionmaker[Session]) -> str:
    """Queue a purge job due now (for ``tipline worker``); returns the job id."""
    with transaction(sessions) as session:
        return jobs.enqueue(session, PURGE_JOB_KIND, {})


def ensure_purge_scheduled(sessions: sessionmaker[Session], *, now: datetime) -> str:
    """Make sure the next daily purge job exists (idempotent; ``tipline worker`` calls
    this when it starts)."""
    with transaction(sessions) as session:
        return schedule_purge(session, at=next_purge_time(now))


def purge_handler(engine: Engine, vault: Vault) -> jobs.Handler:
    """The job handler: purge now, then schedule tomorrow's run."""
    sessions = sessionmaker(engine, expire_on_commit=False)

    def handle(_job: jobs.JobContext) -> None:
        now = vault.clock()
        purge(sessions, vault, actor=WORKER, now=now)
        with transaction(sessions) as session:
            schedule_purge(session, at=next_purge_time(now))

    return handle
