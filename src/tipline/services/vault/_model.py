"""The vault handle and the value types its functions return."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tipline.config import Settings
from tipline.errors import NotFoundError, VaultKeyError
from tipline.services.auth import Permission, Principal, require_tenant
from tipline.services.vault import _format
from tipline.services.vault.blobs import BlobStore
from tipline.services.vault.keys import (
    Keyring,
    master_key_from_settings,
    new_master_key_from_settings,
)
from tipline.store.base import utcnow
from tipline.store.vault import EvidenceHoldRow, EvidenceItemRow

#: audit target type of vault items
TARGET = "evidence"


class EvidenceKind(enum.Enum):
    """What an item is."""

    MEDIA = "media"  # a reported file (upload that matched, file attached to a report)
    REPORT_XML = "report_xml"  # the exact XML of a report as submitted
    OTHER = "other"


@dataclass
class Vault:
    """Where items live and the keys that open them.

    ``keyring`` may be None for work that needs no key (purge, listing, holds).
    ``clock`` gives "now" for storage times and retention (tests pass a fixed one).
    """

    blobs: BlobStore
    keyring: Keyring | None
    chunk_size: int = 1024**2
    retention: timedelta = timedelta(days=365)
    clock: Callable[[], datetime] = utcnow

    def __post_init__(self) -> None:
        if not 1 <= self.chunk_size <= _format.MAX_CHUNK_BYTES:
            raise VaultKeyError(f"vault chunk size must be 1..{_format.MAX_CHUNK_BYTES} bytes")

    @classmethod
    def from_settings(
        cls, settings: Settings, *, clock: Callable[[], datetime] | None = None
    ) -> Vault:
        """The vault ``settings`` describe. A configured new master key
        (``TIPLINE_VAULT_NEW_MASTER_KEY``) joins the keyring, so items already rewrapped
        by an interrupted rotation stay readable."""
        current = master_key_from_settings(settings)
        new = new_master_key_from_settings(settings)
        keyring = None
        if current is not None:
            others = (new,) if new is not None and new.key_id != current.key_id else ()
            keyring = Keyring(current, others)
        return cls(
            blobs=BlobStore(settings.resolved_vault_dir()),
            keyring=keyring,
            chunk_size=settings.vault_chunk_bytes,
            retention=timedelta(days=settings.vault_retention_days),
            clock=clock or utcnow,
        )

    def require_keyring(self) -> Keyring:
        """The keyring; VaultKeyError saying how to configure one when absent."""
        if self.keyring is None:
            raise VaultKeyError(
                "the evidence vault has no master key: set TIPLINE_VAULT_MASTER_KEY or "
                "TIPLINE_VAULT_MASTER_KEY_FILE (`tipline vault keygen FILE` makes one)"
            )
        return self.keyring


@dataclass(frozen=True, slots=True)
class HoldInfo:
    """A legal hold on an item (active while ``released_at`` is None)."""

    id: str
    item_id: str
    reason: str
    placed_at: datetime
    placed_by: str
    released_at: datetime | None
    released_by: str | None

    @property
    def active(self) -> bool:
        """True until released."""
        return self.released_at is None

    @classmethod
    def of(cls, row: EvidenceHoldRow) -> HoldInfo:
        """From its row."""
        return cls(
            row.id,
            row.item_id,
            row.reason,
            row.placed_at,
            row.placed_by,
            row.released_at,
            row.released_by,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (times as ISO 8601)."""
        return {
            "id": self.id,
            "item_id": self.item_id,
            "reason": self.reason,
            "placed_at": self.placed_at.isoformat(),
            "placed_by": self.placed_by,
            "released_at": self.released_at.isoformat() if self.released_at else None,
            "released_by": self.released_by,
            "active": self.active,
        }


@dataclass(frozen=True, slots=True)
class EvidenceInfo:
    """What is known about an item without opening it. ``size`` in bytes, digests hex."""

    id: str
    tenant: str | None
    kind: str
    media_type: str | None
    filename: str | None
    size: int
    sha256: str
    blob_sha256: str
    key_id: str
    submission_id: str | None
    review_item_id: str | None
    report_id: str | None
    content_id: str | None
    meta: dict[str, Any]
    stored_at: datetime
    stored_by: str
    reported_at: datetime | None
    retain_until: datetime
    purged_at: datetime | None
    purged_by: str | None
    holds: tuple[HoldInfo, ...] = field(default=())

    @property
    def held(self) -> bool:
        """True while any legal hold is active."""
        return any(h.active for h in self.holds)

    @classmethod
    def of(cls, row: EvidenceItemRow, holds: list[EvidenceHoldRow] | None = None) -> EvidenceInfo:
        """From its row (and its hold rows)."""
        return cls(
            id=row.id,
            tenant=row.tenant,
            kind=row.kind,
            media_type=row.media_type,
            filename=row.filename,
            size=row.size,
            sha256=row.sha256,
            blob_sha256=row.blob_sha256,
            key_id=row.key_id,
            submission_id=row.submission_id,
            review_item_id=row.review_item_id,
            report_id=row.report_id,
            content_id=row.content_id,
            meta=dict(row.meta or {}),
            stored_at=row.stored_at,
            stored_by=row.stored_by,
            reported_at=row.reported_at,
            retain_until=row.retain_until,
            purged_at=row.purged_at,
            purged_by=row.purged_by,
            holds=tuple(HoldInfo.of(h) for h in holds or ()),
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (times as ISO 8601)."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "kind": self.kind,
            "media_type": self.media_type,
            "filename": self.filename,
            "size": self.size,
            "sha256": self.sha256,
            "blob_sha256": self.blob_sha256,
            "key_id": self.key_id,
            "submission_id": self.submission_id,
            "review_item_id": self.review_item_id,
            "report_id": self.report_id,
            "content_id": self.content_id,
            "meta": self.meta,
            "stored_at": self.stored_at.isoformat(),
            "stored_by": self.stored_by,
            "reported_at": self.reported_at.isoformat() if self.reported_at else None,
            "retain_until": self.retain_until.isoformat(),
            "purged_at": self.purged_at.isoformat() if self.purged_at else None,
            "purged_by": self.purged_by,
            "held": self.held,
            "holds": [h.as_dict() for h in self.holds],
        }


def holds_of(session: Session, item_id: str) -> list[EvidenceHoldRow]:
    """Every hold ever placed on the item, oldest first."""
    return list(
        session.execute(
            select(EvidenceHoldRow)
            .where(EvidenceHoldRow.item_id == item_id)
            .order_by(EvidenceHoldRow.placed_at, EvidenceHoldRow.id)
        ).scalars()
    )


def get_row(
    session: Session, item_id: str, actor: Principal, permission: Permission
) -> EvidenceItemRow:
    """The item's row after the permission and tenant checks (NotFoundError hides items
    of other tenants)."""
    actor.require(permission)
    row = session.get(EvidenceItemRow, item_id) if len(item_id) <= 26 else None
    if row is None:
        raise NotFoundError(f"no vault item {item_id!r}")
    # strict isolation: a tenant's key never sees untenanted evidence either
    require_tenant(actor, row.tenant, write=True, what=f"vault item {item_id!r}")
    return row
