"""The NCMEC hash sharing adapter against a local server shaped as NCMEC documents the
API (entries by time window, out of time order, paging, deletions, fingerprints tipline
cannot match), with faults, and a sync killed with SIGKILL and resumed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _cli import run_tipline
from _clock import HANG_SECONDS
from _ncmec_server import PASSWORD, T0, USER, expected_bank, ncmec_server
from tipline.config import Settings
from tipline.errors import ConfigError, ExchangeError
from tipline.services import banks, exchanges
from tipline.services.database import Database, open_database
from tipline.services.exchanges.http import Fetcher
from tipline.services.exchanges.model import ExchangeSpec
from tipline.services.exchanges.ncmec import NcmecAdapter, check_config

ENV = "TIPLINE_TEST_NCMEC_PASSWORD"


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def db(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    monkeypatch.setenv(ENV, PASSWORD)
    database = open_database(db_url, settings=Settings(data_dir=tmp_path, database_url=db_url))
    banks.create_bank(database, "ncmec")
    yield database
    database.close()


def _state(db: Database, bank: str) -> dict[str, tuple[str, ...]]:
    """The matchable entries of ``bank``: entry id -> sorted signals. (An entry whose
    deletion arrived before its add is never created; one deleted after it was added
    stays, disabled: either way it is not matched.)"""
    return {
        e.entry_id: tuple(sorted(f"{s.type}:{s.value}" for s in e.signals))
        for e in banks.iter_bank_entries(db, bank)
        if not e.disabled
    }


def _live(count: int) -> dict[str, tuple[str, ...]]:
    return {k: sig for k, (sig, removed) in expected_bank(count).items() if not removed}


def _add(db: Database, url: str, **config: Any) -> None:
    exchanges.add_exchange(
        db,
        "ncmec",
        kind="ncmec",
        bank="ncmec",
        config={"url": url, "username": USER, "start": T0, "window_seconds": 3600, **config},
        credential_env=ENV,
    )


def _factory(sleeps: Sleeps, *, attempts: int = 5) -> Any:
    def build(spec: ExchangeSpec) -> NcmecAdapter:
        fetcher = Fetcher(spec.name, sleep=sleeps, attempts=attempts)
        return NcmecAdapter(spec, fetcher, password=PASSWORD)

    return build


def test_a_sync_equals_the_source_with_deletions_and_unsupported_types(db: Database) -> None:
    count = 2600  # 2600 * 7 s: six one-hour windows, pages of 1000 within them
    with ncmec_server(count) as server:
        _add(db, server.url)
        sleeps = Sleeps()
        report = exchanges.sync_exchange(db, "ncmec", factory=_factory(sleeps))
    want = expected_bank(count)
    assert _state(db, "ncmec") == _live(count)
    t = report.totals
    deleted = sum(1 for _, removed in want.values() if removed)
    # a deletion read before its entry's add: the add is stale; otherwise added, removed
    assert t.added + t.stale == len(want) and t.removed + t.stale == deleted
    videos = sum(1 for k in want if int(k.split("-e")[1]) % 5 == 0)
    photos = len(want) - videos
    assert t.unsupported == {"PDNA (photo)": photos, "TMK_PDQF (video)": videos}
    assert sleeps.delays == []
    status = exchanges.exchange_status(db, "ncmec")
    assert status.checkpoint is not None and status.checkpoint["next"] is None
    assert status.checkpoint["from"] >= T0 + count * 7
    entry = banks.get_entry(db, "ncmec", "41-e1")
    assert set(entry.labels) == {"A1", "ncmec-member:41"}


def test_faults_and_repeated_entries_change_nothing(db: Database) -> None:
    count = 2200
    with ncmec_server(count) as server:
        _add(db, server.url)
        server.faults = ["500", "ok", "dup", "429", "truncate", "drop", "dup"]
        sleeps = Sleeps()
        exchanges.sync_exchange(db, "ncmec", factory=_factory(sleeps))
    assert _state(db, "ncmec") == _live(count)
    assert len(sleeps.delays) == 4 and 3.0 in sleeps.delays


def test_classifications_route_to_their_banks(db: Database) -> None:
    banks.create_bank(db, "ncmec-a1")
    with ncmec_server(300) as server:
        _add(db, server.url, banks={"A1": "ncmec-a1"})
        exchanges.sync_exchange(db, "ncmec", factory=_factory(Sleeps()))
    a1 = _state(db, "ncmec-a1")
    rest = _state(db, "ncmec")
    assert a1 and rest and not set(a1) & set(rest)
    assert all("A1" in banks.get_entry(db, "ncmec-a1", k).labels for k in list(a1)[:20])


def test_a_source_down_fails_cleanly_and_resumes(db: Database) -> None:
    with ncmec_server(1500) as server:
        _add(db, server.url)
        server.faults = ["ok", "500", "500"]
        with pytest.raises(ExchangeError, match="failed 2 times"):
            exchanges.sync_exchange(db, "ncmec", factory=_factory(Sleeps(), attempts=2))
        partial = exchanges.exchange_status(db, "ncmec")
        assert partial.totals["pages"] == 1 and partial.last_error
        exchanges.sync_exchange(db, "ncmec", factory=_factory(Sleeps()))
    assert _state(db, "ncmec") == _live(1500)


def test_probe_names_us_and_the_members(db: Database) -> None:
    with ncmec_server(10) as server:
        _add(db, server.url)
        found = exchanges.probe_exchange(db, "ncmec", factory=_factory(Sleeps()))
    assert found["member"] == {"id": "1", "name": "Test ESP"}
    assert [m["id"] for m in found["members"]] == ["40", "41", "42"]


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="environment"):
        check_config({"username": "x"})
    with pytest.raises(ConfigError, match="username"):
        check_config({"environment": "test-industry"})
    assert check_config({"environment": "test-industry", "username": "u"})["url"].startswith(
        "https://exttest.cybertip.org/"
    )


def test_paging_links_outside_the_api_are_refused(db: Database) -> None:
    spec = ExchangeSpec(
        "n", "ncmec", "ncmec", {"url": "http://127.0.0.1:9/hs", "username": USER, "start": T0}
    )
    adapter = NcmecAdapter(spec, Fetcher("n"), password=PASSWORD)
    with pytest.raises(ExchangeError, match="paging link"):
        next(adapter.fetch({"from": T0, "to": T0 + 60, "next": "http://evil.example/x"}))


@pytest.mark.parametrize("kill_at", [3, 8])
def test_sigkill_mid_sync_then_resume_equals_an_uninterrupted_sync(
    db: Database, db_url: str, tmp_path: Path, kill_at: int
) -> None:
    # 1200 events in 700 s windows: twelve pages of 100 entries, so the kill lands at page
    # 3 or 8 of 12 as with pages of 1000 (what is tested is the page boundary, not its size)
    count = 1200
    with ncmec_server(count) as server:
        _add(db, server.url, window_seconds=700)
        env = {
            **os.environ,
            "TIPLINE_DATABASE_URL": db_url,
            "TIPLINE_DATA_DIR": str(tmp_path),
            ENV: PASSWORD,
        }
        cmd = [sys.executable, "-m", "tipline.cli.main", "exchange", "sync", "ncmec"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        server.faults = ["ok"] * (kill_at - 1) + [f"kill:{proc.pid}"]
        proc.communicate(timeout=HANG_SECONDS)
        assert proc.returncode == -9
        mid = exchanges.exchange_status(db, "ncmec")
        assert mid.totals["pages"] < kill_at  # killed before it finished
        resumed = run_tipline(cmd[3:], env=env)  # the resume need not be a process
        assert resumed.returncode == 0, resumed.stderr
    assert _state(db, "ncmec") == _live(count)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_reviewers_decisions_are_sent_back_as_votes(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A confirmed match of a synced NCMEC entry becomes an up vote on the fingerprint
    that matched; a false positive a down vote with NCMEC's reason id; each sent once."""
    from _app_server import app_server_on  # the API in this process: routes, not serve

    monkeypatch.setenv(ENV, PASSWORD)
    with ncmec_server(400) as source, app_server_on(backend, request, tmp_path / "p") as srv:
        db = open_database(
            srv.db_url, settings=Settings(data_dir=srv.data_dir, database_url=srv.db_url)
        )
        try:
            banks.create_bank(db, "ncmec")
            _add(db, source.url)
            exchanges.sync_exchange(db, "ncmec", factory=_factory(Sleeps()))
            good = banks.get_entry(db, "ncmec", "41-e1")  # an image: md5, sha1, pdq
            bad = banks.get_entry(db, "ncmec", "42-e2")
            matcher = srv.client("matcher")
            reviewer = srv.client("reviewer")
            decided = {}
            for entry, signal_type, decision in (
                (good, "pdq", "confirmed"),
                (bad, "md5", "false_positive"),
            ):
                value = next(s.value for s in entry.signals if s.type == signal_type)
                body = {
                    "signals": [{"type": signal_type, "value": value}],
                    "submission": {"content_id": f"upload-{entry.entry_id}"},
                }
                got = matcher.post("/v1/match/signals", json=body)
                assert got.status_code == 200, got.text
                sid = got.json()["submission_id"]
                answer = reviewer.post(
                    f"/v1/submissions/{sid}/decisions", json={"decision": decision}
                )
                assert answer.status_code in (200, 201), answer.text
                decided[entry.entry_id] = signal_type
            # a tenant adds a synced entry's MD5 to its allow bank (a known false positive)
            allowed = next(
                s.value for s in banks.get_entry(db, "ncmec", "40-e3").signals if s.type == "md5"
            )
            banks.create_bank(db, "allow-acme", allow=True, tenant="acme")
            banks.add_entry(db, "allow-acme", [f"md5:{allowed}"], entry_id="fp-1")
            report = exchanges.sync_exchange(db, "ncmec", factory=_factory(Sleeps()))
            assert report.feedback is not None
            assert (report.feedback.collected, report.feedback.sent) == (3, 3)
            votes = sorted((m, e, f, "affirmative" in b) for m, e, f, b in source.votes)
            assert votes == [
                ("40", "e3", "MD5", False),
                ("41", "e1", "PDQ", True),
                ("42", "e2", "MD5", False),
            ]
            down = next(b for *_, b in source.votes if "negative" in b)
            assert "0f5d3a1e-1111-2222-3333-444455556666" in down
            # owed once: a later sync sends nothing more
            again = exchanges.sync_exchange(db, "ncmec", factory=_factory(Sleeps()))
            assert again.feedback is not None and again.feedback.sent == 0
            assert len(source.votes) == 3
            assert exchanges.exchange_status(db, "ncmec").feedback == {"sent": 3}
        finally:
            db.close()
