"""The clearinghouse app (role ``clearinghouse``) under uvicorn on 127.0.0.1, in a
thread, for intake tests; provider accounts are made with the service."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from _app_server import served_in_thread
from tipline.api.app import create_app
from tipline.api.routes_ispws import IspwsFastPath
from tipline.config import Settings
from tipline.services import clearinghouse
from tipline.services.vault import MasterKey
from tipline.services.vault.keys import write_key_file
from tipline.store.db import make_engine, session_factory


@dataclass
class IntakeServer:
    url: str  # base URL of the ISPWS paths (…/ispws)
    settings: Settings
    sessions: sessionmaker[Session]

    def add_provider(self, name: str, password: str) -> None:
        clearinghouse.add_provider(self.sessions, name, password)


@contextmanager
def intake_server(
    db_url: str, data_dir: Path, *, fast_path: bool = True, **overrides: object
) -> Iterator[IntakeServer]:
    """Serve the clearinghouse role on a free 127.0.0.1 port until the block ends;
    without ``fast_path``, FastAPI's ISPWS routes answer (the fast path's twin)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    key_file = data_dir / "master.key"
    write_key_file(key_file, MasterKey.generate())
    values: dict[str, object] = {
        "data_dir": data_dir,
        "database_url": db_url,
        "role": "clearinghouse",
        "vault_master_key_file": key_file,
        "vault_chunk_bytes": 4096,
        "intake_max_file_bytes": 256 * 1024,
        "intake_max_xml_bytes": 64 * 1024,
        "max_body_bytes": 1024 * 1024,
        **overrides,
    }
    settings = Settings(**values)  # type: ignore[arg-type]
    app = create_app(settings)
    if not fast_path:  # before the first request builds the middleware stack
        app.user_middleware = [m for m in app.user_middleware if m.cls is not IspwsFastPath]
    engine = make_engine(settings=settings)
    try:
        with served_in_thread(app) as port:
            yield IntakeServer(f"http://127.0.0.1:{port}/ispws", settings, session_factory(engine))
    finally:
        engine.dispose()
