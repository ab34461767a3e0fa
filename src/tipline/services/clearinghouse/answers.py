"""ISPWS answer documents (``reportResponse``, ``reportDoneResponse``) and the
response codes clients know (see ``../shared/reference/cybertipline/PROTOCOL.md``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from xml.sax.saxutils import escape

_DECLARATION = "<?xml version='1.0' encoding='UTF-8'?>\n"


class Code(enum.IntEnum):
    """``responseCode`` values the intake answers with."""

    SUCCESS = 0
    SERVER_ERROR = 1000
    SAVE_FAILED = 1100
    RESOURCE_NOT_FOUND = 1210
    INVALID_REQUEST = 4000
    VALIDATION_FAILED = 4100
    MALFORMED_XML = 4110
    MALFORMED_FILE = 4200
    REPORT_NOT_FOUND = 5001
    FILE_NOT_FOUND = 5002
    REPORT_RETRACTED = 5101
    REPORT_FINISHED = 5102


@dataclass(frozen=True, slots=True)
class IspwsAnswer:
    """One answer; :meth:`render` gives the XML document sent with HTTP 200."""

    code: Code
    description: str
    report_id: int | None = None
    file_id: str | None = None
    md5: str | None = None
    #: for ``finish``: the report's file ids (rendered as ``reportDoneResponse``)
    files: tuple[str, ...] | None = None

    @property
    def ok(self) -> bool:
        """True for a success answer."""
        return self.code is Code.SUCCESS

    def render(self) -> bytes:
        """The answer document (UTF-8)."""
        if self.files is not None:
            listed = "".join(f"<fileId>{escape(f)}</fileId>" for f in self.files)
            return (
                f"{_DECLARATION}<reportDoneResponse>"
                f"<responseCode>{int(self.code)}</responseCode>"
                f"<reportId>{self.report_id}</reportId><files>{listed}</files>"
                f"</reportDoneResponse>"
            ).encode()
        parts = [
            f"<responseCode>{int(self.code)}</responseCode>",
            f"<responseDescription>{escape(self.description)}</responseDescription>",
        ]
        if self.report_id is not None:
            parts.append(f"<reportId>{self.report_id}</reportId>")
        if self.file_id is not None:
            parts.append(f"<fileId>{escape(self.file_id)}</fileId>")
        if self.md5 is not None:
            parts.append(f"<hash>{escape(self.md5)}</hash>")
        body = "".join(parts)
        return f"{_DECLARATION}<reportResponse>{body}</reportResponse>".encode()


def refused(code: Code, description: str, report_id: int | None = None) -> IspwsAnswer:
    """An error answer."""
    return IspwsAnswer(code, description, report_id=report_id)
