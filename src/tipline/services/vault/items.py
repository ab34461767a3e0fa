"""Storing and reading vault items. Every read of evidence needs
:attr:`Permission.EVIDENCE_READ` and is audited before any byte is decrypted."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.util import identity_key
from ulid import ULID

from tipline.errors import ConflictError, EvidenceIntegrityError, InputError, NotFoundError
from tipline.services import audit
from tipline.services.auth import Permission, Principal, tenant_clause
from tipline.services.vault import _format
from tipline.services.vault._model import (
    TARGET,
    EvidenceInfo,
    EvidenceKind,
    Vault,
    get_row,
    holds_of,
)
from tipline.services.vault.keys import new_data_key, unwrap, wrap
from tipline.store.db import transaction
from tipline.store.session_hooks import SessionHooks
from tipline.store.vault import EvidenceItemRow

#: inserts one item row (see :func:`store`)
_ADD_ITEM = insert(cast(Table, EvidenceItemRow.__table__))

#: bytes, a binary file object (read to its end) or a path
Source = bytes | BinaryIO | Path

_log = logging.getLogger(__name__)


@contextlib.contextmanager
def _open_source(source: Source) -> Iterator[BinaryIO]:
    if isinstance(source, bytes | bytearray | memoryview):
        yield io.BytesIO(source)
    elif isinstance(source, Path):
        try:
            handle = source.open("rb")
        except OSError as exc:
            raise InputError(f"{source}: cannot read: {exc.strerror}") from None
        with handle:
            yield handle
    else:
        yield source


def _text(value: str | None, limit: int, what: str) -> str | None:
    if value is not None and (len(value) > limit or not value.isprintable()):
        raise InputError(f"{what} must be at most {limit} printable characters")
    return value


_PENDING = "tipline.vault.pending_files"


def _forget_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)


def _delete_pending(session: Session) -> None:
    for vault, item_id in session.info.pop(_PENDING, []):
        vault.blobs.delete(item_id)


#: a file written in a transaction is deleted if it rolls back, forgotten once it commits
_HOOKS = SessionHooks(("after_commit", _forget_pending), ("after_rollback", _delete_pending))


def _delete_on_rollback(session: Session, vault: Vault, item_id: str) -> None:
    """Remove the file written for ``item_id`` if the caller's transaction rolls back
    (its row never commits); forget it once the transaction commits."""
    _HOOKS.ensure()
    session.info.setdefault(_PENDING, []).append((vault, item_id))


@dataclass(frozen=True)
class SealedFile:
    """An item's encrypted file, written but not yet registered (see :func:`seal`)."""

    item_id: str
    sealed: _format.Sealed
    key_id: str
    wrapped_key: bytes = field(repr=False)
    chunk_size: int


def seal(session: Session, vault: Vault, source: Source, *, sync: bool = True) -> SealedFile:
    """Encrypt ``source`` into a new item file now (no row yet; nothing audited).

    With ``sync`` (the default) the file is on disk when this returns; without it, it
    is durable only after :func:`sync_files` (a caller groups the syncs of many files,
    e.g. the clearinghouse intake syncs a report's files when the report is finished).

    Register it with :func:`store` (``sealed=``) or drop it with :func:`discard`. The
    file is deleted if ``session``'s transaction rolls back, and a file never
    registered is an orphan the purge job removes. Lets a caller encrypt before it
    takes the audit chain's lock (which its transaction then holds until commit).
    """
    keyring = vault.require_keyring()
    item_id = str(ULID())
    data_key = new_data_key()
    with vault.blobs.writer(item_id, sync=sync) as out, _open_source(source) as src:
        sealed = _format.encrypt(data_key, item_id, src, out, chunk_size=vault.chunk_size)
    _delete_on_rollback(session, vault, item_id)
    return SealedFile(
        item_id,
        sealed,
        keyring.current.key_id,
        wrap(keyring.current, data_key, item_id),
        vault.chunk_size,
    )


def sync_files(vault: Vault, items: Sequence[tuple[str, int]]) -> None:
    """Make the files of ``items`` (item id, its ``blob_size``) sealed without ``sync``
    durable (each file, then each folder once); EvidenceIntegrityError when one is
    missing or incomplete."""
    vault.blobs.sync(items)


def discard(vault: Vault, sealed: SealedFile) -> None:
    """Delete a sealed file that will not be registered."""
    vault.blobs.delete(sealed.item_id)


def store(
    session: Session,
    vault: Vault,
    source: Source | None,
    *,
    kind: EvidenceKind,
    actor: str | Principal,
    tenant: str | None = None,
    media_type: str | None = None,
    filename: str | None = None,
    submission_id: str | None = None,
    review_item_id: str | None = None,
    report_id: str | None = None,
    content_id: str | None = None,
    meta: Mapping[str, Any] | None = None,
    sealed: SealedFile | None = None,
    audit_at_commit: bool = False,
    write_now: bool = False,
) -> EvidenceInfo:
    """Encrypt ``source`` (or register the ``sealed`` file) into the vault inside the
    caller's transaction; audited as ``vault.store``. The file is written (and synced)
    before the row; a rollback removes it again. ``tenant`` defaults to the actor's.
    Kept until ``vault.retention`` after now (see :func:`mark_reported` for the
    report-based period). ``audit_at_commit``: the record is appended with the
    transaction's other deferred ones (:func:`tipline.services.audit.defer`), so the
    audit chain's head is not locked from here to the caller's commit. ``write_now``:
    the row is inserted now with one Core statement instead of joining the session's
    unit of work (cheaper for one item in a transaction; items added without it are
    inserted together at the flush)."""
    _check_texts(media_type, filename, content_id)
    if sealed is None:
        if source is None:
            raise InputError("nothing to store: give the content or a sealed file")
        sealed = seal(session, vault, source)
    item = new_item(
        vault,
        sealed,
        kind=kind,
        actor=actor,
        tenant=tenant,
        media_type=media_type,
        filename=filename,
        submission_id=submission_id,
        review_item_id=review_item_id,
        report_id=report_id,
        content_id=content_id,
        meta=meta,
    )
    if write_now:
        session.connection().execute(_ADD_ITEM, item.row)
    else:
        session.add(EvidenceItemRow(**item.row))
    if audit_at_commit:
        audit.defer_pending(session, item.record)
    else:
        session.flush()  # the row (and the caller's other writes) first: the append is last
        audit.append_many(session, [item.record])
    return item.info()


def _check_texts(media_type: str | None, filename: str | None, content_id: str | None) -> None:
    _text(media_type, 128, "media type")
    _text(filename, 256, "file name")
    _text(content_id, 256, "content id")


#: the columns of an item's row, in the order of :attr:`NewItem.row`
ITEM_COLUMNS = (
    "id",
    "tenant",
    "kind",
    "media_type",
    "filename",
    "size",
    "sha256",
    "blob_sha256",
    "blob_size",
    "format_version",
    "chunk_size",
    "key_id",
    "wrapped_key",
    "submission_id",
    "review_item_id",
    "report_id",
    "content_id",
    "meta",
    "stored_at",
    "stored_by",
    "reported_at",
    "retain_until",
    "purged_at",
    "purged_by",
)
#: row columns that :class:`EvidenceInfo` does not show
_NOT_SHOWN = ("blob_size", "format_version", "chunk_size", "wrapped_key")


@dataclass(frozen=True)
class NewItem:
    """A sealed file's item row (every column of :data:`ITEM_COLUMNS`) and its
    ``vault.store`` audit record, not yet written (see :func:`new_item`)."""

    row: dict[str, Any] = field(repr=False)
    record: audit.Pending

    def info(self) -> EvidenceInfo:
        """What :func:`store` answers for this item."""
        shown = {name: value for name, value in self.row.items() if name not in _NOT_SHOWN}
        shown["meta"] = dict(shown["meta"])  # not the row's own
        return EvidenceInfo(**shown)


def new_item(
    vault: Vault,
    sealed: SealedFile,
    *,
    kind: EvidenceKind,
    actor: str | Principal,
    tenant: str | None = None,
    media_type: str | None = None,
    filename: str | None = None,
    submission_id: str | None = None,
    review_item_id: str | None = None,
    report_id: str | None = None,
    content_id: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> NewItem:
    """The row and audit record :func:`store` writes for ``sealed``, for a caller that
    inserts the row inside a statement of its own (e.g. with the row that refers to
    it) and then must :func:`tipline.services.audit.defer_pending` the record in the
    same transaction. InputError as :func:`store`."""
    if isinstance(actor, Principal) and tenant is None:
        tenant = actor.tenant
    actor_id = actor.key_id if isinstance(actor, Principal) else actor
    _check_texts(media_type, filename, content_id)
    now = vault.clock()
    row: dict[str, Any] = {
        "id": sealed.item_id,
        "tenant": tenant,
        "kind": kind.value,
        "media_type": media_type,
        "filename": filename,
        "size": sealed.sealed.size,
        "sha256": sealed.sealed.sha256,
        "blob_sha256": sealed.sealed.blob_sha256,
        "blob_size": sealed.sealed.blob_size,
        "format_version": _format.VERSION,
        "chunk_size": sealed.chunk_size,
        "key_id": sealed.key_id,
        "wrapped_key": sealed.wrapped_key,
        "submission_id": submission_id,
        "review_item_id": review_item_id,
        "report_id": report_id,
        "content_id": content_id,
        "meta": dict(meta or {}),
        "stored_at": now,
        "stored_by": actor_id,
        "reported_at": None,
        "retain_until": now + vault.retention,
        "purged_at": None,
        "purged_by": None,
    }
    record = audit.pending(
        actor=actor,
        action="vault.store",
        target=(TARGET, sealed.item_id),
        details={
            "kind": kind.value,
            "size": row["size"],
            "sha256": row["sha256"],
            "key_id": row["key_id"],
            "submission_id": submission_id,
            "review_item_id": review_item_id,
            "report_id": report_id,
        },
        tenant=tenant,
    )
    return NewItem(row, record)


def keep_for_review(
    session: Session,
    vault: Vault,
    data: Source | SealedFile,
    *,
    review_item_ids: Sequence[str],
    actor: str | Principal,
    tenant: str | None = None,
    submission_id: str | None = None,
    content_id: str | None = None,
    media_type: str | None = None,
    filename: str | None = None,
) -> EvidenceInfo | None:
    """Keep the media a match just sent to review (caller's transaction: the review
    items and the kept media commit together). One item however many review items the
    match created (one per bank), linked to the first and listing all in ``meta``;
    nothing when the match created no new review item (e.g. the same event again).
    ``data`` may be a file :func:`seal` wrote before the audit chain's lock was taken
    (it is deleted when nothing is kept).

    Without a configured master key, or when a file given by path can no longer be
    read, the media cannot be kept: intake goes on, the gap is logged as an error and
    audited as ``vault.not_kept`` in the same transaction (never silent). Any other
    failure (disk full...) raises, failing the transaction.
    """
    if not review_item_ids:
        if isinstance(data, SealedFile):
            discard(vault, data)
        return None
    if vault.keyring is None:
        _not_kept(session, actor, tenant, review_item_ids, submission_id, "no vault master key")
        return None
    if isinstance(data, Path) and not isinstance(data, SealedFile):
        try:
            data = seal(session, vault, data)
        except InputError as exc:  # e.g. a scanned file deleted since it was hashed
            _not_kept(session, actor, tenant, review_item_ids, submission_id, exc.message)
            return None
    return store(
        session,
        vault,
        None if isinstance(data, SealedFile) else data,
        sealed=data if isinstance(data, SealedFile) else None,
        kind=EvidenceKind.MEDIA,
        actor=actor,
        tenant=tenant,
        media_type=media_type,
        filename=filename,
        submission_id=submission_id,
        review_item_id=review_item_ids[0],
        content_id=content_id,
        meta={"review_items": list(review_item_ids), "reason": "match sent to review"},
    )


def keep_for_report(
    session: Session,
    vault: Vault,
    data: Source | SealedFile,
    *,
    submission_id: str,
    actor: str | Principal,
    tenant: str | None = None,
    content_id: str | None = None,
    filename: str | None = None,
    reason: str = "auto-report",
) -> EvidenceInfo | None:
    """Keep the media of a submission about to be reported without review (the
    auto-report policy), in the caller's transaction. Like :func:`keep_for_review`,
    a missing master key or an unreadable file is audited as ``vault.not_kept`` and
    None returned; any other failure raises."""
    if vault.keyring is None:
        _not_kept(session, actor, tenant, (), submission_id, "no vault master key")
        return None
    if isinstance(data, Path):
        try:
            data = seal(session, vault, data)
        except InputError as exc:
            _not_kept(session, actor, tenant, (), submission_id, exc.message)
            return None
    return store(
        session,
        vault,
        None if isinstance(data, SealedFile) else data,
        sealed=data if isinstance(data, SealedFile) else None,
        kind=EvidenceKind.MEDIA,
        actor=actor,
        tenant=tenant,
        filename=filename,
        submission_id=submission_id,
        content_id=content_id,
        meta={"reason": reason},
    )


def _not_kept(
    session: Session,
    actor: str | Principal,
    tenant: str | None,
    review_item_ids: Sequence[str],
    submission_id: str | None,
    reason: str,
) -> None:
    why = "sent to review" if review_item_ids else "to report"
    _log.error("media %s NOT kept in the evidence vault: %s", why, reason)
    audit.append(
        session,
        actor=actor,
        action="vault.not_kept",
        target=(
            ("review_item", review_item_ids[0])
            if review_item_ids
            else ("submission", submission_id or "?")
        ),
        details={
            "reason": reason,
            "review_items": list(review_item_ids),
            "submission_id": submission_id,
        },
        tenant=tenant if tenant is not None or isinstance(actor, str) else actor.tenant,
    )


def mark_reported(
    session: Session,
    vault: Vault,
    item_ids: Sequence[str],
    *,
    report_id: str,
    reported_at: datetime,
    actor: str | Principal,
    audit_at_commit: bool = False,
) -> list[EvidenceInfo]:
    """Record that items went into report ``report_id`` (caller's transaction): each is
    then kept at least ``vault.retention`` after ``reported_at`` (18 U.S.C. 2258A(h):
    one year from the report). Retention never shrinks; audited as ``vault.reported``
    (``audit_at_commit``: with the transaction's other deferred records, see
    :func:`tipline.services.audit.defer`)."""
    if reported_at.tzinfo is None:
        raise InputError("reported_at must be an aware datetime")
    rows: dict[str, EvidenceItemRow] = {}
    for item_id in item_ids:  # rows already in the session cost no query
        known = session.identity_map.get(identity_key(EvidenceItemRow, item_id))
        if isinstance(known, EvidenceItemRow):
            rows[item_id] = known
    missing = [i for i in item_ids if i not in rows]
    if missing:
        query = select(EvidenceItemRow).where(EvidenceItemRow.id.in_(missing))
        rows.update((row.id, row) for row in session.execute(query).scalars())
    out = []
    for item_id in item_ids:
        row = rows.get(item_id)
        if row is None:
            raise NotFoundError(f"no vault item {item_id!r}")
        if row.purged_at is not None:
            raise ConflictError(f"vault item {item_id} was purged on {row.purged_at:%Y-%m-%d}")
        if row.report_id is None:
            row.report_id = report_id
        if row.reported_at is None or reported_at > row.reported_at:
            row.reported_at = reported_at
        row.retain_until = max(row.retain_until, reported_at + vault.retention)
        out.append(EvidenceInfo.of(row))
    records = [
        audit.pending(
            actor=actor,
            action="vault.reported",
            target=(TARGET, info.id),
            details={"report_id": report_id, "retain_until": info.retain_until.isoformat()},
            tenant=info.tenant,
        )
        for info in out
    ]
    if audit_at_commit:
        for record in records:
            audit.defer_pending(session, record)
    else:
        session.flush()
        audit.append_many(session, records)
    return out


def list_items(
    sessions: sessionmaker[Session],
    *,
    actor: Principal,
    submission_id: str | None = None,
    review_item_id: str | None = None,
    report_id: str | None = None,
    include_purged: bool = False,
    before: str | None = None,
    limit: int = 100,
) -> list[EvidenceInfo]:
    """Items visible to ``actor``, newest first (``before``: id cursor, exclusive).
    Needs EVIDENCE_READ; audited as ``vault.list``."""
    actor.require(Permission.EVIDENCE_READ)
    if not 1 <= limit <= 1000:
        raise InputError("limit must be between 1 and 1000")
    query = select(EvidenceItemRow).where(
        tenant_clause(actor, EvidenceItemRow.tenant, include_shared=False)
    )
    filters = {
        "submission_id": submission_id,
        "review_item_id": review_item_id,
        "report_id": report_id,
    }
    for name, value in filters.items():
        if value is not None:
            query = query.where(getattr(EvidenceItemRow, name) == value)
    if not include_purged:
        query = query.where(EvidenceItemRow.purged_at.is_(None))
    if before is not None:
        query = query.where(EvidenceItemRow.id < before)
    with transaction(sessions) as session:
        rows = session.execute(query.order_by(EvidenceItemRow.id.desc()).limit(limit)).scalars()
        out = [EvidenceInfo.of(row, holds_of(session, row.id)) for row in rows]
        audit.append(
            session,
            actor=actor,
            action="vault.list",
            details={**{k: v for k, v in filters.items() if v}, "items": len(out)},
        )
    return out


def show(sessions: sessionmaker[Session], item_id: str, *, actor: Principal) -> EvidenceInfo:
    """One item's facts and holds (needs EVIDENCE_READ; audited as ``vault.show``)."""
    with transaction(sessions) as session:
        row = get_row(session, item_id, actor, Permission.EVIDENCE_READ)
        info = EvidenceInfo.of(row, holds_of(session, item_id))
        audit.append(session, actor=actor, action="vault.show", target=(TARGET, item_id))
    return info


class _HashingReader(io.RawIOBase):
    """Reads a file and hashes every byte read (the encrypted file's SHA-256)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.sha256.update(data)
        self.count += len(data)
        return data


def plaintext(vault: Vault, row: EvidenceItemRow, *, file_digest: bool = True) -> Iterator[bytes]:
    """The item's plaintext chunk by chunk; nothing is yielded that has not been
    authenticated, and the last chunk only after the size and both SHA-256 digests
    match the row. Raises EvidenceIntegrityError (or VaultKeyError) on any mismatch.

    Without ``file_digest`` the encrypted file's SHA-256 is not computed (about 0.7 ms
    of CPU per MB): every chunk is still authenticated by AES-GCM (the item id and the
    header as associated data, the chunk's index and last-chunk flag in its nonce, so
    a changed, swapped, reordered, truncated or extended file fails), and the
    plaintext's size and SHA-256 are still checked against the row. For hot read paths
    (a report's upload); ``tipline vault verify`` and the other readers keep both."""
    if row.purged_at is not None or row.wrapped_key is None:
        raise ConflictError(f"vault item {row.id} was purged; its content no longer exists")
    master = vault.require_keyring().get(row.key_id)
    data_key = unwrap(master, row.wrapped_key, row.id)
    have = vault.blobs.size(row.id)
    if have is None:
        raise EvidenceIntegrityError(f"item {row.id}: its file is missing")
    if have != row.blob_size:
        change = "truncated" if have < row.blob_size else "extended"
        raise EvidenceIntegrityError(
            f"item {row.id}: file is {have} bytes, expected {row.blob_size} ({change})"
        )
    with vault.blobs.open(row.id) as handle:
        reader = _HashingReader(handle) if file_digest else None
        digest = hashlib.sha256()
        size = 0
        held: bytes | None = None
        try:
            source = reader if reader is not None else handle
            for chunk in _format.decrypt_chunks(data_key, row.id, source):  # type: ignore[arg-type]
                digest.update(chunk)
                size += len(chunk)
                if held is not None:
                    yield held
                held = chunk
        except EvidenceIntegrityError as exc:
            raise EvidenceIntegrityError(f"item {row.id}: {exc.message}") from None
        if reader is not None and reader.sha256.hexdigest() != row.blob_sha256:
            raise EvidenceIntegrityError(f"item {row.id}: file SHA-256 differs from the record")
        if size != row.size or digest.hexdigest() != row.sha256:
            raise EvidenceIntegrityError(
                f"item {row.id}: content SHA-256 or size differs from the record"
            )
        if held:
            yield held


def _audit_failure(
    sessions: sessionmaker[Session], actor: Principal, item_id: str, message: str
) -> None:
    with transaction(sessions) as session:
        audit.append(
            session,
            actor=actor,
            action="vault.integrity_failure",
            target=(TARGET, item_id),
            details={"error": message},
        )


def _begin_read(
    sessions: sessionmaker[Session], item_id: str, actor: Principal, how: str
) -> EvidenceItemRow:
    with transaction(sessions) as session:
        row = get_row(session, item_id, actor, Permission.EVIDENCE_READ)
        if row.purged_at is not None:
            raise ConflictError(f"vault item {item_id} was purged; its content no longer exists")
        # audited (and committed) before a byte is decrypted
        audit.append(
            session,
            actor=actor,
            action="vault.read",
            target=(TARGET, item_id),
            details={"via": how, "sha256": row.sha256, "size": row.size},
            tenant=row.tenant,
        )
    return row


def open_content(
    sessions: sessionmaker[Session], vault: Vault, item_id: str, *, actor: Principal
) -> tuple[EvidenceInfo, Iterator[bytes]]:
    """Start reading an item for streaming (audited as ``vault.read``).

    The first chunk is decrypted before this returns, so a wrong key or a damaged
    header raise here; a failure later raises from the iterator (the consumer must
    abort, e.g. drop the HTTP connection) and is audited as ``vault.integrity_failure``.
    """
    row = _begin_read(sessions, item_id, actor, "stream")
    chunks = plaintext(vault, row)
    try:
        first = next(chunks, b"")
    except (EvidenceIntegrityError, ConflictError) as exc:
        _audit_failure(sessions, actor, item_id, str(exc))
        raise

    def rest() -> Iterator[bytes]:
        if first:
            yield first
        try:
            yield from chunks
        except EvidenceIntegrityError as exc:
            _audit_failure(sessions, actor, item_id, str(exc))
            raise

    return EvidenceInfo.of(row), rest()


def read_to_file(
    sessions: sessionmaker[Session],
    vault: Vault,
    item_id: str,
    out: Path,
    *,
    actor: Principal,
    progress: Callable[[int, int], None] | None = None,
) -> EvidenceInfo:
    """Decrypt an item into ``out`` (must not exist); audited as ``vault.read``.

    Written to a temporary file beside ``out`` and linked into place only once every
    check passed, so a damaged item never leaves a partial file (and an ``out`` created
    meanwhile is never overwritten). ``progress(done, total)`` in bytes per chunk.
    """
    if out.exists():
        raise InputError(f"{out}: already exists")
    row = _begin_read(sessions, item_id, actor, "file")
    tmp = out.with_name(f".{out.name}.{os.urandom(4).hex()}.part")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise InputError(f"{out}: cannot write: {exc.strerror}") from None
    try:
        done = 0
        with os.fdopen(fd, "wb") as handle:
            for chunk in plaintext(vault, row):
                handle.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, row.size)
        try:
            os.link(tmp, out)
        except FileExistsError:
            raise InputError(f"{out}: already exists") from None
        tmp.unlink()
    except EvidenceIntegrityError as exc:
        tmp.unlink(missing_ok=True)
        _audit_failure(sessions, actor, item_id, str(exc))
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return EvidenceInfo.of(row)


def read_bytes(
    sessions: sessionmaker[Session],
    vault: Vault,
    item_id: str,
    *,
    actor: Principal,
    max_bytes: int = 256 * 1024**2,
) -> bytes:
    """An item's whole content in memory (e.g. a report's XML); audited as
    ``vault.read``; InputError when larger than ``max_bytes``."""
    with sessions() as session:
        row = get_row(session, item_id, actor, Permission.EVIDENCE_READ)
        if row.size > max_bytes:
            raise InputError(f"vault item {item_id} is {row.size} bytes, over {max_bytes}")
    row = _begin_read(sessions, item_id, actor, "memory")
    try:
        return b"".join(plaintext(vault, row))
    except EvidenceIntegrityError as exc:
        _audit_failure(sessions, actor, item_id, str(exc))
        raise
