"""The ISPWS client's two transports, against the real test receiver on 127.0.0.1.

The client speaks HTTP/1.1 itself (``http.client``, kept-alive connections, the upload
written from its buffer); given an httpx transport it goes through httpx with httpx's
own form and multipart encoding, as it always did. These tests run the same calls, with
the same injected faults, through both and require the same outcome (answer or error
class) and the same bytes, names and details on the receiver's side.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from _ispws_server import Faults, ispws_server
from _report_samples import minimal
from tipline.services.reports import builder
from tipline.services.reports.client import (
    IspwsClient,
    IspwsError,
    OutcomeUnknownError,
    ReceiverBusyError,
    ReceiverRefusedError,
    _readable,
)
from tipline.services.reports.model import ReportedFile

T = TypeVar("T")
TRANSPORTS = ("stdlib", "httpx")
DATA = bytes(range(256)) * 4096 + b"\r\n--tail"  # ~1 MB with CR LF and dashes inside


def _client(kind: str, url: str, user: str, password: str, timeout: float = 60.0) -> IspwsClient:
    transport = httpx.HTTPTransport() if kind == "httpx" else None
    return IspwsClient(url, user, password, timeout=timeout, transport=transport)


class _OnPath(Faults):
    """``kind`` on every request to ``path`` while armed."""

    def __init__(self, path: str, kind: str | None, hold_seconds: float = 2.0) -> None:
        super().__init__(hold_seconds=hold_seconds)
        self.path, self.kind, self.armed = path, kind, False

    def pick(self, path: str = "") -> str | None:
        return self.kind if self.armed and path == self.path else None


def _details(report_id: int, file_id: str, name: str, data: bytes) -> bytes:
    file = ReportedFile(
        file_name=name,
        md5=hashlib.md5(data).hexdigest(),
        sha1=hashlib.sha1(data).hexdigest(),
        size=len(data),
        viewed_by_esp=False,
        exif_viewed_by_esp=False,
    )
    return builder.build_file_details(file, report_id=report_id, file_id=file_id)


def _outcome(call: Callable[[], object]) -> tuple[str, int | None]:
    return _try(call)[0]


def _try(call: Callable[[], T]) -> tuple[tuple[str, int | None], T | None]:
    """((outcome, responseCode), the answer or None)."""
    try:
        return ("ok", None), call()
    except IspwsError as exc:
        return (type(exc).__name__, exc.response_code), None


def _flow(
    client: IspwsClient, faults: _OnPath, name: str = "photo.jpg"
) -> list[tuple[str, int | None]]:
    """submit, upload, fileinfo, finish and status, with the fault armed for its path
    only (a faulted submit or upload is made again unfaulted, to go on)."""
    xml = builder.build_report(minimal())
    outcomes = []
    faults.armed = faults.path == "/submit"
    outcome, report_id = _try(lambda: client.submit(xml))
    outcomes.append(outcome)
    faults.armed = False
    if report_id is None:
        report_id = client.submit(xml)
    rid = report_id
    faults.armed = faults.path == "/upload"
    outcome, answer = _try(lambda: client.upload(rid, name, DATA))
    outcomes.append(outcome)
    faults.armed = False
    if answer is None:
        answer = client.upload(rid, name, DATA)
    details = _details(rid, answer.file_id or "", name, DATA)
    faults.armed = faults.path == "/fileinfo"
    outcomes.append(_outcome(lambda: client.fileinfo(details)))
    faults.armed = faults.path == "/finish"
    outcomes.append(_outcome(lambda: client.finish(rid)))
    faults.armed = False
    outcomes.append(_outcome(client.status))
    return outcomes


FAULTS = (
    "500_before",
    "500_after",
    "drop_before",
    "drop_after",
    "garbage_after",
    "bad_encoding_after",
)


@pytest.mark.parametrize("kind", [None, *FAULTS])
@pytest.mark.parametrize("path", ["/submit", "/upload", "/fileinfo", "/finish"])
def test_both_transports_sort_every_answer_and_failure_alike(path: str, kind: str | None) -> None:
    seen = {}
    state = {}
    for transport in TRANSPORTS:
        faults = _OnPath(path, kind)
        with ispws_server(faults=faults) as rx:
            client = _client(transport, rx.url, rx.username, rx.password)
            try:
                seen[transport] = _flow(client, faults)
            finally:
                client.close()
            # what the receiver holds: per report, times finished and files attached
            state[transport] = sorted(
                (r.finished, len(r.files), sum(f.details is not None for f in r.files.values()))
                for r in rx.receiver.reports.values()
            )
    assert seen["stdlib"] == seen["httpx"]
    assert state["stdlib"] == state["httpx"]
    lost_finish = path == "/finish" and kind is not None and kind.endswith("_before")
    assert sum(finished for finished, _, _ in state["stdlib"]) == (0 if lost_finish else 1)
    faulted = seen["stdlib"][["/submit", "/upload", "/fileinfo", "/finish"].index(path)]
    if kind is None:
        assert all(outcome == ("ok", None) for outcome in seen["stdlib"])
    else:
        # every injected fault leaves the outcome unknown (before: HTTP 500 or a dropped
        # connection; after: the request took effect, its answer was lost or unreadable)
        assert faulted == (OutcomeUnknownError.__name__, None)
    # the calls after the faulted one worked on the same client (its pool recovered)
    assert seen["stdlib"][-1] == ("ok", None)


def test_the_receiver_gets_the_same_bytes_name_and_details_from_both() -> None:
    hostile = 'x "quoted";\r\nname=evil é.jpg'
    got = {}
    for transport in TRANSPORTS:
        with ispws_server() as rx:
            client = _client(transport, rx.url, rx.username, rx.password)
            try:
                assert _flow(client, _OnPath("/none", ""), name=hostile)[-1] == ("ok", None)
            finally:
                client.close()
            [report] = rx.receiver.reports.values()
            [file] = report.files.values()
            assert report.finished == 1
            got[transport] = (file.name, file.md5, file.size, report.xml)
    assert got["stdlib"] == got["httpx"]
    name, md5, size, _ = got["stdlib"]
    assert md5 == hashlib.md5(DATA).hexdigest() and size == len(DATA)
    assert "\r" not in name and "\n" not in name and '"' not in name


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_refusals_and_unreachable_receivers_are_sorted_alike(transport: str) -> None:
    with ispws_server() as rx:
        wrong = _client(transport, rx.url, rx.username, "not-the-password")
        try:
            assert _outcome(wrong.status) == (ReceiverRefusedError.__name__, None)
        finally:
            wrong.close()
        client = _client(transport, rx.url, rx.username, rx.password)
        try:
            # a report that does not exist: refused with the receiver's code
            assert _outcome(lambda: client.finish(1)) == (ReceiverRefusedError.__name__, 5001)
        finally:
            client.close()
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nobody = _client(transport, f"http://127.0.0.1:{port}/ispws", "u", "p")
    try:
        assert _outcome(nobody.status) == (ReceiverBusyError.__name__, None)
    finally:
        nobody.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_held_answer_is_an_unknown_outcome(transport: str) -> None:
    # the receiver holds the answer far beyond the client's time limit (and is told to
    # stop holding when the test ends): the outcome is unknown whatever the load
    faults = _OnPath("/upload", "timeout_after", hold_seconds=300.0)
    with ispws_server(faults=faults) as rx:
        client = _client(transport, rx.url, rx.username, rx.password, timeout=3.0)
        try:
            outcomes = _flow(client, faults)
        finally:
            client.close()
    assert outcomes[1] == (OutcomeUnknownError.__name__, None)
    assert outcomes[-1] == ("ok", None)


def test_a_kept_alive_connection_the_server_closed_is_not_reused() -> None:
    """A server that closes each connection after its answer (without saying so): the
    next call must open a new connection, not fail on the dead one."""
    answer = (
        b"<reportResponse><responseCode>0</responseCode>"
        b"<responseDescription>up</responseDescription></reportResponse>"
    )
    served: list[int] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def serve() -> None:
        while len(served) < 3:
            conn, _ = listener.accept()
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    request += chunk
                served.append(len(request))
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n"
                    + f"Content-Length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    client = IspwsClient(f"http://127.0.0.1:{port}/ispws", "u", "p")
    try:
        for _ in range(3):
            assert client.status().description == "up"
            # wait until the server's close has reached the pooled socket (a condition,
            # not a time slack: the loop ends as soon as it holds)
            idle = client._stdlib._idle if client._stdlib else []
            for _ in range(1000):
                if not idle or _readable(idle[-1].sock):  # type: ignore[arg-type]
                    break
                time.sleep(0.01)
    finally:
        client.close()
        listener.close()
    thread.join(timeout=30)
    assert len(served) == 3


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key (PEM files: cert, key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ispws-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_endpoints_are_verified_by_both_transports(tmp_path: Path) -> None:
    """Over TLS (as the CyberTipline endpoint is): with the receiver's certificate
    trusted, both transports deliver a report the same way; with the default trust
    store a self-signed receiver is refused at connect time (busy, nothing sent)."""
    cert, key = _self_signed(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    trusted = ssl.create_default_context(cafile=str(cert))
    got = {}
    with ispws_server(tls=server) as rx:
        assert rx.url.startswith("https://127.0.0.1:")
        clients = {
            "stdlib": IspwsClient(rx.url, rx.username, rx.password, tls_context=trusted),
            "httpx": IspwsClient(
                rx.url,
                rx.username,
                rx.password,
                transport=httpx.HTTPTransport(verify=trusted),
            ),
        }
        for transport, client in clients.items():
            try:
                got[transport] = _flow(client, _OnPath("/none", None))
            finally:
                client.close()
        for transport in TRANSPORTS:
            untrusting = _client(transport, rx.url, rx.username, rx.password)
            try:
                assert _outcome(untrusting.status) == (ReceiverBusyError.__name__, None)
            finally:
                untrusting.close()
        finished = [r for r in rx.receiver.reports.values() if r.finished]
    assert got["stdlib"] == got["httpx"] == [("ok", None)] * 5
    assert len(finished) == 2
    assert all(f.md5 == hashlib.md5(DATA).hexdigest() for r in finished for f in r.files.values())
