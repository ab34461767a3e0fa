"""The vault behind the reports service's evidence interface
(:class:`tipline.services.reports.evidence.EvidenceFiles`): the media kept for a
submission, reading it back for upload, and preserving a report's exact XML.

Everything happens in the caller's session (the report's or the outbox step's
transaction), and each read is audited in it as ``vault.read`` by the adapter's actor:
the audit record commits with the step that sends the bytes (one commit per step, which
matters because audit appends serialize on the chain's head).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tipline.errors import NotFoundError
from tipline.services import audit
from tipline.services.auth import Permission, Principal
from tipline.services.reports.evidence import StoredFile
from tipline.services.vault._model import TARGET, EvidenceKind, Vault
from tipline.services.vault.items import mark_reported, plaintext, seal, store, sync_files
from tipline.services.vault.retention import WORKER
from tipline.store.db import ids_in
from tipline.store.vault import EvidenceItemRow

_PREFETCHED = "tipline.vault.evidence.prefetched"


class VaultEvidence:
    """:class:`~tipline.services.reports.evidence.EvidenceFiles` backed by the vault."""

    def __init__(self, vault: Vault, *, actor: Principal = WORKER) -> None:
        actor.require(Permission.EVIDENCE_READ)
        self.vault = vault
        self.actor = actor

    def media_of(
        self, session: Session, tenant: str | None, submission_id: str
    ) -> list[StoredFile]:
        """The live media items kept for the tenant's submission, oldest first."""
        rows = session.execute(
            select(EvidenceItemRow)
            .where(
                EvidenceItemRow.submission_id == submission_id,
                EvidenceItemRow.kind == EvidenceKind.MEDIA.value,
                EvidenceItemRow.purged_at.is_(None),
                EvidenceItemRow.tenant.is_(None)
                if tenant is None
                else EvidenceItemRow.tenant == tenant,
            )
            .order_by(EvidenceItemRow.id)
        ).scalars()
        return [StoredFile(row.id, row.filename or row.id, row.size, row.sha256) for row in rows]

    def media_of_many(
        self, session: Session, submissions: Sequence[tuple[str | None, str]]
    ) -> dict[str, list[StoredFile]]:
        """:meth:`media_of` of every ``(tenant, submission id)`` in one query: the live
        media items of the submissions, each kept only for its own tenant, oldest first."""
        tenant_of = dict((sid, tenant) for tenant, sid in submissions)
        out: dict[str, list[StoredFile]] = {sid: [] for sid in tenant_of}
        if not tenant_of:
            return out
        rows = session.execute(
            select(EvidenceItemRow)
            .where(
                EvidenceItemRow.submission_id.in_(sorted(tenant_of)),
                EvidenceItemRow.kind == EvidenceKind.MEDIA.value,
                EvidenceItemRow.purged_at.is_(None),
            )
            .order_by(EvidenceItemRow.id)
        ).scalars()
        for row in rows:
            sid = row.submission_id
            if sid is not None and sid in tenant_of and row.tenant == tenant_of[sid]:
                out[sid].append(StoredFile(row.id, row.filename or row.id, row.size, row.sha256))
        return out

    #: every read checks the plaintext's SHA-256 and size against the item's record
    verifies_content = True

    def read(self, session: Session, evidence_id: str) -> bytes:
        """The item's bytes, every check passed (the read audited in ``session``: it
        commits with the caller's transaction, and nothing derived from the bytes
        leaves before that commit)."""
        return self.opener(session, evidence_id)()

    def prefetch(self, session: Session, evidence_ids: list[str]) -> None:
        """Load the items' records into ``session`` in one query (kept referenced by the
        session: its identity map holds unchanged rows only weakly)."""
        wanted = sorted({i for i in evidence_ids if len(i) <= 26})
        if not wanted:
            return
        rows = session.execute(
            select(EvidenceItemRow).where(ids_in(session, EvidenceItemRow.id, wanted))
        ).scalars()
        session.info.setdefault(_PREFETCHED, []).extend(rows)

    def opener(self, session: Session, evidence_id: str) -> Callable[[], bytes]:
        """Audit a read of the item in ``session`` (appended when it commits, with the
        transaction's other records: one lock of the audit chain's head); the returned
        function decrypts and checks the item (EvidenceIntegrityError on any damage)."""
        row = session.get(EvidenceItemRow, evidence_id) if len(evidence_id) <= 26 else None
        if row is None or row.purged_at is not None:
            raise NotFoundError(f"no vault item {evidence_id!r} (or it was purged)")
        audit.defer(
            session,
            actor=self.actor,
            action="vault.read",
            target=(TARGET, evidence_id),
            details={"via": "report", "sha256": row.sha256, "size": row.size},
            tenant=row.tenant,
        )
        vault = self.vault
        # the sessions of services/database.py keep loaded rows usable after commit;
        # every chunk is authenticated (AES-GCM) and the plaintext's SHA-256 checked
        # against the record, so the encrypted file's own SHA-256 is not computed
        return lambda: b"".join(plaintext(vault, row, file_digest=False))

    def keep_report_xml(
        self, session: Session, tenant: str | None, report_id: str, xml: bytes
    ) -> str | None:
        """Preserve the report document exactly as submitted; returns its item id."""
        return self.keep_report_xmls(session, [(tenant, report_id, xml)])[0]

    def keep_report_xmls(
        self, session: Session, documents: Sequence[tuple[str | None, str, bytes]]
    ) -> list[str | None]:
        """:meth:`keep_report_xml` for many documents: every file is written first and
        the files and their folders are then synced together (in parallel), before any
        row is added, so a batch costs about one disk flush instead of two per document;
        each document is still on disk before its row can commit."""
        sealed = [seal(session, self.vault, xml, sync=False) for _, _, xml in documents]
        sync_files(self.vault, [(s.item_id, s.sealed.blob_size) for s in sealed])
        return [
            store(
                session,
                self.vault,
                None,
                kind=EvidenceKind.REPORT_XML,
                actor=self.actor.key_id,
                tenant=tenant,
                media_type="application/xml",
                filename=f"{report_id}.xml",
                report_id=report_id,
                sealed=one,
                audit_at_commit=True,
            ).id
            for (tenant, report_id, _), one in zip(documents, sealed, strict=True)
        ]

    def mark_reported(
        self, session: Session, evidence_ids: list[str], report_id: str, at: datetime
    ) -> None:
        """Start the one-year preservation of ``evidence_ids`` from ``at``."""
        mark_reported(
            session,
            self.vault,
            evidence_ids,
            report_id=report_id,
            reported_at=at,
            actor=self.actor,
            audit_at_commit=True,
        )
