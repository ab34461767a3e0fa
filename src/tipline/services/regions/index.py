"""Every stored region descriptor in memory, searched with a query's PDQ.

Built from ``bank_regions`` when first used and caught up by change sequence on every
:meth:`RegionIndex.refresh` (the Matcher calls it when it looks at the database for new
signals). New rows go to a delta scanned by brute force; past :data:`REBUILD_AFTER`
rows the base multi-index (:class:`~tipline.index.pdq.PdqIndex`) is rebuilt with them
(in-memory, a few seconds per million descriptors). Rows of deleted entries stay until
the process restarts; the Matcher drops hits whose entry is gone, disabled, or in a bank
with ``region_matching`` off. Nothing is persisted: each new Matcher reads every region
row (about 600 per entry added from media) once, which suits banks of the
organisation's own media (thousands of entries), not millions.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from tipline.index.pdq import PdqIndex
from tipline.store import region_repository as regions_repo

#: Delta rows (brute-force scanned) that trigger a rebuild of the base index.
REBUILD_AFTER = 20_000
#: Rows read per page when catching up.
PAGE = 50_000


@dataclass(frozen=True, slots=True)
class RegionHit:
    """One region descriptor within the radius of a query hash."""

    entry_pk: int
    region: str
    value: str
    distance: int


class RegionIndex:
    """Region descriptors of every bank entry; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._after = (0, 0)
        self._entry: list[int] = []  # row number -> entry pk
        self._region: list[str] = []  # row number -> region name
        self._hashes: list[bytes] = []  # row number -> 32-byte PDQ
        self._base: PdqIndex | None = None
        self._base_rows = 0  # rows [0, _base_rows) are in the base index

    def __len__(self) -> int:
        return len(self._entry)

    def refresh(self, session: Session) -> int:
        """Read the rows committed since the last call; returns how many."""
        added = 0
        with self._lock:
            while True:
                page = regions_repo.regions_page(session, self._after, limit=PAGE)
                for row in page:
                    self._entry.append(row.entry_pk)
                    self._region.append(sys.intern(row.region))  # ~600 names in all
                    self._hashes.append(bytes.fromhex(row.value))
                if page:
                    self._after = (page[-1].seq, page[-1].id)
                    added += len(page)
                if len(page) < PAGE:
                    break
            if len(self._entry) - self._base_rows > REBUILD_AFTER:
                self._rebuild()
        return added

    def _rebuild(self) -> None:
        n = len(self._hashes)
        rows = np.frombuffer(b"".join(self._hashes), np.uint8).reshape(n, 32)
        self._base = PdqIndex.build(np.arange(n, dtype=np.int64), rows)
        self._base_rows = n

    def search(self, query_hex: str, radius: int) -> list[RegionHit]:
        """Each entry's closest region within ``radius`` bits of the query PDQ (at most
        one hit per entry: its smallest distance, then the first stored region)."""
        query = bytes.fromhex(query_hex)
        with self._lock:
            base, base_rows, n = self._base, self._base_rows, len(self._entry)
            rows: list[tuple[int, int]] = []
            if base is not None:
                ids, dist = base.search(query, radius)
                rows.extend(zip(ids.tolist(), dist.tolist(), strict=True))
            if n > base_rows:
                delta = np.frombuffer(b"".join(self._hashes[base_rows:n]), np.uint8)
                rows.extend(_scan(delta.reshape(n - base_rows, 32), query, radius, base_rows))
            best: dict[int, tuple[int, int]] = {}
            for row, d in rows:
                pk = self._entry[row]
                if pk not in best or (d, row) < best[pk]:
                    best[pk] = (d, row)
            return [
                RegionHit(pk, self._region[row], self._hashes[row].hex(), d)
                for pk, (d, row) in best.items()
            ]


def _scan(
    rows: npt.NDArray[np.uint8], query: bytes, radius: int, offset: int
) -> list[tuple[int, int]]:
    q = np.frombuffer(query, np.uint8)
    dist = np.unpackbits(rows ^ q, axis=1).sum(axis=1)
    return [(offset + int(i), int(dist[i])) for i in np.flatnonzero(dist <= radius)]
