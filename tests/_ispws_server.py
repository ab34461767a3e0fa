"""A real HTTP server on 127.0.0.1 speaking the documented ISPWS flow (see
../shared/reference/cybertipline/PROTOCOL.md), validating every XML body against NCMEC's
schema, with optional fault injection. A test stand-in until the clearinghouse intake
serves the same paths.

Faults (decided per request from a seeded RNG, before anything is done):
``500_before`` / ``drop_before`` (nothing done), ``500_after`` / ``drop_after`` /
``timeout_after`` (the request took effect, the answer is lost), ``garbage_after``
(took effect, answered with a broken document), ``bad_encoding_after`` (took effect,
answered with a body that claims gzip and is not: the client cannot decode it).
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import ssl
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from lxml import etree

from tipline.services.reports.builder import REFERENCE_PREFIX, schema_bytes

MAX_BODY = 64 * 1024 * 1024
FAULT_KINDS = ("500_before", "500_after", "drop_before", "drop_after", "timeout_after")


@dataclass
class RemoteFile:
    file_id: str
    name: str
    md5: str
    size: int
    details: bytes | None = None


@dataclass
class RemoteReport:
    id: int
    ref: str | None
    xml: bytes
    files: dict[str, RemoteFile] = field(default_factory=dict)
    finished: int = 0
    retracted: bool = False


@dataclass
class Faults:
    rate: float = 0.0
    seed: int = 0
    kinds: tuple[str, ...] = FAULT_KINDS
    hold_seconds: float = 2.0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.counts: dict[str, int] = {}

    def pick(self, path: str = "") -> str | None:
        """The fault for one request to ``path`` (None: answer normally)."""
        if self.rate <= 0 or self.rng.random() >= self.rate:
            return None
        kind = self.rng.choice(self.kinds)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return kind


class Receiver:
    """The receiver's state; every change under one lock."""

    def __init__(self, username: str, password: str, faults: Faults, schema: bytes) -> None:
        self.username = username
        self.password = password
        self.faults = faults
        self.lock = threading.Lock()
        self.reports: dict[int, RemoteReport] = {}
        self.next_id = 1_000_001
        self.requests = 0
        self.rejections: list[str] = []
        #: answer every upload with a wrong MD5 (a receiver that mangles files)
        self.wrong_md5 = False
        self.stop = threading.Event()
        parser = etree.XMLParser(resolve_entities=False, no_network=True)
        self.schema = etree.XMLSchema(etree.fromstring(schema, parser))
        self.schema_lock = threading.Lock()

    def open_reports(self) -> list[RemoteReport]:
        return [r for r in self.reports.values() if not r.finished and not r.retracted]

    def finished_by_ref(self) -> dict[str, list[RemoteReport]]:
        out: dict[str, list[RemoteReport]] = {}
        for report in self.reports.values():
            if report.finished:
                out.setdefault(report.ref or "", []).append(report)
        return out

    def validate(self, body: bytes, root_tag: str) -> tuple[Any, str | None, int]:
        """(root, error, code): refuse DTDs/entities (4110), schema failures (4100)."""
        if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
            return None, "document type declarations are refused", 4110
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        try:
            root = etree.fromstring(body, parser)
        except etree.XMLSyntaxError as exc:
            return None, f"malformed XML: {exc}", 4110
        if root.tag != root_tag:
            return None, f"expected <{root_tag}>", 4100
        with self.schema_lock:
            if not self.schema.validate(root):
                return None, str(self.schema.error_log.last_error), 4100
        return root, None, 0


def _answer(code: int, description: str, **fields: str) -> bytes:
    parts = [f"<responseCode>{code}</responseCode>"]
    parts.append(f"<responseDescription>{escape(description)}</responseDescription>")
    for name in ("reportId", "fileId", "hash"):
        if name in fields:
            parts.append(f"<{name}>{escape(fields[name])}</{name}>")
    return ("<reportResponse>" + "".join(parts) + "</reportResponse>").encode()


def _done(report: RemoteReport) -> bytes:
    files = "".join(f"<fileId>{f}</fileId>" for f in report.files)
    return (
        f"<reportDoneResponse><responseCode>0</responseCode><reportId>{report.id}</reportId>"
        f"<files>{files}</files></reportDoneResponse>"
    ).encode()


class _Headers(dict[str, str]):
    """Request headers by lower-cased name (a repeated header keeps its last value)."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def parse_request(self) -> bool:
        """The request line and headers, strictly (HTTP/1.0 or 1.1, at most 100 header
        lines of 8 KB, no folding, no chunked bodies). The standard library parses
        headers with the email package, which cost this stand-in more CPU than the
        ISPWS work itself."""
        self.command = None  # type: ignore[assignment]
        self.request_version = "HTTP/0.9"
        self.close_connection = True
        line = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = line
        words = line.split(" ")
        if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1") or not words[1]:
            self.send_error(400, "Bad request line")
            return False
        self.command, self.path, self.request_version = words
        headers = _Headers()
        for _ in range(101):
            raw = self.rfile.readline(8193)
            if len(raw) > 8192:
                self.send_error(431, "Header line too long")
                return False
            if raw in (b"\r\n", b"\n", b""):
                break
            text = raw.decode("iso-8859-1").rstrip("\r\n")
            name, sep, value = text.partition(":")
            if not sep or not name or name != name.strip() or text[0] in " \t":
                self.send_error(400, "Bad header line")
                return False
            headers[name.lower()] = value.strip()
        else:
            self.send_error(431, "Too many headers")
            return False
        self.headers = headers  # type: ignore[assignment]
        if "transfer-encoding" in headers:
            self.send_error(501, "Transfer-Encoding is not supported here")
            return False
        connection = headers.get("connection", "").lower()
        self.close_connection = connection == "close" or (
            self.request_version == "HTTP/1.0" and connection != "keep-alive"
        )
        return True

    def _send(self, status: int, body: bytes = b"", content_type: str = "text/xml") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        rx = self.server.receiver
        expected = base64.b64encode(f"{rx.username}:{rx.password}".encode()).decode()
        return self.headers.get("Authorization", "") == f"Basic {expected}"

    def do_GET(self) -> None:
        self._handle(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            self._send(413)
            return
        self._handle(self.rfile.read(length))

    def _handle(self, body: bytes) -> None:
        rx = self.server.receiver
        if not self._authorized():
            self._send(401)
            return
        path = self.path.split("?", 1)[0].removeprefix("/ispws")
        with rx.lock:
            rx.requests += 1
            fault = rx.faults.pick(path) if path != "/status" else None
        if fault in ("500_before",):
            self._send(500, b"")
            return
        if fault == "drop_before":
            self.close_connection = True
            return
        answer = self._act(path, body)
        if fault == "500_after":
            self._send(500, b"")
        elif fault == "drop_after":
            self.close_connection = True
        elif fault == "timeout_after":
            rx.stop.wait(rx.faults.hold_seconds)
            self.close_connection = True
        elif fault == "garbage_after":
            self._send(200, b"<reportResponse><responseCode>0</respons")
        elif fault == "bad_encoding_after":
            self.send_response(200)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", "12")
            self.end_headers()
            self.wfile.write(b"not gzip at all"[:12])
        else:
            self._send(200, answer)

    def _form(self, body: bytes) -> dict[str, str]:
        parsed = parse_qs(body.decode("utf-8", "replace"))
        return {k: v[0] for k, v in parsed.items()}

    def _report(self, raw: str | None) -> tuple[RemoteReport | None, bytes | None]:
        rx = self.server.receiver
        try:
            report = rx.reports.get(int(raw or ""))
        except ValueError:
            report = None
        if report is None:
            return None, _answer(5001, "report does not exist")
        if report.retracted:
            return None, _answer(5101, "report already retracted")
        if report.finished:
            return None, _answer(5102, "report already finished")
        return report, None

    def _act(self, path: str, body: bytes) -> bytes:
        rx = self.server.receiver
        if path == "/status":
            return _answer(0, "Server is up")
        if path == "/xsd":
            return schema_bytes()
        if path == "/submit":
            root, error, code = rx.validate(body, "report")
            if error:
                with rx.lock:
                    rx.rejections.append(error)
                return _answer(code, error)
            info = root.findtext("additionalInfo") or ""
            ref = None
            if info.startswith(REFERENCE_PREFIX):
                ref = info[len(REFERENCE_PREFIX) :].split("\n", 1)[0]
            with rx.lock:
                report_id = rx.next_id
                rx.next_id += 1
                rx.reports[report_id] = RemoteReport(report_id, ref, body)
            return _answer(0, "Success", reportId=str(report_id))
        if path == "/upload":
            fields, files = _multipart(self.headers.get("Content-Type", ""), body)
            if "file" not in files:
                return _answer(4000, "no file")
            name, data = files["file"]
            md5 = "0" * 32 if rx.wrong_md5 else hashlib.md5(data).hexdigest()
            size = len(data)
            del data  # a view of the request body
            with rx.lock:
                report, refused = self._report(fields.get("id"))
                if report is None:
                    return refused or b""
                file_id = uuid.uuid4().hex
                report.files[file_id] = RemoteFile(file_id, name, md5, size)
            return _answer(0, "Success", reportId=str(report.id), fileId=file_id, hash=md5)
        if path == "/fileinfo":
            root, error, code = rx.validate(body, "fileDetails")
            if error:
                with rx.lock:
                    rx.rejections.append(error)
                return _answer(code, error)
            with rx.lock:
                report, refused = self._report(root.findtext("reportId"))
                if report is None:
                    return refused or b""
                file = report.files.get(root.findtext("fileId") or "")
                if file is None:
                    return _answer(5002, "file does not exist")
                file.details = body
            return _answer(0, "Success", reportId=str(report.id))
        if path in ("/finish", "/retract"):
            form = self._form(body)
            with rx.lock:
                report, refused = self._report(form.get("id"))
                if report is None:
                    return refused or b""
                if path == "/finish":
                    report.finished += 1
                    return _done(report)
                report.retracted = True
            return _answer(0, "Success", reportId=str(report.id))
        return _answer(1210, "resource not found")


def _multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, str], dict[str, tuple[str, memoryview]]]:
    """multipart/form-data fields and files (a small strict parser: a file is a view of
    the body, never copied)."""
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, memoryview]] = {}
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/form-data") or match is None:
        return fields, files
    delimiter = b"\r\n--" + match.group(1).encode("latin-1")
    view = memoryview(body)
    # the first delimiter opens the body, or follows a preamble
    if body.startswith(delimiter[2:]):
        start = len(delimiter) - 2
    else:
        first = body.find(delimiter)
        start = first + len(delimiter) if first >= 0 else len(body)
    while start < len(body):
        if body.startswith(b"--", start):
            break  # the closing delimiter
        head_end = body.find(b"\r\n\r\n", start)
        if head_end < 0:
            break
        end = body.find(delimiter, head_end + 4)
        if end < 0:
            break
        head = body[start:head_end].decode("latin-1")
        payload = view[head_end + 4 : end]
        disposition = next(
            (
                line
                for line in head.split("\r\n")
                if line.lower().startswith("content-disposition:")
            ),
            "",
        )
        name = re.search(r'\bname="([^"]*)"', disposition)
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        if name is not None and filename is not None:
            files[name.group(1)] = (filename.group(1), payload)
        elif name is not None:
            fields[name.group(1)] = bytes(payload).decode("utf-8", "replace")
        start = end + len(delimiter)
    return fields, files


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # many clients connecting at once must not overflow it
    receiver: Receiver


@dataclass
class RunningReceiver:
    url: str
    receiver: Receiver
    username: str
    password: str


@contextmanager
def ispws_server(
    *,
    faults: Faults | None = None,
    username: str = "esp-test",
    password: str = "s3cret-test-password",
    schema_path: Path | None = None,
    tls: ssl.SSLContext | None = None,
) -> Iterator[RunningReceiver]:
    """Serve ISPWS on 127.0.0.1 (random port) under ``/ispws`` until the block ends
    (over TLS with ``tls``, a server-side context)."""
    schema = schema_path.read_bytes() if schema_path else schema_bytes()
    receiver = Receiver(username, password, faults or Faults(), schema)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.receiver = receiver
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        host, port = server.server_address[:2]
        scheme = "https" if tls is not None else "http"
        yield RunningReceiver(f"{scheme}://{host}:{port}/ispws", receiver, username, password)
    finally:
        receiver.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
