"""Project VIC VICS JSON hash lists, streamed without loading the file.

The OData shape is ``{"odata.metadata": "...", "value": [ {media}, ... ]}`` (a bare
top-level array of media objects is accepted too). Per media object:

* ``MediaID`` -> entry id (required);
* ``MD5`` / ``SHA1`` (and ``SHA256`` when present) -> signals;
* ``Category`` -> label ``vics:<category>``; ``Tags`` (strings) -> further labels;
* ``PhotoDNA`` -> an unsupported fingerprint (counted and reported);
* any other field is listed in :attr:`ParsedEntry.ignored_fields` and reported.

Streaming: the text is decoded in 1 MiB chunks and each media object is decoded on its
own with :meth:`json.JSONDecoder.raw_decode`, so memory is one chunk plus one object.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tipline.banks.formats.entries import (
    ParsedEntry,
    ReadItem,
    WriteReport,
    check_entry_id,
    parse_signal,
)
from tipline.banks.model import BankEntry, BankSignal
from tipline.errors import ImportFormatError

_CHUNK = 1 << 20
#: Largest single JSON value accepted, in characters.
MAX_VALUE_CHARS = 16 * 1024 * 1024
_HASH_FIELDS = {"MD5": "md5", "SHA1": "sha1", "SHA256": "sha256"}
_UNSUPPORTED = {"PhotoDNA": "PhotoDNA"}
_HANDLED = {"MediaID", "Category", "Tags", *_HASH_FIELDS, *_UNSUPPORTED}
_WS = " \t\r\n"
SOURCE = "vics"
_CATEGORY = "vics:"


class _JsonStream:
    """A cursor over streamed JSON text that decodes one value at a time."""

    def __init__(self, stream: IO[bytes], path: str | None) -> None:
        self.stream = stream
        self.path = path
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.json = json.JSONDecoder()
        self.buf = ""
        self.pos = 0
        self.line = 1  # line number at self.pos
        self.eof = False

    def error(self, message: str) -> ImportFormatError:
        return ImportFormatError(message, path=self.path, line=self.line)

    def _fill(self) -> bool:
        if self.eof:
            return False
        data = self.stream.read(_CHUNK)
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise self.error(f"not UTF-8 text ({exc.reason})") from None
        if not data:
            self.eof = True
        self.buf = self.buf[self.pos :] + text
        self.pos = 0
        return bool(text) or not self.eof

    def _advance(self, to: int) -> None:
        self.line += self.buf.count("\n", self.pos, to)
        self.pos = to

    def peek(self) -> str:
        """The next non-space character ('' at the end)."""
        while True:
            n = len(self.buf)
            i = self.pos
            while i < n and self.buf[i] in _WS:
                i += 1
            self._advance(i)
            if i < n:
                return self.buf[i]
            if not self._fill():
                return ""

    def expect(self, chars: str) -> str:
        c = self.peek()
        if not c or c not in chars:
            shown = repr(c) if c else "end of file"
            raise self.error(f"expected one of {chars!r}, found {shown}")
        self._advance(self.pos + 1)
        return c

    def value(self) -> Any:
        """Decode the next JSON value, reading more text until it is complete."""
        self.peek()
        while True:
            try:
                obj, end = self.json.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if not self.eof and len(self.buf) - self.pos <= MAX_VALUE_CHARS:
                    self._fill()
                    continue
                if len(self.buf) - self.pos > MAX_VALUE_CHARS:
                    raise self.error(
                        f"JSON value longer than {MAX_VALUE_CHARS} characters"
                    ) from None
                self.line += self.buf.count("\n", self.pos, exc.pos)
                raise self.error(f"malformed JSON: {exc.msg}") from None
            if end == len(self.buf) and not self.eof:  # a number may continue
                self._fill()
                continue
            self._advance(end)
            return obj


def _items(js: _JsonStream) -> Iterator[tuple[int, Any]]:
    """(line, value) of each element of the media array."""
    first = js.expect("[{")
    if first == "{":
        while True:
            if js.peek() == "}":
                js.expect("}")
                return
            key = js.value()
            if not isinstance(key, str):
                raise js.error("expected an object key")
            js.expect(":")
            if key == "value" and js.peek() == "[":
                js.expect("[")
                break
            js.value()
            if js.expect(",}") == "}":
                raise js.error('no "value" array of media objects found')
    if js.peek() == "]":
        return
    while True:
        js.peek()
        line = js.line
        yield line, js.value()
        if js.expect(",]") == "]":
            return


def _entry(obj: Any, line: int, path: str | None) -> ReadItem:
    if not isinstance(obj, dict):
        return ImportFormatError("media item is not a JSON object", path=path, line=line)
    try:
        media_id = obj.get("MediaID")
        if media_id is None or isinstance(media_id, bool) or media_id == "":
            raise ImportFormatError("media item without MediaID", path=path, line=line)
        entry_id = check_entry_id(str(media_id), line=line, path=path)
        signals: list[BankSignal] = []
        for field, kind in _HASH_FIELDS.items():
            value = obj.get(field)
            if value in (None, ""):
                continue
            if not isinstance(value, str):
                raise ImportFormatError(f"{field} is not a string", path=path, line=line)
            signals.append(parse_signal(kind, value, line=line, path=path))
        unsupported = tuple(name for f, name in _UNSUPPORTED.items() if obj.get(f))
        if not signals:
            raise ImportFormatError(f"media {entry_id} has no MD5 or SHA1", path=path, line=line)
        labels: list[str] = []
        category = obj.get("Category")
        if category is not None and category != "":
            labels.append(f"{_CATEGORY}{category}")
        tags = obj.get("Tags") or []
        if isinstance(tags, list):
            labels.extend(str(t) for t in tags if isinstance(t, str | int) and str(t).strip())
    except ImportFormatError as exc:
        return exc
    return ParsedEntry(
        line=line,
        entry_id=entry_id,
        signals=tuple(signals),
        labels=tuple(labels),
        source=SOURCE,
        unsupported=unsupported,
        ignored_fields=tuple(sorted(k for k in obj if k not in _HANDLED)),
        media="photo",
    )


def read(stream: IO[bytes], *, path: str | None = None) -> Iterator[ReadItem]:
    """Entries of a VICS JSON file, streamed; per-item errors, and one final error if
    the JSON structure itself breaks (items before it are still yielded)."""
    js = _JsonStream(stream, path)
    try:
        for line, obj in _items(js):
            yield _entry(obj, line, path)
    except ImportFormatError as exc:
        yield exc


def write(entries: Iterable[BankEntry], out: IO[bytes]) -> WriteReport:
    """Write ``entries`` as VICS JSON (one media object per line)."""
    report = WriteReport()
    out.write(b'{"odata.metadata": "tipline export (VICS JSON)", "value": [\n')
    first = True
    for entry in entries:
        item: dict[str, Any] = {
            "MediaID": int(entry.entry_id)
            if entry.entry_id.isascii()
            and entry.entry_id.isdigit()
            and str(int(entry.entry_id)) == entry.entry_id
            else entry.entry_id
        }
        tags: list[str] = []
        for label in entry.labels:
            if label.startswith(_CATEGORY) and "Category" not in item:
                raw = label[len(_CATEGORY) :]
                item["Category"] = int(raw) if raw.isdigit() else raw
            else:
                tags.append(label)
        if tags:
            item["Tags"] = tags
        for signal in entry.signals:
            field = next((f for f, k in _HASH_FIELDS.items() if k == signal.type), None)
            if field is None or field in item:
                report.skip(signal.type)
                continue
            item[field] = signal.value
        out.write((b"" if first else b",\n") + json.dumps(item).encode())
        first = False
        report.entries += 1
    out.write(b"\n]}\n")
    return report
