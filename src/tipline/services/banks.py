"""Bank use cases: create, list, show, import, export, add, disable, enable.

Each function opens its own transaction(s) through a :class:`Database`; every write is
recorded in the audit log (:func:`tipline.services.audit.append`) in the same
transaction. Imports are streamed and written in batches (10,000 entries per
transaction by default); with ``atomic=True`` the whole import is one transaction that
is rolled back when any line is bad.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy.orm import Session

from tipline.banks.auto_report import check_mode
from tipline.banks.formats import (
    ImportFormat,
    ParsedEntry,
    WriteReport,
    read_entries,
    write_entries,
)
from tipline.banks.model import SYSTEM_BANK_PREFIX, Bank, BankEntry, BankSignal, is_system_bank
from tipline.errors import ConflictError, ImportFormatError, InputError
from tipline.services import input_limits
from tipline.services.audit import ActorLike
from tipline.services.auth import Principal, require_tenant
from tipline.services.database import Database
from tipline.signals.base import get_signal_type, parse_typed_hash
from tipline.store import bank_repository as repo
from tipline.store import region_repository as region_repo
from tipline.store.db import transaction

#: Entries written per transaction during an import.
DEFAULT_BATCH = 10_000
#: Errors kept in an :class:`ImportSummary` (all are counted, and passed to ``on_error``).
MAX_KEPT_ERRORS = 1_000
#: Actor recorded in the audit log when none is given.
DEFAULT_ACTOR = "cli"

#: Who made a change: an API key id (or :data:`DEFAULT_ACTOR`) or a principal (anything
#: with ``key_id`` and ``tenant``, e.g. :class:`tipline.services.auth.Principal`).
Actor = str | ActorLike


def _audit(
    session: Session,
    actor: Actor,
    action: str,
    target: tuple[str, str],
    details: Mapping[str, Any] | None = None,
    *,
    tenant: str | None,
) -> None:
    """Audit hook for every bank/entry write (same transaction as the write).

    The record belongs to the bank's tenant (``tenant``), whoever the actor is: a
    tenant's audit view then shows every change to its banks, also an admin's.
    """
    from tipline.services import audit

    audit.append(
        session,
        actor=actor if isinstance(actor, str) else actor.key_id,
        action=action,
        target=target,
        details=details,
        tenant=tenant,
    )


# -- banks --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BankInfo:
    """A bank with its counts."""

    bank: Bank
    entries: int
    disabled_entries: int
    signals: dict[str, int]


def check_thresholds(thresholds: Mapping[str, int]) -> dict[str, int]:
    """Validate ``{signal type: threshold}`` (known types, non-negative integers)."""
    out: dict[str, int] = {}
    for name, value in thresholds.items():
        signal_type = get_signal_type(name.strip().lower())
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(f"threshold for {name} must be a non-negative integer")
        if signal_type.name == "pdq" and value > 256:
            raise InputError("pdq threshold must be at most 256 bits")
        out[signal_type.name] = value
    return out


def check_bank_name(name: str) -> str:
    """A bank name: 1-200 printable characters without slashes, not ``.`` or ``..``
    (URL paths normalise those away, so such a bank could never be addressed)."""
    clean = name.strip()
    if (
        not clean
        or len(clean) > 200
        or "/" in clean
        or not clean.isprintable()
        or clean in (".", "..")
    ):
        raise InputError(
            f"invalid bank name {name!r} (1-200 printable characters, no '/', not '.' or '..')"
        )
    if is_system_bank(clean):
        raise InputError(f"bank names starting with {SYSTEM_BANK_PREFIX!r} are reserved")
    return clean


def create_bank(
    db: Database,
    name: str,
    *,
    description: str = "",
    thresholds: Mapping[str, int] | None = None,
    allow: bool = False,
    enabled: bool = True,
    tenant: str | None = None,
    actor: Actor = DEFAULT_ACTOR,
    normalize: bool = True,
    auto_report: str = "default",
) -> Bank:
    """Create a bank (``normalize``: match normalised query variants too, see
    :mod:`tipline.signals.normalize`; ``auto_report``: its auto-report policy, see
    :mod:`tipline.banks.auto_report`); ConflictError when the name is taken (for a
    tenant's bank worded the same whoever holds the name: bank names are global, see
    docs/api.md)."""
    bank = Bank(
        name=check_bank_name(name),
        description=description,
        enabled=enabled,
        is_allow_bank=allow,
        thresholds=check_thresholds(thresholds or {}),
        tenant=tenant,
        normalize=normalize,
        auto_report=check_mode(auto_report),
    )
    with transaction(db.sessions) as s:
        try:
            repo.create_bank(s, bank)
        except ConflictError:
            if tenant is None:
                raise
            # Names are global. A tenant is told the same thing whoever holds the name
            # (itself, a shared bank, another tenant): never that a bank exists, or whose.
            raise ConflictError(
                f"bank name {bank.name!r} is not available; choose another name"
            ) from None
        _audit(
            s,
            actor,
            "bank.create",
            ("bank", bank.name),
            {
                "allow": allow,
                "enabled": enabled,
                "thresholds": dict(bank.thresholds),
                "normalize": normalize,
                "auto_report": bank.auto_report,
            },
            tenant=tenant,
        )
    return bank


def list_banks(db: Database, *, tenant: str | None = None) -> list[BankInfo]:
    """Every bank with its counts."""
    with db.sessions() as s:
        out = []
        for row in repo.list_banks(s, tenant=tenant):
            total, disabled = repo.count_entries(s, row.id)
            out.append(BankInfo(repo.to_bank(row), total, disabled, repo.signal_counts(s, row.id)))
        return out


def show_bank(db: Database, name: str) -> BankInfo:
    """One bank with its counts; NotFoundError when missing."""
    with db.sessions() as s:
        row = repo.get_bank(s, name)
        total, disabled = repo.count_entries(s, row.id)
        return BankInfo(repo.to_bank(row), total, disabled, repo.signal_counts(s, row.id))


def update_bank(
    db: Database,
    name: str,
    *,
    enabled: bool | None = None,
    thresholds: Mapping[str, int] | None = None,
    description: str | None = None,
    region_matching: bool | None = None,
    actor: Actor = DEFAULT_ACTOR,
    normalize: bool | None = None,
    auto_report: str | None = None,
) -> Bank:
    """Switch a bank on/off, change its thresholds/description, switch matching of
    normalised query variants (``normalize``) on/off, or its bank-side robust tier
    (``region_matching``: crops and small rotations of entries added from media), or
    set its auto-report policy (``auto_report``, :mod:`tipline.banks.auto_report`)."""
    clean = check_thresholds(thresholds) if thresholds is not None else None
    mode = check_mode(auto_report) if auto_report is not None else None
    with transaction(db.sessions) as s:
        row = repo.update_bank(
            s,
            name,
            enabled=enabled,
            thresholds=clean,
            description=description,
            normalize=normalize,
            region_matching=region_matching,
            auto_report=mode,
        )
        action = {True: "bank.enable", False: "bank.disable", None: "bank.update"}[enabled]
        details: dict[str, Any] = {
            "thresholds": clean,
            "description": description,
            "normalize": normalize,
        }
        if region_matching is not None:
            details["region_matching"] = region_matching
        if mode is not None:
            details["auto_report"] = mode
        _audit(s, actor, action, ("bank", name), details, tenant=row.tenant)
        return repo.to_bank(row)


def visible_bank(db: Database, who: Principal, name: str, *, write: bool = False) -> BankInfo:
    """The bank ``name`` if ``who``'s tenant may see it (or, with ``write``, change it);
    NotFoundError otherwise, so other tenants' bank names do not leak."""
    info = show_bank(db, name)
    require_tenant(who, info.bank.tenant, write=write, what=f"bank {name!r}")
    return info


def delete_bank(db: Database, name: str, *, actor: Actor = DEFAULT_ACTOR) -> int:
    """Delete a bank with all its entries (audited); returns how many entries went.
    NotFoundError when there is no such bank, or when ``actor`` is a principal whose
    tenant may not write it. Matchers drop its hits at once: they read entries from the
    database for every hit."""
    with transaction(db.sessions) as s:
        row = repo.get_bank(s, name, for_update=True)
        if isinstance(actor, Principal):
            require_tenant(actor, row.tenant, write=True, what=f"bank {name!r}")
        entries, _disabled = repo.count_entries(s, row.id)
        tenant = row.tenant
        s.delete(row)
        s.flush()
        _audit(s, actor, "bank.delete", ("bank", name), {"entries": entries}, tenant=tenant)
    return entries


def bank_tenants(db: Database) -> dict[str, str | None]:
    """Bank name -> owning tenant (None = shared), for every bank."""
    with db.sessions() as s:
        return repo.bank_tenants(s)


def entry_numbers(db: Database, wanted: Mapping[str, Iterable[str]]) -> dict[tuple[str, str], int]:
    """(bank, entry id) -> the entry's integer id (HMA's ``content_id``) for the entry
    ids wanted per bank; entries that do not exist are left out."""
    out: dict[tuple[str, str], int] = {}
    with db.sessions() as s:
        for bank, ids in wanted.items():
            out.update(((bank, e), pk) for e, pk in repo.entry_numbers(s, bank, ids).items())
    return out


# -- entries ------------------------------------------------------------------------------


def parse_signals(texts: Sequence[str]) -> tuple[BankSignal, ...]:
    """``type:value`` strings -> validated signals (HashFormatError on a bad one)."""
    out: list[BankSignal] = []
    for text in texts:
        kind, value = parse_typed_hash(text)
        signal = BankSignal(kind, value)
        if signal not in out:
            out.append(signal)
    if not out:
        raise InputError("an entry needs at least one signal (TYPE:VALUE)")
    return tuple(out)


def add_entry(
    db: Database,
    bank: str,
    signals: Sequence[str] | Sequence[BankSignal],
    *,
    entry_id: str | None = None,
    labels: Sequence[str] = (),
    source: str | None = None,
    actor: Actor = DEFAULT_ACTOR,
    regions: Sequence[tuple[str, str]] = (),
) -> BankEntry:
    """Add one entry; its hashes are matchable by every matcher within a second.

    ``signals`` are ``type:value`` strings or :class:`BankSignal` values (validated
    again). Without ``entry_id`` one is derived from the first signal. ``regions`` are
    the ``(name, PDQ hex)`` region descriptors of an entry added from media
    (:mod:`tipline.services.regions`), stored in the same transaction.
    """
    from tipline.banks.formats import check_entry_id, derived_entry_id

    texts = [s if isinstance(s, str) else f"{s.type}:{s.value}" for s in signals]
    parsed = parse_signals(texts)
    eid = derived_entry_id(parsed[0]) if entry_id is None else entry_id
    try:
        eid = check_entry_id(eid, line=0, path=None)
    except ImportFormatError as exc:
        raise InputError(exc.message) from None
    clean_labels = input_limits.check_labels(labels)
    with transaction(db.sessions) as s:
        row = repo.get_bank(s, bank)
        if repo.existing_entry_ids(s, row.id, [eid]):
            raise ConflictError(f"bank {bank!r} already has an entry {eid!r}")
        (pk,) = repo.insert_entries(s, row.id, [repo.NewEntry(eid, parsed, clean_labels, source)])
        stored = region_repo.insert_regions(s, pk, _checked_regions(regions))
        details: dict[str, object] = {
            "signals": [x.type for x in parsed],
            "labels": list(clean_labels),
        }
        if stored:
            details["regions"] = stored
        _audit(s, actor, "entry.add", ("entry", f"{bank}/{eid}"), details, tenant=row.tenant)
        entry = repo.get_entry(s, row, eid)
        return repo.to_entry(entry, bank, parsed)


def _checked_regions(regions: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Region descriptors validated: short names, canonical 64-hex PDQ values."""
    pdq = get_signal_type("pdq")
    out: list[tuple[str, str]] = []
    for name, value in regions:
        if not name or len(name) > 40:
            raise InputError(f"bad region name {name!r}")
        out.append((name, pdq.parse(value)))
    return out


def set_entries_disabled(
    db: Database,
    bank: str,
    entry_ids: Sequence[str],
    *,
    disabled: bool,
    reason: str | None = None,
    actor: Actor = DEFAULT_ACTOR,
) -> list[BankEntry]:
    """Disable (with ``reason``) or re-enable entries; takes effect on the next match
    in every process (matchers read the flag at match time)."""
    if disabled and not (reason or "").strip():
        raise InputError("disabling an entry needs a reason")
    out = []
    with transaction(db.sessions) as s:
        row = repo.get_bank(s, bank)
        for eid in entry_ids:
            entry = repo.set_disabled(s, row, eid, disabled, reason)
            _audit(
                s,
                actor,
                "entry.disable" if disabled else "entry.enable",
                ("entry", f"{bank}/{eid}"),
                {"reason": reason} if disabled else None,
                tenant=row.tenant,
            )
            out.append(repo.to_entry(entry, bank, repo.signals_of(s, [entry.id])[entry.id]))
    return out


def get_entry(db: Database, bank: str, entry_id: str) -> BankEntry:
    """One entry with its signals; NotFoundError when missing."""
    with db.sessions() as s:
        row = repo.get_bank(s, bank)
        entry = repo.get_entry(s, row, entry_id)
        return repo.to_entry(entry, bank, repo.signals_of(s, [entry.id])[entry.id])


def iter_bank_entries(db: Database, bank: str) -> Iterator[BankEntry]:
    """Every entry of ``bank`` (streamed in pages)."""
    with db.sessions() as s:
        row = repo.get_bank(s, bank)
        yield from repo.iter_entries(s, row)


# -- import / export ----------------------------------------------------------------------


@dataclass
class ImportSummary:
    """What an import did. ``errors`` counts bad lines (duplicates are counted apart);
    ``unsupported`` counts fingerprints of types tipline cannot match on;
    ``ignored_fields`` counts input fields that were not understood."""

    imported: int = 0
    duplicates: int = 0
    errors: int = 0
    deleted: int = 0
    skipped_no_signal: int = 0
    unsupported: dict[str, int] = field(default_factory=dict)
    ignored_fields: dict[str, int] = field(default_factory=dict)
    rolled_back: bool = False
    first_errors: list[ImportFormatError] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain-data form (for JSON output and the audit log)."""
        return {
            "imported": self.imported,
            "duplicates": self.duplicates,
            "errors": self.errors,
            "deleted": self.deleted,
            "skipped_no_signal": self.skipped_no_signal,
            "unsupported": dict(sorted(self.unsupported.items())),
            "ignored_fields": dict(sorted(self.ignored_fields.items())),
            "rolled_back": self.rolled_back,
        }


#: Called in the inserting transaction with each batch's new entries and primary keys.
AfterInsert = Callable[[Session, list[tuple[ParsedEntry, int]]], None]


class _Importer:
    def __init__(
        self,
        db: Database,
        bank: str,
        *,
        atomic: bool,
        batch_size: int,
        on_error: Callable[[ImportFormatError], None] | None,
        path: str | None,
    ) -> None:
        self.db = db
        self.bank = bank
        self.atomic = atomic
        self.batch_size = max(1, batch_size)
        self.on_error = on_error
        self.path = path
        self.summary = ImportSummary()
        self.pending: list[ParsedEntry] = []
        self.deleted: list[ParsedEntry] = []
        self.failed = False
        self.after_insert: AfterInsert | None = None

    def error(self, exc: ImportFormatError, *, duplicate: bool = False) -> None:
        if duplicate:
            self.summary.duplicates += 1
        else:
            self.summary.errors += 1
        self.failed = True
        if len(self.summary.first_errors) < MAX_KEPT_ERRORS:
            self.summary.first_errors.append(exc)
        if self.on_error is not None:
            self.on_error(exc)

    def feed(self, item: ParsedEntry | ImportFormatError) -> None:
        s = self.summary
        if isinstance(item, ImportFormatError):
            self.error(item)
            return
        for name in item.unsupported:
            s.unsupported[name] = s.unsupported.get(name, 0) + 1
        for name in item.ignored_fields:
            s.ignored_fields[name] = s.ignored_fields.get(name, 0) + 1
        if item.deleted:
            self.deleted.append(item)
            return
        if not item.signals:
            s.skipped_no_signal += 1
            return
        self.pending.append(item)

    def flush(self, session: Session, bank_id: int) -> None:
        batch, self.pending = self.pending, []
        unique: dict[str, ParsedEntry] = {}
        for item in batch:
            eid = item.entry_id or ""
            if eid in unique:
                self.error(
                    ImportFormatError(
                        f"duplicate entry {eid!r} (first at line {unique[eid].line})",
                        path=self.path,
                        line=item.line,
                    ),
                    duplicate=True,
                )
                continue
            unique[eid] = item
        existing = repo.existing_entry_ids(session, bank_id, list(unique))
        fresh: list[ParsedEntry] = []
        for eid, item in unique.items():
            if eid in existing:
                self.error(
                    ImportFormatError(
                        f"duplicate entry {eid!r} (already in bank {self.bank!r})",
                        path=self.path,
                        line=item.line,
                    ),
                    duplicate=True,
                )
            else:
                fresh.append(item)
        if self.atomic and self.failed:
            return  # everything will be rolled back; keep reading to report errors
        pks = repo.insert_entries(
            session,
            bank_id,
            [repo.NewEntry(i.entry_id or "", i.signals, i.labels, i.source) for i in fresh],
        )
        if self.after_insert is not None and fresh:
            self.after_insert(session, list(zip(fresh, pks, strict=True)))
        self.summary.imported += len(fresh)
        deleted, self.deleted = self.deleted, []
        if deleted:
            row = repo.get_bank(session, self.bank)
            ids = [d.entry_id or "" for d in deleted]
            present = repo.existing_entry_ids(session, bank_id, ids)
            for d in deleted:
                if d.entry_id in present:
                    repo.set_disabled(session, row, d.entry_id or "", True, "deleted upstream")
                self.summary.deleted += 1


def import_entries(
    db: Database,
    bank: str,
    stream: IO[bytes],
    fmt: ImportFormat,
    *,
    path: str | None = None,
    atomic: bool = False,
    batch_size: int = DEFAULT_BATCH,
    on_error: Callable[[ImportFormatError], None] | None = None,
    progress: Callable[[int], None] | None = None,
    actor: Actor = DEFAULT_ACTOR,
) -> ImportSummary:
    """Stream ``stream`` (format ``fmt``) into ``bank``.

    Good entries are written ``batch_size`` per transaction while bad lines are
    reported (``on_error`` gets each as it is found, with its line number). With
    ``atomic`` everything is one transaction, rolled back if any line was bad or a
    duplicate. ``progress`` is called with the bytes read so far after each batch.
    """

    def tell() -> None:
        if progress is not None:
            with contextlib.suppress(OSError, ValueError):
                progress(stream.tell())

    return import_items(
        db,
        bank,
        read_entries(fmt, stream, path=path),
        path=path,
        atomic=atomic,
        batch_size=batch_size,
        on_error=on_error,
        progress=tell,
        actor=actor,
    )


def import_items(
    db: Database,
    bank: str,
    items: Iterable[ParsedEntry | ImportFormatError],
    *,
    path: str | None = None,
    atomic: bool = False,
    batch_size: int = DEFAULT_BATCH,
    on_error: Callable[[ImportFormatError], None] | None = None,
    progress: Callable[[], None] | None = None,
    after_insert: AfterInsert | None = None,
    audit_details: Mapping[str, Any] | None = None,
    actor: Actor = DEFAULT_ACTOR,
) -> ImportSummary:
    """Import parsed ``items`` into ``bank`` as :func:`import_entries` does (batches,
    duplicates, ``atomic``); ``after_insert`` sees each batch's new entries in its
    transaction; ``audit_details`` are added to the ``bank.import`` audit record."""
    importer = _Importer(
        db, bank, atomic=atomic, batch_size=batch_size, on_error=on_error, path=path
    )
    importer.after_insert = after_insert
    with db.sessions() as s:
        bank_row = repo.get_bank(s, bank)
        bank_id, bank_tenant = bank_row.id, bank_row.tenant

    def tell() -> None:
        if progress is not None:
            progress()

    def details() -> dict[str, Any]:
        return {**importer.summary.to_json(), **(audit_details or {})}

    if atomic:
        session = db.sessions()
        try:
            with session.begin():
                for item in items:
                    importer.feed(item)
                    if len(importer.pending) >= importer.batch_size:
                        importer.flush(session, bank_id)
                        tell()
                importer.flush(session, bank_id)
                if importer.failed:
                    raise _Rollback
                _audit(
                    session,
                    actor,
                    "bank.import",
                    ("bank", bank),
                    details(),
                    tenant=bank_tenant,
                )
        except _Rollback:
            importer.summary.rolled_back = True
            importer.summary.imported = 0
            importer.summary.deleted = 0
        finally:
            session.close()
    else:
        for item in items:
            importer.feed(item)
            if len(importer.pending) >= importer.batch_size:
                with transaction(db.sessions) as s:
                    importer.flush(s, bank_id)
                tell()
        with transaction(db.sessions) as s:
            importer.flush(s, bank_id)
            _audit(
                s,
                actor,
                "bank.import",
                ("bank", bank),
                details(),
                tenant=bank_tenant,
            )
    tell()
    return importer.summary


class _Rollback(Exception):
    """Raised inside an atomic import to roll its transaction back."""


def export_entries(db: Database, bank: str, fmt: ImportFormat, out: IO[bytes]) -> WriteReport:
    """Write every entry of ``bank`` to ``out`` in ``fmt`` (disabled entries included)."""
    return write_entries(fmt, iter_bank_entries(db, bank), out)
