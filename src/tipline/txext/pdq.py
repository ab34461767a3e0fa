"""tipline's exact PDQ index behind python-threatexchange's ``SignalTypeIndex``.

:class:`TiplinePDQIndex` answers like pytx's ``PDQIndex``: every entry whose hash is
within 31 bits (inclusive) of the query, each with its integer distance, duplicates of a
hash all returned. Searches go through :class:`tipline.index.pdq.PdqIndex` (multi-index
hashing, recall 1.0) over the entries indexed so far, plus a brute-force pass over the
ones added since (folded into a new base once :data:`REBUILD_AFTER` accumulate).

``serialize`` writes tipline's own segment file (the format of the matcher's index
files: little-endian arrays, a header, per-section checksums), never pickle. Entry
metadata is stored as JSON: plain JSON values (what HMA stores: content ids) as they
are, pytx's CLI metadata (collaboration names with ``FetchedSignalMetadata``
dataclasses, enums, sets) as tagged JSON that :mod:`tipline.txext.codec` rebuilds
without running any code from the file. ``deserialize`` checks the checksums.

:class:`TiplinePdqSignal` is pytx's ``pdq`` with this index (for HMA's storage
configuration, where it replaces ``PdqSignal``). :class:`TiplineHashedPdqSignal` is the
same hash under its own name, ``tipline_pdq``, hashed by tipline: the pytx CLI always
loads its own ``pdq``, so an extension can only add a type with another name.
"""

from __future__ import annotations

import typing as t
from pathlib import Path

import numpy as np
import numpy.typing as npt
from threatexchange.signal_type.index import (
    IndexMatchUntyped,
    SignalSimilarityInfoWithIntDistance,
    SignalTypeIndex,
)
from threatexchange.signal_type.pdq.signal import PdqSignal

from tipline.errors import IndexCorruptError
from tipline.index.pdq import PdqIndex, hashes_to_words
from tipline.txext import codec, streams

T = t.TypeVar("T")

#: pytx's PDQ_CONFIDENT_MATCH_THRESHOLD: matches are within this many bits (inclusive).
MATCH_THRESHOLD = 31
#: Hashes added after the last (re)build searched by brute force before a rebuild.
REBUILD_AFTER = 20_000
_KIND = "pytx-pdq"

Match = IndexMatchUntyped[SignalSimilarityInfoWithIntDistance, T]


def _hash_bytes(signal_str: str) -> bytes:
    raw = bytes.fromhex(PdqSignal.validate_signal_str(signal_str))
    return raw


class TiplinePDQIndex(SignalTypeIndex[T]):
    """A pytx ``SignalTypeIndex`` over PDQ hashes, searched by tipline's exact index."""

    @classmethod
    def get_match_threshold(cls) -> int:
        """Largest distance (bits, inclusive) a query reports."""
        return MATCH_THRESHOLD

    def __init__(self, entries: t.Iterable[tuple[str, T]] = ()) -> None:
        super().__init__()
        self._entries: list[T] = []
        self._hashes = bytearray()  # 32 bytes per entry, in entry order
        self._base: PdqIndex | None = None
        self._base_count = 0
        self.add_all(entries)

    def __len__(self) -> int:
        return len(self._entries)

    # -- building ------------------------------------------------------------------------

    def add(self, signal_str: str, entry: T) -> None:
        """Index one more hash (duplicates are kept, as in pytx)."""
        self.add_all(((signal_str, entry),))

    def add_all(self, entries: t.Iterable[tuple[str, T]]) -> None:
        """Index more hashes (ValueError for one that is not a PDQ hash)."""
        for signal_str, entry in entries:
            self._hashes += _hash_bytes(signal_str)
            self._entries.append(entry)
        if len(self._entries) - self._base_count >= REBUILD_AFTER:
            self._rebuild()

    def _rows(self) -> npt.NDArray[np.uint8]:
        return np.frombuffer(bytes(self._hashes), np.uint8).reshape(-1, 32)

    def _rebuild(self) -> None:
        rows = self._rows()
        self._base = PdqIndex.build(np.arange(len(rows), dtype=np.int64), rows)
        self._base_count = len(rows)

    # -- searching -----------------------------------------------------------------------

    def query(self, hash: str) -> t.Sequence[Match[T]]:
        """Every entry within :meth:`get_match_threshold` bits, with its distance."""
        if not hash:
            return []  # no usable hash (pytx's hashers answer "" below PDQ quality 50)
        query = _hash_bytes(hash)
        radius = self.get_match_threshold()
        found: list[tuple[int, int]] = []
        if self._base is not None and len(self._base):
            ids, dist = self._base.search(query, radius)
            found.extend(zip(ids.tolist(), dist.tolist(), strict=True))
        start = self._base_count
        if len(self._entries) > start:
            delta = self._rows()[start:]
            q = np.frombuffer(query, np.uint8)
            dist = np.unpackbits(delta ^ q, axis=1).sum(axis=1)
            for i in np.flatnonzero(dist <= radius).tolist():
                found.append((start + i, int(dist[i])))
        found.sort(key=lambda x: (x[1], x[0]))
        return [
            IndexMatchUntyped(SignalSimilarityInfoWithIntDistance(d), self._entries[i])
            for i, d in found
        ]

    # -- persistence (tipline's segment format, no pickle) ---------------------------------

    def serialize(self, fout: t.BinaryIO) -> None:
        """Write the index to ``fout`` as one tipline segment file."""
        section, meta = codec.dump_entries(self._entries)
        rows = self._rows()
        index = PdqIndex.build(np.arange(len(rows), dtype=np.int64), rows)
        extra: dict[str, np.ndarray[t.Any, t.Any]] = {
            "entry_words": hashes_to_words(rows),
            section: np.frombuffer(meta, np.uint8),
        }
        streams.write_to_stream(lambda path: index.save(path, extra=extra, kind=_KIND), fout)

    @classmethod
    def deserialize(cls, fin: t.BinaryIO) -> TiplinePDQIndex[T]:
        """Read an index written by :meth:`serialize` (IndexCorruptError when damaged)."""
        with streams.segment_from_stream(fin, _KIND) as seg:
            words = np.array(seg.arrays["entry_words"], dtype=np.uint64)
            entries = codec.load_entries(seg.arrays)
            base = PdqIndex.from_segment(seg)
        if len(entries) * 4 != words.size:
            raise IndexCorruptError("index entry metadata does not match its hashes")
        out_index: TiplinePDQIndex[T] = cls()
        out_index._entries = entries
        out_index._hashes = bytearray(words.astype(">u8").tobytes())
        out_index._base = base
        out_index._base_count = len(out_index._entries)
        return out_index


class TiplinePdqSignal(PdqSignal):
    """pytx's PDQ signal type (same name, hashes and comparisons) indexed by
    :class:`TiplinePDQIndex`; replaces ``pdq`` where pytx or HMA is configured with it."""

    @classmethod
    def get_name(cls) -> str:
        """``pdq``: the same signals as pytx's type, so stored hashes need no change."""
        return "pdq"

    @classmethod
    def get_index_cls(cls) -> t.Any:
        """tipline's index."""
        return TiplinePDQIndex


class TiplineHashedPdqSignal(TiplinePdqSignal):
    """PDQ hashed by tipline and indexed by :class:`TiplinePDQIndex`, named
    ``tipline_pdq`` so that pytx's CLI takes it beside its own ``pdq``.

    Hashes as ``tipline hash`` does (the photo as shown, EXIF orientation applied, every
    image mode converted to RGB the same way; pytx hashes palette and 1-bit images'
    raw values), and like pytx's ``pdq`` answers ``""`` for a photo whose PDQ quality
    is below 50, which then matches nothing.
    """

    @classmethod
    def get_name(cls) -> str:
        """``tipline_pdq``."""
        return "tipline_pdq"

    @classmethod
    def hash_from_file(cls, file: Path) -> str:
        """tipline's PDQ of the photo at ``file`` (ValueError when it is not one)."""
        from tipline.signals.hashing import HashOptions, hash_path

        return _usable_pdq(hash_path(str(file), HashOptions(signals=("pdq",))))

    @classmethod
    def hash_from_bytes(cls, bytes_: bytes) -> str:
        """tipline's PDQ of a photo in memory (ValueError when it is not one)."""
        from tipline.signals.hashing import HashOptions, hash_bytes

        return _usable_pdq(hash_bytes(bytes_, "<bytes>", HashOptions(signals=("pdq",))))


def _usable_pdq(result: t.Any) -> str:
    if result.error is not None:
        raise ValueError(f"{result.path}: {result.error}")
    for signal in result.signals:
        if signal.type == "pdq" and signal.variant is None:
            return "" if signal.low_quality else str(signal.value)
    raise ValueError(f"{result.path}: not a photo")
