"""The limits hashing enforces on hostile media, passed in by the caller.

The domain reads no environment: services and adapters build a :class:`MediaLimits`
from their settings (``MediaLimits.of(settings)``) and hand it down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class HasMediaLimits(Protocol):
    """Anything carrying the three limits (``tipline.config.Settings`` does)."""

    @property
    def max_file_bytes(self) -> int: ...
    @property
    def max_image_pixels(self) -> int: ...
    @property
    def max_video_seconds(self) -> float: ...


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """Refuse media past these sizes (decompression-bomb and resource guards)."""

    max_file_bytes: int = 2 * 1024**3  # bytes read from one file
    max_image_pixels: int = 200_000_000  # pixels of one image or video frame
    max_video_seconds: float = 4 * 3600.0  # decoded length of one video, seconds

    @classmethod
    def of(cls, source: HasMediaLimits) -> MediaLimits:
        """The limits of ``source`` (e.g. the settings object), as plain values."""
        return cls(
            max_file_bytes=int(source.max_file_bytes),
            max_image_pixels=int(source.max_image_pixels),
            max_video_seconds=float(source.max_video_seconds),
        )
