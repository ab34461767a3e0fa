"""Turn scan sources (folders, file lists, ``file://`` URLs) into an ordered item list.

Enumeration is deterministic (folders are walked in sorted order) so that a resumed
scan sees the same items. Problems found while walking - unreadable folders, symbolic
links that are not followed, symlink loops - become items that carry their error, so
they are recorded per item and the scan goes on.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import unquote, urlsplit

from tipline.errors import InputError

#: Source name meaning "a file list on standard input".
STDIN = "-"
#: Prefix of a file-list source given on the command line (``@list.txt``).
LIST_PREFIX = "@"


@dataclass(frozen=True, slots=True)
class ScanItem:
    """One thing to scan.

    ``content_id`` is what results are recorded under (the path, or an id given in a
    file list as ``ID<TAB>PATH``). ``error``/``error_code`` are set when the item is
    already known to fail (e.g. a refused symlink); such items are never hashed.
    """

    content_id: str
    path: str
    error: str | None = None
    error_code: str | None = None


class _Walker:
    """Sorted recursive walk of one root with the symlink policy applied."""

    def __init__(self, roots: Sequence[str], follow_symlinks: bool) -> None:
        self.roots = [os.path.realpath(r) for r in roots]
        self.follow = follow_symlinks

    def _inside_roots(self, real: str) -> bool:
        return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in self.roots)

    def _refuse(self, path: str, reason: str) -> ScanItem:
        return ScanItem(content_id=path, path=path, error=reason, error_code="symlink-refused")

    def walk(self, top: str) -> Iterator[ScanItem]:
        st = os.stat(top)
        yield from self._walk_dir(top, frozenset({(st.st_dev, st.st_ino)}))

    def _walk_dir(self, folder: str, ancestors: frozenset[tuple[int, int]]) -> Iterator[ScanItem]:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            reason = "permission denied" if isinstance(exc, PermissionError) else exc.strerror
            yield ScanItem(
                content_id=folder,
                path=folder,
                error=f"cannot list folder: {reason or exc}",
                error_code="bad-media",
            )
            return
        for entry in entries:
            path = entry.path
            try:
                is_link = entry.is_symlink()
            except OSError:
                is_link = False
            if is_link:
                refused = self._check_link(path)
                if refused is not None:
                    yield refused
                    continue
            try:
                is_dir = entry.is_dir(follow_symlinks=self.follow)
            except OSError:
                is_dir = False
            if is_dir:
                try:
                    st = os.stat(path, follow_symlinks=self.follow)
                except OSError as exc:
                    yield ScanItem(path, path, f"cannot stat: {exc.strerror}", "bad-media")
                    continue
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    # A link back to a folder being walked: following it never ends.
                    yield self._refuse(path, "symlink loop: links back to an enclosing folder")
                    continue
                yield from self._walk_dir(path, ancestors | {key})
            else:
                yield ScanItem(content_id=path, path=path)

    def _check_link(self, path: str) -> ScanItem | None:
        """None when the link may be followed; otherwise the refused item."""
        try:
            real = Path(path).resolve(strict=True)
        except RuntimeError:
            return self._refuse(path, "symlink loop")
        except OSError as exc:
            if exc.errno == 40:  # ELOOP
                return self._refuse(path, "symlink loop")
            return self._refuse(path, "dangling symlink: target does not exist")
        if self.follow:
            return None
        if not self._inside_roots(str(real)):
            return self._refuse(path, "symlink to a path outside the scanned roots: not followed")
        return self._refuse(path, "symlink not followed (use --follow-symlinks)")


def _file_url_path(url: str) -> str:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise InputError(f"file URL with a remote host is not supported: {url}")
    if parts.query or parts.fragment:
        raise InputError(f"file URL must not have a query or fragment: {url}")
    return unquote(parts.path)


def _in(base_dir: str | None, path: str) -> str:
    """``path`` resolved against ``base_dir`` when relative (unchanged without one)."""
    return os.path.join(base_dir, path) if base_dir is not None else path


def absolute_source(source: str, base_dir: str) -> str:
    """A source argument with its path made absolute against ``base_dir`` (``-`` and
    ``file://`` URLs unchanged), so that it means the same from any working folder."""
    if source == STDIN or source.startswith("file://"):
        return source
    if source.startswith(LIST_PREFIX):
        return LIST_PREFIX + os.path.abspath(_in(base_dir, source[len(LIST_PREFIX) :]))
    return os.path.abspath(_in(base_dir, source))


def check_sources(sources: Sequence[str]) -> None:
    """Refuse (InputError) a file-list source that cannot be read, before anything is
    recorded; files and folders that are missing become failed items instead."""
    for source in sources:
        if source.startswith(LIST_PREFIX):
            list_path = source[len(LIST_PREFIX) :]
            try:
                with open(list_path, encoding="utf-8"):
                    pass
            except OSError as exc:
                raise InputError(f"cannot read file list: {exc.strerror}", path=list_path) from None


def _list_items(stream: TextIO, origin: str, base_dir: str | None) -> Iterator[ScanItem]:
    """Items from a file list: ``PATH`` or ``ID<TAB>PATH`` per line; blanks and ``#`` skipped.
    Relative paths are resolved against ``base_dir`` when given."""
    for line in stream:
        text = line.rstrip("\r\n")
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        content_id, tab, path = text.partition("\t")
        if not tab:
            path = content_id
        if path.startswith("file://"):
            path = _file_url_path(path)
            if not tab:
                content_id = path
        if not path:
            raise InputError(f"{origin}: empty path in line {text!r}")
        if base_dir is not None:
            path = os.path.abspath(_in(base_dir, path))
            if not tab:
                content_id = path
        yield ScanItem(content_id=content_id, path=path)


def expand_sources(
    sources: Sequence[str],
    *,
    follow_symlinks: bool = False,
    stdin: TextIO | None = None,
    base_dir: str | None = None,
) -> list[ScanItem]:
    """Every item of ``sources`` in a stable order, duplicates (same content id) dropped.

    A source is a folder (walked recursively, sorted), a file, ``@LIST`` (a file list),
    ``-`` (a file list on stdin) or a ``file://`` URL to a file or folder. Symbolic
    links met while walking are not followed unless ``follow_symlinks``; loops are
    refused either way. With ``base_dir``, relative paths (sources and file-list lines)
    are resolved against it and items carry absolute paths. Raises InputError for an
    unusable source argument.
    """
    roots: list[str] = []
    plain: list[str] = []
    for source in sources:
        if base_dir is not None:
            source = absolute_source(source, base_dir)
        path = _file_url_path(source) if source.startswith("file://") else source
        plain.append(path)
        if path != STDIN and not path.startswith(LIST_PREFIX) and os.path.isdir(path):
            roots.append(path)
    walker = _Walker(roots, follow_symlinks)
    seen: set[str] = set()
    items: list[ScanItem] = []

    def add(batch: Iterator[ScanItem]) -> None:
        for item in batch:
            if item.content_id not in seen:
                seen.add(item.content_id)
                items.append(item)

    for path in plain:
        if path == STDIN:
            add(_list_items(stdin or sys.stdin, "<stdin>", base_dir))
        elif path.startswith(LIST_PREFIX):
            list_path = path[len(LIST_PREFIX) :]
            try:
                with open(list_path, encoding="utf-8") as fh:
                    add(_list_items(fh, list_path, base_dir))
            except OSError as exc:
                raise InputError(f"cannot read file list: {exc.strerror}", path=list_path) from None
        else:
            try:
                mode = os.stat(path).st_mode
            except OSError:
                mode = 0
            if stat.S_ISDIR(mode):
                add(walker.walk(path))
            else:
                # A missing or odd file named directly is recorded as a failed item.
                add(iter([ScanItem(content_id=path, path=path)]))
    return items
