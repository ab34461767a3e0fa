"""A client for the CyberTipline Reporting API (ISPWS): status, submit, upload,
fileinfo, finish, retract.

Every answer is sorted into exactly one of three outcomes, because the delivery outbox
acts differently on each:

* success (the parsed answer is returned);
* :class:`ReceiverRefusedError`: the receiver answered and refused (schema rejection,
  authentication, a report that is finished or gone). Retrying the same request cannot
  help; the report goes to the operator queue with the receiver's message.
* :class:`ReceiverBusyError`: the request did not take effect and may be retried
  (connection refused, or an answer whose ``responseCode`` names a server-side failure).
* :class:`OutcomeUnknownError`: the request may or may not have taken effect (timeout,
  connection dropped, HTTP 5xx, an answer that is not the documented XML). ISPWS has no
  idempotency key, so a submit with this outcome may have left an open report that the
  client cannot name.

The base URL and the account come from settings; the password is never logged or shown
(the client's ``repr`` omits it).

Transport: the client speaks HTTP/1.1 itself over sockets (TLS through ``ssl``), with a
pool of kept-alive connections shared by the delivering threads (one request per
connection at a time, a 1 MB upload written straight from its buffer after the
multipart head: no copy of the file, no per-request client objects). Answers are read
by a small, strict reader: a status line, at most 100 headers in 64 KiB, a body framed
by Content-Length or chunks (or by the connection's end, which is then not reused),
read up to 1 MB, complete within the timeout; anything else (folded or malformed
headers, conflicting lengths, another transfer coding, a server that sends more than
its answer) is an unreadable answer. An idle connection the server has closed is
noticed before it is reused. Answer documents are read by expat callbacks under
defusedxml's rules (no document type declaration, no entities, nothing external).
Given an httpx ``transport`` (e.g. ``httpx.MockTransport``, or
``httpx.HTTPTransport()``), the same calls go through httpx instead; a test checks
both transports sort the same answers and failures alike against the real test
receiver, and tests/test_reports_client_reader.py holds the reader and the document
parser to ``http.client``, h11 and defusedxml's ElementTree on generated answers.
"""

from __future__ import annotations

import base64
import os
import re
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit
from xml.parsers import expat

from defusedxml.common import (
    DefusedXmlException,
    DTDForbidden,
    EntitiesForbidden,
    ExternalReferenceForbidden,
)

from tipline._optional import require
from tipline.errors import InputError, TiplineError

#: answers larger than this are not the documented XML
MAX_ANSWER_BYTES = 1024 * 1024

#: responseCode values meaning "the server failed; nothing was saved, try again"
RETRYABLE_CODES = frozenset({1000, 1100, 1110, 1111, 1300})
REPORT_ALREADY_RETRACTED = 5101
REPORT_ALREADY_FINISHED = 5102

_XML = "text/xml; charset=utf-8"


class IspwsError(TiplineError):
    """Base of every error of an ISPWS call."""

    status = 502
    code = "ispws"

    def __init__(self, message: str, *, response_code: int | None = None) -> None:
        super().__init__(message)
        self.response_code = response_code


class ReceiverRefusedError(IspwsError):
    """The receiver answered and refused; retrying the same request cannot help."""

    code = "ispws-refused"


class ReceiverBusyError(IspwsError):
    """The request did not take effect; retry later."""

    code = "ispws-busy"


class OutcomeUnknownError(IspwsError):
    """The request may or may not have taken effect."""

    code = "ispws-unknown"


@dataclass(frozen=True, slots=True)
class Answer:
    """A parsed ``reportResponse`` / ``reportDoneResponse``."""

    response_code: int
    description: str
    report_id: int | None = None
    file_id: str | None = None
    md5: str | None = None
    files: tuple[str, ...] = ()


class _AnswerFields:
    """What :func:`parse_answer` reads of a document, gathered by expat's callbacks as
    ElementTree would see it (an element's text is its character data before its first
    child): the root's tag, the text of each tag's first child of the root, and the
    texts of the children of the root's first ``<files>``."""

    __slots__ = ("_depth", "_in_files", "_into", "files", "root", "texts")

    def __init__(self) -> None:
        self._depth = 0
        self._into: list[str] | None = None
        self._in_files = False
        self.root = ""
        self.texts: dict[str, list[str]] = {}
        self.files: list[list[str]] | None = None

    def start(self, name: str, _attributes: object) -> None:
        self._depth += 1
        self._into = None
        if self._depth == 2:
            if name not in self.texts:
                self._into = self.texts[name] = []
                if name == "files":
                    self.files, self._in_files = [], True
        elif self._depth == 3:
            if self._in_files and self.files is not None:
                self._into = []
                self.files.append(self._into)
        elif self._depth == 1:
            self.root = "{" + name if "}" in name else name

    def end(self, _name: str) -> None:
        if self._depth == 2:
            self._in_files = False
        self._depth -= 1
        self._into = None

    def data(self, text: str) -> None:
        if self._into is not None:
            self._into.append(text)

    def text(self, tag: str) -> str | None:
        parts = self.texts.get(tag)
        return "".join(parts).strip() if parts else None


def _refuse_dtd(name: str, system_id: str | None, public_id: str | None, _internal: bool) -> None:
    raise DTDForbidden(name, system_id, public_id)


def _refuse_entity(name: str, *args: Any) -> None:
    raise EntitiesForbidden(name, None, None, None, None, None)


def _refuse_external(
    context: str, base: str | None, system_id: str | None, public_id: str | None
) -> int:
    raise ExternalReferenceForbidden(context, base, system_id, public_id)


def _answer_fields(body: bytes) -> _AnswerFields:
    """The fields of an answer document, read by expat under defusedxml's rules (a
    document type declaration, entity declarations and external references refused,
    the first before anything in it is read)."""
    fields = _AnswerFields()
    parser = expat.ParserCreate(None, "}")
    parser.buffer_text = True
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_entity
    parser.UnparsedEntityDeclHandler = _refuse_entity
    parser.ExternalEntityRefHandler = _refuse_external
    parser.StartElementHandler = fields.start
    parser.EndElementHandler = fields.end
    parser.CharacterDataHandler = fields.data
    parser.Parse(body, True)
    return fields


def parse_answer(body: bytes) -> Answer:
    """Parse an answer document; :class:`OutcomeUnknownError` when it is not one."""
    if len(body) > MAX_ANSWER_BYTES:
        raise OutcomeUnknownError(f"receiver answered {len(body)} bytes, not an ISPWS answer")
    try:
        fields = _answer_fields(body)
    except (expat.ExpatError, DefusedXmlException, ValueError, LookupError) as exc:
        # LookupError: an encoding Python does not know, named in the XML declaration
        raise OutcomeUnknownError(f"receiver answered malformed XML ({exc})") from None
    if fields.root not in ("reportResponse", "reportDoneResponse"):
        raise OutcomeUnknownError(f"receiver answered <{fields.root[:40]}>, not an ISPWS answer")
    code_text = fields.text("responseCode")
    try:
        code = int(code_text or "")
    except ValueError:
        raise OutcomeUnknownError("receiver answer has no numeric responseCode") from None
    report_text = fields.text("reportId")
    try:
        report_id = int(report_text) if report_text else None
    except ValueError:
        raise OutcomeUnknownError(f"receiver answered reportId {report_text!r:.40}") from None
    return Answer(
        response_code=code,
        description=fields.text("responseDescription") or "",
        report_id=report_id,
        file_id=fields.text("fileId"),
        md5=(fields.text("hash") or "").lower() or None,
        files=tuple("".join(parts).strip() for parts in fields.files or ()),
    )


class _Unreadable(Exception):
    """The request was sent and its answer cannot be read as HTTP."""


class _Request:
    """One request, the same for both transports: form fields or a document or one file
    (sent from its buffer, after the multipart head)."""

    def __init__(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        content_type: str | None = None,
        form: dict[str, str] | None = None,
        file: tuple[str, bytes] | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.content, self.form, self.file = content, form, file
        self.head = b""
        self.data = b""
        self.tail = b""
        self.content_type = content_type
        if content is not None:
            self.head = content
        elif file is not None:
            boundary = os.urandom(16).hex()
            name, data = file
            parts = [
                f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
                for key, value in (form or {}).items()
            ]
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="{_form_quote(name)}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            )
            self.head = "".join(parts).encode("utf-8")
            self.data = data
            self.tail = f"\r\n--{boundary}--\r\n".encode("ascii")
            self.content_type = f"multipart/form-data; boundary={boundary}"
        elif form is not None:
            self.head = urlencode(form).encode("ascii")
            self.content_type = "application/x-www-form-urlencoded"

    @property
    def length(self) -> int:
        return len(self.head) + len(self.data) + len(self.tail)


def _form_quote(name: str) -> str:
    """A multipart file name with quotes, backslashes and control characters
    percent-encoded (the name comes from an upload: it is hostile input)."""
    return "".join(
        f"%{ord(c):02X}" if c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F else c for c in name
    )


#: an answer's status line and headers longer than this together are not an answer
MAX_HEAD_BYTES = 64 * 1024
_MAX_HEADERS = 100
#: interim (1xx) answers skipped before the answer itself, at most
_MAX_INTERIM = 8
_MAX_CHUNK_LINE = 1024
_RECV_BYTES = 64 * 1024
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: [^\x00-\x08\x0a-\x1f\x7f]*)?")
_HEADER_LINE = re.compile(
    rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*"
)
#: a chunk-size line: the size, extensions (ignored), blanks
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})(?:;[^\r\n]*)?[ \t]*")
_DIGITS = re.compile(rb"[0-9]{1,18}")
#: what may not appear in a request line or a Host header
_UNSAFE = re.compile("[^\x21-\x7e]")


class _Closed(ConnectionError):
    """The server closed the connection before its answer was complete."""


class _Connection:
    """One kept-alive connection: its socket and the bytes received and not yet read
    (always empty between answers: a server that sends more than its answer loses the
    connection)."""

    __slots__ = ("_buf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = b""

    def close(self) -> None:
        self.sock.close()

    @property
    def clean(self) -> bool:
        """Nothing received beyond the last answer: not in this reader's buffer, nor
        decrypted and waiting in a TLS socket (which a poll of the socket cannot see)."""
        if self._buf:
            return False
        pending = getattr(self.sock, "pending", None)
        return pending is None or not pending()

    def _recv(self, deadline: float) -> bytes:
        if time.monotonic() > deadline:
            raise TimeoutError("the answer did not arrive in time")
        chunk = self.sock.recv(_RECV_BYTES)
        if not chunk:
            raise _Closed("the server closed the connection")
        return chunk

    def _head(self, deadline: float) -> bytes:
        buf = self._buf
        seen = 0
        while True:
            end = buf.find(b"\r\n\r\n", max(0, seen - 3))
            if end > MAX_HEAD_BYTES or (end < 0 and len(buf) > MAX_HEAD_BYTES):
                raise _Unreadable(f"status line and headers over {MAX_HEAD_BYTES} bytes")
            if end >= 0:
                self._buf = buf[end + 4 :]
                return buf[:end]
            seen = len(buf)
            buf += self._recv(deadline)

    def _line(self, deadline: float) -> bytes:
        buf = self._buf
        while True:
            end = buf.find(b"\r\n")
            if end >= 0:
                self._buf = buf[end + 2 :]
                return buf[:end]
            if len(buf) > _MAX_CHUNK_LINE:
                raise _Unreadable("a chunk-size or trailer line is too long")
            buf += self._recv(deadline)

    def _exactly(self, count: int, deadline: float) -> bytes:
        buf = self._buf
        while len(buf) < count:
            buf += self._recv(deadline)
        self._buf = buf[count:]
        return buf[:count]

    def _until_closed(self, limit: int, deadline: float) -> bytes:
        buf = self._buf
        while len(buf) < limit:
            try:
                buf += self._recv(deadline)
            except _Closed:
                break
        self._buf = b""
        return buf[:limit]

    def _chunked(self, limit: int, deadline: float) -> tuple[bytes, bool]:
        """(body, complete) of a chunked answer, read up to ``limit`` bytes."""
        parts: list[bytes] = []
        size = 0
        while True:
            sized = _CHUNK_SIZE.fullmatch(self._line(deadline))
            if sized is None:
                raise _Unreadable("a chunk-size line that is not a hexadecimal size")
            count = int(sized[1], 16)
            if count == 0:
                break
            if size + count >= limit:
                parts.append(self._exactly(limit - size, deadline))
                return b"".join(parts), False
            parts.append(self._exactly(count, deadline))
            size += count
            if self._exactly(2, deadline) != b"\r\n":
                raise _Unreadable("a chunk not followed by CR LF")
        for _ in range(_MAX_HEADERS):  # trailer fields: checked, not used
            trailer = self._line(deadline)
            if not trailer:
                return b"".join(parts), True
            if _HEADER_LINE.fullmatch(trailer) is None:
                raise _Unreadable(f"not a trailer field: {trailer[:40]!r}")
        raise _Unreadable("too many trailer fields")

    def answer(self, deadline: float) -> tuple[int, bytes, bool]:
        """(status, body, reusable) of the answer to the request just sent; the body is
        read up to ``MAX_ANSWER_BYTES + 1`` bytes (longer: not reusable).
        :class:`_Unreadable` for anything that is not strict HTTP/1.x."""
        for _ in range(_MAX_INTERIM + 1):
            version, status, fields = _parse_head(self._head(deadline))
            if not 100 <= status < 200:
                break
            if status == 101:
                raise _Unreadable("HTTP 101: the server switched protocols")
        else:
            raise _Unreadable("too many interim answers")
        coding = b",".join(fields.get(b"content-encoding", ())).lower()
        if any(c.strip(b" \t") not in (b"", b"identity") for c in coding.split(b",")):
            raise _Unreadable(f"Content-Encoding {coding[:40].decode('latin-1')}")
        limit = MAX_ANSWER_BYTES + 1
        tokens = {
            t.strip(b" \t") for t in b",".join(fields.get(b"connection", ())).lower().split(b",")
        }
        reusable = version == 1 and b"close" not in tokens
        lengths = set(fields.get(b"content-length", ()))
        transfer = fields.get(b"transfer-encoding")
        if status in (204, 304):
            if lengths - {b"0"} or transfer:
                raise _Unreadable(f"HTTP {status} with a body")
            return status, b"", reusable
        if transfer is not None:
            if lengths:
                raise _Unreadable("both Transfer-Encoding and Content-Length")
            if b",".join(transfer).strip(b" \t").lower() != b"chunked":
                raise _Unreadable("a Transfer-Encoding other than chunked")
            body, complete = self._chunked(limit, deadline)
            return status, body, reusable and complete
        if lengths:
            if len(lengths) > 1:
                raise _Unreadable("conflicting Content-Length headers")
            (text,) = lengths
            if _DIGITS.fullmatch(text) is None:
                raise _Unreadable("a Content-Length that is not a number")
            length = int(text)
            if length >= limit:
                return status, self._exactly(limit, deadline), False
            return status, self._exactly(length, deadline), reusable
        # no framing: the body ends when the server closes the connection
        return status, self._until_closed(limit, deadline), False


def _parse_head(head: bytes) -> tuple[int, int, dict[bytes, list[bytes]]]:
    """(minor version, status, lower-cased name -> values) of a status line and headers."""
    lines = head.split(b"\r\n")
    status_line = _STATUS_LINE.fullmatch(lines[0])
    if status_line is None:
        raise _Unreadable(f"not an HTTP/1.x status line: {lines[0][:40]!r}")
    if len(lines) > _MAX_HEADERS + 1:
        raise _Unreadable(f"more than {_MAX_HEADERS} headers")
    fields: dict[bytes, list[bytes]] = {}
    for line in lines[1:]:
        field = _HEADER_LINE.fullmatch(line)
        if field is None:
            raise _Unreadable(f"not a header line: {line[:40]!r}")
        name, value = field.groups()
        fields.setdefault(name.lower(), []).append(value)
    return int(status_line[1]), int(status_line[2]), fields


class _StdlibTransport:
    """HTTP/1.1 over plain sockets (TLS through ``ssl``): kept-alive connections in a
    pool, one request per connection at a time; answers read by a small, strict reader
    (status line, headers, Content-Length or chunked bodies; nothing else)."""

    def __init__(
        self,
        base_url: str,
        auth: str,
        timeout: float,
        max_connections: int,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"ISPWS URL must be http(s)://host[:port]/path, not {base_url!r:.200}")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise InputError("ISPWS URL must not carry credentials, a query or a fragment")
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        try:
            port = parts.port
        except ValueError:
            raise InputError(f"ISPWS URL has a bad port: {base_url!r:.200}") from None
        self._port = port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/")
        netloc = parts.netloc.rsplit("@", 1)[-1]
        if _UNSAFE.search(self._prefix) or _UNSAFE.search(netloc):
            raise InputError(
                "ISPWS URL must be ASCII without spaces or control characters "
                f"(a host in punycode, a path percent-encoded): {base_url!r:.200}"
            )
        headers = {
            "Host": netloc,
            "Authorization": auth,
            "Accept": "*/*",
            "Accept-Encoding": "identity",
            "User-Agent": "tipline-ispws",
        }
        self._headers = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1")
        self._timeout = timeout
        self._max_idle = max_connections
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._context: ssl.SSLContext | None = tls_context
        if self._tls and self._context is None:
            try:
                import certifi

                self._context = ssl.create_default_context(cafile=certifi.where())
            except ImportError:  # pragma: no cover - certifi comes with httpx
                self._context = ssl.create_default_context()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _connection(self) -> _Connection:
        """A kept-alive connection the server has not closed, or a new one (connected
        here: a failure to connect is told apart from a failure after sending)."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            if not _readable(conn.sock):
                return conn
            conn.close()  # closed by the server (or it sent something unasked)
        sock = socket.create_connection((self._host, self._port), timeout=self._timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls:
                assert self._context is not None  # set in __init__ for every https URL
                sock = self._context.wrap_socket(sock, server_hostname=self._host)
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)

    def _release(self, conn: _Connection) -> None:
        if conn.clean:
            with self._lock:
                if not self._closed and len(self._idle) < self._max_idle:
                    self._idle.append(conn)
                    return
        conn.close()

    def send(self, request: _Request) -> tuple[int, bytes]:
        """(status, body) of one request; ReceiverBusyError when no connection could be
        made, TimeoutError / OSError / _Unreadable after the request may have been
        sent. The answer must be complete within the timeout of the request's end."""
        try:
            conn = self._connection()
        except OSError as exc:
            raise ReceiverBusyError(
                f"{request.path}: cannot connect ({type(exc).__name__})"
            ) from None
        keep = False
        try:
            lines = [f"{request.method} {self._prefix}{request.path} HTTP/1.1\r\n".encode("ascii")]
            lines.append(self._headers)
            if request.content_type is not None:
                lines.append(f"Content-Type: {request.content_type}\r\n".encode("latin-1"))
            if request.method != "GET" or request.length:
                lines.append(b"Content-Length: %d\r\n" % request.length)
            lines.append(b"\r\n")
            lines.append(request.head)
            sock = conn.sock
            sock.sendall(b"".join(lines))
            if request.data:
                sock.sendall(request.data)
            if request.tail:
                sock.sendall(request.tail)
            status, body, keep = conn.answer(time.monotonic() + self._timeout)
            return status, body
        finally:
            if keep:
                self._release(conn)
            else:
                conn.close()


def _readable(sock: socket.socket) -> bool:
    """True when an idle kept-alive socket has something to read: the server closed it
    (or sent bytes nobody asked for); either way it is not reused."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


class IspwsClient:
    """One account on one ISPWS endpoint; safe to share between threads (a pool of up
    to ``max_connections`` kept-alive connections)."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        timeout: float = 60.0,
        transport: Any = None,
        max_connections: int = 64,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        """``tls_context``: the certificates an https endpoint is checked against
        (default: certifi's bundle, as httpx's; for the client's own transport only)."""
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._http: Any = None
        self._stdlib: _StdlibTransport | None = None
        if transport is None:
            token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
            self._stdlib = _StdlibTransport(
                self.base_url, f"Basic {token}", timeout, max_connections, tls_context
            )
            return
        httpx = require("httpx")
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=httpx.BasicAuth(username, password),
            timeout=httpx.Timeout(timeout),
            transport=transport,
            trust_env=False,
            follow_redirects=False,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )
        self._httpx = httpx

    def __repr__(self) -> str:
        return f"IspwsClient(base_url={self.base_url!r}, username={self.username!r})"

    def close(self) -> None:
        """Close pooled connections."""
        if self._stdlib is not None:
            self._stdlib.close()
        else:
            self._http.close()

    def _exchange(self, request: _Request) -> tuple[int, bytes]:
        """(HTTP status, body); the transport's failures sorted into the three outcomes."""
        path = request.path
        if self._stdlib is not None:
            try:
                return self._stdlib.send(request)
            except IspwsError:
                raise
            except TimeoutError as exc:
                raise OutcomeUnknownError(
                    f"{path}: no answer in time ({type(exc).__name__})"
                ) from None
            except OSError as exc:
                raise OutcomeUnknownError(
                    f"{path}: connection lost ({type(exc).__name__})"
                ) from None
            except _Unreadable as exc:
                raise OutcomeUnknownError(f"{path}: unreadable answer ({exc})") from None
        return self._exchange_httpx(request)

    def _exchange_httpx(self, request: _Request) -> tuple[int, bytes]:
        """The same request through httpx (its own form and multipart encoding)."""
        httpx = self._httpx
        path = request.path
        kwargs: dict[str, Any] = {}
        if request.content is not None:
            kwargs["content"] = request.content
            kwargs["headers"] = {"Content-Type": request.content_type}
        if request.form is not None:
            kwargs["data"] = request.form
        if request.file is not None:
            name, data = request.file
            kwargs["files"] = {"file": (name, data, "application/octet-stream")}
        try:
            response = self._http.request(request.method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise ReceiverBusyError(f"{path}: cannot connect ({type(exc).__name__})") from None
        except httpx.TimeoutException as exc:
            raise OutcomeUnknownError(f"{path}: no answer in time ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise OutcomeUnknownError(f"{path}: connection lost ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            # e.g. a body that claims an encoding it does not have (DecodingError): the
            # request was sent, its answer cannot be read
            raise OutcomeUnknownError(f"{path}: unreadable answer ({type(exc).__name__})") from None
        return response.status_code, response.content

    def _call(self, request: _Request) -> Answer:
        path = request.path
        status, body = self._exchange(request)
        if status >= 500:
            raise OutcomeUnknownError(f"{path}: HTTP {status}")
        if status == 401:
            raise ReceiverRefusedError(f"{path}: authentication failed (HTTP 401)")
        if status >= 400:
            raise ReceiverRefusedError(f"{path}: HTTP {status}")
        answer = parse_answer(body)
        if answer.response_code == 0:
            return answer
        message = f"{path}: responseCode {answer.response_code}: {answer.description[:2000]}"
        if answer.response_code in RETRYABLE_CODES:
            raise ReceiverBusyError(message, response_code=answer.response_code)
        raise ReceiverRefusedError(message, response_code=answer.response_code)

    def status(self) -> Answer:
        """``GET /status``: is the service up and the account accepted."""
        return self._call(_Request("GET", "/status"))

    def submit(self, report_xml: bytes) -> int:
        """``POST /submit``: open a report; returns the receiver's report id."""
        answer = self._call(_Request("POST", "/submit", content=report_xml, content_type=_XML))
        if answer.report_id is None:
            raise OutcomeUnknownError("/submit: success without a reportId")
        return answer.report_id

    def upload(self, report_id: int, file_name: str, data: bytes) -> Answer:
        """``POST /upload``: attach a file; the answer carries ``file_id`` and ``md5``."""
        answer = self._call(
            _Request("POST", "/upload", form={"id": str(report_id)}, file=(file_name, data))
        )
        if not answer.file_id or not answer.md5:
            raise OutcomeUnknownError("/upload: success without fileId and hash")
        return answer

    def fileinfo(self, file_details_xml: bytes) -> Answer:
        """``POST /fileinfo``: describe an attached file."""
        return self._call(
            _Request("POST", "/fileinfo", content=file_details_xml, content_type=_XML)
        )

    def finish(self, report_id: int) -> Answer:
        """``POST /finish``: close the report; the answer lists its files."""
        return self._call(_Request("POST", "/finish", form={"id": str(report_id)}))

    def retract(self, report_id: int) -> Answer:
        """``POST /retract``: withdraw an unfinished report."""
        return self._call(_Request("POST", "/retract", form={"id": str(report_id)}))
