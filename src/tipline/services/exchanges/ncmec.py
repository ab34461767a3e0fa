"""NCMEC hash sharing API v2: an exchange adapter reading entries by time window.

``GET <base>/v2/entries?from=<UTC>&to=<UTC>`` answers a ``queryResult`` document of
``<image>``/``<video>`` entries (and ``<deletedImage>``/``<deletedVideo>`` tombstones)
with their fingerprints and classification, and a ``<paging><next>`` path for the rest
of the window. Entries do NOT arrive in time order, so the time checkpoint moves only
when a window is exhausted; within a window the checkpoint keeps the ``next`` path
together with the window's bounds (a ``next`` is only valid with the bounds it was given
for). Configuration: ``environment`` (or an explicit ``url``), ``username``,
``window_seconds``, ``start`` (unix time to begin from), ``banks`` (classification ->
bank). The password is the credential. Entry ids are ``<member id>-<entry id>``; labels
are the classification and ``ncmec-member:<id>``. Fingerprints tipline cannot match
(PhotoDNA, TMK+PDQF, NetClean, Videntifier, SSVH, ...) are counted per type. An empty
window doubles the next one (up to a year), so a first sync from ``start`` = 0 does not
ask day by day since 1970.

XML is parsed with defusedxml (no DTDs, entities or external references).
"""

from __future__ import annotations

import base64
import io
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from tipline.banks.formats import ncmec as ncmec_xml
from tipline.banks.formats.entries import ParsedEntry
from tipline.errors import ConfigError, ExchangeError
from tipline.services.exchanges.http import Fetcher
from tipline.services.exchanges.model import (
    CheckpointJson,
    Delta,
    ExchangeSpec,
    Page,
    check_fields,
)

KIND = "ncmec"
#: NCMEC's environments (base URLs as NCMEC documents them)
ENVIRONMENTS: dict[str, str] = {
    "industry": "https://report.cybertip.org/hashsharing",
    "industry-exploitative": "https://report.cybertip.org/exploitative-hashsharing",
    "ngo": "https://hashsharing.ncmec.org/npo",
    "ngo-exploitative": "https://hashsharing.ncmec.org/exploitative",
    "test-industry": "https://exttest.cybertip.org/hashsharing",
    "test-industry-exploitative": "https://exttest.cybertip.org/exploitative-hashsharing",
    "test-ngo": "https://hashsharing-test.ncmec.org/npo",
}
_TIME = "%Y-%m-%dT%H:%M:%SZ"
_NS = "https://hashsharing.ncmec.org/hashsharing/v2"
#: the window read at once when none is configured (one day)
DEFAULT_WINDOW = 86_400
#: the longest window an empty stretch grows to (a year)
MAX_WINDOW = 366 * 86_400
#: entries newer than this many seconds are left for the next sync (still settling)
SETTLE_SECONDS = 60


def _stamp(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime(_TIME)


def _unix(stamp: str | None) -> int:
    """Unix seconds of an NCMEC timestamp (``2017-10-24T15:00:00Z``, fractions allowed);
    0 when absent or unreadable (such an event never overrides a stamped one)."""
    if not stamp:
        return 0
    try:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class NcmecCheckpoint:
    """Where a sync stands (stored as JSON on the exchange; see the module docstring)."""

    start: int
    to: int | None
    next: str | None

    @classmethod
    def from_json(cls, exchange: str, data: CheckpointJson) -> NcmecCheckpoint:
        """The stored form read back (ConfigError when it is not one)."""
        f = check_fields(
            exchange,
            KIND,
            data,
            {"from": (int,), "to": (int, type(None)), "next": (str, type(None))},
        )
        return cls(f["from"], f["to"], f["next"])

    def as_json(self) -> dict[str, Any]:
        """The stored form."""
        return {"from": self.start, "to": self.to, "next": self.next}


def check_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The stored config of an NCMEC exchange (ConfigError when unusable)."""
    env = str(config.get("environment") or "")
    url = str(config.get("url") or "")
    if not url:
        if env not in ENVIRONMENTS:
            raise ConfigError(
                f"an NCMEC exchange needs --environment ({', '.join(ENVIRONMENTS)}) or --url"
            )
        url = ENVIRONMENTS[env]
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc or parts.query:
        raise ConfigError(f"not a usable NCMEC base URL: {url!r}")
    username = str(config.get("username") or "")
    if not username:
        raise ConfigError("an NCMEC exchange needs --username (the password is the credential)")
    window = int(config.get("window_seconds") or DEFAULT_WINDOW)
    if not 60 <= window <= 366 * 86_400:
        raise ConfigError("window_seconds must be between 60 and 31,622,400")
    start = int(config.get("start") or 0)
    banks = {str(k): str(v) for k, v in dict(config.get("banks") or {}).items()}
    reason = str(config.get("downvote_reason") or "") or None
    if reason is not None and not re.fullmatch(r"[0-9A-Za-z-]{1,64}", reason):
        raise ConfigError("downvote_reason must be NCMEC's reason id (a GUID)")
    return {
        "downvote_reason": reason,
        "environment": env or "custom",
        "url": url.rstrip("/"),
        "username": username,
        "window_seconds": window,
        "start": max(0, start),
        "banks": banks,
    }


def _root(body: bytes) -> Any:
    """The root element of an XML answer (defusedxml; ValueError when malformed)."""
    try:
        return SafeET.fromstring(body, forbid_dtd=True)
    except (SyntaxError, DefusedXmlException) as exc:
        raise ValueError(f"malformed XML: {exc}") from None


def _members(body: bytes) -> list[dict[str, Any]]:
    """Every ``<member id="...">name</member>`` of a document."""
    root = _root(body)
    out: list[dict[str, Any]] = []
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "member" and el.get("id"):
            out.append({"id": str(el.get("id")), "name": (el.text or "").strip()})
    return out


def _reasons(body: bytes) -> dict[str, str]:
    """guid -> name of the ``availableFeedbackReasons`` document."""
    root = _root(body)
    return {
        str(el.get("guid")): str(el.get("name") or "")
        for el in root.iter()
        if el.tag.rsplit("}", 1)[-1] == "reason" and el.get("guid")
    }


def _paging_next(body: bytes) -> str | None:
    """The ``<paging><next>`` path of a page (ValueError when the page is not XML)."""
    root = _root(body)
    if root.tag.rsplit("}", 1)[-1] != "queryResult":
        raise ValueError(f"not a queryResult document: <{root.tag}>")
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "next" and el.text and el.text.strip():
            return str(el.text).strip()
    return None


class NcmecAdapter:
    """Reads NCMEC entries window by window (see the module docstring)."""

    def __init__(
        self,
        spec: ExchangeSpec,
        fetcher: Fetcher,
        *,
        password: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        config = check_config(spec.config)
        self.spec = spec
        self.base = config["url"]
        self.window = int(config["window_seconds"])
        self.start = int(config["start"])
        self.banks: dict[str, str] = config["banks"]
        self.downvote_reason: str | None = config["downvote_reason"]
        token = base64.b64encode(f"{config['username']}:{password}".encode()).decode()
        fetcher.headers = {**fetcher.headers, "Authorization": f"Basic {token}"}
        self.fetcher = fetcher
        self.clock = clock

    def close(self) -> None:
        """Close connections."""
        self.fetcher.close()

    def probe(self) -> dict[str, Any]:
        """Who we are at NCMEC (``/v2/status``) and the members sharing (``/v2/members``)."""
        status = self.fetcher.get_parsed(f"{self.base}/v2/status", None, _members)
        members = self.fetcher.get_parsed(f"{self.base}/v2/members", None, _members)
        me = status[0] if status else None
        return {"member": me, "members": members}

    def send_vote(self, entry_id: str, fingerprint: str, vote: str) -> None:
        """Send an up or down vote on one fingerprint of an entry (``<member>-<id>``).
        A down vote carries the configured reason id, or the only reason NCMEC offers
        for that fingerprint type (ExchangeError naming the choices otherwise)."""
        member, sep, raw = entry_id.partition("-")
        if not sep or not member.isdigit() or not raw:
            raise ExchangeError(f"not an NCMEC entry id: {entry_id!r}")
        if vote == "up":
            inner = "<affirmative/>"
        else:
            guid = self._reason(fingerprint)
            inner = f"<negative><reasonIds><guid>{guid}</guid></reasonIds></negative>"
        body = f'<feedbackSubmission xmlns="{_NS}">{inner}</feedbackSubmission>'
        url = f"{self.base}/v2/entries/{member}/{quote(raw, safe='')}/{fingerprint}/feedback"
        self.fetcher.put(url, body.encode(), "application/xml; charset=utf-8")

    def _reason(self, fingerprint: str) -> str:
        if self.downvote_reason:
            return self.downvote_reason
        reasons = self.fetcher.get_parsed(
            f"{self.base}/v2/feedback/{fingerprint}/reasons", None, _reasons
        )
        if len(reasons) != 1:
            names = ", ".join(f"{g} ({n})" for g, n in reasons.items()) or "none"
            raise ExchangeError(
                f"exchange {self.spec.name!r}: choose a down-vote reason for {fingerprint} "
                f"(config downvote_reason): {names}"
            )
        return next(iter(reasons))

    def _read(self, body: bytes) -> tuple[list[ParsedEntry], int, str | None]:
        nxt = _paging_next(body)
        entries: list[ParsedEntry] = []
        invalid = 0
        for item in ncmec_xml.read(io.BytesIO(body)):
            if isinstance(item, ParsedEntry):
                entries.append(item)
            elif item.message.startswith("malformed XML"):
                raise ValueError(item.message)
            else:
                invalid += 1
        return entries, invalid, nxt

    def _delta(self, entry: ParsedEntry) -> Delta:
        member = ""
        if entry.source and entry.source.startswith("ncmec member "):
            member = entry.source.split()[2]
        entry_id = f"{member}-{entry.entry_id}" if member else str(entry.entry_id)
        labels = [*entry.labels, *([f"ncmec-member:{member}"] if member else [])]
        bank = self.banks.get(entry.labels[0]) if entry.labels else None
        ts = _unix(entry.timestamp)
        if entry.deleted:
            return Delta(entry_id, removed=True, bank=bank, source_ts=ts)
        return Delta(
            entry_id,
            entry.signals,
            tuple(labels),
            unsupported=entry.unsupported,
            bank=bank,
            source_ts=ts,
        )

    def fetch(self, checkpoint: CheckpointJson | None) -> Iterator[Page]:
        """Pages of every window from the checkpoint up to a minute ago."""
        start = {"from": self.start, "to": None, "next": None}
        cp = NcmecCheckpoint.from_json(self.spec.name, checkpoint or start).as_json()
        horizon = int(self.clock()) - SETTLE_SECONDS
        window = self.window
        while True:
            frm, to, nxt = int(cp["from"]), cp.get("to"), cp.get("next")
            if to is None:
                if frm >= horizon:
                    return
                to = min(frm + window, horizon)
            if nxt:
                if not str(nxt).startswith("/v2/entries?"):
                    raise ExchangeError(
                        f"exchange {self.spec.name!r}: refusing a paging link outside /v2/entries"
                    )
                url, params = self.base + str(nxt), None
            else:
                url = f"{self.base}/v2/entries"
                params = {"from": _stamp(frm), "to": _stamp(int(to))}
            entries, invalid, following = self.fetcher.get_parsed(url, params, self._read)
            if following:
                cp = {"from": frm, "to": int(to), "next": following}
                source_time = None
            else:
                cp = {"from": int(to), "to": None, "next": None}
                source_time = datetime.fromtimestamp(int(to), UTC)
            # an empty window doubles the next one (years without entries cost a few
            # requests, not one a day); any entry brings it back to the configured size
            empty = not entries and not invalid and not following and not nxt
            window = min(window * 2, MAX_WINDOW) if empty else self.window
            yield Page(
                [self._delta(e) for e in entries],
                dict(cp),
                source_time=source_time,
                invalid=invalid,
            )
