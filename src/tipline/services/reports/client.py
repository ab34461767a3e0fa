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
(the client's ``repr`` omits it). The transport is injectable (httpx), so tests run
against a real local server or an ``httpx.MockTransport``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from tipline._optional import require
from tipline.errors import TiplineError

#: answers larger than this are not the documented XML
MAX_ANSWER_BYTES = 1024 * 1024

#: responseCode values meaning "the server failed; nothing was saved, try again"
RETRYABLE_CODES = frozenset({1000, 1100, 1110, 1111, 1300})
REPORT_ALREADY_RETRACTED = 5101
REPORT_ALREADY_FINISHED = 5102


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
    ) -> None:
        httpx = require("httpx")
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=httpx.BasicAuth(username, password),
            timeout=httpx.Timeout(timeout),
            transport=transport,
            trust_env=False,
            follow_redirects=False,
            # every thread of a delivery keeps its connection open between calls
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )
        self._httpx = httpx

    def __repr__(self) -> str:
        return f"IspwsClient(base_url={self.base_url!r}, username={self.username!r})"

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Answer:
        httpx = self._httpx
        try:
            response = self._http.request(method, path, **kwargs)
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
        if response.status_code >= 500:
            raise OutcomeUnknownError(f"{path}: HTTP {response.status_code}")
        if response.status_code == 401:
            raise ReceiverRefusedError(f"{path}: authentication failed (HTTP 401)")
        if response.status_code >= 400:
            raise ReceiverRefusedError(f"{path}: HTTP {response.status_code}")
        answer = parse_answer(response.content)
        if answer.response_code == 0:
            return answer
        message = f"{path}: responseCode {answer.response_code}: {answer.description[:2000]}"
        if answer.response_code in RETRYABLE_CODES:
            raise ReceiverBusyError(message, response_code=answer.response_code)
        raise ReceiverRefusedError(message, response_code=answer.response_code)

    def status(self) -> Answer:
        """``GET /status``: is the service up and the account accepted."""
        return self._call("GET", "/status")

    def submit(self, report_xml: bytes) -> int:
        """``POST /submit``: open a report; returns the receiver's report id."""
        answer = self._call(
            "POST",
            "/submit",
            content=report_xml,
            headers={"Content-Type": "text/xml; charset=utf-8"},
        )
        if answer.report_id is None:
            raise OutcomeUnknownError("/submit: success without a reportId")
        return answer.report_id

    def upload(self, report_id: int, file_name: str, data: bytes) -> Answer:
        """``POST /upload``: attach a file; the answer carries ``file_id`` and ``md5``."""
        answer = self._call(
            "POST",
            "/upload",
            data={"id": str(report_id)},
            files={"file": (file_name, data, "application/octet-stream")},
        )
        if not answer.file_id or not answer.md5:
            raise OutcomeUnknownError("/upload: success without fileId and hash")
        return answer

    def fileinfo(self, file_details_xml: bytes) -> Answer:
        """``POST /fileinfo``: describe an attached file."""
        return self._call(
            "POST",
            "/fileinfo",
            content=file_details_xml,
            headers={"Content-Type": "text/xml; charset=utf-8"},
        )

    def finish(self, report_id: int) -> Answer:
        """``POST /finish``: close the report; the answer lists its files."""
        return self._call("POST", "/finish", data={"id": str(report_id)})

    def retract(self, report_id: int) -> Answer:
        """``POST /retract``: withdraw an unfinished report."""
        return self._call("POST", "/retract", data={"id": str(report_id)})
