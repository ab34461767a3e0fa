"""NCMEC hash-sharing XML: ``<image>``/``<video>`` entries with fingerprints.

The shape is what the NCMEC hash-sharing API returns (and python-threatexchange
parses)::

    <queryResult>
      <images maxTimestamp="...">
        <image>
          <member id="42">Example ESP</member>
          <timestamp>2024-01-01T00:00:00.000Z</timestamp>
          <id>entry-1</id>
          <classification>A1</classification>
          <fingerprints><md5>...</md5><sha1>...</sha1><pdq>...</pdq><pdna>...</pdna></fingerprints>
        </image>
      </images>
      <videos>
        <video>... <fingerprints><md5>...</md5><tmk_pdqf>...</tmk_pdqf></fingerprints></video>
      </videos>
      <deletedImages><deletedImage>...</deletedImage></deletedImages>
    </queryResult>

Parsing is streamed with defusedxml's parser (no DTDs, entities or external
references) and a target that keeps only the current entry in memory. Fingerprint
types tipline cannot match on (PhotoDNA, TMK+PDQF, NetClean, Videntifier, SSVH...) are
listed in :attr:`ParsedEntry.unsupported` so the import counts and reports them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO
from xml.sax.saxutils import escape, quoteattr

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from tipline.banks.formats.entries import (
    ParsedEntry,
    ReadItem,
    WriteReport,
    check_entry_id,
    parse_signal,
)
from tipline.banks.model import BankEntry, BankSignal
from tipline.errors import ImportFormatError

_ENTRY_TAGS = {"image": "photo", "video": "video", "deletedimage": "photo", "deletedvideo": "video"}
#: (fingerprint tag, media) -> tipline signal type
_SIGNALS = {
    ("md5", "photo"): "md5",
    ("sha1", "photo"): "sha1",
    ("sha256", "photo"): "sha256",
    ("pdq", "photo"): "pdq",
    ("md5", "video"): "video_md5",
    ("sha256", "video"): "video_sha256",
    ("vpdq", "video"): "vpdq",
}
_TAGS = {v: k for k, v in _SIGNALS.items()}
_SOURCE = re.compile(r"^ncmec member (-?\d+)(?: \((.*)\))?$", re.S)
_CHUNK = 1 << 20


@dataclass(slots=True)
class _Entry:
    tag: str
    line: int
    depth: int
    fingerprints: list[tuple[str, str]] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


class _Target:
    """Collects one entry at a time from parser events."""

    def __init__(self, path: str | None) -> None:
        self.parser: DefusedXMLParser | None = None
        self.path = path
        self.stack: list[str] = []
        self.ready: list[ReadItem] = []
        self.entry: _Entry | None = None
        self.text: list[str] = []

    def _line(self) -> int:
        return int(self.parser.parser.CurrentLineNumber) if self.parser is not None else 0

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        local = tag.rsplit("}", 1)[-1].lower()
        self.stack.append(local)
        self.text = []
        if self.entry is None and local in _ENTRY_TAGS and len(self.stack) >= 2:
            self.entry = _Entry(local, self._line(), len(self.stack))
        elif (
            self.entry is not None and local == "member" and len(self.stack) == self.entry.depth + 1
        ):
            self.entry.fields["member_id"] = attrs.get("id", "")

    def data(self, text: str) -> None:
        if self.entry is not None:
            self.text.append(text)

    def end(self, tag: str) -> None:
        local = self.stack.pop() if self.stack else tag.lower()
        entry = self.entry
        if entry is None:
            return
        depth = entry.depth
        value = "".join(self.text).strip()
        self.text = []
        if len(self.stack) + 1 == depth:  # the entry element itself closed
            self.ready.append(self._finish(entry))
            self.entry = None
        elif len(self.stack) == depth + 1 and self.stack[-1] == "fingerprints":
            if value:
                entry.fingerprints.append((local, value))
        elif len(self.stack) == depth:
            if local in {"id", "classification", "timestamp"}:
                entry.fields[local] = value
            elif local == "member":
                entry.fields["member_name"] = value

    def close(self) -> None:
        return None

    def _finish(self, entry: _Entry) -> ReadItem:
        line = entry.line
        tag = entry.tag
        media = _ENTRY_TAGS[tag]
        try:
            raw_id = entry.fields.get("id")
            if not raw_id:
                raise ImportFormatError(f"<{tag}> without an <id>", path=self.path, line=line)
            entry_id = check_entry_id(raw_id, line=line, path=self.path)
            signals: list[BankSignal] = []
            unsupported: list[str] = []
            for name, value in entry.fingerprints:
                kind = _SIGNALS.get((name, media))
                if kind is None:
                    unsupported.append(f"{name.upper()} ({media})")
                    continue
                signal = parse_signal(kind, value, line=line, path=self.path)
                if signal not in signals:
                    signals.append(signal)
        except ImportFormatError as exc:
            return exc
        member_id = entry.fields.get("member_id", "")
        member_name = entry.fields.get("member_name", "")
        source = None
        if member_id or member_name:
            source = f"ncmec member {member_id or '?'}" + (
                f" ({member_name})" if member_name else ""
            )
        classification = entry.fields.get("classification", "").strip()
        return ParsedEntry(
            line=line,
            entry_id=entry_id,
            signals=tuple(signals),
            labels=(classification,) if classification else (),
            source=source,
            unsupported=tuple(unsupported),
            deleted=tag.startswith("deleted"),
            media=media,
            timestamp=entry.fields.get("timestamp") or None,
        )


def read(stream: IO[bytes], *, path: str | None = None) -> Iterator[ReadItem]:
    """Entries of an NCMEC hash-sharing XML document, streamed; errors per entry.

    A malformed document (bad XML, a DTD or entity) ends the read with one error naming
    the line; entries before it are still yielded.
    """
    target = _Target(path)
    parser = DefusedXMLParser(target=target, forbid_dtd=True)
    target.parser = parser
    while True:
        chunk = stream.read(_CHUNK)
        try:
            if chunk:
                parser.feed(chunk)
            else:
                parser.close()
        except (SyntaxError, DefusedXmlException, ValueError) as exc:
            yield from target.ready
            line = getattr(exc, "lineno", None) or target._line()
            yield ImportFormatError(f"malformed XML: {exc}", path=path, line=line)
            return
        yield from target.ready
        target.ready = []
        if not chunk:
            return


def write(entries: Iterable[BankEntry], out: IO[bytes]) -> WriteReport:
    """Write ``entries`` as an NCMEC-style XML document (images, then videos).

    An entry is a video when it has any video signal. The source written by
    :func:`read` (``ncmec member <id> (<name>)``) becomes the ``<member>`` again.
    Image entries are streamed; video entries are held until the images are written.
    """
    report = WriteReport()
    videos: list[BankEntry] = []
    out.write(b'<?xml version="1.0" encoding="UTF-8"?>\n<queryResult>\n<images>\n')
    for entry in entries:
        if any(_TAGS.get(s.type, ("", ""))[1] == "video" for s in entry.signals):
            videos.append(entry)
            continue
        _write_entry(out, entry, "image", report)
    out.write(b"</images>\n<videos>\n")
    for entry in videos:
        _write_entry(out, entry, "video", report)
    out.write(b"</videos>\n</queryResult>\n")
    return report


def _write_entry(out: IO[bytes], entry: BankEntry, tag: str, report: WriteReport) -> None:
    parts = [f"<{tag}>"]
    if entry.source is not None:
        member_id, member_name = "0", entry.source
        m = _SOURCE.match(entry.source)
        if m:
            member_id, member_name = m.group(1), m.group(2) or ""
        parts.append(f"<member id={quoteattr(member_id)}>{escape(member_name)}</member>")
    parts.append(f"<id>{escape(entry.entry_id)}</id>")
    if entry.labels:
        parts.append(f"<classification>{escape(entry.labels[0])}</classification>")
    parts.append("<fingerprints>")
    media = "video" if tag == "video" else "photo"
    for signal in entry.signals:
        mapped = _TAGS.get(signal.type)
        if mapped is None or mapped[1] != media:
            report.skip(signal.type)
            continue
        parts.append(f"<{mapped[0]}>{escape(signal.value)}</{mapped[0]}>")
    for label in entry.labels[1:]:
        report.skip(f"label {label}")
    parts.append(f"</fingerprints></{tag}>\n")
    out.write("".join(parts).encode())
    report.entries += 1
