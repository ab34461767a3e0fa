"""Meta ThreatExchange (Graph API): an exchange adapter reading a privacy group's threat
updates (PDQ and MD5 descriptors) since a time.

``GET <base>/<privacy group>/threat_updates?start_time=&stop_time=&types=&fields=``
answers JSON ``{"data": [...], "paging": {"next": <url>}}``; each item has the
indicator, its type (``HASH_PDQ``, ``HASH_MD5``, ...), ``last_updated``,
``should_delete`` and ``tags``. Like NCMEC's windows, a run reads up to a fixed
``stop_time`` and only then moves the time checkpoint; the paging link is kept with it.
The token travels in the ``Authorization`` header, never in a URL: ``access_token`` is
stripped from paging links before one is stored, and a link to another host is refused.
Configuration: ``privacy_group``, ``url`` (Graph API base), ``types``, ``start``.
Entry ids are ``te-<indicator id>``; labels are the tags.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tipline.banks.model import BankSignal
from tipline.errors import ConfigError, ExchangeError, HashFormatError
from tipline.services.exchanges.http import Fetcher
from tipline.services.exchanges.model import (
    CheckpointJson,
    Delta,
    ExchangeSpec,
    Page,
    check_fields,
)
from tipline.signals.base import parse_typed_hash

KIND = "threatexchange"
DEFAULT_URL = "https://graph.facebook.com/v21.0"
#: ThreatExchange indicator type -> tipline signal type
TYPES: dict[str, str] = {"HASH_PDQ": "pdq", "HASH_MD5": "md5"}
FIELDS = "id,indicator,type,creation_time,last_updated,should_delete,tags,status"
SETTLE_SECONDS = 60
PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class TeCheckpoint:
    """Where a sync stands (stored as JSON on the exchange; see the module docstring)."""

    since: int
    stop: int | None
    next: str | None

    @classmethod
    def from_json(cls, exchange: str, data: CheckpointJson) -> TeCheckpoint:
        """The stored form read back (ConfigError when it is not one)."""
        f = check_fields(
            exchange,
            KIND,
            data,
            {"since": (int,), "stop": (int, type(None)), "next": (str, type(None))},
        )
        return cls(f["since"], f["stop"], f["next"])

    def as_json(self) -> dict[str, Any]:
        """The stored form."""
        return {"since": self.since, "stop": self.stop, "next": self.next}


def check_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The stored config of a ThreatExchange exchange (ConfigError when unusable)."""
    try:
        group = int(config.get("privacy_group") or 0)
    except (TypeError, ValueError):
        group = 0
    if group <= 0:
        raise ConfigError("a ThreatExchange exchange needs --privacy-group (a positive id)")
    url = str(config.get("url") or DEFAULT_URL).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc or parts.query:
        raise ConfigError(f"not a usable Graph API base URL: {url!r}")
    types = [str(t).upper() for t in (config.get("types") or sorted(TYPES))]
    unknown = sorted(set(types) - set(TYPES))
    if unknown:
        raise ConfigError(f"unsupported ThreatExchange types {unknown}; known: {sorted(TYPES)}")
    return {
        "privacy_group": group,
        "url": url,
        "types": types,
        "start": max(0, int(config.get("start") or 0)),
    }


def _without_token(link: str) -> str:
    parts = urlsplit(link)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    kept = [(k, v) for k, v in query if k != "access_token"]
    return urlunsplit(parts._replace(query=urlencode(kept)))


class ThreatExchangeAdapter:
    """Reads threat updates (see the module docstring)."""

    def __init__(
        self,
        spec: ExchangeSpec,
        fetcher: Fetcher,
        *,
        token: str,
        clock: Callable[[], float] = time.time,
        page_size: int = PAGE_SIZE,
    ) -> None:
        config = check_config(spec.config)
        self.spec = spec
        self.base = config["url"]
        self.group = int(config["privacy_group"])
        self.types: list[str] = config["types"]
        self.start = int(config["start"])
        fetcher.headers = {**fetcher.headers, "Authorization": f"OAuth {token}"}
        self.fetcher = fetcher
        self.clock = clock
        self.page_size = page_size

    def close(self) -> None:
        """Close connections."""
        self.fetcher.close()

    def _link(self, link: Any) -> str | None:
        if not link:
            return None
        text = str(link)
        own, other = urlsplit(self.base), urlsplit(text)
        if (other.scheme, other.netloc) != (own.scheme, own.netloc):
            raise ExchangeError(
                f"exchange {self.spec.name!r}: refusing a paging link to another host"
            )
        return _without_token(text)

    def _delta(self, item: dict[str, Any]) -> Delta:
        entry_id = f"te-{item['id']}"
        ts = int(item.get("last_updated") or 0)
        tags = item.get("tags") or []
        if isinstance(tags, dict):  # the Graph API may wrap lists as {"data": [...]}
            tags = tags.get("data") or []
        labels = tuple(str(t.get("text") if isinstance(t, dict) else t) for t in tags)
        if item.get("should_delete"):
            return Delta(entry_id, removed=True, source_ts=ts)
        kind = TYPES.get(str(item.get("type") or ""))
        if kind is None:
            return Delta(entry_id, unsupported=(str(item.get("type")),), source_ts=ts)
        try:
            signal = BankSignal(*parse_typed_hash(f"{kind}:{item.get('indicator', '')}"))
        except HashFormatError:
            return Delta(entry_id, unsupported=(f"invalid {item.get('type')}",), source_ts=ts)
        return Delta(entry_id, (signal,), labels, source_ts=ts)

    def _parse(self, body: bytes) -> tuple[list[Delta], int, str | None]:
        doc = json.loads(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            raise ValueError("not a threat_updates answer")
        nxt = self._link((doc.get("paging") or {}).get("next"))
        deltas: list[Delta] = []
        invalid = 0
        for item in doc["data"]:
            if isinstance(item, dict) and item.get("id"):
                deltas.append(self._delta(item))
            else:
                invalid += 1
        return deltas, invalid, nxt

    def fetch(self, checkpoint: CheckpointJson | None) -> Iterator[Page]:
        """Updates since the checkpoint up to a minute ago."""
        start = {"since": self.start, "stop": None, "next": None}
        cp = TeCheckpoint.from_json(self.spec.name, checkpoint or start).as_json()
        since, stop, nxt = int(cp["since"]), cp.get("stop"), cp.get("next")
        if stop is None:
            stop = int(self.clock()) - SETTLE_SECONDS
            if since >= stop:
                return
        while True:
            if nxt:
                url, params = str(self._link(nxt)), None
            else:
                url = f"{self.base}/{self.group}/threat_updates"
                params = {
                    "start_time": str(since),
                    "stop_time": str(stop),
                    "types": ",".join(self.types),
                    "fields": FIELDS,
                    "limit": str(self.page_size),
                }
            deltas, invalid, nxt = self.fetcher.get_parsed(url, params, self._parse)
            if nxt:
                cp = {"since": since, "stop": int(stop), "next": nxt}
                yield Page(deltas, dict(cp), invalid=invalid)
                continue
            cp = {"since": int(stop), "stop": None, "next": None}
            done = datetime.fromtimestamp(int(stop), UTC)
            yield Page(deltas, dict(cp), source_time=done, invalid=invalid)
            return
