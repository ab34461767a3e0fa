"""HTTP for exchange adapters: bounded GETs with retries on what a retry can fix.

Timeouts, dropped connections, 5xx answers and 429 (honouring ``Retry-After``) are
retried with exponential backoff and jitter, up to ``attempts`` tries; any other 4xx is
final. Bodies are read up to ``max_bytes``. The credential goes in a header and never
into an error message or a log line (httpx's request logging is silenced by the CLI).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from tipline._optional import require
from tipline.errors import ExchangeError, SourceUnavailableError

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")

#: statuses a retry may fix
RETRYABLE = frozenset({429, 500, 502, 503, 504})
#: longest Retry-After honoured, seconds (a longer one fails the attempt run)
MAX_RETRY_AFTER = 300.0


@dataclass
class Fetcher:
    """GETs for one exchange. ``sleep`` is injectable so tests never wait for real."""

    exchange: str
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    attempts: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    max_bytes: int = 64 * 1024**2
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    client: httpx.Client | None = None
    #: retries made so far (shown in sync status)
    retries: int = 0

    def _client(self) -> httpx.Client:
        if self.client is None:
            httpx_mod = require("httpx")
            self.client = httpx_mod.Client(timeout=self.timeout, follow_redirects=False)
        return self.client

    def close(self) -> None:
        """Close the connection pool."""
        if self.client is not None:
            self.client.close()
            self.client = None

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                wanted = float(retry_after)
            except ValueError:
                wanted = -1.0
            if 0 <= wanted <= MAX_RETRY_AFTER:
                return wanted
        base = min(self.backoff_max, self.backoff_base * float(2 ** (attempt - 1)))
        return base * (0.5 + self.rng.random() / 2)

    def get(self, url: str, params: Mapping[str, str] | None = None) -> bytes:
        """The body of a 200 answer; ExchangeError when every attempt failed."""
        return self.get_parsed(url, params, lambda body: body)

    def get_parsed(
        self, url: str, params: Mapping[str, str] | None, parse: Callable[[bytes], T]
    ) -> T:
        """``parse`` of the body of a 200 answer. A ``ValueError`` from ``parse`` (a
        truncated or garbled page) is retried like a 5xx."""
        return self.request("GET", url, params, parse)

    def put(self, url: str, content: bytes, content_type: str) -> bytes:
        """PUT ``content``; the body of a 2xx answer (retried like a GET: the receivers
        of these PUTs, NCMEC's feedback, treat a repeated vote as the same vote)."""
        return self.request(
            "PUT", url, None, lambda body: body, content=content, content_type=content_type
        )

    def request(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        parse: Callable[[bytes], T],
        *,
        content: bytes | None = None,
        content_type: str | None = None,
    ) -> T:
        """One call with the retry rules of the module docstring."""
        httpx_mod = require("httpx")
        headers = dict(self.headers)
        if content_type is not None:
            headers["Content-Type"] = content_type
        last = "no attempt made"
        for attempt in range(1, self.attempts + 1):
            retry_after: str | None = None
            try:
                with self._client().stream(
                    method, url, params=params, headers=headers, content=content
                ) as answer:
                    if answer.status_code == 200 or (method != "GET" and answer.is_success):
                        body = self._read(answer)
                        try:
                            return parse(body)
                        except ValueError as exc:
                            last = f"unreadable page ({str(exc)[:200]})"
                    else:
                        last = f"HTTP {answer.status_code}"
                    if not answer.is_success and answer.status_code not in RETRYABLE:
                        raise ExchangeError(
                            f"exchange {self.exchange!r}: the source answered {last}"
                        )
                    retry_after = answer.headers.get("retry-after")
            except httpx_mod.TimeoutException:
                last = "timed out"
            except httpx_mod.TransportError as exc:
                last = f"connection failed ({type(exc).__name__})"
            if attempt < self.attempts:
                self.retries += 1
                self.sleep(self._delay(attempt, retry_after))
        raise SourceUnavailableError(
            f"exchange {self.exchange!r}: the source failed {self.attempts} times (last: {last})"
        )

    def _read(self, answer: httpx.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in answer.iter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise ExchangeError(
                    f"exchange {self.exchange!r}: a page is larger than {self.max_bytes} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)
