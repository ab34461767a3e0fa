"""MetricsMiddleware counts every response under its label set, whether the label set's
metric children are kept at hand or, past the cap, looked up per request; checked
against a plain count of what was sent."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from prometheus_client import generate_latest
from starlette.types import Message, Receive, Scope, Send

from tipline.api import metrics as metrics_module
from tipline.api.metrics import Metrics, MetricsMiddleware


class _Route:
    path = "/things/{name}"


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    scope["route"] = _Route()
    status = 404 if scope["path"].endswith("missing") else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _request(app: MetricsMiddleware, method: str, path: str) -> None:
    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    await app({"type": "http", "method": method, "path": path}, receive, send)


@pytest.mark.parametrize("kept", [1000, 2])
def test_counts_match_what_was_sent(monkeypatch: pytest.MonkeyPatch, kept: int) -> None:
    monkeypatch.setattr(metrics_module, "_KEPT_LABEL_SETS", kept)
    metrics = Metrics()
    app = MetricsMiddleware(_app, metrics)
    sent = [
        (method, path)
        for _ in range(3)
        for method in ("GET", "POST", "PUT", "BREW")
        for path in ("/things/a", "/things/missing")
    ]
    asyncio.run(_asend(app, sent))
    expected = Counter((m, "404" if p.endswith("missing") else "200") for m, p in sent)
    text = generate_latest(metrics.registry).decode()
    for (method, status), count in expected.items():
        line = (
            f'tipline_http_requests_total{{method="{method}",route="/things/{{name}}",'
            f'status="{status}"}} {float(count)}'
        )
        assert line in text
    line = 'tipline_http_request_duration_seconds_count{route="/things/{name}"}'
    assert f"{line} {float(len(sent))}" in text
    assert len(app._children) == min(kept, len(expected))


async def _asend(app: MetricsMiddleware, sent: list[tuple[str, str]]) -> None:
    for method, path in sent:
        await _request(app, method, path)
