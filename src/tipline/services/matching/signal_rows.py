"""Bank signals held in memory, grouped by the index kind of their signal type.

One :class:`SignalRows` holds what a full build reads from the database, what arrived
since the base index files were written (the *delta*), or a delta being merged. Each
signal type's :class:`~tipline.signals.base.IndexKind` decides where a row goes, so a
plugin type gets its index by declaring one - nothing here names a signal type.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from tipline.errors import HashFormatError, ImportFormatError
from tipline.index.exact import WIDTHS
from tipline.index.pdq import PDQ_BYTES
from tipline.signals.base import IndexKind, SignalType, VideoFrame, index_kind, signal_types
from tipline.store import bank_repository as repo

log = logging.getLogger("tipline.matching")

IdArray = npt.NDArray[np.int64]
HashArray = npt.NDArray[np.uint8]


def kind_of(type_name: str) -> IndexKind:
    """The index kind of a registered type; BRUTE_FORCE for unknown names."""
    signal_type = signal_types().get(type_name)
    return IndexKind.BRUTE_FORCE if signal_type is None else index_kind(signal_type)


def exact_width(signal_type: SignalType) -> int:
    """Bytes an EXACT type's values take in its ExactIndex (its size, zero-padded up to
    the next width the index supports)."""
    n_bytes = int(getattr(signal_type, "n_bytes", 0))
    return next(w for w in WIDTHS if w >= n_bytes)


def exact_key(signal_type: SignalType, value: str) -> bytes:
    """An EXACT type's canonical hex value as its index key."""
    return bytes.fromhex(value).ljust(exact_width(signal_type), b"\0")


def video_frames(signal_type: SignalType, value: str) -> list[VideoFrame]:
    """The frames of a VIDEO type's value (the type's ``frames`` method)."""
    return list(cast(Any, signal_type).frames(value))


def hamming_rows(values: Sequence[str]) -> HashArray:
    """Hex values of a HAMMING type as (n, 32) uint8 rows, zero-padded on the right
    (padding keeps every Hamming distance)."""
    if not values:
        return np.zeros((0, PDQ_BYTES), np.uint8)
    width = len(values[0]) // 2
    rows = np.frombuffer(bytes.fromhex("".join(values)), np.uint8).reshape(-1, width)
    if width == PDQ_BYTES:
        return rows
    out = np.zeros((len(values), PDQ_BYTES), np.uint8)
    out[:, :width] = rows
    return out


@dataclass
class HammingRows:
    """Rows of one HAMMING type: recent (ids, hex) lists, packed to arrays per page."""

    ids: list[int] = field(default_factory=list)
    values: list[str] = field(default_factory=list)
    chunks: list[tuple[IdArray, HashArray]] = field(default_factory=list)

    def append(self, pk: int, value: str) -> None:
        self.ids.append(pk)
        self.values.append(value)

    def pack(self) -> None:
        """Move the lists into compact arrays (32 bytes a hash, not hex)."""
        if self.ids:
            ids = np.asarray(self.ids, np.int64)
            self.chunks.append((ids, hamming_rows(self.values).copy()))
            self.ids, self.values = [], []

    def arrays(self) -> tuple[IdArray, HashArray]:
        """Every row as (ids, (n, 32) uint8 hashes)."""
        self.pack()
        if not self.chunks:
            return np.zeros(0, np.int64), np.zeros((0, PDQ_BYTES), np.uint8)
        if len(self.chunks) > 1:
            ids = np.concatenate([c[0] for c in self.chunks])
            hashes = np.concatenate([c[1] for c in self.chunks])
            self.chunks = [(ids, hashes)]
        return self.chunks[0]

    def __len__(self) -> int:
        return len(self.ids) + sum(len(c[0]) for c in self.chunks)


@dataclass
class SignalRows:
    """Signals gathered from the database, by index kind, then by type name."""

    hamming: dict[str, HammingRows] = field(default_factory=dict)
    exact: dict[str, dict[bytes, list[int]]] = field(default_factory=dict)
    video: dict[str, list[tuple[int, list[VideoFrame]]]] = field(default_factory=dict)
    other: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    count: int = 0

    def pack(self) -> None:
        """Pack every HAMMING type's recent rows (after each database page)."""
        for rows in self.hamming.values():
            rows.pack()

    def add(self, change: repo.SignalChange) -> None:
        """File one signal row under its type's index kind."""
        self.count += 1
        name = change.type
        signal_type = signal_types().get(name)
        if signal_type is None:
            self.other.setdefault(name, []).append((change.entry_pk, change.value))
            return
        kind = index_kind(signal_type)
        if kind is IndexKind.HAMMING:
            self.hamming.setdefault(name, HammingRows()).append(change.entry_pk, change.value)
        elif kind is IndexKind.EXACT:
            key = exact_key(signal_type, change.value)
            self.exact.setdefault(name, {}).setdefault(key, []).append(change.entry_pk)
        elif kind is IndexKind.VIDEO:
            try:
                frames = video_frames(signal_type, change.value)
            except (ImportFormatError, HashFormatError) as exc:
                log.warning(
                    "entry %d: unreadable %s value skipped (%s)", change.entry_pk, name, exc
                )
                return
            self.video.setdefault(name, []).append((change.entry_pk, list(frames)))
        else:
            self.other.setdefault(name, []).append((change.entry_pk, change.value))

    def prepend(self, older: SignalRows) -> None:
        """Put ``older`` rows (a merge that failed) back in front of these."""
        older.pack()
        self.pack()
        for name, rows in older.hamming.items():
            self.hamming.setdefault(name, HammingRows()).chunks[:0] = rows.chunks
        for name, values in older.exact.items():
            target = self.exact.setdefault(name, {})
            for key, pks in values.items():
                target.setdefault(key, [])[:0] = pks
        for name, videos in older.video.items():
            self.video.setdefault(name, [])[:0] = videos
        for name, items in older.other.items():
            self.other.setdefault(name, [])[:0] = items
        self.count += older.count
