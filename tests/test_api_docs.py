"""docs/api.md names every route of the OpenAPI document (a new route fails this test
until it is documented)."""

from __future__ import annotations

import re
from pathlib import Path

from tipline.api.app import create_app
from tipline.config import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def _norm(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_every_route_is_documented(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    try:
        paths = {_norm(p) for p in app.openapi()["paths"]}
    finally:
        app.state.ctx.close()
    text = _norm(DOCS.read_text())
    missing = sorted(p for p in paths if p not in text)
    assert not missing, f"undocumented in docs/api.md: {missing}"
