"""Exact-value index for fixed-width digests (MD5 16 bytes, SHA-1 20, SHA-256 32).

Values are kept sorted (with their ids alongside) so a lookup is two binary searches;
the arrays are stored in a segment file and memory-mapped on open.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tipline.errors import IndexCorruptError, InputError
from tipline.index.files import read_segment, write_segment

_KIND = "exact"
#: Digest widths in bytes that an ExactIndex accepts.
WIDTHS = (16, 20, 32)


def _as_bytes(value: bytes | str, width: int) -> bytes:
    if isinstance(value, str):
        try:
            raw = bytes.fromhex(value.strip())
        except ValueError:
            raise InputError(f"digest is not hex: {value[:80]!r}") from None
    else:
        raw = bytes(value)
    if len(raw) != width:
        raise InputError(f"digest must be {width} bytes, got {len(raw)}")
    return raw


class ExactIndex:
    """Maps fixed-width byte values to int64 ids (several ids per value allowed)."""

    def __init__(
        self,
        values: npt.NDArray[Any],
        ids: npt.NDArray[np.int64],
        width: int,
        path: Path | None = None,
    ) -> None:
        """Use :meth:`build` or :meth:`open`; ``values`` is sorted ``|S{width}``."""
        self.values = values
        self.ids = ids
        self.width = width
        self.path = path

    @classmethod
    def build(
        cls, ids: npt.ArrayLike, values: npt.ArrayLike | Sequence[bytes | str], width: int
    ) -> ExactIndex:
        """Index ``values`` ((n, width) uint8 array or a sequence of bytes/hex strings)."""
        if width not in WIDTHS:
            raise InputError(f"digest width must be one of {WIDTHS} bytes, got {width}")
        arr = np.asarray(values) if isinstance(values, np.ndarray) else None
        if arr is not None and arr.dtype == np.uint8:
            if arr.ndim != 2 or arr.shape[1] != width:
                raise InputError(f"values must be (n, {width}) uint8, got {arr.shape}")
            raw = np.ascontiguousarray(arr).view(f"S{width}").reshape(-1)
        else:
            seq: Sequence[Any] = values  # type: ignore[assignment]
            raw = np.array([_as_bytes(v, width) for v in seq], dtype=f"S{width}")
        id_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        if id_arr.shape != raw.shape:
            raise InputError(f"got {id_arr.shape[0]} ids for {raw.shape[0]} values")
        order = np.argsort(raw, kind="stable")
        sorted_values = np.ascontiguousarray(raw[order])
        sorted_ids = np.ascontiguousarray(id_arr[order])
        sorted_values.setflags(write=False)
        sorted_ids.setflags(write=False)
        return cls(sorted_values, sorted_ids, width)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def search(self, value: bytes | str) -> npt.NDArray[np.int64]:
        """Ids whose value equals ``value`` (bytes or hex), ascending."""
        key = np.array([_as_bytes(value, self.width)], dtype=f"S{self.width}")
        lo = int(np.searchsorted(self.values, key[0], side="left"))
        hi = int(np.searchsorted(self.values, key[0], side="right"))
        return np.sort(self.ids[lo:hi])

    def search_batch(self, values: Sequence[bytes | str]) -> list[npt.NDArray[np.int64]]:
        """:meth:`search` for each value."""
        return [self.search(v) for v in values]

    def save(self, path: str | Path) -> None:
        """Atomically write the index to ``path``."""
        write_segment(
            Path(path),
            _KIND,
            {"count": len(self), "width": self.width},
            {"values": self.values, "ids": self.ids},
        )

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True) -> ExactIndex:
        """Memory-map a saved index; IndexCorruptError when it fails its checks."""
        seg = read_segment(Path(path), _KIND, verify=verify)
        try:
            width = int(seg.params["width"])
            values, ids = seg.arrays["values"], seg.arrays["ids"]
        except (KeyError, ValueError, TypeError) as exc:
            raise IndexCorruptError(f"missing field {exc}", path=str(path)) from None
        if (
            width not in WIDTHS
            or values.dtype != np.dtype(f"S{width}")
            or ids.shape != values.shape
            or seg.params.get("count") != ids.shape[0]
        ):
            raise IndexCorruptError("exact index sections are inconsistent", path=str(path))
        return cls(values, ids, width, path=Path(path))
