"""The photos the clearinghouse publishes, read back from the vault: their reference
PDQ and region descriptors.

When an analyst confirms a report, each photo whose hashes go into the clearinghouse's
hash list (:mod:`.publishing`) is decrypted and hashed again:

* its PDQ with the reference decode (:data:`tipline.services.bank_media.BANK_HASH_OPTIONS`),
  since every hash that goes into a bank is the reference one. The intake decoded it
  fast, a few bits away (``bench/decode_drift.py``), which is enough to de-duplicate;
* the bank-side robust tier's descriptors (PDQ of crops and small rotations of the
  original, :mod:`tipline.services.regions`), so a later crop or tilted copy of
  confirmed material is known material too (``tier="region"``). The descriptors stay
  in the clearinghouse: they are never exported or put in its feed.

The photos are decrypted from the evidence vault BEFORE the confirming transaction
(which holds the de-duplication lock that triage waits on), each read audited as
``vault.read`` (``via: publish``) and committed before a byte is decrypted. A file whose
content was purged, is over :data:`MAX_PHOTO_BYTES`, is damaged in the vault (audited as
``vault.integrity_failure``) or does not decode gets neither: its digests are published,
its PDQ only if the intake computed it with the reference decode, and the confirmation's
audit record names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy.orm import Session, sessionmaker

from tipline.errors import ConflictError, EvidenceIntegrityError, InputError, TiplineError
from tipline.services import audit
from tipline.services.auth import Permission, Principal
from tipline.services.bank_media import BANK_HASH_OPTIONS
from tipline.services.regions.descriptors import media_regions
from tipline.services.vault import TARGET, Vault
from tipline.services.vault.items import plaintext
from tipline.signals.hashing import HashOptions, hash_bytes
from tipline.signals.limits import MediaLimits
from tipline.store.clearinghouse import IntakeFileRow
from tipline.store.db import transaction
from tipline.store.vault import EvidenceItemRow

#: Photos larger than this (bytes) are not read back.
MAX_PHOTO_BYTES: Final = 64 * 1024**2
#: a bank entry's PDQ, alone
_REFERENCE_PDQ: Final = HashOptions(signals=("pdq",), decode=BANK_HASH_OPTIONS.decode)


@dataclass(slots=True)
class PublishedPhotos:
    """By file content (SHA-256): region descriptors and the reference PDQ ``(hex,
    quality)``; and the files that got neither, with why."""

    by_sha256: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    pdq: dict[str, tuple[str, int]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def photos(files: Sequence[IntakeFileRow]) -> list[IntakeFileRow]:
    """One file per distinct photo content among ``files`` (first one wins)."""
    seen: dict[str, IntakeFileRow] = {}
    for row in files:
        if row.media == "photo" and row.hash_error is None:
            seen.setdefault(row.sha256, row)
    return list(seen.values())


def read_photos(
    sessions: sessionmaker[Session],
    vault: Vault,
    who: Principal,
    report_id: int,
    files: Sequence[IntakeFileRow],
    *,
    limits: MediaLimits | None = None,
) -> PublishedPhotos:
    """Decrypt each photo of ``files`` (one per content, see :func:`photos`) and compute
    its reference PDQ and region descriptors; every read is audited (and committed)
    first."""
    who.require(Permission.EVIDENCE_READ)
    out = PublishedPhotos()
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
            pdq = reference_pdq(data, limits)
            regions = media_regions(data, limits)
        except TiplineError as exc:  # decoded at intake, so hardly ever
            out.failed[row.id] = f"not decodable: {exc}"
            continue
        out.pdq[row.sha256] = pdq
        out.by_sha256[row.sha256] = regions
    return out


def reference_pdq(data: bytes, limits: MediaLimits | None = None) -> tuple[str, int]:
    """``(hex, quality)`` of the photo ``data`` decoded the reference way, as a bank
    entry's (:data:`~tipline.services.bank_media.BANK_HASH_OPTIONS`); raises the media
    error when it does not decode."""
    result = hash_bytes(data, "published photo", _REFERENCE_PDQ, limits=limits)
    if result.error is not None:
        raise result.error
    for signal in result.signals:
        if signal.type == "pdq" and signal.variant is None:
            return signal.value, int(signal.quality or 0)
    raise InputError("the photo gave no PDQ hash")
