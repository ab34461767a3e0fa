"""Scan tables: one row per scan, per committed batch (the checkpoint) and per item.

A batch's item rows and its checkpoint row are written in one transaction, so after a
crash the database holds whole batches only. ``(scan_id, content_key)`` is unique:
an item can never be recorded twice in one scan.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from tipline.errors import NotFoundError
from tipline.store.base import Base, UTCDateTime, utcnow


class ScanRow(Base):
    """One scan: its sources and options (to resume it) and its state."""

    __tablename__ = "scans"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)  # ULID
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="running")
    runner: Mapped[str] = mapped_column(String(16), default="local")
    sources: Mapped[list[str]] = mapped_column(JSON)
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: host and process ids (coordinator first, then workers) of the run in progress
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    pids: Mapped[list[int]] = mapped_column(JSON, default=list)
    total_items: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ScanBatchRow(Base):
    """The checkpoint: a batch whose items are all recorded."""

    __tablename__ = "scan_batches"

    scan_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True
    )
    batch_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    items: Mapped[int] = mapped_column(Integer)
    matched: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)
    hash_seconds: Mapped[float] = mapped_column(default=0.0)
    worker: Mapped[str] = mapped_column(String(255))
    committed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ScanItemRow(Base):
    """The result for one item: signals, matches or the error."""

    __tablename__ = "scan_items"
    __table_args__ = (
        Index("uq_scan_items_scan_key", "scan_id", "content_key", unique=True),
        Index("ix_scan_items_scan_position", "scan_id", "position"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    scan_id: Mapped[str] = mapped_column(String(26), ForeignKey("scans.id", ondelete="CASCADE"))
    #: sha256 hex of content_id (content ids may exceed an index key's size)
    content_key: Mapped[str] = mapped_column(String(64))
    content_id: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    position: Mapped[int] = mapped_column(BigInteger)
    batch_no: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(8))  # ok | matched | failed
    media: Mapped[str | None] = mapped_column(String(16), nullable=True)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    signals: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    matches: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    scanned_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


def display_text(name: str) -> str:
    """``name`` storable as text: bytes that are not UTF-8 (file names decoded with
    surrogateescape) become ``\\xNN``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def content_key(content_id: str) -> str:
    """The unique key an item is recorded under: sha256 hex of its content id."""
    return hashlib.sha256(content_id.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True, slots=True)
class ScanTotals:
    """Counts over the committed batches of one scan."""

    items: int
    matched: int
    failed: int
    batches: int
    hash_seconds: float  # summed worker time spent hashing, seconds


def create_scan(
    session: Session,
    scan_id: str,
    *,
    sources: Sequence[str],
    options: dict[str, Any],
    runner: str,
) -> ScanRow:
    """Insert a new running scan."""
    row = ScanRow(id=scan_id, sources=list(sources), options=dict(options), runner=runner, pids=[])
    session.add(row)
    session.flush()
    return row


def get_scan(session: Session, scan_id: str) -> ScanRow:
    """The scan ``scan_id``; NotFoundError when there is none."""
    row = session.get(ScanRow, scan_id)
    if row is None:
        raise NotFoundError(f"no scan with id {scan_id!r}")
    return row


def set_run_state(
    session: Session,
    scan_id: str,
    *,
    status: str,
    host: str | None = None,
    pids: Sequence[int] = (),
    total_items: int | None = None,
    finished: bool = False,
) -> None:
    """Update a scan's status and the processes working on it."""
    values: dict[str, Any] = {"status": status, "updated_at": utcnow(), "host": host}
    values["pids"] = list(pids)
    if total_items is not None:
        values["total_items"] = total_items
    if finished:
        values["finished_at"] = utcnow()
    session.execute(update(ScanRow).where(ScanRow.id == scan_id).values(**values))


def done_keys(session: Session, scan_id: str) -> set[str]:
    """Content keys already recorded for ``scan_id`` (what a resume skips)."""
    stmt = select(ScanItemRow.content_key).where(ScanItemRow.scan_id == scan_id)
    return set(session.scalars(stmt))


def next_batch_no(session: Session, scan_id: str) -> int:
    """One more than the highest committed batch number (0 for a new scan)."""
    stmt = select(func.max(ScanBatchRow.batch_no)).where(ScanBatchRow.scan_id == scan_id)
    top = session.scalar(stmt)
    return 0 if top is None else int(top) + 1


def record_batch(
    session: Session,
    scan_id: str,
    batch_no: int,
    rows: Sequence[dict[str, Any]],
    *,
    worker: str,
    hash_seconds: float,
) -> ScanBatchRow:
    """Add a batch's item rows and its checkpoint (the caller commits both at once).

    Each row dict holds the :class:`ScanItemRow` columns except ``scan_id`` and
    ``batch_no`` (``content_key`` defaults to the key of ``content_id``).
    """
    now = utcnow()
    items = [
        ScanItemRow(
            scan_id=scan_id,
            batch_no=batch_no,
            scanned_at=now,
            **{"content_key": content_key(r["content_id"]), **r},
        )
        for r in rows
    ]
    session.add_all(items)
    batch = ScanBatchRow(
        scan_id=scan_id,
        batch_no=batch_no,
        items=len(rows),
        matched=sum(1 for r in rows if r["status"] == "matched"),
        failed=sum(1 for r in rows if r["status"] == "failed"),
        hash_seconds=hash_seconds,
        worker=worker,
        committed_at=now,
    )
    session.add(batch)
    session.flush()
    return batch


def scan_totals(session: Session, scan_id: str) -> ScanTotals:
    """Counts over the committed batches of ``scan_id``."""
    stmt = select(
        func.coalesce(func.sum(ScanBatchRow.items), 0),
        func.coalesce(func.sum(ScanBatchRow.matched), 0),
        func.coalesce(func.sum(ScanBatchRow.failed), 0),
        func.count(ScanBatchRow.batch_no),
        func.coalesce(func.sum(ScanBatchRow.hash_seconds), 0.0),
    ).where(ScanBatchRow.scan_id == scan_id)
    items, matched, failed, batches, seconds = session.execute(stmt).one()
    return ScanTotals(int(items), int(matched), int(failed), int(batches), float(seconds))


def iter_items(session: Session, scan_id: str, *, chunk: int = 1000) -> Iterator[ScanItemRow]:
    """Every recorded item of ``scan_id`` in enumeration order, read ``chunk`` at a time."""
    last_position = -1
    last_id = -1
    while True:
        stmt = (
            select(ScanItemRow)
            .where(ScanItemRow.scan_id == scan_id)
            .where(
                (ScanItemRow.position > last_position)
                | ((ScanItemRow.position == last_position) & (ScanItemRow.id > last_id))
            )
            .order_by(ScanItemRow.position, ScanItemRow.id)
            .limit(chunk)
        )
        rows = list(session.scalars(stmt))
        if not rows:
            return
        yield from rows
        last_position, last_id = rows[-1].position, rows[-1].id
