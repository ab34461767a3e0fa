"""The API app (``create_app``) under uvicorn on a free 127.0.0.1 port, in a thread of
the test process, with the API keys of :data:`_api_server.KEYS`.

For tests of what the API does (routes, policies, documents), not of the ``tipline
serve`` process: a server process costs a fresh interpreter and the whole app's imports
(1-2 s of CPU each). The interface is :class:`_api_server.Server`'s (``client(name)``,
``db_url``, ``data_dir``); settings are passed as values, not environment variables.
The process itself (workers, signals, exit codes) is tested with
:func:`_api_server.running_server`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from uvicorn._types import ASGIApplication

from _api_server import free_port, keyed_client, make_keys
from _clock import HANG_SECONDS
from conftest import migrated_sqlite
from tipline.api.app import create_app
from tipline.config import Settings


@dataclass
class AppServer:
    """A running in-process server: base URL, API keys by name, database URL, folder."""

    base_url: str
    keys: dict[str, str]
    db_url: str
    data_dir: Path
    settings: Settings
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    def client(self, key: str | None = "admin") -> httpx.Client:
        """An HTTP client authenticated with the named key (None: no key)."""
        return keyed_client(self.clients, self.base_url, self.keys, key)


@contextmanager
def served_in_thread(app: ASGIApplication) -> Iterator[int]:
    """Serve ``app`` with uvicorn in a thread on a free 127.0.0.1 port (yielded) until the
    block ends, as 'tipline serve' runs uvicorn: no X-Forwarded-For trusted (the HMA
    compatibility setting admits networks by the client address), no Server header."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            proxy_headers=False,
            server_header=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + HANG_SECONDS  # failure bound only
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the in-process server did not start")
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=HANG_SECONDS)


@contextmanager
def app_server(db_url: str, data_dir: Path, **overrides: object) -> Iterator[AppServer]:
    """Serve ``create_app(Settings(...))`` on ``db_url`` until the block ends (a SQLite
    file that does not exist yet starts as a copy of the migrated template).
    ``overrides`` are settings, as ``running_server``'s ``TIPLINE_*`` variables would
    give them."""
    data_dir.mkdir(parents=True, exist_ok=True)
    sqlite_file = Path(db_url.removeprefix("sqlite:///"))
    if db_url.startswith("sqlite:///") and not sqlite_file.exists():
        migrated_sqlite(sqlite_file)
    keys = make_keys(db_url, data_dir)
    values: dict[str, object] = {
        "data_dir": data_dir,
        "database_url": db_url,
        "max_body_bytes": 8 * 1024 * 1024,
        "fetch_allow_private": ["127.0.0.0/8"],
        **overrides,
    }
    settings = Settings(**values)  # type: ignore[arg-type]
    app = create_app(settings, migrate=False)  # make_keys migrated it
    with served_in_thread(app) as port:
        srv = AppServer(f"http://127.0.0.1:{port}", keys, db_url, data_dir, settings)
        try:
            yield srv
        finally:
            for c in srv.clients.values():
                c.close()


@contextmanager
def app_server_on(
    backend: str, request: pytest.FixtureRequest, data_dir: Path, **overrides: object
) -> Iterator[AppServer]:
    """:func:`app_server` on SQLite, or on a fresh PostgreSQL schema holding the recorded
    migration (``backend``), as :func:`_api_server.server_on` for a process."""
    if backend == "sqlite":
        with app_server(f"sqlite:///{data_dir / 'tipline.db'}", data_dir, **overrides) as srv:
            yield srv
        return
    schemas = request.getfixturevalue("_postgres_schemas")
    schema = schemas.create(request.getfixturevalue("_postgres_migration"))
    try:
        with app_server(schemas.url(schema), data_dir, **overrides) as srv:
            yield srv
    finally:
        schemas.drop(schema)
