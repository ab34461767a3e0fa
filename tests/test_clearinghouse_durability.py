"""Which intake commits wait for the disk (PostgreSQL): the serving process runs the
intake on an async-commit handle, on which a submit, an upload, a fileinfo and a triage
commit without waiting, while a finish (which makes every earlier commit of its report
durable with it), a retraction, a refusal and a failed login wait."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from _clearinghouse_fixtures import AUTH, PASSWORD, PROVIDER, documents
from tipline.config import Settings
from tipline.services import clearinghouse, vault
from tipline.services.database import Database, open_database
from tipline.services.vault import MasterKey
from tipline.store.db import commit_durably, transaction

pytestmark = pytest.mark.postgres


def _setting(session: Session) -> str:
    return str(session.execute(text("SHOW synchronous_commit")).scalar_one())


@pytest.fixture
def handles(postgres_url: str) -> Iterator[tuple[Database, Database]]:
    db = open_database(postgres_url, settings=Settings(database_url=postgres_url))  # type: ignore[call-arg]
    fast = db.with_async_commit()
    try:
        yield db, fast
    finally:
        fast.close()
        db.close()


def test_the_async_handle_commits_without_waiting_unless_a_transaction_asks(
    handles: tuple[Database, Database],
) -> None:
    db, fast = handles
    assert fast is not db and fast.engine is not db.engine
    with transaction(db.sessions) as session:
        assert _setting(session) == "on"
    with transaction(fast.sessions) as session:
        assert _setting(session) == "off"
    with transaction(fast.sessions) as session:
        commit_durably(session)
        assert _setting(session) == "on"
    # for that transaction only: the pooled connection is back to not waiting
    with transaction(fast.sessions) as session:
        assert _setting(session) == "off"


def test_sqlite_is_its_own_async_handle(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    db = open_database(url, settings=Settings(database_url=url))  # type: ignore[call-arg]
    try:
        assert db.with_async_commit() is db
    finally:
        db.close()


class _Commits:
    """Records, per committed transaction of ``engine``, whether it asked to wait."""

    def __init__(self, engine: Any) -> None:
        self.durable: list[bool] = []
        self._asked = False
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._commit)

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("SET LOCAL synchronous_commit = on"):
            self._asked = True

    def _commit(self, _conn: Any) -> None:
        self.durable.append(self._asked)
        self._asked = False

    def take(self) -> list[bool]:
        taken, self.durable = self.durable, []
        return taken


def test_only_a_reports_closing_refusals_and_failed_logins_wait_for_the_disk(
    handles: tuple[Database, Database], tmp_path: Path
) -> None:
    _db, fast = handles
    clearinghouse.add_provider(fast.sessions, PROVIDER, PASSWORD)
    key = SecretStr(MasterKey.generate().to_base64())
    settings = Settings(data_dir=tmp_path, vault_master_key=key, vault_chunk_bytes=4096)
    intake = clearinghouse.Intake(sessions=fast.sessions, vault=vault.Vault.from_settings(settings))
    commits = _Commits(fast.engine)
    xml, _reported = documents((), (("a.bin", b"not media", None),))

    opened = clearinghouse.submit(intake, AUTH, xml)
    assert opened.ok and opened.report_id is not None
    assert commits.take() == [False]
    rid = str(opened.report_id)
    up = clearinghouse.upload(intake, AUTH, rid, "a.bin", io.BytesIO(b"not media"))
    assert up.ok and up.file_id
    assert commits.take() == [False]
    details = (
        f"<fileDetails><reportId>{rid}</reportId><fileId>{up.file_id}</fileId>"
        "<fileViewedByEsp>true</fileViewedByEsp></fileDetails>"
    ).encode()
    assert clearinghouse.fileinfo(intake, AUTH, details).ok
    assert commits.take() == [False]
    assert clearinghouse.finish(intake, AUTH, rid).ok
    assert commits.take() == [True]

    # a refusal (the report is finished): its audit record waits
    late = clearinghouse.upload(intake, AUTH, rid, "b.bin", io.BytesIO(b"late"))
    assert not late.ok
    assert commits.take() == [True]
    other = clearinghouse.submit(intake, AUTH, xml)
    assert other.ok and other.report_id is not None
    commits.take()
    assert clearinghouse.retract(intake, AUTH, str(other.report_id)).ok
    assert commits.take() == [True]
    with pytest.raises(clearinghouse.IntakeAuthError):
        clearinghouse.status(intake, "Basic bm9ib2R5Ondyb25n")  # nobody:wrong
    assert commits.take() == [True]
