"""bank_repository.hits (one joined query per chunk) against its twin: ORM reads of each
entry, its bank and its signals (the two-query path it replaced)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from tipline.banks.model import BankSignal
from tipline.services import banks as svc
from tipline.services.database import Database, open_database
from tipline.store import bank_repository as repo
from tipline.store.bank_tables import BankEntryRow, BankRow


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = open_database(db_url)
    yield database
    database.close()


def _twin(db: Database, pks: list[int]) -> dict[int, repo.EntryHit]:
    out = {}
    with db.sessions() as s:
        for pk in pks:
            entry = s.get(BankEntryRow, pk)
            if entry is None:
                continue
            bank = s.get(BankRow, entry.bank_id)
            assert bank is not None
            sigs = repo.signals_of(s, [pk])[pk]
            out[pk] = repo.EntryHit(pk, repo.to_bank(bank), repo.to_entry(entry, bank.name, sigs))
    return out


def test_hits_match_the_orm_twin(db: Database) -> None:
    svc.create_bank(db, "known", description="k", thresholds={"pdq": 20}, tenant="t1")
    svc.create_bank(db, "fp", allow=True)
    svc.add_entry(db, "known", ["pdq:" + "a" * 64, "md5:" + "c" * 32, "pdq:" + "b" * 64])
    svc.add_entry(db, "known", ["md5:" + "d" * 32], entry_id="e2", labels=["L1", "L2"])
    svc.add_entry(db, "fp", ["pdq:" + "e" * 64], entry_id="e3")
    svc.add_entry(db, "fp", ["sha256:" + "f" * 64], entry_id="e4")
    svc.set_entries_disabled(db, "known", ["e2"], disabled=True, reason="wrong")
    with db.sessions() as s:
        pks = [int(pk) for pk in s.execute(select(BankEntryRow.id)).scalars()]
    assert len(pks) == 4
    wanted = [*pks, pks[0], max(pks) + 100]  # a duplicate and a missing pk
    with db.sessions() as s:
        got = repo.hits(s, wanted)
    assert got == _twin(db, pks)
    assert sum(len(h.entry.signals) for h in got.values()) == 6
    assert any(h.entry.disabled for h in got.values())
    with db.sessions() as s:
        assert repo.hits(s, []) == {}
        assert repo.hits(s, [max(pks) + 1]) == {}


def _stored(db: Database, bank: str) -> tuple[list[tuple[object, ...]], list[int]]:
    """The rows of ``bank`` (entries with their signals in row order; sequence numbers
    as offsets from the bank's first) and the pks, in insertion order."""
    with db.sessions() as s:
        bank_id = repo.get_bank(s, bank).id
        entries = s.scalars(
            select(BankEntryRow).where(BankEntryRow.bank_id == bank_id).order_by(BankEntryRow.seq)
        ).all()
        signals = repo.signals_of(s, [e.id for e in entries])
        first = entries[0].seq
        rows = [
            (
                e.entry_id,
                list(e.labels),
                e.source,
                e.added_at,
                e.disabled,
                e.seq - first,
                [(x.type, x.value) for x in signals.get(e.id, [])],
            )
            for e in entries
        ]
        return rows, [e.id for e in entries]


def test_few_entries_in_one_statement_store_what_the_bulk_path_stores(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """insert_entries' one-statement path (a few entries, PostgreSQL) against its twin,
    the bulk path (COPY on PostgreSQL; both are the executemany path on SQLite): the same
    rows, signals in order, one sequence number per entry, the change list it hands out
    equal to what signals_page reads back."""
    when = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    entries = [
        repo.NewEntry(
            f"e{i}",
            tuple(BankSignal("md5", f"{i:032x}") for _ in range(1))
            + tuple(BankSignal("pdq", f"{i * 7 + k:064x}") for k in range(i % 3)),
            labels=("A1",) if i % 2 else (),
            source=None if i == 3 else f"src {i}",
            added_at=when if i % 2 else None,
        )
        for i in range(5)
    ] + [repo.NewEntry("bare", ())]
    stored = {}
    for bank, few in (("few", repo.ONE_STATEMENT_ENTRIES), ("bulk", 0)):
        svc.create_bank(db, bank)
        monkeypatch.setattr(repo, "ONE_STATEMENT_ENTRIES", few)
        changes: list[repo.SignalChange] = []
        with db.sessions.begin() as s:
            before = repo.current_seq(s)
            pks = repo.insert_entries(s, repo.get_bank(s, bank).id, entries, changes=changes)
        with db.sessions() as s:
            assert repo.current_seq(s) == before + len(entries)
            page = repo.signals_page(s, (before, 0))
        assert [c for c, _ in page] == changes
        rows, in_order = _stored(db, bank)
        assert in_order == pks
        stored[bank] = [r if r[3] == when else (*r[:3], None, *r[4:]) for r in rows]
    assert stored["few"] == stored["bulk"]
