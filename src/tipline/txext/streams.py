"""pytx hands an index a binary stream; tipline's segment files are read and written
by path. These two helpers carry a segment between the two through a private
temporary file, removed however the call ends."""

from __future__ import annotations

import os
import tempfile
import typing as t
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tipline.index.files import Segment, read_segment

_CHUNK = 1 << 20


def _temporary() -> Path:
    fd, name = tempfile.mkstemp(prefix="tipline-pytx-", suffix=".seg")
    os.close(fd)
    return Path(name)


def write_to_stream(write: Callable[[Path], None], fout: t.BinaryIO) -> None:
    """Let ``write`` write a segment file, then copy it to ``fout``."""
    path = _temporary()
    try:
        write(path)
        with open(path, "rb") as fin:
            while chunk := fin.read(_CHUNK):
                fout.write(chunk)
    finally:
        path.unlink(missing_ok=True)


@contextmanager
def segment_from_stream(fin: t.BinaryIO, kind: str) -> Iterator[Segment]:
    """The segment of ``kind`` read (checksums verified) from ``fin``'s bytes."""
    path = _temporary()
    try:
        with open(path, "wb") as out:
            while chunk := fin.read(_CHUNK):
                out.write(chunk)
        yield read_segment(path, kind, verify=True)
    finally:
        path.unlink(missing_ok=True)
