"""Prometheus metrics: request counts and latencies by route, hashes, lookups, matches.

Each app gets its own registry (tests build many apps in one process). With several
uvicorn workers, ``tipline serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` so that a scrape
of any worker sums every worker's values.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The service's metric objects, registered on one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tipline_http_requests",
            "HTTP requests answered, by method, route template and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tipline_http_request_duration_seconds",
            "HTTP request duration in seconds, by route template",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.hashed = Counter(
            "tipline_media_hashed",
            "Media items hashed by the API, by media kind",
            ["media"],
            registry=self.registry,
        )
        self.lookups = Counter(
            "tipline_lookups",
            "Hash lookups against the banks, by signal type",
            ["signal_type"],
            registry=self.registry,
        )
        self.matches = Counter(
            "tipline_matches",
            "Matches returned, by signal type",
            ["signal_type"],
            registry=self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type (all workers in multiprocess mode)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


#: label sets whose metric children :class:`MetricsMiddleware` keeps at hand (the method
#: is the client's to choose: past this many, children are looked up per request)
_KEPT_LABEL_SETS = 1024


class MetricsMiddleware:
    """Pure ASGI middleware counting every HTTP response by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # The children of each label set, looked up once: ``labels()`` validates and
        # locks per call, 4x the cost of counting (~12 us of event loop per request).
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # The template ("/c/bank/{bank_name}"), never the raw path: bounded label values.
            template = getattr(route, "path", None) or "unmatched"
            key = (scope["method"], template, str(status))
            children = self._children.get(key)
            if children is None:
                children = (
                    self.metrics.requests.labels(*key),
                    self.metrics.latency.labels(template),
                )
                if len(self._children) < _KEPT_LABEL_SETS:
                    self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - start)
