"""Where reports get the bytes of the files they report, and where they keep them.

Reports depend on this narrow interface only. The evidence vault provides the real one
(:class:`tipline.services.vault.evidence.VaultEvidence`: encrypted, every read audited,
retention counted from the report); :class:`DirectoryEvidence` is a plain-file stand-in
for protocol tests and benchmarks that are not about evidence.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy.orm import Session

from tipline.errors import InputError, NotFoundError


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One stored file: the store's id, the name it was uploaded under, its size, and
    the SHA-256 (hex) the store recorded for its bytes when it knows one."""

    evidence_id: str
    file_name: str
    size: int
    sha256: str | None = None


class EvidenceFiles(Protocol):
    """What the report service needs from an evidence store."""

    def media_of(
        self, session: Session, tenant: str | None, submission_id: str
    ) -> list[StoredFile]:
        """The stored media of one submission (empty when none was kept)."""
        ...

    def media_of_many(
        self, session: Session, submissions: Sequence[tuple[str | None, str]]
    ) -> dict[str, list[StoredFile]]:
        """:meth:`media_of` for many ``(tenant, submission id)`` pairs at once (one query
        where the store has a database): every submission id maps to its list."""
        ...

    def read(self, session: Session, evidence_id: str) -> bytes:
        """The bytes exactly as uploaded, the read audited in the caller's transaction
        (so it commits with the step that sends them: one commit, not two)."""
        ...

    def opener(self, session: Session, evidence_id: str) -> Callable[[], bytes]:
        """Check that ``evidence_id`` can be read and audit the read in the caller's
        transaction; the returned function reads the bytes (call it only once that
        transaction committed: the audit record exists before a byte is decrypted,
        and the decryption runs outside the transaction)."""
        ...

    def prefetch(self, session: Session, evidence_ids: list[str]) -> None:
        """Load what :meth:`opener` and :meth:`mark_reported` need about
        ``evidence_ids`` into ``session`` in one query (an optimisation; may do nothing)."""
        ...

    #: True when every read checks the bytes against a digest recorded when they were
    #: stored (a changed file raises instead of returning other bytes)
    verifies_content: bool

    def keep_report_xml(
        self, session: Session, tenant: str | None, report_id: str, xml: bytes
    ) -> str | None:
        """Preserve a report document in the caller's transaction; returns its id."""
        ...

    def keep_report_xmls(
        self, session: Session, documents: Sequence[tuple[str | None, str, bytes]]
    ) -> list[str | None]:
        """:meth:`keep_report_xml` for many ``(tenant, report id, xml)`` at once (the
        files written first and made durable together, not one sync after another);
        their ids, in order."""
        ...

    def mark_reported(
        self, session: Session, evidence_ids: list[str], report_id: str, at: datetime
    ) -> None:
        """Record that the files went into a finished report (retention from ``at``)."""
        ...


class DirectoryEvidence:
    """Plain files under ``root`` (NOT encrypted): a stand-in for tests and benchmarks.

    Files are content-addressed (``<sha256>``); a small JSON index per submission lists
    its media.
    """

    verifies_content = False

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "submissions").mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes, *, file_name: str, submission_id: str | None = None) -> StoredFile:
        """Store ``data`` (and list it under ``submission_id`` when given)."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.root / "blobs" / digest
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        stored = StoredFile(evidence_id=digest, file_name=file_name, size=len(data))
        if submission_id is not None:
            index = self.root / "submissions" / f"{submission_id}.json"
            entries = json.loads(index.read_text()) if index.exists() else []
            entries.append({"id": digest, "name": file_name, "size": len(data)})
            index.write_text(json.dumps(entries))
        return stored

    def media_of(
        self, session: Session, tenant: str | None, submission_id: str
    ) -> list[StoredFile]:
        index = self.root / "submissions" / f"{submission_id}.json"
        if not index.exists():
            return []
        return [
            StoredFile(evidence_id=e["id"], file_name=e["name"], size=int(e["size"]))
            for e in json.loads(index.read_text())
        ]

    def media_of_many(
        self, session: Session, submissions: Sequence[tuple[str | None, str]]
    ) -> dict[str, list[StoredFile]]:
        return {sid: self.media_of(session, tenant, sid) for tenant, sid in submissions}

    def read(self, session: Session, evidence_id: str) -> bytes:
        return self.opener(session, evidence_id)()

    def opener(self, session: Session, evidence_id: str) -> Callable[[], bytes]:
        if len(evidence_id) != 64 or not all(c in "0123456789abcdef" for c in evidence_id):
            raise InputError(f"bad evidence id {evidence_id!r}")
        path = self.root / "blobs" / evidence_id
        if not path.exists():
            raise NotFoundError(f"no stored file {evidence_id}")

        def load() -> bytes:
            try:
                return path.read_bytes()
            except FileNotFoundError:
                raise NotFoundError(f"no stored file {evidence_id}") from None

        return load

    def prefetch(self, session: Session, evidence_ids: list[str]) -> None:
        return None

    def keep_report_xml(
        self, session: Session, tenant: str | None, report_id: str, xml: bytes
    ) -> str | None:
        return self.put(xml, file_name=f"{report_id}.xml").evidence_id

    def keep_report_xmls(
        self, session: Session, documents: Sequence[tuple[str | None, str, bytes]]
    ) -> list[str | None]:
        return [self.keep_report_xml(session, t, r, x) for t, r, x in documents]

    def mark_reported(
        self, session: Session, evidence_ids: list[str], report_id: str, at: datetime
    ) -> None:
        return None
