"""End to end: a match through the HTTP API (served in the test process) triggers the
bank's webhook rule; a real ``tipline worker`` process delivers the signed POST to a real
receiver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from _app_server import AppServer as Server
from _app_server import app_server
from _clock import HANG_SECONDS
from tipline.demo import sample_images
from tipline.services.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            got.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/hook", got
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    # the API in this process (tests/_app_server.py); the worker is a real process
    with app_server(f"sqlite:///{tmp_path / 'tipline.db'}", tmp_path) as srv:
        yield srv


def test_match_delivers_signed_webhook(
    server: Server, receiver: tuple[str, list[tuple[dict[str, str], bytes]]]
) -> None:
    url, got = receiver
    admin = server.client("admin")
    hook = admin.post("/v1/webhooks", json={"url": url, "banks": ["hooked"]}).json()
    assert admin.post("/v1/banks", json={"name": "hooked"}).status_code == 201
    rule = admin.post(
        "/v1/rules", json={"action": "webhook", "bank": "hooked", "webhook_id": hook["id"]}
    )
    assert rule.status_code == 201, rule.text
    picture = sample_images()[5].read_bytes()
    assert admin.post("/v1/banks/hooked/media?entry_id=k1", content=picture).status_code == 201
    resp = server.client("matcher").post(
        "/v1/match", params={"content_id": "post-9", "uploader_account": "u1"}, content=picture
    )
    assert resp.json()["matched"] is True, resp.text
    env = {
        **os.environ,
        "TIPLINE_DATABASE_URL": server.db_url,
        "TIPLINE_DATA_DIR": str(server.data_dir),
        "TIPLINE_FETCH_ALLOW_PRIVATE": json.dumps(["127.0.0.0/8"]),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tipline.cli.main",
            "worker",
            "--exit-when-idle",
            "--poll-interval",
            "0.2",
            "--webhook-timeout",
            "50",  # only a failure bound: a late answer after a timeout would deliver twice
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(got) == 1
    headers, body = got[0]
    assert verify_signature(
        hook["secret"],
        body,
        headers[SIGNATURE_HEADER.lower()],
        timestamp=headers[TIMESTAMP_HEADER.lower()],
    )
    assert headers["idempotency-key"].startswith(f"webhook:{hook['id']}:")
    event = json.loads(body)
    event = event.get("event", event)
    assert event["content_id"] == "post-9"
    assert [m["bank"] for m in event["matches"]] == ["hooked"] * len(event["matches"])
    assert {m["entry_id"] for m in event["matches"]} == {"k1"}
