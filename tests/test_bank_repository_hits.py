"""bank_repository.hits (one joined query per chunk) against its twin: ORM reads of each
entry, its bank and its signals (the two-query path it replaced)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

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
