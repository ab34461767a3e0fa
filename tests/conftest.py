"""Shared fixtures: reference data, databases (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

import gc
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import Engine, create_engine, event, text

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("TIPLINE_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference"
IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_URL = os.environ.get("TIPLINE_TEST_POSTGRES_URL")

# No property test may fail because the machine is slow: no per-example deadline and no
# "data generation too slow" health check (both measure wall-clock time). Tests that list
# their own suppressed health checks name too_slow as well.
settings.register_profile("tipline", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tipline")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/reference``; tests skip without it, except in CI where it must exist."""
    if not REFERENCE.is_dir():
        if IN_CI:
            pytest.fail(f"CI=true but reference data is missing at {REFERENCE}")
        pytest.skip(f"reference data not found at {REFERENCE} (fresh clone outside CI)")
    return REFERENCE


def _postgres_or_skip() -> str:
    if not POSTGRES_URL:
        if IN_CI:
            pytest.fail("CI=true but TIPLINE_TEST_POSTGRES_URL is not set")
        pytest.skip("TIPLINE_TEST_POSTGRES_URL not set")
    return POSTGRES_URL


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """URL of the PostgreSQL server used for tests (skips when not configured, not in CI)."""
    return _postgres_or_skip()


@contextmanager
def postgres_schema(admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema (URL with search_path), dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin: Engine = create_engine(admin_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in admin_url else "?"
    try:
        yield f"{admin_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL schema for one test, dropped afterwards."""
    with postgres_schema(postgres_admin_url) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file for one test."""
    return f"sqlite:///{(tmp_path / 'tipline.db').as_posix()}"


# -- migrated databases ---------------------------------------------------------------
# Migrating an empty database costs ~0.15 s of CPU (Alembic builds ~40 tables in Python)
# and seconds of wall time on a loaded machine; hundreds of tests need one. The migration
# runs once per session: SQLite databases are copies of a migrated file, PostgreSQL
# schemas replay the exact statements the migration sent (recorded once). Either way the
# database is what `upgrade` makes, with its own instance id (the one value a migration
# draws at random), and upgrading it again is a no-op.


def _new_instance_id(engine: Engine) -> None:
    """Give a copied database its own instance id, as a fresh migration would."""
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE bank_state SET instance = :i WHERE id = 1"), {"i": str(uuid.uuid4())}
        )


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tipline.store.db import make_engine, upgrade
    from tipline.store.models import import_all_models

    import_all_models()
    path = tmp_path_factory.mktemp("template") / "tipline.db"
    engine = make_engine(f"sqlite:///{path.as_posix()}")
    try:
        upgrade(engine)
        with engine.connect() as conn:  # one self-contained file: no -wal beside it
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        engine.dispose()
    return path


#: (statement, parameters, executemany) as the migration sent them to the driver
_Statements = list[tuple[str, Any, bool]]


@pytest.fixture(scope="session")
def _postgres_migration(postgres_admin_url: str) -> _Statements:
    from tipline.store.db import make_engine, upgrade
    from tipline.store.models import import_all_models

    import_all_models()
    sent: _Statements = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        sent.append((statement, params, many))

    with postgres_schema(postgres_admin_url) as url:
        engine = make_engine(url)
        try:
            with engine.connect():  # the dialect's first-connect queries are not migration
                pass
            event.listen(engine, "before_cursor_execute", record)
            upgrade(engine)
        finally:
            engine.dispose()
        schema = url.rsplit("%3D", 1)[1]
        named = [s for s, _, _ in sent if schema in s]
        assert not named, f"a recorded migration statement names its schema: {named[:1]}"
    return sent


def _migrated_postgres(url: str, statements: _Statements) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            cursor = conn.connection.cursor()
            for statement, params, many in statements:
                if many:
                    cursor.executemany(statement, params)
                else:
                    cursor.execute(statement, params)
            cursor.close()
        _new_instance_id(engine)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database migrated to the heads, for one test: each test using this runs once on
    SQLite and once on PostgreSQL (a fresh schema, dropped afterwards)."""
    if request.param == "sqlite":
        path = tmp_path / "tipline.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        engine = create_engine(f"sqlite:///{path.as_posix()}")
        try:
            _new_instance_id(engine)
        finally:
            engine.dispose()
        return f"sqlite:///{path.as_posix()}"
    url = str(request.getfixturevalue("postgres_url"))
    _migrated_postgres(url, request.getfixturevalue("_postgres_migration"))
    return url


# -- parallel runs (pytest-xdist, scripts/test) ------------------------------------------
# scripts/test spreads the tests over worker processes with ``--dist loadgroup``: a test
# without a group goes to whichever worker is free, and the tests of one group run on one
# worker, one after the other. Two kinds of tests are grouped here:
# - every test of a module that uses a module- or session-scoped fixture of its own (a
#   server, a Chromium, a hashed media set): spread over workers, each worker would build
#   that fixture again;
# - every test marked ``ray``: one worker at a time runs a local Ray cluster.


def _shares_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    for defs in info.name2fixturedefs.values():
        for fixturedef in defs:
            # baseid "tests/test_x.py": defined in the test module itself (conftest and
            # plugin fixtures, such as the migrated-database templates, are per worker)
            if fixturedef.scope != "function" and fixturedef.baseid.endswith(".py"):
                return True
    return False


#: Modules whose tests start servers, CLI processes, ffmpeg or Chromium and take tens of
#: seconds each on a loaded machine: sent to the workers first, so that no worker is left
#: with one of them at the end of a parallel run while the others sit idle.
_LONG_FIRST = (
    "test_schemathesis.py",
    "test_exchanges_e2e.py",
    "test_audit.py",
    "test_reports_crash.py",
    "test_clearinghouse_simtruth.py",
    "test_txext_cli.py",
    "test_video.py",
    "test_web_browser.py",
    "test_api_reports.py",
    "test_api_webhooks.py",
    "test_clearinghouse_e2e.py",
    "test_serve_process.py",
)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        if item.get_closest_marker("ray") is not None:
            item.add_marker(pytest.mark.xdist_group("ray"))
        elif _shares_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # every worker sorts the same way (xdist checks that they collected the same list);
        # a stable sort keeps each module's tests in their order and a group together
        def rank(item: pytest.Item) -> tuple[int, int]:
            module = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
            if module in _LONG_FIRST:
                return (0, _LONG_FIRST.index(module))
            if item.get_closest_marker("slow") is not None:
                return (1, 0)
            return (2, 0) if item.get_closest_marker("xdist_group") is not None else (3, 0)

        items.sort(key=rank)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After the last Ray test of a run of them, collect Ray's garbage at once.

    Ray's sockets are sometimes finalised after the cluster stops (an "Exception ignored
    in BaseConnection.__del__" from Ray's internals), which pytest would report as an
    error of whichever test the worker runs next.
    """
    try:
        return (yield)
    finally:
        if item.get_closest_marker("ray") is not None and (
            nextitem is None or nextitem.get_closest_marker("ray") is None
        ):
            hook = sys.unraisablehook
            sys.unraisablehook = lambda unraisable: None
            try:
                gc.collect()
            finally:
                sys.unraisablehook = hook
