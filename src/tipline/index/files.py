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
import zlib
from collections.abc import Mapping
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


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _chunk_crcs(buf: memoryview) -> list[int]:
    return [zlib.crc32(buf[i : i + _CRC_CHUNK]) for i in range(0, max(len(buf), 1), _CRC_CHUNK)]


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
    path: Path, kind: str, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray[Any, Any]]
) -> None:
    """Atomically write ``arrays`` (C-contiguous, little-endian) as a segment file."""
    path = Path(path)
    prepared: list[tuple[str, np.ndarray[Any, Any]]] = []
    for name, arr in arrays.items():
        a = np.ascontiguousarray(arr)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        if a.dtype.str not in _ALLOWED_DTYPES:
            raise ValueError(f"section {name!r}: unsupported dtype {a.dtype.str}")
        prepared.append((name, a))
    sections: list[dict[str, Any]] = []
    # Two passes: the header size fixes where the first section starts.
    crcs = {name: _chunk_crcs(_bytes_view(a)) for name, a in prepared}
    header_room = ALIGN
    while True:
        offset = _align(_PREFIX.size + header_room)
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
        header = {"kind": kind, "params": dict(params), "file_size": offset, "sections": sections}
        blob = json.dumps(header, sort_keys=True).encode()
        if _PREFIX.size + len(blob) <= _align(_PREFIX.size + header_room):
            break
        header_room = len(blob) + ALIGN
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(blob), zlib.crc32(blob), 0))
            f.write(blob)
            for section, (_, a) in zip(sections, prepared, strict=True):
                f.seek(section["offset"])
                f.write(_bytes_view(a))
            f.truncate(offset)
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
    magic, version, hlen, hcrc, _ = _PREFIX.unpack_from(mm, 0)
    if magic != MAGIC:
        raise _corrupt(path, "bad magic (not a tipline index file)")
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
