"""The app under uvicorn (in the test process) with seeded review items, and a
logged-in browser-like client (httpx with a cookie jar) for the web UI tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from _app_server import AppServer as Server
from _app_server import app_server
from _web_seed import PASSWORD, Seeded, seed, settings_for
from conftest import migrated_sqlite
from tipline.config import Settings
from tipline.services.database import Database, open_database


@dataclass
class WebServer:
    """The server, what was seeded, and the test process's handle on the same data."""

    server: Server
    seeded: Seeded
    settings: Settings
    db: Database

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return self.server.base_url

    def client(self) -> httpx.Client:
        """A fresh client without a session."""
        return httpx.Client(base_url=self.base_url, timeout=30.0, trust_env=False)

    def login(self, name: str, password: str = PASSWORD) -> httpx.Client:
        """A client logged in as ``name``."""
        client = self.client()
        page = client.get("/web/login")
        token = hidden(page.text, "login_token")
        answer = client.post(
            "/web/login",
            data={"login_token": token, "name": name, "password": password, "next": "/web/review"},
        )
        assert answer.status_code == 303, answer.text
        return client


def hidden(html: str, name: str) -> str:
    """The value of the hidden input ``name`` in ``html``."""
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found is not None, f"no hidden input {name!r}"
    return found.group(1)


@contextmanager
def web_server(data_dir: Path, *, count: int = 4, **extra: str) -> Iterator[WebServer]:
    """Seed a SQLite database under ``data_dir`` and serve it (``extra``: TIPLINE_*
    environment settings without the prefix, e.g. ``WEB_DAILY_EXPOSURE_LIMIT="1"``)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    url = migrated_sqlite(data_dir / "tipline.db")
    settings = settings_for(data_dir, url)
    db = open_database(url, settings=settings)
    try:
        seeded = seed(db, settings, count=count)
        key = settings.vault_master_key
        assert key is not None
        values: dict[str, object] = {
            "vault_master_key": key.get_secret_value(),
            "report_reporter_email": "reports@example.org",
            "report_platform": "Example Photos",
            "web_cookie_secure": False,
            **{k.lower(): v for k, v in extra.items()},
        }
        # the app served by uvicorn in this process (tests/_app_server.py): what the web
        # tests test is the UI, not the 'tipline serve' process (seconds of CPU to start)
        with app_server(url, data_dir, **values) as server:
            yield WebServer(server, seeded, settings, db)
    finally:
        db.close()
