"""Shared fixtures: reference data, databases (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import Engine, create_engine, text

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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{(tmp_path / 'tipline.db').as_posix()}"
    return str(request.getfixturevalue("postgres_url"))
