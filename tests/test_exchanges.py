"""Hash exchanges: tipline's signed feed synced over real HTTP into a bank, with faults,
refusals, resumption and the upsert rules; the publisher and subscriber databases are
real (the subscriber on SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from _feed_server import TOKEN, FeedServer, feed_server
from conftest import migrated_sqlite
from tipline.banks.model import BankSignal
from tipline.config import Settings
from tipline.errors import ConfigError, ConflictError, ExchangeError, FeedRefusedError
from tipline.services import banks, exchanges
from tipline.services.database import Database, open_database
from tipline.services.exchanges.apply import apply_deltas
from tipline.services.exchanges.feed_client import FeedAdapter
from tipline.services.exchanges.http import Fetcher
from tipline.services.exchanges.model import Delta, ExchangeSpec
from tipline.store import bank_repository as repo
from tipline.store.audit import AuditRecord
from tipline.store.db import transaction

ENV = "TIPLINE_TEST_FEED_TOKEN"


def _db(url: str, tmp: Path) -> Database:
    return open_database(url, settings=Settings(data_dir=tmp, database_url=url))


def _pdq(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def _publish(db: Database, bank: str, count: int, *, seed: int = 1, start: int = 0) -> None:
    """``count`` entries (entry ids e<start>...) with random PDQ and MD5 and a label."""
    rng = random.Random(seed)
    new = [
        repo.NewEntry(
            f"e{i}",
            (BankSignal("pdq", _pdq(rng)), BankSignal("md5", f"{rng.getrandbits(128):032x}")),
            ("A1" if i % 2 else "B2",),
            None,
        )
        for i in range(start, start + count)
    ]
    with transaction(db.sessions) as s:
        repo.insert_entries(s, repo.get_bank(s, bank).id, new)


def _state(db: Database, bank: str) -> dict[str, tuple[Any, ...]]:
    """entry id -> (sorted signals, labels, disabled) of every entry of ``bank``."""
    return {
        e.entry_id: (
            tuple(sorted(f"{s.type}:{s.value}" for s in e.signals)),
            tuple(e.labels),
            e.disabled,
        )
        for e in banks.iter_bank_entries(db, bank)
    }


@pytest.fixture
def publisher(tmp_path: Path) -> Iterator[tuple[Database, exchanges.Publisher]]:
    db = _db(migrated_sqlite(tmp_path / "publisher.db"), tmp_path)
    banks.create_bank(db, "CONFIRMED")
    yield db, exchanges.Publisher(frozenset({"CONFIRMED"}), exchanges.SigningKey.generate())
    db.close()


@pytest.fixture
def subscriber(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    monkeypatch.setenv(ENV, TOKEN)
    db = _db(db_url, tmp_path)
    banks.create_bank(db, "synced")
    yield db
    db.close()


class Sleeps:
    """A sleep that records instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def _add(sub: Database, server: FeedServer, name: str = "ch") -> None:
    key = server.publisher.key
    assert key is not None
    exchanges.add_exchange(
        sub,
        name,
        kind="tipline-feed",
        bank="synced",
        config={"url": f"{server.url}/CONFIRMED", "public_key": key.public().base64()},
        credential_env=ENV,
    )


def _factory(
    sleeps: Sleeps, *, page_size: int = 1000, timeout: float = 30.0, attempts: int = 5
) -> Any:
    def build(spec: ExchangeSpec) -> FeedAdapter:
        fetcher = Fetcher(
            spec.name,
            headers={"Authorization": f"Bearer {TOKEN}"},
            sleep=sleeps,
            timeout=timeout,
            attempts=attempts,
        )
        return FeedAdapter(spec, fetcher, page_size=page_size)

    return build


def test_sync_copies_the_published_bank_then_its_changes(
    publisher: tuple[Database, exchanges.Publisher], subscriber: Database
) -> None:
    pub_db, pub = publisher
    _publish(pub_db, "CONFIRMED", 230)
    with feed_server(pub_db, pub) as server:
        _add(subscriber, server)
        sleeps = Sleeps()
        report = exchanges.sync_exchange(subscriber, "ch", factory=_factory(sleeps, page_size=100))
        assert report.totals.pages == 3  # 100 + 100 + 30
        assert report.totals.added == 230
        assert _state(subscriber, "synced") == _state(pub_db, "CONFIRMED")
        # changes at the publisher: removals, relabels, new entries
        banks.set_entries_disabled(pub_db, "CONFIRMED", ["e3", "e4"], disabled=True, reason="x")
        with transaction(pub_db.sessions) as s:
            bank = repo.get_bank(s, "CONFIRMED")
            row = repo.get_entry(s, bank, "e5")
            row.labels = ["A2"]
            row.seq = repo.next_seq(s)
        _publish(pub_db, "CONFIRMED", 7, seed=2, start=1000)
        again = exchanges.sync_exchange(subscriber, "ch", factory=_factory(sleeps, page_size=100))
    assert (again.totals.added, again.totals.updated, again.totals.removed) == (7, 1, 2)
    got = _state(subscriber, "synced")
    want = _state(pub_db, "CONFIRMED")
    assert got["e3"][2] is True and got["e4"][2] is True
    assert got["e5"][1] == ("A2",)
    live = {k: v for k, v in want.items() if not v[2]}
    assert {k: v for k, v in got.items() if not v[2]} == live
    status = exchanges.exchange_status(subscriber, "ch")
    assert status.last_success_at is not None and status.last_error is None
    assert status.totals["added"] == 237 and status.lag_seconds is not None
    assert sleeps.delays == []


def test_an_interrupted_sync_resumes_where_it_stopped(
    publisher: tuple[Database, exchanges.Publisher], subscriber: Database
) -> None:
    pub_db, pub = publisher
    _publish(pub_db, "CONFIRMED", 250)
    with feed_server(pub_db, pub) as server:
        _add(subscriber, server)
        factory = _factory(Sleeps(), page_size=60)
        first = exchanges.sync_exchange(subscriber, "ch", factory=factory, max_pages=2)
        assert first.totals.added == 120
        after = [int(r["after"]) for r in server.requests]
        rest = exchanges.sync_exchange(subscriber, "ch", factory=factory)
        resumed_from = int(server.requests[len(after)]["after"])
    assert resumed_from == first.checkpoint["seq"]  # type: ignore[index]
    assert rest.totals.added == 130 and rest.totals.unchanged == 0
    assert _state(subscriber, "synced") == _state(pub_db, "CONFIRMED")


def test_retryable_faults_are_retried_with_backoff(
    publisher: tuple[Database, exchanges.Publisher], subscriber: Database
) -> None:
    pub_db, pub = publisher
    _publish(pub_db, "CONFIRMED", 150)
    with feed_server(pub_db, pub) as server:
        _add(subscriber, server)
        server.faults = ["500", "429", "drop", "truncate"]
        sleeps = Sleeps()
        report = exchanges.sync_exchange(subscriber, "ch", factory=_factory(sleeps, page_size=100))
    assert report.totals.added == 150
    assert len(sleeps.delays) == 4 and 7.0 in sleeps.delays  # Retry-After honoured
    assert _state(subscriber, "synced") == _state(pub_db, "CONFIRMED")


def test_a_source_that_keeps_failing_is_recorded_and_nothing_is_lost(
    publisher: tuple[Database, exchanges.Publisher], subscriber: Database
) -> None:
    pub_db, pub = publisher
    _publish(pub_db, "CONFIRMED", 150)
    with feed_server(pub_db, pub) as server:
        _add(subscriber, server)
        # page 1 arrives, page 2 fails on every attempt
        server.faults = ["ok", "500", "500", "500"]
        factory = _factory(Sleeps(), page_size=100, attempts=3)
        with pytest.raises(ExchangeError, match="failed 3 times"):
            exchanges.sync_exchange(subscriber, "ch", factory=factory)
        status = exchanges.exchange_status(subscriber, "ch")
        assert status.last_error is not None and "HTTP 500" in status.last_error
        assert status.totals["added"] == 100  # the applied page stays applied
        exchanges.sync_exchange(subscriber, "ch", factory=factory)
    assert exchanges.exchange_status(subscriber, "ch").last_error is None
    assert _state(subscriber, "synced") == _state(pub_db, "CONFIRMED")


def test_a_hanging_source_times_out(
    publisher: tuple[Database, exchanges.Publisher], subscriber: Database
) -> None:
    pub_db, pub = publisher
    _publish(pub_db, "CONFIRMED", 3)
    with feed_server(pub_db, pub) as server:
        _add(subscriber, server)
        server.faults = ["hang", "hang"]
        factory = _factory(Sleeps(), timeout=0.5, attempts=2)
        with pytest.raises(ExchangeError, match="timed out"):
            exchanges.sync_exchange(subscriber, "ch", factory=factory)
    assert _state(subscriber, "synced") == {}


@pytest.mark.parametrize("fault", ["tamper", "wrongkey", "replay"])
def test_refused_pages_apply_nothing(
    publisher: tuple[Database, exchanges.Publisher], subscriber: Database, fault: str
) -> None:
    pub_db, pub = publisher
    _publish(pub_db, "CONFIRMED", 20)
    with feed_server(pub_db, pub) as server:
        _add(subscriber, server)
        factory = _factory(Sleeps(), page_size=100)
        exchanges.sync_exchange(subscriber, "ch", factory=factory)
        before = _state(subscriber, "synced")
        checkpoint = exchanges.exchange_status(subscriber, "ch").checkpoint
        banks.set_entries_disabled(pub_db, "CONFIRMED", ["e1"], disabled=True, reason="x")
        _publish(pub_db, "CONFIRMED", 5, seed=3, start=500)
        server.faults = [fault]
        with pytest.raises(FeedRefusedError):
            exchanges.sync_exchange(subscriber, "ch", factory=factory)
        assert _state(subscriber, "synced") == before
        status = exchanges.exchange_status(subscriber, "ch")
        assert status.checkpoint == checkpoint
        assert status.last_error is not None and "refused" in status.last_error
        # the next honest page goes through
        exchanges.sync_exchange(subscriber, "ch", factory=factory)
    assert len(_state(subscriber, "synced")) == 25


def test_an_older_page_than_the_last_applied_is_refused(
    publisher: tuple[Database, exchanges.Publisher], subscriber: Database
) -> None:
    """A page signed earlier (a replay with a matching ``after``) is refused by time."""
    pub_db, pub = publisher
    _publish(pub_db, "CONFIRMED", 2)
    assert pub.key is not None
    old = exchanges.page_of(pub_db, pub, "CONFIRMED", after=0)
    spec = ExchangeSpec(
        "ch",
        "tipline-feed",
        "synced",
        {"url": "http://127.0.0.1:9/v1/feeds/CONFIRMED", "public_key": pub.key.public().base64()},
    )
    adapter = FeedAdapter(spec, Fetcher("ch"))
    newer = exchanges.page_of(pub_db, pub, "CONFIRMED", after=0)
    cp = {"instance": newer["page"]["instance"], "seq": 0, "issued_at": newer["page"]["issued_at"]}
    with pytest.raises(FeedRefusedError, match="issued before"):
        adapter._checked(pub.key.public().verify(old), cp)
    other = dict(cp, instance="another-database")
    with pytest.raises(FeedRefusedError, match="instance"):
        adapter._checked(pub.key.public().verify(newer), other)


def test_two_syncs_at_once_cannot_both_apply_a_page(
    publisher: tuple[Database, exchanges.Publisher], subscriber: Database
) -> None:
    pub_db, pub = publisher
    _publish(pub_db, "CONFIRMED", 30)
    with feed_server(pub_db, pub) as server:
        _add(subscriber, server)
        inner = _factory(Sleeps(), page_size=10)

        class Racing:
            """Fetches its first page, then lets another sync run to the end first."""

            def __init__(self, spec: ExchangeSpec) -> None:
                self.adapter = inner(spec)

            def fetch(self, checkpoint: Any) -> Iterator[exchanges.Page]:
                pages = self.adapter.fetch(checkpoint)
                first = next(pages)
                exchanges.sync_exchange(subscriber, "ch", factory=inner)
                yield first

            def close(self) -> None:
                self.adapter.close()

        with pytest.raises(ConflictError, match="another sync"):
            exchanges.sync_exchange(subscriber, "ch", factory=Racing)
    assert _state(subscriber, "synced") == _state(pub_db, "CONFIRMED")
    assert exchanges.exchange_status(subscriber, "ch").totals["added"] == 30


def _sig(rng: random.Random) -> BankSignal:
    return BankSignal("pdq", _pdq(rng))


def test_upsert_rules(subscriber: Database) -> None:
    rng = random.Random(5)
    a, b, c = _sig(rng), _sig(rng), _sig(rng)
    with transaction(subscriber.sessions) as s:
        t = apply_deltas(
            s,
            "x",
            "synced",
            [
                Delta("one", (a,), ("A1",)),
                Delta("one", (a, b), ("A2",)),  # the later state of the same entry wins
                Delta("two", (c,), unsupported=("photodna",)),
                Delta("three", (), unsupported=("photodna", "tmk")),
                Delta("ghost", removed=True),
            ],
        )
    assert (t.added, t.no_signal, t.removed_unknown) == (2, 1, 1)
    assert t.unsupported == {"photodna": 2, "tmk": 1}
    state = _state(subscriber, "synced")
    assert state["one"] == (tuple(sorted(f"pdq:{x.value}" for x in (a, b))), ("A2",), False)
    # a reviewer disabled "two" as a false positive: a sync never re-enables it
    banks.set_entries_disabled(subscriber, "synced", ["two"], disabled=True, reason="fp")
    with transaction(subscriber.sessions) as s:
        t = apply_deltas(s, "x", "synced", [Delta("two", (c,)), Delta("one", removed=True)])
    assert (t.unchanged, t.removed) == (1, 1)
    with transaction(subscriber.sessions) as s:
        t = apply_deltas(s, "x", "synced", [Delta("one", (a, b), ("A2",))])
    assert t.updated == 1  # its own removal is undone when the source lists it again
    state = _state(subscriber, "synced")
    assert state["two"][2] is True and state["one"][2] is False
    with pytest.raises(ConfigError, match="does not exist"), transaction(subscriber.sessions) as s:
        apply_deltas(s, "x", "synced", [Delta("z", (a,), bank="nope")])


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(page=st.dictionaries(st.text(max_size=6), _json, min_size=1, max_size=6), data=st.data())
def test_any_change_to_a_signed_page_is_refused(page: dict[str, Any], data: st.DataObject) -> None:
    key = exchanges.SigningKey.generate()
    doc = key.sign(page)
    assert key.public().verify(json.loads(json.dumps(doc))) == page
    field = data.draw(st.sampled_from(sorted(page)))
    changed = dict(page)
    changed[field] = data.draw(_json.filter(lambda v: v != page[field]))
    with pytest.raises(FeedRefusedError, match="bad signature"):
        key.public().verify({**doc, "page": changed})
    other = exchanges.SigningKey.generate()
    with pytest.raises(FeedRefusedError, match="signed by key"):
        other.public().verify(doc)
    forged = {**other.sign(page), "key_id": doc["key_id"]}
    with pytest.raises(FeedRefusedError, match="bad signature"):
        key.public().verify(forged)


def test_keys_and_config_are_checked() -> None:
    with pytest.raises(ConfigError, match="32 bytes"):
        exchanges.VerifyKey.from_base64(base64.b64encode(b"short").decode())
    with pytest.raises(ConfigError, match="base64"):
        exchanges.SigningKey.from_base64("not base64!")
    with pytest.raises(ConfigError, match="url"):
        exchanges.KINDS["tipline-feed"].check_config({"url": "ftp://x", "public_key": "x"})


def test_a_system_bank_is_never_published(tmp_path: Path) -> None:
    # the clearinghouse's every received file, unconfirmed, with its intake's hashes
    named = Settings(data_dir=tmp_path, feed_banks=["CONFIRMED", "system:clearinghouse-files"])
    with pytest.raises(ConfigError, match="system:clearinghouse-files"):
        exchanges.Publisher.from_settings(named)
    ok = exchanges.Publisher.from_settings(Settings(data_dir=tmp_path, feed_banks=["CONFIRMED"]))
    assert ok.banks == {"CONFIRMED"}


def test_every_step_is_audited(
    publisher: tuple[Database, exchanges.Publisher], subscriber: Database
) -> None:
    pub_db, pub = publisher
    _publish(pub_db, "CONFIRMED", 3)
    with feed_server(pub_db, pub) as server:
        _add(subscriber, server)
        exchanges.sync_exchange(subscriber, "ch", factory=_factory(Sleeps()))
    exchanges.set_enabled(subscriber, "ch", False)
    exchanges.reset_exchange(subscriber, "ch")
    exchanges.remove_exchange(subscriber, "ch")
    with subscriber.sessions() as s:
        actions = [
            a
            for (a,) in s.execute(
                select(AuditRecord.action)
                .where(AuditRecord.target_type == "exchange")
                .order_by(AuditRecord.seq)
            )
        ]
        secrets = s.execute(
            select(func.count()).select_from(AuditRecord).where(AuditRecord.details.contains(TOKEN))
        ).scalar_one()
    assert actions == [
        "exchange.add",
        "exchange.page",
        "exchange.sync",
        "exchange.disable",
        "exchange.reset",
        "exchange.remove",
    ]
    assert secrets == 0


def test_a_damaged_stored_checkpoint_is_refused_and_nothing_applied(
    publisher: tuple[Database, exchanges.Publisher], subscriber: Database
) -> None:
    pub_db, pub = publisher
    _publish(pub_db, "CONFIRMED", 5)
    with feed_server(pub_db, pub) as server:
        _add(subscriber, server)
        from tipline.services.exchanges.configure import get_row

        with transaction(subscriber.sessions) as s:
            get_row(s, "ch", for_update=True).checkpoint = {"seq": "3", "instance": None}
        with pytest.raises(ConfigError, match="exchange reset ch"):
            exchanges.sync_exchange(subscriber, "ch", factory=_factory(Sleeps()))
        assert _state(subscriber, "synced") == {}
        exchanges.reset_exchange(subscriber, "ch")
        exchanges.sync_exchange(subscriber, "ch", factory=_factory(Sleeps()))
    assert _state(subscriber, "synced") == _state(pub_db, "CONFIRMED")
