"""tipline's own hash feed, subscriber side: an exchange adapter that verifies every page.

Configuration: ``url`` (the publisher's ``/v1/feeds/<bank>``), ``public_key`` (base64,
from the publisher's ``tipline exchange keygen`` or ``feed-key``); the credential is an
API key of the publisher. The checkpoint is ``{"instance", "seq", "issued_at"}``.

A page is refused, and nothing of it applied, when its signature is not by the
configured key over exactly its contents, when it answers another request (its
``after`` is not our checkpoint, or it names another feed), when it comes from another
database instance than the pages before it, or when it was issued before the last page
we applied (a replay).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from tipline.banks.model import BankSignal
from tipline.errors import ConfigError, FeedRefusedError, HashFormatError
from tipline.services.exchanges.feed import FEED_FORMAT
from tipline.services.exchanges.http import Fetcher
from tipline.services.exchanges.model import (
    CheckpointJson,
    Delta,
    ExchangeSpec,
    Page,
    check_fields,
)
from tipline.services.exchanges.signing import VerifyKey
from tipline.signals.base import parse_typed_hash, signal_types

KIND = "tipline-feed"
PAGE_SIZE = 1_000


@dataclass(frozen=True, slots=True)
class FeedCheckpoint:
    """Where a feed sync stands: the publisher's database instance, the change sequence
    applied, and when the last applied page was issued."""

    instance: str | None
    seq: int
    issued_at: str | None

    @classmethod
    def from_json(cls, exchange: str, data: CheckpointJson | None) -> FeedCheckpoint:
        """The stored form read back (ConfigError when it is not one)."""
        if data is None:
            return cls(None, 0, None)
        f = check_fields(
            exchange,
            KIND,
            data,
            {"instance": (str, type(None)), "seq": (int,), "issued_at": (str, type(None))},
        )
        return cls(f["instance"], f["seq"], f["issued_at"])

    def as_json(self) -> dict[str, Any]:
        """The stored form."""
        return {"instance": self.instance, "seq": self.seq, "issued_at": self.issued_at}


def check_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The stored config of a feed exchange (ConfigError on a bad URL or key)."""
    url = str(config.get("url") or "")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConfigError("a tipline feed needs --url http(s)://host/v1/feeds/<bank>")
    key = VerifyKey.from_base64(str(config.get("public_key") or ""))
    feed = str(config.get("feed") or parts.path.rstrip("/").rsplit("/", 1)[-1])
    if not feed:
        raise ConfigError("cannot tell the feed name from the URL; give --feed")
    return {"url": url, "public_key": key.base64(), "feed": feed}


def _parse_time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise FeedRefusedError("feed page refused: no issued_at")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise FeedRefusedError("feed page refused: bad issued_at") from None


class FeedAdapter:
    """Syncs a tipline feed (see the module docstring)."""

    def __init__(self, spec: ExchangeSpec, fetcher: Fetcher, *, page_size: int = PAGE_SIZE):
        config = check_config(spec.config)
        self.spec = spec
        self.url = config["url"]
        self.feed = config["feed"]
        self.key = VerifyKey.from_base64(config["public_key"])
        self.fetcher = fetcher
        self.page_size = page_size

    def close(self) -> None:
        """Close connections."""
        self.fetcher.close()

    def fetch(self, checkpoint: CheckpointJson | None) -> Iterator[Page]:
        """Pages after ``checkpoint`` until the publisher has no more."""
        cp = FeedCheckpoint.from_json(self.spec.name, checkpoint).as_json()
        while True:
            params = {"after": str(int(cp["seq"])), "limit": str(self.page_size)}
            document = self.fetcher.get_parsed(self.url, params, json.loads)
            page = self._checked(self.key.verify(document), cp)
            deltas = [self._delta(item) for item in page["items"]]
            cp = {"instance": page["instance"], "seq": page["next"], "issued_at": page["issued_at"]}
            yield Page(deltas, dict(cp), source_time=_parse_time(page["issued_at"]))
            if not page["more"] or not deltas:
                return

    def _checked(self, page: dict[str, Any], cp: Mapping[str, Any]) -> dict[str, Any]:
        """``page`` when it answers our request in order; FeedRefusedError otherwise."""
        if page.get("format") != FEED_FORMAT:
            raise FeedRefusedError(f"feed page refused: unknown format {page.get('format')!r}")
        if page.get("feed") != self.feed:
            raise FeedRefusedError(
                f"feed page refused: it is of feed {page.get('feed')!r}, not {self.feed!r}"
            )
        if page.get("after") != cp["seq"]:
            raise FeedRefusedError(
                f"feed page refused: it answers after={page.get('after')!r}, "
                f"we asked after={cp['seq']} (replayed or misrouted)"
            )
        if cp["instance"] is not None and page.get("instance") != cp["instance"]:
            raise FeedRefusedError(
                "feed page refused: the publisher's database changed (instance id); "
                "reset this exchange to sync from scratch"
            )
        issued = _parse_time(page.get("issued_at"))
        if cp["issued_at"] is not None and issued < _parse_time(cp["issued_at"]):
            raise FeedRefusedError("feed page refused: issued before the last applied page")
        items, nxt = page.get("items"), page.get("next")
        if not isinstance(items, list) or not isinstance(nxt, int) or nxt < cp["seq"]:
            raise FeedRefusedError("feed page refused: malformed items or next")
        for item in items:
            seq = item.get("seq") if isinstance(item, dict) else None
            if not isinstance(seq, int) or not cp["seq"] < seq <= nxt:
                raise FeedRefusedError("feed page refused: an item outside the page's range")
        if not isinstance(page.get("more"), bool):
            raise FeedRefusedError("feed page refused: malformed more")
        return page

    def _delta(self, item: Mapping[str, Any]) -> Delta:
        entry_id = item.get("id")
        if not isinstance(entry_id, str) or not entry_id:
            raise FeedRefusedError("feed page refused: an item without an id")
        if item.get("removed") is True:
            return Delta(entry_id, removed=True)
        known = signal_types()
        signals, unsupported = [], []
        for text in item.get("signals") or []:
            kind = str(text).partition(":")[0].strip().lower()
            if kind not in known:
                unsupported.append(kind)
                continue
            try:
                signals.append(parse_typed_hash(str(text)))
            except HashFormatError as exc:
                raise FeedRefusedError(f"feed page refused: {exc.message}") from None
        labels = tuple(str(x) for x in item.get("labels") or [])
        return Delta(
            entry_id,
            tuple(BankSignal(t, v) for t, v in signals),
            labels,
            unsupported=tuple(unsupported),
        )
