"""Shared fixtures: reference data, databases (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

import atexit
import functools
import gc
import os
import re
import resource
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
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


@pytest.fixture(scope="session", autouse=True)
def _cheap_web_password_hashes() -> Iterator[None]:
    """Web users' passwords hashed with argon2id's cheapest parameters in the test process.

    argon2-cffi's defaults (64 MiB, 3 passes, 4 lanes) cost ~0.25 s of CPU per hash and
    per verify, and the web tests add users and log in hundreds of times. What they test
    is what the code does with a hash (verify, refuse, lock out, end sessions); a verify
    reads the parameters from the stored hash, so hashes of either cost verify alike.
    The production parameters are pinned by test_web.py's test_user_commands, whose
    ``tipline user add`` runs as a real process.
    """
    from argon2 import PasswordHasher, profiles

    from tipline.services.web_auth import users

    production = users._hasher
    users._hasher = PasswordHasher.from_parameters(profiles.CHEAPEST)
    users._dummy_hash.cache_clear()
    try:
        yield
    finally:
        users._hasher = production
        users._dummy_hash.cache_clear()


#: scrypt's (N, r, p) for clearinghouse provider passwords in production (kept here while
#: the test process uses cheap ones; test_clearinghouse_intake pins them)
PRODUCTION_SCRYPT: tuple[int, int, int] = (0, 0, 0)


@pytest.fixture(scope="session", autouse=True)
def _cheap_provider_password_hashes() -> Iterator[None]:
    """Clearinghouse provider passwords hashed with scrypt at N=16 in the test process.

    The production cost (N=2**14, 16 MiB) is ~45 ms of CPU per hash and per verify, paid
    for every provider added, every first login of an intake server and every refused
    login (~200 of them in the clearinghouse tests: ~9 CPU-s). What the tests check is
    what the intake does with a hash (verify, refuse, disable, cache); a verify reads the
    parameters from the stored hash, so hashes of either cost verify alike, and the
    unknown-account login still runs scrypt on a dummy hash of the same cost.
    """
    global PRODUCTION_SCRYPT
    from tipline.services.clearinghouse import providers

    production = (providers.SCRYPT_N, providers.SCRYPT_R, providers.SCRYPT_P)
    dummy = providers._DUMMY_HASH
    PRODUCTION_SCRYPT = production
    providers.SCRYPT_N = 16
    providers._DUMMY_HASH = dummy.replace(f"scrypt${production[0]}$", "scrypt$16$", 1)
    try:
        yield
    finally:
        providers.SCRYPT_N, providers.SCRYPT_R, providers.SCRYPT_P = production
        providers._DUMMY_HASH = dummy


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


#: (statement, parameters, executemany) as the migration sent them to the driver
_Statements = Sequence[tuple[str, Any, bool]]


class _Schemas:
    """The tests' PostgreSQL schemas, created and dropped over one connection per worker
    (a connection per schema forked a server backend and built an engine for each test).
    """

    def __init__(self, admin_url: str) -> None:
        from sqlalchemy.engine import make_url

        self.admin_url = admin_url
        self._libpq = make_url(admin_url).set(drivername="postgresql")
        self._conn: Any = None

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(
                self._libpq.render_as_string(hide_password=False),
                autocommit=True,
                prepare_threshold=None,  # the same statements run in every schema
            )
        return self._conn

    def create(self, migration: _Statements = ()) -> str:
        """A new schema holding what ``migration`` (see :func:`_postgres_migration`)
        makes, with its own instance id; all of it in one transaction."""
        schema = f"t_{uuid.uuid4().hex[:12]}"
        conn = self._connection()
        with conn.transaction(), conn.cursor() as cursor:
            cursor.execute(f'CREATE SCHEMA "{schema}"')
            if migration:
                cursor.execute(f'SET LOCAL search_path TO "{schema}"')
                for statement, params, many in migration:
                    if many:
                        cursor.executemany(statement, params)
                    else:
                        cursor.execute(statement, params)
                cursor.execute(
                    "UPDATE bank_state SET instance = %s WHERE id = 1", (str(uuid.uuid4()),)
                )
        return schema

    def url(self, schema: str) -> str:
        sep = "&" if "?" in self.admin_url else "?"
        return f"{self.admin_url}{sep}options=-csearch_path%3D{schema}"

    def drop(self, schema: str) -> None:
        self._connection().execute(f'DROP SCHEMA "{schema}" CASCADE')

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


@pytest.fixture(scope="session")
def _postgres_schemas(postgres_admin_url: str) -> Iterator[_Schemas]:
    schemas = _Schemas(postgres_admin_url)
    try:
        yield schemas
    finally:
        schemas.close()


@pytest.fixture
def postgres_url(_postgres_schemas: _Schemas) -> Iterator[str]:
    """A fresh, empty PostgreSQL schema for one test, dropped afterwards."""
    schema = _postgres_schemas.create()
    try:
        yield _postgres_schemas.url(schema)
    finally:
        _postgres_schemas.drop(schema)


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


@functools.cache
def _sqlite_template_file() -> Path:
    """A migrated SQLite file, made once per process (removed at exit)."""
    from tipline.store.db import make_engine, upgrade
    from tipline.store.models import import_all_models

    import_all_models()
    folder = Path(tempfile.mkdtemp(prefix="tipline-template-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "tipline.db"
    engine = make_engine(f"sqlite:///{path.as_posix()}")
    try:
        upgrade(engine)
        with engine.connect() as conn:  # one self-contained file: no -wal beside it
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        engine.dispose()
    return path


def migrated_sqlite(path: Path) -> str:
    """Make ``path`` a SQLite database as ``upgrade`` makes it (a copy of the migrated
    template with its own instance id); its URL. For the server and seed helpers, whose
    databases are not what they test (migrating a fresh file costs ~0.2 s of CPU and
    40-odd fsyncs)."""
    shutil.copyfile(_sqlite_template_file(), path)
    url = f"sqlite:///{path.as_posix()}"
    engine = create_engine(url)
    try:
        _new_instance_id(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="session")
def _postgres_migration(postgres_admin_url: str) -> _Statements:
    """What migrating an empty schema sends to the driver, recorded once per session."""
    from tipline.store.db import make_engine, upgrade
    from tipline.store.models import import_all_models

    import_all_models()
    sent: list[tuple[str, Any, bool]] = []

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
    # consecutive statements without parameters go as one multi-statement query: ~150
    # round trips become ~10 (each one a wait for the server on a loaded machine)
    batched: list[tuple[str, Any, bool]] = []
    plain: list[str] = []
    for statement, params, many in sent:
        if params or many or "--" in statement:
            if plain:
                batched.append((";\n".join(plain), None, False))
                plain = []
            batched.append((statement, params, many))
        else:
            plain.append(statement)
    if plain:
        batched.append((";\n".join(plain), None, False))
    return batched


#: the parameters of a fixture that runs its tests on each database
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextmanager
def migrated_database(backend: str, request: pytest.FixtureRequest, folder: Path) -> Iterator[str]:
    """The URL of a database as :func:`db_url` makes it, for a fixture of any scope (a
    module's shared server): a SQLite file in ``folder``, or a fresh PostgreSQL schema
    holding the recorded migration, dropped when the block ends."""
    if backend == "sqlite":
        yield migrated_sqlite(folder / "tipline.db")
        return
    schemas: _Schemas = request.getfixturevalue("_postgres_schemas")
    schema = schemas.create(request.getfixturevalue("_postgres_migration"))
    try:
        yield schemas.url(schema)
    finally:
        schemas.drop(schema)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database migrated to the heads, for one test: each test using this runs once on
    SQLite and once on PostgreSQL (a fresh schema, dropped afterwards)."""
    if request.param == "sqlite":
        return migrated_sqlite(tmp_path / "tipline.db")
    schemas: _Schemas = request.getfixturevalue("_postgres_schemas")
    schema = schemas.create(request.getfixturevalue("_postgres_migration"))
    request.addfinalizer(lambda: schemas.drop(schema))
    return schemas.url(schema)


# -- parallel runs (pytest-xdist, scripts/test) ------------------------------------------
# scripts/test spreads the tests over worker processes with ``--dist loadgroup``, which
# the scheduler below implements (xdist's own ``xdist_group`` marks have no effect with
# pytest 9.2: xdist 3.8 renames ``item._nodeid``, which pytest no longer reads). A test
# goes to whichever worker is free, except that one worker runs, one after the other:
# - every test of a module that defines a module-, class- or session-scoped fixture (a
#   server, a Chromium, a hashed media set): spread over workers, each would build it;
# - every test of a module with Ray tests (``pytest.mark.ray``): one local Ray cluster
#   at a time.
# The groups are read from the test files' text: the controller process never imports
# the tests, and the rule must be the same for every worker.

_SHARED_FIXTURE = re.compile(r'@pytest\.fixture\(\s*scope="(?:module|class|package|session)"')
_RAY_TESTS = re.compile(r"pytest\.mark\.ray\b")


@functools.cache
def _module_group(module: str) -> str | None:
    """The group of every test in ``module`` (a path from the rootdir), or None."""
    try:
        source = (REPO / module).read_text(encoding="utf-8")
    except OSError:
        return None
    if _RAY_TESTS.search(source):
        return "ray"
    return module if _SHARED_FIXTURE.search(source) else None


def _group(nodeid: str) -> str | None:
    return _module_group(nodeid.split("::", 1)[0])


@pytest.hookimpl(optionalhook=True)  # a hook of xdist's: unknown without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid) or nodeid

    return GroupScheduling(config, log)


#: Modules whose tests start servers, CLI processes, ffmpeg, Ray or Chromium and take tens
#: of seconds each on a loaded machine: sent to the workers first, so that no worker is
#: left with one of them at the end of a parallel run while the others sit idle. Ordered
#: by their longest unit of work in a profile of the whole suite (session 7, load ~13):
#: the Ray group (both Ray modules run on one worker, ~400 s there) first.
_LONG_FIRST = (
    "test_clearinghouse_replay.py",
    "test_scan_ray.py",
    "test_clearinghouse_simtruth.py",
    "test_reports_auto.py",
    "test_exchanges_ncmec.py",
    "test_txext_cli.py",
    "test_schemathesis.py",
    "test_webhooks.py",
    "test_reports_crash.py",
    "test_exchanges_e2e.py",
    "test_audit.py",
    "test_regions.py",
    "test_scan_resume.py",
    "test_reports_worker.py",
    "test_video.py",
    "test_web_browser.py",
    "test_api_reports.py",
    "test_api_webhooks.py",
    "test_clearinghouse_e2e.py",
    "test_serve_process.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # the controller hands out work in this order (scripts/test: --no-loadscope-reorder);
        # every worker sorts the same way (xdist checks that they collected the same list),
        # and a stable sort keeps each module's tests in their order
        def rank(item: pytest.Item) -> tuple[int, int]:
            module = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
            if module in _LONG_FIRST:
                return (0, _LONG_FIRST.index(module))
            if item.get_closest_marker("slow") is not None:
                return (1, 0)
            return (2, 0) if _group(item.nodeid) is not None else (3, 0)

        items.sort(key=rank)


def init_local_ray(ray: Any, **kwargs: Any) -> None:
    """``ray.init(**kwargs)`` for a test's local cluster, tried again (3 tries in all)
    when Ray's own start-up wait runs out: ``ray._private.node`` gives the raylet a
    hard-coded 30 s to register, which a loaded 2-core machine can exceed."""
    for attempt in range(3):
        try:
            ray.init(**kwargs)
            return
        except Exception as exc:
            if "timed out during startup" not in str(exc) or attempt == 2:
                raise
            ray.shutdown()


#: the tests' Ray workers die (``os._exit``) on reaching a file of this name: the scan's
#: crash isolation on Ray is tested with it (test_scan_ray.py)
RAY_POISON_FILE = "0-poison.jpg"


@pytest.fixture
def ray_cluster() -> Any:
    """The ``ray`` module with a local 2-CPU cluster running.

    One cluster serves every test of the "ray" group (the modules with Ray tests run one
    after the other on one worker): the first test that asks starts it (about 5 s of CPU
    and 20 s on a loaded machine), :func:`pytest_runtest_teardown` stops it after the
    group's last test. Its workers get ``TIPLINE_SCAN_TEST_CRASH_ON`` =
    :data:`RAY_POISON_FILE`, as does this process while the cluster runs.
    """
    from tipline._optional import require
    from tipline.services.scan import CRASH_ON_ENV

    ray = require("ray")
    if not ray.is_initialized():
        os.environ[CRASH_ON_ENV] = RAY_POISON_FILE  # the workers inherit it
        init_local_ray(
            ray, num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False
        )
    return ray


def _collect_ignoring_unraisable() -> None:
    """Ray's sockets are sometimes finalised after the cluster stops (an "Exception
    ignored in BaseConnection.__del__" from Ray's internals), which pytest would report
    as an error of whichever test the worker runs next: collect them now, silently."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook


def _stop_ray() -> None:
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return
    from tipline.services.scan import CRASH_ON_ENV

    try:
        ray.shutdown()
    finally:
        os.environ.pop(CRASH_ON_ENV, None)
        _collect_ignoring_unraisable()


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After the last Ray test of a run of them, collect Ray's garbage at once; after the
    last test of the "ray" group, stop the shared cluster (:func:`ray_cluster`)."""
    try:
        return (yield)
    finally:
        if item.get_closest_marker("ray") is not None and (
            nextitem is None or nextitem.get_closest_marker("ray") is None
        ):
            _collect_ignoring_unraisable()
        if nextitem is None or _group(nextitem.nodeid) != _group(item.nodeid):
            _stop_ray()


# -- CPU per test (TIPLINE_TEST_CPU_LOG=FILE) ---------------------------------------------
# Durations under load say more about the machine than about a test. With the variable
# set, each test's CPU seconds (setup, call and teardown; this process plus the children
# it waited for, e.g. a server it stopped or a CLI it ran) are appended to FILE as
# "seconds<TAB>nodeid", one line per test, from every xdist worker. Not counted: processes
# not waited for by the test (Ray's daemons, PostgreSQL's backends).
_CPU_LOG = os.environ.get("TIPLINE_TEST_CPU_LOG")


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[Any]:
    if not _CPU_LOG:
        return (yield)
    before = _cpu_seconds()
    try:
        return (yield)
    finally:
        line = f"{_cpu_seconds() - before:.3f}\t{item.nodeid}\n"
        with open(_CPU_LOG, "a", encoding="utf-8") as out:  # one short append per test
            out.write(line)
