"""Moving banks from another system: an HMA database, a python-threatexchange CLI folder.

:func:`import_from_hma` copies every bank of an HMA (OpenMediaMatch) database into the
tipline bank of the same name (created when missing): each HMA content becomes one
entry ``hma-<content id>`` holding its signals, note, metadata and
``disable_until_ts``. Importing again only adds what is new (the rest are counted as
duplicates). :func:`import_from_pytx` reads a python-threatexchange CLI state folder
without unpickling anything (see :mod:`tipline.services.bank_sources.pytx_state`).
Each bank's import is audited (``bank.import`` with the source, password hidden).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from tipline.banks.formats import ParsedEntry
from tipline.banks.formats.csv_plain import TE_ALIASES
from tipline.banks.model import BankSignal
from tipline.errors import (
    ConflictError,
    HashFormatError,
    ImportFormatError,
    InputError,
    NotFoundError,
)
from tipline.services import banks as bank_svc
from tipline.services.bank_sources import pytx_state
from tipline.services.bank_sources.hma_db import (
    HmaBank,
    HmaContent,
    HmaDatabase,
    parse_url,
    safe_url,
)
from tipline.services.database import Database
from tipline.services.hma import ENABLED, MAX_NOTE, set_disable_until
from tipline.signals.base import get_signal_type
from tipline.store import bank_repository as repo
from tipline.store.bank_tables import BankEntryRow

#: Entry source of imported HMA contents.
SOURCE_HMA = "hma database"


@dataclass(slots=True)
class BankImport:
    """What importing one source bank did."""

    bank: str
    created: bool
    summary: bank_svc.ImportSummary
    notes: list[str] = field(default_factory=list)
    #: why the bank could not be imported at all (the other banks still are)
    error: str | None = None


@dataclass(slots=True)
class _Extra:
    disable_until_ts: int
    note: str | None
    metadata: dict[str, object] | None


def _hma_items(
    contents: Iterator[HmaContent], bank: str, extras: dict[str, _Extra]
) -> Iterator[ParsedEntry | ImportFormatError]:
    where = f"hma/{bank}/content"
    for content in contents:
        signals: list[BankSignal] = []
        unsupported: list[str] = []
        error: ImportFormatError | None = None
        for kind, value in content.signals.items():
            name = TE_ALIASES.get(kind.lower(), kind.lower())
            try:
                signal_type = get_signal_type(name)
            except HashFormatError:
                unsupported.append(kind)
                continue
            try:
                signals.append(BankSignal(signal_type.name, signal_type.parse(value)))
            except HashFormatError as exc:
                error = ImportFormatError(f"{kind}: {exc.message}", path=where, line=content.id)
                break
        metadata = content.metadata
        if error is None and metadata is not None and not isinstance(metadata, dict):
            error = ImportFormatError("metadata is not a JSON object", path=where, line=content.id)
        if error is None and content.note is not None and len(content.note) > MAX_NOTE:
            error = ImportFormatError(f"note longer than {MAX_NOTE}", path=where, line=content.id)
        if error is not None:
            yield error
            continue
        entry_id = f"hma-{content.id}"
        if content.disable_until_ts != ENABLED or content.note or metadata:
            extras[entry_id] = _Extra(content.disable_until_ts, content.note or None, metadata)
        yield ParsedEntry(
            line=content.id,
            entry_id=entry_id,
            signals=tuple(signals),
            source=SOURCE_HMA,
            unsupported=tuple(unsupported),
        )


def import_from_hma(
    db: Database,
    url: str,
    *,
    only: Sequence[str] = (),
    batch_size: int = bank_svc.DEFAULT_BATCH,
    on_error: Callable[[ImportFormatError], None] | None = None,
    now: Callable[[], float] = time.time,
    actor: bank_svc.Actor = bank_svc.DEFAULT_ACTOR,
) -> list[BankImport]:
    """Import the banks of the HMA database at ``url`` (all, or those named in
    ``only``: NotFoundError for one it does not have). Bad contents are reported
    through ``on_error`` with their content id and skipped; the rest is imported."""
    parsed = parse_url(url)
    source = HmaDatabase(parsed)
    try:
        hma_banks = source.banks()
        by_name = {b.name: b for b in hma_banks}
        for name in only:
            if name not in by_name:
                raise NotFoundError(f"{safe_url(parsed)} has no bank {name!r}")
        chosen: list[HmaBank] = [by_name[n] for n in dict.fromkeys(only)] or hma_banks
        out: list[BankImport] = []
        for b in chosen:
            try:
                out.append(_import_hma_bank(db, source, b, batch_size, on_error, now, actor))
            except (InputError, ConflictError) as exc:
                if isinstance(exc, InputError) and exc.message.startswith("cannot read "):
                    raise  # the source database itself failed: nothing else will work
                failed = BankImport(b.name, False, bank_svc.ImportSummary(), error=exc.message)
                out.append(failed)
        return out
    finally:
        source.close()


def _import_hma_bank(
    db: Database,
    source: HmaDatabase,
    hma_bank: HmaBank,
    batch_size: int,
    on_error: Callable[[ImportFormatError], None] | None,
    now: Callable[[], float],
    actor: bank_svc.Actor,
) -> BankImport:
    notes: list[str] = []
    enabled = hma_bank.enabled_ratio > 0
    if 0 < hma_bank.enabled_ratio < 1:
        notes.append(
            f"HMA matches {hma_bank.enabled_ratio:g} of lookups on this bank; "
            "tipline has no ratio: the bank matches every lookup"
        )
    try:
        bank_svc.show_bank(db, hma_bank.name)
        created = False
    except NotFoundError:
        bank_svc.create_bank(db, hma_bank.name, enabled=enabled, actor=actor)
        created = True
    extras: dict[str, _Extra] = {}

    def after_insert(session: Session, batch: list[tuple[ParsedEntry, int]]) -> None:
        moment = now()
        for item, pk in batch:
            extra = extras.pop(item.entry_id or "", None)
            if extra is None:
                continue
            row = session.get(BankEntryRow, pk)
            if row is None:  # pragma: no cover - inserted in this transaction
                raise InputError(f"entry {item.entry_id} vanished during the import")
            row.note = extra.note
            row.content_metadata = extra.metadata
            set_disable_until(row, extra.disable_until_ts, now=moment)
            repo.touch(session, row)
        # What is left belongs to duplicates (already imported): the batch is done, and
        # the reader has not yielded the next one yet, so memory stays one batch.
        extras.clear()

    summary = bank_svc.import_items(
        db,
        hma_bank.name,
        _hma_items(source.contents(hma_bank), hma_bank.name, extras),
        path=f"hma/{hma_bank.name}/content",
        batch_size=batch_size,
        on_error=on_error,
        after_insert=after_insert,
        audit_details={"from": "hma", "source": safe_url(source.url), "hma_bank": hma_bank.name},
        actor=actor,
    )
    return BankImport(hma_bank.name, created, summary, notes)


@dataclass(slots=True)
class PytxImport:
    """What importing a pytx state folder did: one import per ``local_file``
    collaboration, and the collaborations refused (their state is a pickle) with the
    commands that move them."""

    imports: list[BankImport]
    refused: list[tuple[pytx_state.Collab, str]]
    failed: list[tuple[pytx_state.Collab, str]] = field(default_factory=list)


def import_from_pytx(
    db: Database,
    bank: str,
    folder: str,
    *,
    batch_size: int = bank_svc.DEFAULT_BATCH,
    on_error: Callable[[ImportFormatError], None] | None = None,
    actor: bank_svc.Actor = bank_svc.DEFAULT_ACTOR,
) -> PytxImport:
    """Import the ``local_file`` collaborations of pytx's state ``folder`` into ``bank``
    (which must exist; each entry's source names its collaboration). Collaborations of
    other APIs are listed as refused, with the export commands, and nothing of theirs
    is read; a signal file that cannot be opened is listed as failed, the others are
    imported all the same."""
    bank_svc.show_bank(db, bank)  # NotFoundError before anything is read
    root = Path(folder).expanduser()
    out = PytxImport([], [])
    for collab in pytx_state.read_collabs(root):
        if collab.api != "local_file" or not collab.filename:
            out.refused.append((collab, collab.export_command(bank)))
            continue
        try:
            entries = pytx_state.local_file_entries(collab)
        except InputError as exc:
            out.failed.append((collab, exc.message))
            continue
        summary = bank_svc.import_items(
            db,
            bank,
            entries,
            path=collab.filename,
            batch_size=batch_size,
            on_error=on_error,
            audit_details={"from": "pytx", "collab": collab.name, "file": collab.filename},
            actor=actor,
        )
        notes = [] if collab.enabled else ["disabled in pytx; imported all the same"]
        out.imports.append(BankImport(collab.name, False, summary, notes))
    return out
