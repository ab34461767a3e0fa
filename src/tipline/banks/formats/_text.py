"""Line-by-line decoding of hash-list files with per-line errors and a line-size cap."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

from tipline.errors import ImportFormatError

#: Longest line accepted, in bytes; longer lines are reported and skipped.
MAX_LINE_BYTES = 4 * 1024 * 1024


class Lines:
    """Iterates the decoded lines of a binary stream (newlines kept, as csv wants).

    Undecodable or over-long lines are skipped and collected in :attr:`errors`, which
    the reader drains after each record so errors keep their place in the output.
    """

    def __init__(self, stream: IO[bytes], path: str | None) -> None:
        self._stream = stream
        self._path = path
        self.line = 0  # 1-based number of the last line returned
        self.errors: list[ImportFormatError] = []

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        while True:
            raw = self._stream.readline(MAX_LINE_BYTES + 1)
            if not raw:
                raise StopIteration
            self.line += 1
            if len(raw) > MAX_LINE_BYTES:
                self.errors.append(
                    ImportFormatError(
                        f"line longer than {MAX_LINE_BYTES} bytes", path=self._path, line=self.line
                    )
                )
                while raw and not raw.endswith(b"\n"):  # skip the rest of the line
                    raw = self._stream.readline(MAX_LINE_BYTES + 1)
                continue
            if self.line == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.errors.append(
                    ImportFormatError(
                        f"not UTF-8 text ({exc.reason})", path=self._path, line=self.line
                    )
                )

    def drain(self) -> list[ImportFormatError]:
        """The errors collected since the last call."""
        out, self.errors = self.errors, []
        return out
