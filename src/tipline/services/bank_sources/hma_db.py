"""Reading the banks of an HMA (OpenMediaMatch) database, read-only.

HMA 1.x keeps its banks in PostgreSQL (its ``storage/postgres/database.py`` and
migrations): ``bank (id, name, enabled_ratio, ...)``, ``bank_content (id, bank_id,
disable_until_ts, original_content_uri, bank_content_metadata JSON, note, ...)`` and
``content_signal (content_id, signal_type, signal_val, create_time)``, one signal per
type and content. ``note`` and ``bank_content_metadata`` came with later migrations
and are read when present. Nothing else of HMA's schema is read, in particular not
``exchange_data.pickled_fetch_signal_metadata`` (tipline never unpickles).

The connection is opened with every transaction read-only; the URL (which may hold a
password) is only ever shown with the password hidden (:func:`safe_url`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    inspect,
    literal,
    select,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from tipline.errors import InputError

#: HMA's tables this reader needs.
TABLES = ("bank", "bank_content", "content_signal")
#: Contents fetched per round trip while streaming a bank.
FETCH_ROWS = 2000

_meta = MetaData()
_bank = Table(
    "bank",
    _meta,
    Column("id", Integer, primary_key=True),
    Column("name", String(255)),
    Column("enabled_ratio", Float),
)
_content = Table(
    "bank_content",
    _meta,
    Column("id", Integer, primary_key=True),
    Column("bank_id", Integer),
    Column("disable_until_ts", Integer),
    Column("note", String(255)),
    Column("bank_content_metadata", JSON),
)
_signal = Table(
    "content_signal",
    _meta,
    Column("content_id", Integer, primary_key=True),
    Column("signal_type", String, primary_key=True),
    Column("signal_val", Text),
)


@dataclass(frozen=True, slots=True)
class HmaBank:
    """One HMA bank: its name, matching ratio (0 disabled .. 1 enabled) and size."""

    id: int
    name: str
    enabled_ratio: float
    contents: int


@dataclass(slots=True)
class HmaContent:
    """One HMA bank content with its signals (HMA type name -> value)."""

    id: int
    disable_until_ts: int
    note: str | None
    metadata: Any
    signals: dict[str, str] = field(default_factory=dict)


def safe_url(url: URL) -> str:
    """``url`` with its password hidden."""
    return url.render_as_string(hide_password=True)


def parse_url(raw: str) -> URL:
    """A PostgreSQL URL (InputError otherwise); ``postgresql://`` uses psycopg 3."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise InputError("--from hma takes the database URL of HMA (postgresql://...)") from None
    if url.get_backend_name() != "postgresql":
        raise InputError(
            f"--from hma takes HMA's PostgreSQL URL, not a {url.get_backend_name()} one"
        )
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url


class HmaDatabase:
    """An open, read-only view of an HMA database's banks."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self.engine: Engine = create_engine(url, poolclass=NullPool)
        try:
            with self.engine.connect() as conn:
                tables = set(inspect(conn).get_table_names())
                missing = [t for t in TABLES if t not in tables]
                if missing:
                    raise InputError(
                        f"{safe_url(url)} is not an HMA database (no table {missing[0]})"
                    )
                columns = {c["name"] for c in inspect(conn).get_columns("bank_content")}
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise InputError(f"cannot read {safe_url(url)}: {_reason(exc)}") from None
        except InputError:
            self.engine.dispose()
            raise
        self._has_note = "note" in columns
        self._has_metadata = "bank_content_metadata" in columns

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    def banks(self) -> list[HmaBank]:
        """Every bank with its number of contents, by name."""
        from sqlalchemy import func

        counts = (
            select(_content.c.bank_id, func.count().label("n"))
            .group_by(_content.c.bank_id)
            .subquery()
        )
        query = (
            select(_bank.c.id, _bank.c.name, _bank.c.enabled_ratio, counts.c.n)
            .outerjoin(counts, counts.c.bank_id == _bank.c.id)
            .order_by(_bank.c.name)
        )
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SET TRANSACTION READ ONLY"))
                rows = conn.execute(query).all()
        except SQLAlchemyError as exc:
            raise InputError(f"cannot read {safe_url(self.url)}: {_reason(exc)}") from None
        return [HmaBank(int(r[0]), str(r[1]), float(r[2]), int(r[3] or 0)) for r in rows]

    def contents(self, bank: HmaBank) -> Iterator[HmaContent]:
        """The bank's contents in id order, streamed (a server-side cursor)."""
        note = _content.c.note if self._has_note else literal(None, String).label("note")
        meta = (
            _content.c.bank_content_metadata
            if self._has_metadata
            else literal(None, JSON).label("bank_content_metadata")
        )
        query = (
            select(
                _content.c.id,
                _content.c.disable_until_ts,
                note,
                meta,
                _signal.c.signal_type,
                _signal.c.signal_val,
            )
            .outerjoin(_signal, _signal.c.content_id == _content.c.id)
            .where(_content.c.bank_id == bank.id)
            .order_by(_content.c.id, _signal.c.signal_type)
        )
        current: HmaContent | None = None
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SET TRANSACTION READ ONLY"))
                result = conn.execution_options(stream_results=True, yield_per=FETCH_ROWS)
                for row in result.execute(query):
                    cid = int(row[0])
                    if current is None or current.id != cid:
                        if current is not None:
                            yield current
                        current = HmaContent(cid, int(row[1]), row[2], row[3])
                    if row[4] is not None:
                        current.signals[str(row[4])] = str(row[5] or "")
        except SQLAlchemyError as exc:
            raise InputError(f"cannot read {safe_url(self.url)}: {_reason(exc)}") from None
        if current is not None:
            yield current


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's first line, without the SQL or parameters."""
    orig = getattr(exc, "orig", None)
    text_ = str(orig if orig is not None else exc).strip().splitlines()
    return text_[0] if text_ else type(exc).__name__
