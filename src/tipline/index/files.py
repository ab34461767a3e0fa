"""Index segment files: versioned, checksummed, memory-mappable; no pickle.

Layout (all integers little-endian)::

    offset 0   magic            8 bytes  b"TIPLIDX\\0"
    offset 8   format version   uint32   (FORMAT_VERSION)
    offset 12  header length    uint32   bytes of the JSON header that follows
    offset 16  header crc32     uint32   zlib.crc32 of the JSON header bytes
    offset 20  reserved         uint32   0
    offset 24  JSON header      {"kind", "params", "file_size", "sections": [...]}
    ...        sections         each aligned to ALIGN bytes, raw C-order array bytes

Each section entry names its dtype (NumPy ``dtype.str``, always little-endian), shape,
byte offset, byte length and crc32. Opening checks the magic, version, header checksum,
the exact file size (truncation) and, unless ``verify=False``, every section's crc32
(run on two threads; zlib releases the GIL). Any failure raises
:class:`~tipline.errors.IndexCorruptError`; the caller rebuilds from the database.

Writes go to a temporary file in the same directory, are fsynced, then renamed over
the destination, so readers never see a half-written file.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tipline.errors import IndexCorruptError

MAGIC = b"TIPLIDX\x00"
#: Bumped whenever the layout changes; older files are rejected (and rebuilt).
FORMAT_VERSION = 1
#: Section alignment in bytes (page size, so sections map on page boundaries).
ALIGN = 4096
_PREFIX = struct.Struct("<8sIIII")
_ALLOWED_DTYPES = frozenset({"<u1", "|u1", "<u4", "<i4", "<u8", "<i8", "|S16", "|S20", "|S32"})
#: crc32 is computed over chunks of this many bytes so two threads share big sections.
_CRC_CHUNK = 1 << 26


@dataclass(frozen=True, slots=True)
class Segment:
    """An opened segment file: its kind, parameters and read-only mapped arrays."""

    kind: str
    params: dict[str, Any]
    arrays: dict[str, np.ndarray[Any, Any]]
    path: Path


@dataclass(frozen=True, slots=True)
class LazySection:
    """A section produced chunk by chunk while writing (keeps peak memory low).

    ``chunks()`` must yield C-contiguous arrays of ``dtype`` whose sizes add up to
    ``prod(shape)`` elements.
    """

    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    chunks: Callable[[], Iterator[np.ndarray[Any, Any]]]

    @property
    def nbytes(self) -> int:
        """Bytes the section occupies."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _bytes_view(a: np.ndarray[Any, Any]) -> memoryview:
    return memoryview(a.reshape(-1).view(np.uint8))  # type: ignore[arg-type]


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it is durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_segment(
    path: Path,
    kind: str,
    params: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray[Any, Any] | LazySection],
) -> None:
    """Atomically write ``arrays`` (little-endian) as a segment file of ``kind``.

    Sections are written first and the header last, so a :class:`LazySection` can be
    computed while it is written; the file only appears under ``path`` once complete.
    """
    path = Path(path)
    prepared: list[tuple[str, np.ndarray[Any, Any] | LazySection]] = []
    for name, arr in arrays.items():
        if isinstance(arr, np.ndarray):
            arr = np.ascontiguousarray(arr)
            if arr.dtype.byteorder == ">":
                arr = arr.astype(arr.dtype.newbyteorder("<"))
        if arr.dtype.str not in _ALLOWED_DTYPES:
            raise ValueError(f"section {name!r}: unsupported dtype {arr.dtype.str}")
        prepared.append((name, arr))

    def layout(crcs: Mapping[str, list[int]], start: int) -> dict[str, Any]:
        offset = start
        sections = []
        for name, a in prepared:
            sections.append(
                {
                    "name": name,
                    "dtype": a.dtype.str,
                    "shape": list(a.shape),
                    "offset": offset,
                    "nbytes": a.nbytes,
                    "crc32": crcs[name],
                }
            )
            offset = _align(offset + a.nbytes)
        return {"kind": kind, "params": dict(params), "file_size": offset, "sections": sections}

    # Reserve header room for the largest possible checksum values, then fill it in.
    worst = {n: [0xFFFFFFFF] * max(1, -(-a.nbytes // _CRC_CHUNK)) for n, a in prepared}
    room = len(json.dumps(layout(worst, 1 << 62), sort_keys=True).encode())
    start = _align(_PREFIX.size + room)
    crcs: dict[str, list[int]] = {}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            for section, (name, a) in zip(layout(worst, start)["sections"], prepared, strict=True):
                f.seek(section["offset"])
                crc, filled, written, got = 0, 0, 0, []
                chunks = a.chunks() if isinstance(a, LazySection) else iter([a])
                for chunk in chunks:
                    view = _bytes_view(np.ascontiguousarray(chunk, dtype=a.dtype))
                    f.write(view)
                    # crc32 per _CRC_CHUNK bytes of the section, continued across chunks
                    pos = 0
                    while pos < len(view):
                        take = min(len(view) - pos, _CRC_CHUNK - filled)
                        crc = zlib.crc32(view[pos : pos + take], crc)
                        filled += take
                        pos += take
                        if filled == _CRC_CHUNK:
                            got.append(crc)
                            crc, filled = 0, 0
                    written += len(view)
                if filled or not got:
                    got.append(crc)
                if written != a.nbytes:
                    raise ValueError(f"section {name!r} wrote {written} of {a.nbytes} bytes")
                crcs[name] = got
            header = layout(crcs, start)
            blob = json.dumps(header, sort_keys=True).encode()
            f.truncate(header["file_size"])
            f.seek(0)
            f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(blob), zlib.crc32(blob), 0))
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


def _corrupt(path: Path, why: str) -> IndexCorruptError:
    return IndexCorruptError(f"index file is corrupt or truncated: {why}", path=str(path))


def read_segment(path: Path, kind: str, *, verify: bool = True) -> Segment:
    """Open and memory-map a segment of ``kind``; IndexCorruptError on any mismatch.

    ``verify=False`` skips the section checksums (header and sizes are still checked).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < _PREFIX.size:
                raise _corrupt(path, f"{size} bytes is shorter than the header")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _corrupt(path, f"cannot map file ({exc})") from exc
    magic, version, hlen, hcrc, reserved = _PREFIX.unpack_from(mm, 0)
    if magic != MAGIC:
        raise _corrupt(path, "bad magic (not a tipline index file)")
    if reserved != 0:
        raise _corrupt(path, "reserved header field is not zero")
    if version != FORMAT_VERSION:
        raise IndexCorruptError(
            f"index format version {version} is not supported (expected {FORMAT_VERSION})",
            path=str(path),
        )
    if _PREFIX.size + hlen > size:
        raise _corrupt(path, "header runs past end of file")
    blob = mm[_PREFIX.size : _PREFIX.size + hlen]
    if zlib.crc32(blob) != hcrc:
        raise _corrupt(path, "header checksum mismatch")
    try:
        header = json.loads(blob)
        if header["kind"] != kind:
            raise IndexCorruptError(
                f"index file holds a {header['kind']!r} index, expected {kind!r}", path=str(path)
            )
        if header["file_size"] != size:
            raise _corrupt(path, f"size is {size} bytes, header says {header['file_size']}")
        arrays: dict[str, np.ndarray[Any, Any]] = {}
        checks: list[tuple[str, memoryview, list[int]]] = []
        for s in header["sections"]:
            if s["dtype"] not in _ALLOWED_DTYPES:
                raise _corrupt(path, f"section {s['name']!r} has unsupported dtype")
            dtype = np.dtype(s["dtype"])
            shape = tuple(int(x) for x in s["shape"])
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            offset, nbytes = int(s["offset"]), int(s["nbytes"])
            if count * dtype.itemsize != nbytes or offset % ALIGN or offset + nbytes > size:
                raise _corrupt(path, f"section {s['name']!r} has an inconsistent layout")
            arr = np.frombuffer(mm, dtype=dtype, count=count, offset=offset).reshape(shape)
            arrays[s["name"]] = arr
            checks.append((s["name"], memoryview(mm)[offset : offset + nbytes], s["crc32"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise _corrupt(path, f"malformed header ({exc})") from exc
    if verify:
        jobs = [
            (name, view[i : i + _CRC_CHUNK], want[k])
            for name, view, want in checks
            for k, i in enumerate(range(0, max(len(view), 1), _CRC_CHUNK))
        ]
        if sum(len(w) for _, _, w in checks) != len(jobs):
            raise _corrupt(path, "checksum list does not match section sizes")
        with ThreadPoolExecutor(max_workers=2) as pool:
            got = list(pool.map(lambda job: zlib.crc32(job[1]), jobs))
        for (name, _, want), have in zip(jobs, got, strict=True):
            if have != want:
                raise _corrupt(path, f"checksum mismatch in section {name!r}")
    return Segment(kind=kind, params=dict(header["params"]), arrays=arrays, path=path)
