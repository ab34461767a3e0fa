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

Transport: the client speaks HTTP/1.1 itself over the standard library's
``http.client``, with a pool of kept-alive connections shared by the delivering threads
(one request per connection at a time, a 1 MB upload written straight from its buffer
after the multipart head: no copy of the file, no per-request client objects). An idle
connection the server has closed is noticed before it is reused. Given an httpx
``transport`` (e.g. ``httpx.MockTransport``, or ``httpx.HTTPTransport()``), the same
calls go through httpx instead; a test checks both transports sort the same answers and
failures alike against the real test receiver.
"""

from __future__ import annotations

import base64
import http.client
import os
import select
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit
from xml.etree.ElementTree import Element

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

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


def _text(root: Element, tag: str) -> str | None:
    node = root.find(tag)
    if node is None or node.text is None:
        return None
    return node.text.strip()


def parse_answer(body: bytes) -> Answer:
    """Parse an answer document; :class:`OutcomeUnknownError` when it is not one."""
    if len(body) > MAX_ANSWER_BYTES:
        raise OutcomeUnknownError(f"receiver answered {len(body)} bytes, not an ISPWS answer")
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except (SafeET.ParseError, DefusedXmlException, ValueError) as exc:
        raise OutcomeUnknownError(f"receiver answered malformed XML ({exc})") from None
    if root.tag not in ("reportResponse", "reportDoneResponse"):
        raise OutcomeUnknownError(f"receiver answered <{root.tag[:40]}>, not an ISPWS answer")
    code_text = _text(root, "responseCode")
    try:
        code = int(code_text or "")
    except ValueError:
        raise OutcomeUnknownError("receiver answer has no numeric responseCode") from None
    report_text = _text(root, "reportId")
    try:
        report_id = int(report_text) if report_text else None
    except ValueError:
        raise OutcomeUnknownError(f"receiver answered reportId {report_text!r:.40}") from None
    files = root.find("files")
    return Answer(
        response_code=code,
        description=_text(root, "responseDescription") or "",
        report_id=report_id,
        file_id=_text(root, "fileId"),
        md5=(_text(root, "hash") or "").lower() or None,
        files=tuple((node.text or "").strip() for node in (files if files is not None else [])),
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


class _StdlibTransport:
    """HTTP/1.1 over ``http.client``: kept-alive connections in a pool, one request per
    connection at a time."""

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
        self._headers = {
            "Host": netloc,
            "Authorization": auth,
            "Accept": "*/*",
            "Accept-Encoding": "identity",
            "User-Agent": "tipline-ispws",
        }
        self._timeout = timeout
        self._max_idle = max_connections
        self._idle: list[http.client.HTTPConnection] = []
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

    def _connection(self) -> http.client.HTTPConnection:
        """A kept-alive connection the server has not closed, or a new one (connected
        here: a failure to connect is told apart from a failure after sending)."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            sock = conn.sock
            if sock is not None and not _readable(sock):
                return conn
            conn.close()  # closed by the server (or it sent something unasked)
        if self._tls:
            conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=self._context
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        conn.connect()
        if conn.sock is not None and not self._tls:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def send(self, request: _Request) -> tuple[int, bytes]:
        """(status, body) of one request; ReceiverBusyError when no connection could be
        made, socket.timeout / OSError / http.client.HTTPException / _Unreadable after
        the request may have been sent."""
        try:
            conn = self._connection()
        except (OSError, http.client.HTTPException) as exc:
            raise ReceiverBusyError(
                f"{request.path}: cannot connect ({type(exc).__name__})"
            ) from None
        keep = False
        try:
            conn.putrequest(
                request.method,
                self._prefix + request.path,
                skip_host=True,
                skip_accept_encoding=True,
            )
            for name, value in self._headers.items():
                conn.putheader(name, value)
            if request.content_type is not None:
                conn.putheader("Content-Type", request.content_type)
            if request.method != "GET" or request.length:
                conn.putheader("Content-Length", str(request.length))
            conn.endheaders(request.head or None)
            if request.data:
                conn.send(request.data)
            if request.tail:
                conn.send(request.tail)
            response = conn.getresponse()
            encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
            if encoding != "identity":
                raise _Unreadable(f"Content-Encoding {encoding[:40]}")
            body = response.read(MAX_ANSWER_BYTES + 1)
            if len(body) > MAX_ANSWER_BYTES:
                return response.status, body  # parse_answer refuses it; not kept
            keep = not response.will_close and response.isclosed()
            return response.status, body
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
            except (OSError, http.client.HTTPException) as exc:
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
