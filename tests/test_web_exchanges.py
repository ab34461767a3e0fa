"""The web UI's exchanges page over HTTP against a real ``tipline serve``: a
service-wide user sees each exchange's state, counts and last error; a tenant's
reviewer sees none."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from _web_seed import PASSWORD
from _web_server import WebServer, web_server
from tipline.services import banks, exchanges, web_auth
from tipline.services.auth import Role
from tipline.services.exchanges.configure import get_row
from tipline.store.db import transaction


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    with web_server(tmp_path_factory.mktemp("webx"), count=1) as srv:
        yield srv


def test_exchanges_page_shows_state_counts_and_errors(web: WebServer) -> None:
    db = web.db
    web_auth.add_user(db.sessions, "ops", PASSWORD, role=Role.ADMIN, tenant=None)
    banks.create_bank(db, "from-ncmec")
    exchanges.add_exchange(
        db,
        "ncmec-test",
        kind="ncmec",
        bank="from-ncmec",
        config={"environment": "test-industry", "username": "esp"},
        credential_env="NCMEC_PASSWORD",
    )
    with transaction(db.sessions) as s:
        row = get_row(s, "ncmec-test", for_update=True)
        row.totals = {
            "added": 1234,
            "updated": 5,
            "removed": 7,
            "unsupported": {"PDNA (photo)": 99},
        }
        row.last_error = "exchange 'ncmec-test': the source answered HTTP 401 <script>"
        row.last_error_at = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    ops = web.login("ops")
    try:
        page = ops.get("/web/exchanges")
    finally:
        ops.close()
    assert page.status_code == 200, page.text
    html = page.text
    assert 'id="x-ncmec-test"' in html and "from-ncmec" in html and "never" in html
    assert "1234" in html and "PDNA (photo): 99" in html
    assert "HTTP 401 &lt;script&gt;" in html  # escaped, never markup
    tenant_reviewer = web.login("alice")
    try:
        other = tenant_reviewer.get("/web/exchanges")
    finally:
        tenant_reviewer.close()
    assert other.status_code == 200 and "ncmec-test" not in other.text
    assert "No exchanges to show." in other.text
