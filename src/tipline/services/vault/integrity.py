"""Checking every item (``tipline vault verify``) and rewrapping data keys under a new
master key (``tipline vault rotate-key``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from tipline.errors import EvidenceIntegrityError, InputError, TiplineError
from tipline.services import audit
from tipline.services.auth import Permission, Principal, tenant_clause
from tipline.services.vault._model import Vault
from tipline.services.vault.items import plaintext
from tipline.services.vault.keys import MasterKey, unwrap, wrap
from tipline.store.db import transaction
from tipline.store.vault import EvidenceItemRow

_BATCH = 200
#: failures named in one audit record (the rest are counted)
_AUDIT_NAMES = 100


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Result of :func:`verify`: items checked and what failed (item id, reason)."""

    checked: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: files in the vault folder that no live item owns
    stray_files: list[str] = field(default_factory=list)
    bytes_checked: int = 0
    #: more items remain after the last one checked: pass it as ``after`` to go on
    next_after: str | None = None

    @property
    def ok(self) -> bool:
        """True when every item passed and no stray file was found."""
        return not self.failures and not self.stray_files

    def describe(self) -> str:
        """One line for humans."""
        if self.ok:
            return f"vault OK: {self.checked} items, {self.bytes_checked} bytes verified"
        parts = []
        if self.failures:
            first = self.failures[0][1]
            parts.append(f"{len(self.failures)} of {self.checked} items fail ({first})")
        if self.stray_files:
            parts.append(f"{len(self.stray_files)} stray files")
        return "vault damaged: " + "; ".join(parts)


def _live_ids(
    session: Session,
    item_ids: Sequence[str] | None,
    actor: Principal | None = None,
    *,
    after: str | None = None,
    limit: int | None = None,
) -> list[str]:
    query = select(EvidenceItemRow.id).where(EvidenceItemRow.purged_at.is_(None))
    if actor is not None:
        query = query.where(tenant_clause(actor, EvidenceItemRow.tenant, include_shared=False))
    if item_ids is not None:
        query = query.where(EvidenceItemRow.id.in_(list(item_ids)))
    if after is not None:
        query = query.where(EvidenceItemRow.id > after)
    query = query.order_by(EvidenceItemRow.id)
    if limit is not None:
        query = query.limit(limit)
    return list(session.execute(query).scalars())


def verify(
    sessions: sessionmaker[Session],
    vault: Vault,
    *,
    actor: Principal,
    item_ids: Sequence[str] | None = None,
    after: str | None = None,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Decrypt and check every live item (or ``item_ids``): wrapped key, file size,
    every chunk's tag, both SHA-256 digests; and look for files no live item owns.

    A tenant's actor checks only its tenant's items (and no stray files: those belong
    to nobody). ``limit`` checks at most that many items with ids above ``after``; the
    report's ``next_after`` says where to go on (stray files are looked for on the
    first page only). Needs EVIDENCE_ADMIN and the master key; audited as
    ``vault.verify`` (with the failing ids). ``progress(done, total)`` after each item.
    """
    actor.require(Permission.EVIDENCE_ADMIN)
    vault.require_keyring()
    if limit is not None and limit < 1:
        raise InputError("limit must be at least 1")
    with sessions() as session:
        ids = _live_ids(
            session, item_ids, actor, after=after, limit=None if limit is None else limit + 1
        )
        if item_ids is not None and after is None and len(ids) != len(set(item_ids)):
            missing = sorted(set(item_ids) - set(ids))
            raise InputError(f"no live vault item {missing[0]!r}")
        next_after = None
        if limit is not None and len(ids) > limit:
            ids = ids[:limit]
            next_after = ids[-1]
        every_id = (
            set(_live_ids(session, None))
            if item_ids is None and after is None and actor.tenant is None
            else None
        )
    failures: list[tuple[str, str]] = []
    checked = 0
    total_bytes = 0
    for start in range(0, len(ids), _BATCH):
        with sessions() as session:
            rows = list(
                session.execute(
                    select(EvidenceItemRow).where(
                        EvidenceItemRow.id.in_(ids[start : start + _BATCH])
                    )
                ).scalars()
            )
            session.expunge_all()
        for row in sorted(rows, key=lambda r: r.id):
            try:
                for chunk in plaintext(vault, row):
                    total_bytes += len(chunk)
            except TiplineError as exc:  # integrity or key errors: record and go on
                failures.append((row.id, str(exc)))
            checked += 1
            if progress is not None:
                progress(checked, len(ids))
    stray: list[str] = []
    if every_id is not None:
        on_disk = set(vault.blobs.ids())
        stray = sorted(on_disk - every_id)
    report = VerifyReport(checked, failures, stray, total_bytes, next_after)
    with transaction(sessions) as session:
        audit.append(
            session,
            actor=actor,
            action="vault.verify",
            details={
                "ok": report.ok,
                "checked": checked,
                "bytes": total_bytes,
                "failed": len(failures),
                "failures": [{"item": i, "error": e} for i, e in failures[:_AUDIT_NAMES]],
                "stray_files": stray[:_AUDIT_NAMES],
                **({"after": after} if after else {}),
                **({"next_after": next_after} if next_after else {}),
            },
            tenant=actor.tenant,
        )
    return report


@dataclass(frozen=True, slots=True)
class RotateReport:
    """Result of :func:`rotate_key`."""

    new_key_id: str
    rewrapped: int
    #: items already under the new key (an earlier, interrupted run)
    already: int
    failures: list[tuple[str, str]] = field(default_factory=list)


def rotate_key(
    sessions: sessionmaker[Session],
    vault: Vault,
    new_key: MasterKey,
    *,
    actor: Principal,
    progress: Callable[[int, int], None] | None = None,
) -> RotateReport:
    """Rewrap every live item's data key under ``new_key``; files are not touched.

    Needs EVIDENCE_ADMIN and a keyring holding the items' current master key. One
    transaction (and one ``vault.rotate_key`` audit record) per batch of items, so an
    interrupted run keeps what it did and a rerun continues. Each rewrapped key is
    unwrapped again before it is written. ``progress(done, total)`` per batch.
    """
    actor.require(Permission.EVIDENCE_ADMIN)
    keyring = vault.require_keyring()
    with sessions() as session:
        ids = _live_ids(session, None)
    failures: list[tuple[str, str]] = []
    rewrapped = already = 0
    for start in range(0, len(ids), _BATCH):
        with transaction(sessions) as session:
            rows = session.execute(
                select(EvidenceItemRow.id, EvidenceItemRow.key_id, EvidenceItemRow.wrapped_key)
                .where(
                    EvidenceItemRow.id.in_(ids[start : start + _BATCH]),
                    EvidenceItemRow.wrapped_key.is_not(None),
                )
                .order_by(EvidenceItemRow.id)
            ).all()
            moved: dict[str, int] = {}
            for item_id, key_id, wrapped in rows:
                if key_id == new_key.key_id or wrapped is None:
                    already += 1
                    continue
                try:
                    data_key = unwrap(keyring.get(key_id), wrapped, item_id)
                except TiplineError as exc:
                    failures.append((item_id, str(exc)))
                    continue
                fresh = wrap(new_key, data_key, item_id)
                if unwrap(new_key, fresh, item_id) != data_key:  # pragma: no cover
                    raise EvidenceIntegrityError(f"item {item_id}: rewrap check failed")
                result = session.execute(
                    update(EvidenceItemRow)
                    .where(EvidenceItemRow.id == item_id, EvidenceItemRow.key_id == key_id)
                    .values(key_id=new_key.key_id, wrapped_key=fresh),
                    execution_options={"synchronize_session": False},
                )
                if getattr(result, "rowcount", 1):
                    rewrapped += 1
                    moved[key_id] = moved.get(key_id, 0) + 1
            if moved:
                audit.append(
                    session,
                    actor=actor,
                    action="vault.rotate_key",
                    details={"from": moved, "to": new_key.key_id, "items": sum(moved.values())},
                )
        if progress is not None:
            progress(min(start + _BATCH, len(ids)), len(ids))
    return RotateReport(new_key.key_id, rewrapped, already, failures)
