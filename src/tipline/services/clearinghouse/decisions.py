"""An analyst's decision on a triaged report: confirm (its files are material to act
on; the ones not already in a known hash list are published, :mod:`.publishing`) or
reject. One decision per report, taken on a pending report; audited with what was
published."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tipline.errors import ConflictError, InputError, NotFoundError
from tipline.services import audit
from tipline.services.auth import Permission, Principal
from tipline.services.clearinghouse import clusters, published_photos, publishing
from tipline.services.clearinghouse.dedup import DedupSettings
from tipline.services.clearinghouse.intake import TARGET_REPORT
from tipline.services.clearinghouse.queue import require
from tipline.services.clearinghouse.triage import CLASSIFICATIONS
from tipline.services.vault import Vault
from tipline.signals.limits import MediaLimits
from tipline.store.base import utcnow
from tipline.store.clearinghouse import IntakeFileRow
from tipline.store.clearinghouse_triage import FileDedupRow, TriageRow
from tipline.store.db import transaction

PENDING, CONFIRMED, REJECTED = "pending", "confirmed", "rejected"
MAX_NOTE_CHARS = 2000


@dataclass(frozen=True, slots=True)
class Decision:
    """A decision taken: the report, its new status, and what was published."""

    report_id: int
    status: str
    decided_by: str
    decided_at: datetime
    note: str | None
    bank: str | None
    published: tuple[str, ...]
    already_published: tuple[str, ...]


def _pending(session: Session, report_id: int) -> TriageRow:
    row = session.scalar(
        select(TriageRow).where(TriageRow.report_id == report_id).with_for_update()
    )
    if row is None:
        raise NotFoundError(f"no triaged intake report {report_id}")
    if row.status != PENDING:
        raise ConflictError(f"intake report {report_id} was already {row.status}")
    return row


def _note(note: str | None) -> str | None:
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise InputError(f"note over {MAX_NOTE_CHARS} characters")
    return note or None


def _chosen(
    session: Session, report_id: int, file_ids: Sequence[str] | None
) -> list[tuple[IntakeFileRow, FileDedupRow]]:
    """The report's files to publish: those named (of this report), else every file
    not matching a known hash list."""
    rows: list[tuple[IntakeFileRow, FileDedupRow]] = list(
        session.execute(
            select(IntakeFileRow, FileDedupRow)
            .join(FileDedupRow, FileDedupRow.file_id == IntakeFileRow.id)
            .where(IntakeFileRow.report_id == report_id)
            .order_by(IntakeFileRow.uploaded_at, IntakeFileRow.id)
        )
    )
    if file_ids is not None:
        unknown = set(file_ids) - {f.id for f, _ in rows}
        if unknown:
            raise InputError(f"not files of report {report_id}: {', '.join(sorted(unknown))}")
        return [(f, d) for f, d in rows if f.id in set(file_ids)]
    return [(f, d) for f, d in rows if d.state != "known"]


def _published_photos(
    sessions: sessionmaker[Session],
    vault: Vault,
    who: Principal,
    report_id: int,
    bank: str,
    file_ids: Sequence[str] | None,
    limits: MediaLimits | None,
) -> published_photos.PublishedPhotos:
    """Reference PDQ and region descriptors of the photos the confirmation is about to
    publish, read from the vault before its transaction (:mod:`.published_photos`)."""
    with sessions() as session:
        triage = session.get(TriageRow, report_id)
        if triage is None or triage.status != PENDING:
            return published_photos.PublishedPhotos()  # the transaction says why
        files = [f for f, _ in _chosen(session, report_id, file_ids)]
        present = publishing.already_published(session, bank, [f.sha256 for f in files])
    files = [f for f in files if f.sha256 not in present]
    return published_photos.read_photos(sessions, vault, who, report_id, files, limits=limits)


def confirm(
    sessions: sessionmaker[Session],
    who: Principal,
    report_id: int,
    *,
    bank: str,
    settings: DedupSettings,
    vault: Vault | None,
    limits: MediaLimits | None = None,
    file_ids: Sequence[str] | None = None,
    classification: str | None = None,
    note: str | None = None,
) -> Decision:
    """Confirm a pending report and publish its files' hashes to ``bank``: the files
    named (of this report), else every file not matching a known hash list. With the
    evidence ``vault``, each published photo is hashed again with the reference decode
    and gets its region descriptors (crops and small rotations match it from then on;
    :mod:`.published_photos`); a photo that cannot be read back is published without
    its PDQ unless the intake computed that with the reference decode, and the audit
    record says so."""
    require(who, Permission.INTAKE_DECIDE)
    if classification is not None and classification.upper() not in CLASSIFICATIONS:
        raise InputError(f"classification must be one of {', '.join(CLASSIFICATIONS)}")
    note = _note(note)
    found = published_photos.PublishedPhotos()
    if vault is not None:
        found = _published_photos(sessions, vault, who, report_id, bank, file_ids, limits)
    with transaction(sessions) as session:
        # first, as triage does: the two never wait for each other's locks in a cycle
        clusters.lock(session)
        triage = _pending(session, report_id)
        chosen = _chosen(session, report_id, file_ids)
        done = publishing.publish(
            session,
            bank,
            [f for f, _ in chosen],
            labels=[classification.upper()] if classification else [],
            source=f"clearinghouse report {report_id}",
            settings=settings,
            regions=found.by_sha256,
            reference_pdq=found.pdq,
        )
        for _, d in chosen:
            d.published = True
        now = utcnow()
        triage.status, triage.decided_at, triage.decided_by = CONFIRMED, now, who.key_id
        triage.note = note
        session.flush()
        if done.created:
            audit.append(
                session,
                actor=who,
                action="bank.create",
                target=("bank", bank),
                details={"allow": False, "enabled": True, "thresholds": {}},
            )
        details: dict[str, object] = {
            "bank": bank,
            "files": [f.id for f, _ in chosen],
            "published": list(done.added),
            "already_published": list(done.present),
            "classification": classification.upper() if classification else None,
            "note": note,
        }
        if done.regions:
            details["regions"] = done.regions
        if found.failed:
            details["regions_failed"] = dict(sorted(found.failed.items()))
        if done.pdq_left_out:
            details["pdq_left_out"] = list(done.pdq_left_out)
        audit.append(
            session,
            actor=who,
            action="clearinghouse.confirm",
            target=(TARGET_REPORT, str(report_id)),
            details=details,
        )
    return Decision(report_id, CONFIRMED, who.key_id, now, note, bank, done.added, done.present)


def reject(
    sessions: sessionmaker[Session], who: Principal, report_id: int, *, note: str | None = None
) -> Decision:
    """Reject a pending report (nothing is published)."""
    require(who, Permission.INTAKE_DECIDE)
    note = _note(note)
    with transaction(sessions) as session:
        # first, as triage does: the two never wait for each other's locks in a cycle
        clusters.lock(session)
        triage = _pending(session, report_id)
        now = utcnow()
        triage.status, triage.decided_at, triage.decided_by = REJECTED, now, who.key_id
        triage.note = note
        session.flush()
        audit.append(
            session,
            actor=who,
            action="clearinghouse.reject",
            target=(TARGET_REPORT, str(report_id)),
            details={"note": note},
        )
    return Decision(report_id, REJECTED, who.key_id, now, note, None, (), ())
