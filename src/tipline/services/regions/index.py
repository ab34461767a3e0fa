"""Every stored region descriptor, searched with a query's PDQ.

Caught up from ``bank_regions`` by change sequence on every :meth:`RegionIndex.refresh`
(the Matcher calls it when it looks at the database for new signals). New rows go to a
delta scanned by brute force; past :data:`REBUILD_AFTER` delta rows the base multi-index
(:class:`~tipline.index.pdq.PdqIndex`) is rebuilt with them.

With a folder (the Matcher's ``<index dir>/regions``), the base is an index file, like
the PDQ index files (:mod:`tipline.services.matching.index_files`)::

    <dir>/meta.json                 the file, the (seq, id) it holds rows up to, the
                                    database instance, the region names
    <dir>/regions-<tag>.tpi         a PDQ segment (memory-mapped, checksummed) whose
                                    ids are row numbers, with the sections ``entry``
                                    (entry pk per row) and ``region`` (name code per row)

A new Matcher memory-maps that file (the page cache shares it between processes) and
reads only the rows added after it from the database, instead of every row (about 600
per entry added from media). A missing, damaged or foreign file is ignored (every row is
read from the database and the next rebuild writes a new file). Without a folder the
base lives in memory. Rows of deleted entries stay (until a file that cannot be used
makes a rebuild from the database); the Matcher checks every region hit against the
stored rows (an entry pk may be given again) and drops hits whose entry is gone,
disabled, or in a bank with ``region_matching`` off.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from tipline.errors import IndexCorruptError
from tipline.index.files import read_segment
from tipline.index.pdq import (
    PdqIndex,
    brute_force_rows,
    check_radius,
    hashes_to_words,
    query_words,
)
from tipline.store import bank_repository as bank_repo
from tipline.store import region_repository as regions_repo

log = logging.getLogger("tipline.matching")

#: Delta rows (brute-force scanned) that trigger a rebuild of the base index.
REBUILD_AFTER = 20_000
#: Rows read per page when catching up.
PAGE = 50_000
#: Version of the folder's meta.json; another one is ignored.
META_FORMAT = 1
_META = "meta.json"


@dataclass(frozen=True, slots=True)
class RegionHit:
    """One region descriptor within the radius of a query hash."""

    entry_pk: int
    region: str
    value: str
    distance: int


@dataclass(frozen=True, slots=True)
class _Base:
    """The base rows: a PDQ index whose ids are row numbers, and per row its entry pk
    and region name code."""

    index: PdqIndex
    entry: npt.NDArray[np.int64]
    region: npt.NDArray[np.int32]

    def __len__(self) -> int:
        return int(self.entry.shape[0])

    def words_by_row(self) -> npt.NDArray[np.uint64]:
        """The hashes as (n, 4) words in row order (the index keeps them in hash order)."""
        out = np.empty((len(self), 4), np.uint64)
        out[np.asarray(self.index.ids)] = self.index.words
        return out


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``directory/.lock``: one process writes the folder at once."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class RegionIndex:
    """Region descriptors of every bank entry; thread-safe.

    ``directory`` keeps the base in an index file there (see the module docstring),
    valid for the database ``instance`` only; None keeps it in memory.
    """

    def __init__(self, directory: Path | None = None, instance: str = "") -> None:
        self._lock = threading.Lock()
        self._dir = directory
        self._instance = instance
        self._opened = False
        self._after = (0, 0)
        self._names: list[str] = []  # code -> region name
        self._codes: dict[str, int] = {}
        self._base: _Base | None = None
        self._entry: list[int] = []  # delta row -> entry pk
        self._region: list[int] = []  # delta row -> region name code
        self._hashes: list[bytes] = []  # delta row -> 32-byte PDQ
        self._delta: npt.NDArray[np.uint64] | None = None  # the delta hashes as words
        #: rows the last open took from the index file (0: none, read from the database)
        self.from_file = 0

    def __len__(self) -> int:
        return (len(self._base) if self._base is not None else 0) + len(self._entry)

    def _code(self, name: str) -> int:
        code = self._codes.get(name)
        if code is None:
            code = self._codes[name] = len(self._names)
            self._names.append(name)
        return code

    def refresh(self, session: Session) -> int:
        """Read the rows committed since the last call; returns how many (the first
        call opens the folder's index file when it fits the database)."""
        added = 0
        with self._lock:
            if not self._opened:
                self._opened = True
                if self._dir is not None:
                    self._open(session)
            while True:
                page = regions_repo.regions_page(session, self._after, limit=PAGE)
                for row in page:
                    self._entry.append(row.entry_pk)
                    self._region.append(self._code(row.region))
                    self._hashes.append(bytes.fromhex(row.value))
                if page:
                    self._after = (page[-1].seq, page[-1].id)
                    added += len(page)
                if len(page) < PAGE:
                    break
            if len(self._entry) > REBUILD_AFTER:
                self._rebuild()
        return added

    # -- the index file -----------------------------------------------------------------

    def _open(self, session: Session) -> None:
        """Take the base from the folder's file when it is usable (else log why)."""
        assert self._dir is not None
        meta_path = self._dir / _META
        if not meta_path.exists():
            return
        try:
            meta = json.loads(meta_path.read_text())
            if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
                raise ValueError("meta.json has an unknown format")
            if meta.get("instance") != self._instance:
                raise ValueError("it was built from another database")
            after = (int(meta["seq"]), int(meta["after_id"]))
            if after[0] > bank_repo.current_seq(session):
                raise ValueError("it is newer than the database")
            names = [str(n) for n in meta["names"]]
            file = str(meta["file"])
            if not file.startswith("regions-") or "/" in file or not file.endswith(".tpi"):
                raise ValueError(f"meta.json names an odd file {file!r}")
            seg = read_segment(self._dir / file, "pdq")
            index = PdqIndex.from_segment(seg)
            entry, region = seg.arrays["entry"], seg.arrays["region"]
            n = len(index)
            if entry.shape != (n,) or region.shape != (n,) or entry.dtype != np.int64:
                raise IndexCorruptError("region sections have inconsistent shapes")
            if region.dtype != np.int32 or (n and int(region.max()) >= len(names)):
                raise IndexCorruptError("region name codes out of range")
        except (OSError, ValueError, KeyError, TypeError, IndexCorruptError) as exc:
            log.warning("region index in %s is not used (%s); reading the rows", self._dir, exc)
            return
        self._base = _Base(index, entry, region)
        self._names = names
        self._codes = {name: code for code, name in enumerate(names)}
        self._after = after
        self.from_file = n

    def _rebuild(self) -> None:
        """Fold the delta into a new base (a new file in the folder, when there is one)."""
        n_delta = len(self._entry)
        delta_words = hashes_to_words(
            np.frombuffer(b"".join(self._hashes), np.uint8).reshape(n_delta, 32)
        )
        entry = np.asarray(self._entry, np.int64)
        region = np.asarray(self._region, np.int32)
        if self._base is not None:
            delta_words = np.concatenate([self._base.words_by_row(), delta_words])
            entry = np.concatenate([np.asarray(self._base.entry), entry])
            region = np.concatenate([np.asarray(self._base.region), region])
        rows = np.arange(entry.shape[0], dtype=np.int64)
        if self._dir is None:
            base = _Base(PdqIndex.from_words(rows, delta_words), entry, region)
        else:
            base = self._write(rows, delta_words, entry, region)
        self._base = base
        self._entry, self._region, self._hashes, self._delta = [], [], [], None

    def _write(
        self,
        rows: npt.NDArray[np.int64],
        words: npt.NDArray[np.uint64],
        entry: npt.NDArray[np.int64],
        region: npt.NDArray[np.int32],
    ) -> _Base:
        assert self._dir is not None
        with _locked(self._dir):
            name = f"regions-{time.time_ns():x}-{os.getpid()}.tpi"
            PdqIndex.build_file(
                self._dir / name, rows, words, extra={"entry": entry, "region": region}
            )
            seg = read_segment(self._dir / name, "pdq", verify=False)
            meta: dict[str, Any] = {
                "format": META_FORMAT,
                "instance": self._instance,
                "seq": self._after[0],
                "after_id": self._after[1],
                "file": name,
                "names": self._names,
            }
            tmp = self._dir / f".{_META}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(tmp, "w") as fh:
                json.dump(meta, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._dir / _META)
            for old in self._dir.glob("regions-*.tpi"):
                if old.name != name:  # processes that mapped it keep their mapping
                    with contextlib.suppress(FileNotFoundError):
                        old.unlink()
        return _Base(PdqIndex.from_segment(seg), seg.arrays["entry"], seg.arrays["region"])

    # -- search -------------------------------------------------------------------------

    def search(self, query_hex: str, radius: int) -> list[RegionHit]:
        """Each entry's closest region within ``radius`` bits of the query PDQ (at most
        one hit per entry: its smallest distance, then the first stored region)."""
        radius = check_radius(radius)
        query = bytes.fromhex(query_hex)
        with self._lock:
            base, names = self._base, self._names
            found: list[tuple[int, int, int, int, bytes]] = []  # (row, d, entry, code, hash)
            offset = 0
            if base is not None:
                offset = len(base)
                positions, dist = base.index.search_rows(query_words(query), radius)
                for p, d in zip(positions.tolist(), dist.tolist(), strict=True):
                    row = int(base.index.ids[p])
                    value = base.index.words[p].astype(">u8").tobytes()
                    found.append((row, d, int(base.entry[row]), int(base.region[row]), value))
            if self._entry:
                if self._delta is None or self._delta.shape[0] != len(self._hashes):
                    joined = np.frombuffer(b"".join(self._hashes), np.uint8)
                    self._delta = hashes_to_words(joined.reshape(len(self._hashes), 32))
                rows, dist = brute_force_rows(query_words(query), radius, self._delta)
                for i, d in zip(rows.tolist(), dist.tolist(), strict=True):
                    found.append((offset + i, d, self._entry[i], self._region[i], self._hashes[i]))
            best: dict[int, tuple[int, int, int, bytes]] = {}
            for row, d, pk, code, value in found:
                if pk not in best or (d, row) < best[pk][:2]:
                    best[pk] = (d, row, code, value)
            return [
                RegionHit(pk, names[code], value.hex(), d)
                for pk, (d, _row, code, value) in best.items()
            ]
