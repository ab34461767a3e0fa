"""Command-line inputs shared by commands: files, folders (walked) and ``-`` for stdin."""

from __future__ import annotations

import os

from tipline.errors import MediaError
from tipline.signals.hashing import HashResult

STDIN = "-"

#: Items to hash in order: a path, ``-`` for stdin, or a result that failed already
#: (an unreadable folder found while walking).
Item = str | HashResult


def expand(paths: list[str]) -> list[Item]:
    """Files named directly, files under folders (sorted, recursive), ``-`` as is."""
    items: list[Item] = []
    for path in paths:
        if path == STDIN or not os.path.isdir(path):
            items.append(path)
            continue
        failed: list[HashResult] = []

        def on_error(exc: OSError, failed: list[HashResult] = failed, top: str = path) -> None:
            where = str(exc.filename) if exc.filename else top
            reason = "permission denied" if isinstance(exc, PermissionError) else exc.strerror
            failed.append(HashResult(path=where, error=MediaError(reason or str(exc))))

        for root, dirs, files in os.walk(path, onerror=on_error):
            dirs.sort()
            items.extend(failed)
            failed.clear()
            items.extend(os.path.join(root, name) for name in sorted(files))
        items.extend(failed)
    return items
