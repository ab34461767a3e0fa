"""Cryptographic digests of a file's original bytes (exact-match signals).

Distance is 0 for equal digests and 1 otherwise; the default threshold is 0.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from tipline.signals.base import IndexKind, MediaKind, Signal
from tipline.signals.hexbits import parse_hex

if TYPE_CHECKING:
    from tipline.signals.media import Photo, Video


class _DigestSignalType:
    """Shared behaviour of the digest signal types."""

    name: ClassVar[str]
    media: ClassVar[MediaKind]
    algorithm: ClassVar[str]
    n_bytes: ClassVar[int]
    default_threshold: ClassVar[int] = 0
    index: ClassVar[IndexKind] = IndexKind.EXACT

    def parse(self, text: str) -> str:
        """Canonical lowercase hex of the right length; HashFormatError otherwise."""
        return parse_hex(text, self.n_bytes, self.name)

    def distance(self, a: str, b: str) -> int:
        """0 when the digests are equal, 1 otherwise."""
        return 0 if a == b else 1

    def match(self, query: str, candidates: Sequence[str], threshold: int) -> list[tuple[int, int]]:
        """Brute force: ``(index, distance)`` of every candidate within ``threshold``."""
        out: list[tuple[int, int]] = []
        for i, candidate in enumerate(candidates):
            d = self.distance(query, candidate)
            if d <= threshold:
                out.append((i, d))
        return out

    def compute(self, data: bytes) -> str:
        """Hex digest of ``data``."""
        return hashlib.new(self.algorithm, data).hexdigest()


class _PhotoDigest(_DigestSignalType):
    media: ClassVar[MediaKind] = MediaKind.PHOTO

    def hash_photo(self, photo: Photo) -> tuple[Signal, ...]:
        """The digest of the photo file's bytes."""
        return (Signal(type=self.name, value=self.compute(photo.data)),)


class _VideoDigest(_DigestSignalType):
    media: ClassVar[MediaKind] = MediaKind.VIDEO

    @property
    def file_digest(self) -> str:
        """The hashlib algorithm the pipeline streams while frames decode."""
        return self.algorithm

    def hash_video(self, video: Video) -> tuple[Signal, ...]:
        """The digest of the video file's bytes (streamed in chunks)."""
        return (Signal(type=self.name, value=video.digest(self.algorithm)),)


class Md5SignalType(_PhotoDigest):
    """MD5 of a photo file's bytes."""

    name: ClassVar[str] = "md5"
    counterpart: ClassVar[str] = "video_md5"
    algorithm: ClassVar[str] = "md5"
    n_bytes: ClassVar[int] = 16


class Sha1SignalType(_PhotoDigest):
    """SHA-1 of a photo file's bytes."""

    name: ClassVar[str] = "sha1"
    algorithm: ClassVar[str] = "sha1"
    n_bytes: ClassVar[int] = 20


class Sha256SignalType(_PhotoDigest):
    """SHA-256 of a photo file's bytes."""

    name: ClassVar[str] = "sha256"
    counterpart: ClassVar[str] = "video_sha256"
    algorithm: ClassVar[str] = "sha256"
    n_bytes: ClassVar[int] = 32


class VideoMd5SignalType(_VideoDigest):
    """MD5 of a video file's bytes."""

    name: ClassVar[str] = "video_md5"
    counterpart: ClassVar[str] = "md5"
    algorithm: ClassVar[str] = "md5"
    n_bytes: ClassVar[int] = 16


class VideoSha256SignalType(_VideoDigest):
    """SHA-256 of a video file's bytes."""

    name: ClassVar[str] = "video_sha256"
    counterpart: ClassVar[str] = "sha256"
    algorithm: ClassVar[str] = "sha256"
    n_bytes: ClassVar[int] = 32


#: Digest algorithm of each digest signal name.
DIGEST_ALGORITHMS: dict[str, str] = {
    t.name: t.algorithm
    for t in (
        Md5SignalType,
        Sha1SignalType,
        Sha256SignalType,
        VideoMd5SignalType,
        VideoSha256SignalType,
    )
}


def digest(name: str, data: bytes) -> str:
    """Hex digest for the digest signal ``name`` (``md5``, ``video_sha256``...)."""
    return hashlib.new(DIGEST_ALGORITHMS[name], data).hexdigest()
