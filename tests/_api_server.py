"""A real ``tipline serve`` process on a free 127.0.0.1 port, for the API tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from _clock import HANG_SECONDS
from conftest import migrated_sqlite
from tipline.config import Settings
from tipline.services.auth import create_key
from tipline.store.db import make_engine, session_factory, transaction, upgrade
from tipline.store.models import import_all_models

#: (name, role, tenant) of the keys every test server gets
KEYS: tuple[tuple[str, str, str | None], ...] = (
    ("admin", "admin", None),
    ("hasher", "hasher", None),
    ("matcher", "matcher", None),
    ("curator", "curator", None),
    ("reviewer", "reviewer", None),
    ("a_admin", "admin", "tenant-a"),
    ("a_curator", "curator", "tenant-a"),
    ("a_matcher", "matcher", "tenant-a"),
    ("a_reviewer", "reviewer", "tenant-a"),
    ("b_admin", "admin", "tenant-b"),
    ("b_curator", "curator", "tenant-b"),
    ("b_matcher", "matcher", "tenant-b"),
    ("b_reviewer", "reviewer", "tenant-b"),
)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keyed_client(
    clients: dict[str, httpx.Client], base_url: str, keys: dict[str, str], key: str | None
) -> httpx.Client:
    """The HTTP client of ``clients`` authenticated with the named key (None: no key),
    made on first use; a request waits up to HANG_SECONDS (a bound on a hang only)."""
    name = key or "-"
    if name not in clients:
        headers = {"Authorization": f"Bearer {keys[key]}"} if key else {}
        clients[name] = httpx.Client(
            base_url=base_url, headers=headers, timeout=HANG_SECONDS, trust_env=False
        )
    return clients[name]


@dataclass
class Server:
    """A running server: base URL, API keys by name, database URL, data folder."""

    base_url: str
    keys: dict[str, str]
    db_url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    def client(self, key: str | None = "admin") -> httpx.Client:
        """An HTTP client authenticated with the named key (None: no key)."""
        return keyed_client(self.clients, self.base_url, self.keys, key)

    def stop(self) -> None:
        """Stop the process and close the clients."""
        for c in self.clients.values():
            c.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def make_keys(db_url: str, data_dir: Path) -> dict[str, str]:
    """Migrate ``db_url`` and create the :data:`KEYS`; returns name -> secret."""
    import_all_models()
    settings = Settings(data_dir=data_dir, database_url=db_url)
    engine = make_engine(db_url, settings=settings)
    try:
        upgrade(engine)
        keys: dict[str, str] = {}
        with transaction(session_factory(engine)) as session:
            for name, role, tenant in KEYS:
                keys[name] = create_key(session, name=name, role=role, tenant=tenant).secret
        return keys
    finally:
        engine.dispose()


@contextmanager
def running_server(
    db_url: str,
    data_dir: Path,
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> Iterator[Server]:
    """Start ``tipline serve`` on ``db_url`` and wait until ``/v1/health`` answers (a
    SQLite file that does not exist yet starts as a copy of the migrated template)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    sqlite_file = Path(db_url.removeprefix("sqlite:///"))
    if db_url.startswith("sqlite:///") and not sqlite_file.exists():
        migrated_sqlite(sqlite_file)
    keys = make_keys(db_url, data_dir)
    port = free_port()
    full_env = {
        **os.environ,
        "TIPLINE_DATA_DIR": str(data_dir),
        "TIPLINE_DATABASE_URL": db_url,
        "TIPLINE_MAX_BODY_BYTES": str(8 * 1024 * 1024),
        "TIPLINE_FETCH_ALLOW_PRIVATE": json.dumps(["127.0.0.0/8"]),
        **(env or {}),
    }
    full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = data_dir / f"server-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tipline.cli.main",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
                *args,
            ],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
        )
    server = Server(f"http://127.0.0.1:{port}", keys, db_url, data_dir, process, log)
    deadline = time.monotonic() + HANG_SECONDS
    # one client for the polling: httpx.get builds a TLS context per call (~25 ms of CPU,
    # hundreds of calls while a loaded machine starts the server)
    poll = httpx.Client(timeout=1.0, trust_env=False)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{log.read_text()[-4000:]}")
            try:
                if poll.get(f"{server.base_url}/v1/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text()[-4000:]}")
            time.sleep(0.1)
        poll.close()
        yield server
    finally:
        poll.close()
        server.stop()


@contextmanager
def server_on(backend: str, request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Server]:
    """A running server on SQLite, or on a fresh PostgreSQL schema (``backend``)."""
    if backend == "sqlite":
        with running_server(f"sqlite:///{data_dir / 'tipline.db'}", data_dir) as srv:
            yield srv
        return
    # a schema holding the recorded migration (conftest's db_url makes the same)
    schemas = request.getfixturevalue("_postgres_schemas")
    schema = schemas.create(request.getfixturevalue("_postgres_migration"))
    try:
        with running_server(schemas.url(schema), data_dir) as srv:
            yield srv
    finally:
        schemas.drop(schema)
