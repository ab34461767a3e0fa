"""The ISPWS client's own HTTP answer reader and answer-document parser, each held to
the slow, obviously-correct path it replaced, on generated answers (hypothesis).

* The reader (``_Connection.answer``, over one end of a socket pair) against the
  standard library's ``http.client.HTTPResponse`` reading the same bytes, as the client
  did before, and against h11 (httpx's parser): on well-formed answers all three give
  the same status and body, and the reader reuses the connection when h11 would. On
  broken or hostile answers the reader may refuse what the others tolerate, but what it
  accepts, h11 reads the same (``http.client`` is no oracle there: it reads
  ``Transfer-Encoding: chunked`` with trailing blanks as an unframed body).
* The parser (``parse_answer``, expat callbacks under defusedxml's rules) against the
  defusedxml ElementTree parse it replaced: the same :class:`Answer`, or the same
  error, on every document.
* The requests: every call's bytes as ``http.client`` wrote them.
"""

from __future__ import annotations

import http.client
import io
import socket
import threading
import time
from xml.etree.ElementTree import Element

import h11
import pytest
from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException
from hypothesis import example, given
from hypothesis import strategies as st

from _clock import HANG_SECONDS
from tipline.services.reports.client import (
    MAX_ANSWER_BYTES,
    MAX_HEAD_BYTES,
    Answer,
    OutcomeUnknownError,
    _Closed,
    _Connection,
    _Unreadable,
    parse_answer,
)

# --- the reader --------------------------------------------------------------------

Outcome = tuple[int, bytes, bool] | None  # (status, body, reused) or None: refused


def _old(raw: bytes) -> Outcome:
    """What the client read with ``http.client`` before (its checks included)."""

    class _Socket:
        def makefile(self, mode: str) -> io.BufferedReader:
            return io.BufferedReader(io.BytesIO(raw))

    response = http.client.HTTPResponse(_Socket(), method="POST")  # type: ignore[arg-type]
    try:
        response.begin()
        encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            return None
        body = response.read(MAX_ANSWER_BYTES + 1)
    except (http.client.HTTPException, OSError, ValueError):
        return None
    if len(body) > MAX_ANSWER_BYTES:
        return response.status, body, False
    return response.status, body, not response.will_close and response.isclosed()


def _h11(raw: bytes) -> Outcome:
    """What h11 (httpx's HTTP/1.1 parser) reads of ``raw``, then the sender's close,
    with the client's Content-Encoding check."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(
        h11.Request(method="POST", target="/", headers=[("Host", "x"), ("Content-Length", "0")])
    )
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    conn.receive_data(b"")
    status, body, done, framed = None, b"", False, False
    try:
        while not done:
            event = conn.next_event()
            if isinstance(event, h11.Response):
                status = event.status_code
                # (h11 ends an unframed body at the close, and calls it reusable then)
                names = {k for k, _ in event.headers}
                framed = status in (204, 304) or bool(
                    names & {b"content-length", b"transfer-encoding"}
                )
                coding = b",".join(v for k, v in event.headers if k == b"content-encoding")
                if any(c.strip().lower() not in (b"", b"identity") for c in coding.split(b",")):
                    return None
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                done = True
            elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return None
    except h11.RemoteProtocolError:
        return None
    if status is None:
        return None
    reused = conn.states == {h11.CLIENT: h11.DONE, h11.SERVER: h11.DONE}
    reused = reused and framed and not conn.trailing_data[0]
    return status, body, reused


def _new(raw: bytes, *, close: bool = True) -> Outcome:
    """What the client's reader makes of ``raw`` (sent whole, then the sender closes
    unless ``close`` is False)."""
    ours, theirs = socket.socketpair()
    ours.settimeout(HANG_SECONDS)
    writer = threading.Thread(target=_send, args=(theirs, raw, close))
    writer.start()
    conn = _Connection(ours)
    try:
        status, body, keep = conn.answer(time.monotonic() + HANG_SECONDS)
        return status, body, keep and conn.clean
    except (_Unreadable, OSError):
        return None
    finally:
        writer.join()
        conn.close()
        theirs.close()


def _send(sock: socket.socket, raw: bytes, close: bool) -> None:
    try:
        sock.sendall(raw)
        if close:
            sock.shutdown(socket.SHUT_WR)
    except OSError:  # the reader stopped early (a refused or over-long answer)
        pass


_NAME = st.sampled_from(["Server", "Date", "X-Request-Id", "Vary", "Cache-Control", "X_y"])
_VALUE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)
_CASE = st.sampled_from([str.lower, str.upper, str.title, lambda s: s])


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    """A well-formed HTTP/1.x answer: interim 100 answers, headers in any case and
    order, a body framed by Content-Length, chunks (split anywhere, with extensions and
    trailers) or the connection's end."""
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]))
    status = draw(st.sampled_from([200, 200, 201, 204, 400, 401, 404, 500, 503]))
    reason = draw(st.sampled_from(["OK", "", "Some Reason", "x"]))
    head = "".join(draw(st.lists(st.just("HTTP/1.1 100 Continue\r\n\r\n"), max_size=2)))
    head += f"{version} {status}" + (f" {reason}" if reason or draw(st.booleans()) else "")
    head += "\r\n"
    body = b"" if status == 204 else draw(st.binary(max_size=3000))
    fields = [(draw(_NAME), draw(_VALUE)) for _ in range(draw(st.integers(0, 4)))]
    framing = draw(st.sampled_from(["length", "chunked", "none"]))
    if status == 204:
        framing = draw(st.sampled_from(["length", "bare"]))
    connection = draw(st.sampled_from([None, "close", "keep-alive", "Keep-Alive, Upgrade"]))
    if connection is not None:
        fields.append(("Connection", connection))
    encoding = draw(st.sampled_from([None, "identity", " Identity "]))
    if encoding is not None:
        fields.append(("Content-Encoding", encoding))
    wire = body
    if framing == "length":
        fields.append(("Content-Length", str(len(body))))
    elif framing == "chunked":
        fields.append(("Transfer-Encoding", draw(st.sampled_from(["chunked", "Chunked"]))))
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=5)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        wire = b"".join(
            f"{len(p):{draw(st.sampled_from(['x', 'X', '04x']))}}".encode()
            + draw(st.sampled_from([b"", b";ext=1", b";a "]))
            + b"\r\n"
            + p
            + b"\r\n"
            for p in pieces
            if p
        )
        wire += b"0\r\n" + draw(st.sampled_from([b"", b"Trailer-A: x\r\n"])) + b"\r\n"
    order = draw(st.permutations(fields))
    for name, value in order:
        spaces = draw(st.sampled_from(["", " ", "  ", "\t"]))
        # (no trailing blank after chunked: http.client would not see chunks then)
        after = "" if name == "Transfer-Encoding" else draw(st.sampled_from(["", " "]))
        head += f"{draw(_CASE)(name)}:{spaces}{value}{after}\r\n"
    return head.encode("latin-1") + b"\r\n" + wire


@given(answers())
@example(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
@example(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
@example(b"HTTP/1.0 200 OK\r\n\r\nabc")
def test_well_formed_answers_are_read_as_http_client_reads_them(raw: bytes) -> None:
    old, new, other = _old(raw), _new(raw), _h11(raw)
    assert old is not None and new is not None
    assert new[:2] == old[:2]
    assert new == other
    # reused exactly when http.client would have kept it, except that an HTTP/1.0
    # answer's connection is never reused (a new connection costs a connect, no more)
    assert new[2] == (old[2] and b"HTTP/1.0 " not in raw)


@st.composite
def broken(draw: st.DrawFn) -> bytes:
    """A well-formed answer with bytes changed, inserted, dropped or cut short."""
    raw = bytearray(draw(answers()))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw)))
        kind = draw(st.sampled_from(["flip", "insert", "drop", "cut"]))
        byte = draw(st.sampled_from([0, 9, 10, 13, 32, 45, 48, 58, 59, 97, 0x7F, 0xE9]))
        if kind == "flip" and at < len(raw):
            raw[at] = byte
        elif kind == "insert":
            raw[at:at] = bytes([byte])
        elif kind == "drop":
            del raw[at : at + draw(st.integers(1, 8))]
        else:
            del raw[at:]
    return bytes(raw)


@given(broken())
@example(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")
@example(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n X-Folded: yes\r\n\r\nabc")
@example(b"HTTP/1.1 200 OK\nContent-Length: 3\n\nabc")
@example(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc")
@example(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
@example(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n")
@example(b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc")
@example(b"HTTP/1.2 200 OK\r\nContent-Length: 3\r\n\r\nabc")
@example(b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
@example(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")
@example(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Encoding: gzip\r\n\r\nabc")
@example(b"")
def test_what_the_reader_accepts_http_client_reads_the_same(raw: bytes) -> None:
    new = _new(raw)
    if new is None:
        return
    assert _h11(raw) == new


def test_refusals_of_hostile_answers() -> None:
    for raw in (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n X-Folded: yes\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n" * 9 + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc",  # closed before the end
    ):
        assert _new(raw) is None, raw[:80]


@pytest.mark.parametrize("framing", ["length", "chunked", "none"])
def test_an_answer_over_the_limit_is_cut_and_its_connection_dropped(framing: str) -> None:
    body = b"x" * (MAX_ANSWER_BYTES + 4096)
    if framing == "length":
        raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    elif framing == "chunked":
        chunk = b"x" * 65536
        count = len(body) // len(chunk) + 1
        raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        raw += b"10000\r\n" + chunk + b"\r\n"
        raw = raw + (b"10000\r\n" + chunk + b"\r\n") * (count - 1) + b"0\r\n\r\n"
    else:
        raw = b"HTTP/1.1 200 OK\r\n\r\n" + body
    # the sender keeps its end open: the reader stops at the limit, it does not wait
    assert _new(raw, close=False) == (200, b"x" * (MAX_ANSWER_BYTES + 1), False)
    assert _old(raw) == (200, b"x" * (MAX_ANSWER_BYTES + 1), False)


def test_a_server_that_sends_more_than_its_answer_loses_the_connection() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\n"
    assert _new(raw, close=False) == (200, b"abc", False)


def test_an_answer_that_trickles_past_the_time_limit_is_a_timeout() -> None:
    ours, theirs = socket.socketpair()
    ours.settimeout(HANG_SECONDS)
    conn = _Connection(ours)
    try:
        theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        # the deadline has passed once the first bytes are in: the reader gives up at
        # its next wait instead of waiting for the rest
        with pytest.raises(TimeoutError):
            conn.answer(time.monotonic() - 1.0)
    finally:
        conn.close()
        theirs.close()


def test_a_connection_closed_before_any_answer_is_lost() -> None:
    ours, theirs = socket.socketpair()
    theirs.close()
    conn = _Connection(ours)
    try:
        with pytest.raises(_Closed):
            conn.answer(time.monotonic() + HANG_SECONDS)
    finally:
        conn.close()


# --- the answer document ---------------------------------------------------------


def _text(root: Element, tag: str) -> str | None:
    node = root.find(tag)
    if node is None or node.text is None:
        return None
    return node.text.strip()


def _old_parse(body: bytes) -> Answer:
    """The parse this module's fast path replaced (defusedxml's ElementTree)."""
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


def _either(parse: object, body: bytes) -> object:
    try:
        return parse(body)  # type: ignore[operator]
    except OutcomeUnknownError as exc:
        return ("error", str(exc))
    except LookupError as exc:  # the old parse let an unknown encoding's error escape
        return ("error", f"receiver answered malformed XML ({exc})")


_TAGS = [
    "reportResponse",
    "reportDoneResponse",
    "responseCode",
    "responseDescription",
    "reportId",
    "fileId",
    "hash",
    "files",
    "other",
    "x:fileId",
]
_TEXT = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "0",
                " 5102 ",
                "12",
                "-3",
                "abc",
                "\n  ",
                "&amp;",
                "&#65;",
                "&#x31;",
                "&lt;",
                "&undefined;",
                "<![CDATA[7<]]>",
                "<!-- c -->",
                "<?pi x?>",
                "ABCDEF0123",
                "é",
                "&",
            ]
        ),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF), max_size=6),
    ),
    max_size=4,
).map("".join)


def _element(depth: int) -> st.SearchStrategy[str]:
    children = st.lists(_element(depth - 1), max_size=4) if depth > 0 else st.just([])

    @st.composite
    def build(draw: st.DrawFn) -> str:
        tag = draw(st.sampled_from(_TAGS))
        attrs = draw(st.sampled_from(["", ' a="1"', ' xmlns="urn:x"', ' xmlns:x="urn:y"']))
        inner = draw(_TEXT)
        for child in draw(children):
            inner += child + draw(_TEXT)
        return f"<{tag}{attrs}>{inner}</{tag}>"

    return build()


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    """Answer-like documents: the ISPWS elements nested at random, texts with entities,
    character references, CDATA, comments and PIs, namespaces, sometimes a DOCTYPE,
    an XML declaration, an encoding, or bytes cut or changed."""
    prolog = draw(
        st.sampled_from(
            [
                "",
                '<?xml version="1.0" encoding="UTF-8"?>\n',
                '<?xml version="1.0" encoding="ISO-8859-1"?>',
                '<?xml version="1.0" encoding="bogus"?>',
                "<!DOCTYPE reportResponse>",
                '<!DOCTYPE r [<!ENTITY a "aaaa">]>',
                '<!DOCTYPE r SYSTEM "http://127.0.0.1:1/x.dtd">',
                "<!-- lead -->",
            ]
        )
    )
    root = draw(st.sampled_from(["reportResponse", "reportDoneResponse", "other", "x:y"]))
    inner = "".join(draw(st.lists(_element(2), max_size=6)))
    doc = prolog + f"<{root}>{inner}</{root}>" + draw(st.sampled_from(["", "\n", "<a/>"]))
    data = bytearray(doc.encode("utf-8"))
    if data and draw(st.integers(0, 4)) == 0:
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.sampled_from([0, 0x3C, 0x26, 0xFF, 0x20]))
    return bytes(data)


@given(documents())
@example(b"")
@example(b"<reportResponse><responseCode>0<x/>1</responseCode></reportResponse>")
@example(
    b"<reportResponse><files><a>1</a><fileId> 2 </fileId></files><files><b/></files>"
    b"<responseCode>0</responseCode></reportResponse>"
)
@example(b'<reportResponse xmlns="urn:x"><responseCode>0</responseCode></reportResponse>')
@example(b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY b "&#38;#38;">]><reportResponse/>')
def test_answers_are_parsed_as_defusedxml_parsed_them(body: bytes) -> None:
    assert _either(parse_answer, body) == _either(_old_parse, body)


# --- the requests ------------------------------------------------------------------


def test_the_requests_are_the_bytes_http_client_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every call's request, byte for byte, as the client sent it through http.client
    (the same header order and values; the multipart boundary fixed for the test)."""
    from tipline.services.reports import client as module

    answer = (
        b"<reportResponse><responseCode>0</responseCode><reportId>5</reportId>"
        b"<fileId>f1</fileId><hash>ABC</hash></reportResponse>"
    )
    got: list[bytes] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            buf = b""
            for _ in range(6):
                while b"\r\n\r\n" not in buf:
                    buf += conn.recv(65536)
                head, _, rest = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(rest) < length:
                    rest += conn.recv(65536)
                got.append(head + b"\r\n\r\n" + rest[:length])
                buf = rest[length:]
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(answer))
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    monkeypatch.setattr(module.os, "urandom", lambda n: b"\x01" * n)
    client = module.IspwsClient(f"http://127.0.0.1:{port}/ispws", "user", "pw")
    data = b"\x00\r\n--x" * 1000
    try:
        client.status()
        client.submit(b"<report/>")
        client.upload(5, 'a "b".jpg', data)
        client.fileinfo(b"<fileDetails/>")
        client.finish(5)
        client.retract(5)
    finally:
        client.close()
        listener.close()
    thread.join(timeout=HANG_SECONDS)
    head = (
        f"Host: 127.0.0.1:{port}\r\nAuthorization: Basic dXNlcjpwdw==\r\nAccept: */*\r\n"
        "Accept-Encoding: identity\r\nUser-Agent: tipline-ispws\r\n"
    ).encode()
    boundary = b"01" * 16
    upload = (
        (
            b'--%s\r\nContent-Disposition: form-data; name="id"\r\n\r\n5\r\n'
            b'--%s\r\nContent-Disposition: form-data; name="file"; filename="a %%22b%%22.jpg"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n" % (boundary, boundary)
        )
        + data
        + b"\r\n--%s--\r\n" % boundary
    )
    form = b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4\r\n\r\nid=5"
    xml = b"Content-Type: text/xml; charset=utf-8\r\n"
    assert got == [
        b"GET /ispws/status HTTP/1.1\r\n" + head + b"\r\n",
        b"POST /ispws/submit HTTP/1.1\r\n" + head + xml + b"Content-Length: 9\r\n\r\n<report/>",
        b"POST /ispws/upload HTTP/1.1\r\n"
        + head
        + b"Content-Type: multipart/form-data; boundary=%s\r\n" % boundary
        + b"Content-Length: %d\r\n\r\n" % len(upload)
        + upload,
        b"POST /ispws/fileinfo HTTP/1.1\r\n"
        + head
        + xml
        + b"Content-Length: 14\r\n\r\n<fileDetails/>",
        b"POST /ispws/finish HTTP/1.1\r\n" + head + form,
        b"POST /ispws/retract HTTP/1.1\r\n" + head + form,
    ]


def test_bytes_waiting_in_a_tls_socket_after_an_answer_lose_the_connection() -> None:
    """A TLS socket may hold decrypted bytes that polling its descriptor cannot see."""

    class _Tls:
        def __init__(self, sock: socket.socket, waiting: int) -> None:
            self.sock, self.waiting = sock, waiting

        def recv(self, size: int) -> bytes:
            return self.sock.recv(size)

        def pending(self) -> int:
            return self.waiting

        def close(self) -> None:
            self.sock.close()

    for waiting, clean in ((0, True), (5, False)):
        ours, theirs = socket.socketpair()
        ours.settimeout(HANG_SECONDS)
        conn = _Connection(_Tls(ours, waiting))  # type: ignore[arg-type]
        try:
            theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
            assert conn.answer(time.monotonic() + HANG_SECONDS) == (200, b"abc", True)
            assert conn.clean is clean
        finally:
            conn.close()
            theirs.close()
