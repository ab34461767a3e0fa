"""Region descriptors of the clearinghouse's own material.

When an analyst confirms a report, each photo whose hashes go into the clearinghouse's
hash list (:mod:`.publishing`) also gets the bank-side robust tier's descriptors (PDQ of
crops and small rotations of the original, :mod:`tipline.services.regions`), so a later
crop or tilted copy of confirmed material is known material too (``tier="region"``).
The descriptors stay in the clearinghouse: they are never exported or put in its feed.

The photos are decrypted from the evidence vault BEFORE the confirming transaction
(which holds the de-duplication lock that triage waits on), each read audited as
``vault.read`` (``via: publish``) and committed before a byte is decrypted. A file whose
content was purged, is over :data:`MAX_PHOTO_BYTES`, is damaged in the vault (audited as
``vault.integrity_failure``) or does not decode gets no descriptors: its digests and PDQ
are published as before, and the confirmation's audit record names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy.orm import Session, sessionmaker

from tipline.errors import ConflictError, EvidenceIntegrityError, TiplineError
from tipline.services import audit
from tipline.services.auth import Permission, Principal
from tipline.services.regions.descriptors import media_regions
from tipline.services.vault import TARGET, Vault
from tipline.services.vault.items import plaintext
from tipline.signals.limits import MediaLimits
from tipline.store.clearinghouse import IntakeFileRow
from tipline.store.db import transaction
from tipline.store.vault import EvidenceItemRow

#: Photos larger than this (bytes) are not read back for descriptors.
MAX_PHOTO_BYTES: Final = 64 * 1024**2


@dataclass(slots=True)
class PhotoRegions:
    """Descriptors by file content (SHA-256), and the files that got none, with why."""

    by_sha256: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def photos(files: Sequence[IntakeFileRow]) -> list[IntakeFileRow]:
    """One file per distinct photo content among ``files`` (first one wins)."""
    seen: dict[str, IntakeFileRow] = {}
    for row in files:
        if row.media == "photo" and row.hash_error is None:
            seen.setdefault(row.sha256, row)
    return list(seen.values())


def read_regions(
    sessions: sessionmaker[Session],
    vault: Vault,
    who: Principal,
    report_id: int,
    files: Sequence[IntakeFileRow],
    *,
    limits: MediaLimits | None = None,
) -> PhotoRegions:
    """Decrypt each photo of ``files`` (one per content, see :func:`photos`) and compute
    its region descriptors; every read is audited (and committed) first."""
    who.require(Permission.EVIDENCE_READ)
    out = PhotoRegions()
    wanted = photos(files)
    if not wanted:
        return out
    if vault.keyring is None:  # nothing could be decrypted (and nothing is read)
        out.failed.update((row.id, "the vault has no master key") for row in wanted)
        return out
    readable: list[tuple[IntakeFileRow, EvidenceItemRow]] = []
    with transaction(sessions) as session:
        for row in wanted:
            item = session.get(EvidenceItemRow, row.vault_id)
            if item is None or item.purged_at is not None:
                out.failed[row.id] = "content no longer kept"
                continue
            if item.size > MAX_PHOTO_BYTES:
                out.failed[row.id] = f"over {MAX_PHOTO_BYTES} bytes"
                continue
            audit.append(
                session,
                actor=who,
                action="vault.read",
                target=(TARGET, item.id),
                details={"via": "publish", "intake_file": row.id, "report": report_id},
                tenant=item.tenant,
            )
            session.expunge(item)
            readable.append((row, item))
    for row, item in readable:
        try:
            data = b"".join(plaintext(vault, item))
        except (EvidenceIntegrityError, ConflictError) as exc:
            out.failed[row.id] = "vault content unreadable"
            with transaction(sessions) as session:
                audit.append(
                    session,
                    actor=who,
                    action="vault.integrity_failure",
                    target=(TARGET, item.id),
                    details={"error": str(exc)},
                )
            continue
        try:
            out.by_sha256[row.sha256] = media_regions(data, limits)
        except TiplineError as exc:  # decoded at intake, so hardly ever
            out.failed[row.id] = f"not decodable: {exc}"
    return out
