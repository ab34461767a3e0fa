"""Submissions store on SQLite and PostgreSQL: tenant scopes, cursors, decisions, and the
migration creating exactly what the models describe."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tipline.errors import NotFoundError
from tipline.store import submissions as store
from tipline.store.base import Base
from tipline.store.db import make_engine, session_factory, transaction
from tipline.store.models import import_all_models

_TABLES = {"submissions", "match_history", "decisions"}


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    import_all_models()
    eng = make_engine(db_url)  # db_url is migrated already
    yield eng
    eng.dispose()


def test_migration_matches_models(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    ours = [d for d in diff if _TABLES & set(_names(d))]
    assert ours == []


def _names(item: object) -> list[str]:
    """Every table name mentioned in one autogenerate diff item (nested tuples/lists)."""
    if isinstance(item, str):
        return [item]
    if isinstance(item, tuple | list):
        return [n for x in item for n in _names(x)]
    names = [str(getattr(item, "name", ""))]
    table = getattr(item, "table", None)
    if table is not None:
        names.append(str(table.name))
    return names


def _add(session: Session, tenant: str | None, content_id: str) -> store.SubmissionRow:
    return store.create_submission(
        session,
        tenant=tenant,
        content_id=content_id,
        created_by="k",
        uploader_account="acct",
        upload_ip="192.0.2.1",
        uploaded_at=datetime(2026, 1, 1, tzinfo=UTC),
        metadata={"n": 1},
        signals=[{"type": "pdq", "value": "0" * 64}],
    )


def test_scopes_cursors_and_decisions(engine: Engine) -> None:
    factory = session_factory(engine)
    with transaction(factory) as s:
        a = [_add(s, "a", f"a{i}") for i in range(5)]
        b = _add(s, "b", "b0")
        shared = _add(s, None, "n0")
        store.record_matches(
            s, "a", a[0].id, [store.MatchFact("bank", "e1", "pdq", 3, "0" * 64, ("A1",))]
        )
    with factory() as s:
        assert [r.content_id for r in store.list_submissions(s, "a")] == [
            "a4",
            "a3",
            "a2",
            "a1",
            "a0",
        ]
        page = store.list_submissions(s, "a", limit=2)
        rest = store.list_submissions(s, "a", before=page[-1].id)
        assert [r.content_id for r in page + rest] == ["a4", "a3", "a2", "a1", "a0"]
        assert len(store.list_submissions(s, None)) == 7  # no scope: every tenant
        with pytest.raises(NotFoundError):
            store.get_submission(s, "a", b.id)
        with pytest.raises(NotFoundError):
            store.get_submission(s, "b", shared.id)
        got = store.get_submission(s, "a", a[0].id)
        assert got.uploaded_at == datetime(2026, 1, 1, tzinfo=UTC)
        assert got.meta == {"n": 1}
        history = store.list_matches(s, "a")
        assert [(h.bank, h.distance, h.labels) for h in history] == [("bank", 3, ["A1"])]
        assert store.list_matches(s, "b") == []
    with transaction(factory) as s:
        with pytest.raises(NotFoundError):
            store.add_decision(s, "b", a[0].id, store.DecisionKind.CONFIRMED, decided_by="k")
        d = store.add_decision(s, "a", a[0].id, store.DecisionKind.ESCALATED, decided_by="k")
        assert d.tenant == "a"
    with factory() as s:
        assert [x.decision for x in store.list_decisions(s, "a", a[0].id)] == ["escalated"]
        assert store.list_decisions(s, "b") == []
