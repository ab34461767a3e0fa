"""Tell photo from video from anything else by the first bytes of a file.

File names lie (a text file named ``.jpg``); magic bytes are what the decoders see, so
dispatch uses them only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: Bytes needed by :func:`sniff` (a longer prefix is fine).
SNIFF_BYTES = 400

_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_QUICKTIME_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})


class SniffedKind(enum.Enum):
    """Broad kind of a file's content."""

    PHOTO = "photo"
    VIDEO = "video"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True, slots=True)
class Sniffed:
    """Result of :func:`sniff`: the kind and a short format name (``jpeg``, ``mp4``...)."""

    kind: SniffedKind
    format: str


def _iso_bmff(head: bytes) -> Sniffed | None:
    if len(head) < 12 or head[4:8] != b"ftyp":
        return None
    brand = head[8:12]
    box_size = int.from_bytes(head[0:4], "big")
    compatible = {head[i : i + 4] for i in range(16, min(len(head), max(box_size, 16)), 4)}
    brands = {brand} | compatible
    # The major brand decides first: an MP4 may list "mif1" among compatible brands.
    if brand in _AVIF_BRANDS:
        return Sniffed(SniffedKind.PHOTO, "avif")
    if brand in _HEIF_BRANDS:
        return Sniffed(SniffedKind.PHOTO, "heif")
    if brands & {b"avis"}:
        return Sniffed(SniffedKind.PHOTO, "avif")
    return Sniffed(SniffedKind.VIDEO, "mp4" if brand != b"qt  " else "mov")


def sniff(head: bytes) -> Sniffed:
    """Classify content from its first bytes (:data:`SNIFF_BYTES` are enough)."""
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed(SniffedKind.PHOTO, "jpeg")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed(SniffedKind.PHOTO, "png")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Sniffed(SniffedKind.PHOTO, "gif")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Sniffed(SniffedKind.PHOTO, "webp")
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Sniffed(SniffedKind.VIDEO, "avi")
    if head[:2] == b"BM" and len(head) >= 26:
        return Sniffed(SniffedKind.PHOTO, "bmp")
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return Sniffed(SniffedKind.PHOTO, "tiff")
    bmff = _iso_bmff(head)
    if bmff is not None:
        return bmff
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return Sniffed(SniffedKind.VIDEO, "matroska")
    if head[:3] == b"FLV":
        return Sniffed(SniffedKind.VIDEO, "flv")
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return Sniffed(SniffedKind.VIDEO, "mpeg")
    if head[:8] == b"\x30\x26\xb2\x75\x8e\x66\xcf\x11":
        return Sniffed(SniffedKind.VIDEO, "asf")
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return Sniffed(SniffedKind.VIDEO, "mpegts")
    if len(head) >= 8 and head[4:8] in _QUICKTIME_ATOMS:
        return Sniffed(SniffedKind.VIDEO, "mov")
    return Sniffed(SniffedKind.UNSUPPORTED, "unknown")
