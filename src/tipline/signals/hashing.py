"""Hash one piece of media every requested way in a single read.

This module is the one entry point the CLI, the scanner and the HTTP API use to turn
media (a path or bytes) into signals. Expected failures never raise out of
:func:`hash_path` / :func:`hash_bytes`: they come back as ``HashResult.error``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from tipline.errors import TiplineError
from tipline.signals.base import Signal

#: Signals computed when the caller does not choose.
DEFAULT_PHOTO_SIGNALS: tuple[str, ...] = ("pdq", "md5", "sha256")
DEFAULT_VIDEO_SIGNALS: tuple[str, ...] = ("vpdq", "video_md5", "video_sha256")


class DecodeMode(enum.Enum):
    """How photos are decoded before PDQ."""

    FAST = "fast"  # JPEG DCT-domain reduced decode (short side >= 512 px)
    EXACT = "exact"  # full-resolution reference decode


@dataclass(frozen=True, slots=True)
class HashOptions:
    """What to compute. ``signals`` empty means the defaults for the media kind."""

    signals: tuple[str, ...] = ()
    dihedral: bool = False
    decode: DecodeMode = DecodeMode.FAST
    video_fps: float = 1.0  # frames hashed per second of video; 0 = every frame


@dataclass(frozen=True, slots=True)
class HashResult:
    """Signals of one item, or the reason it could not be hashed."""

    path: str
    media: str | None = None  # "photo" | "video" once sniffed
    size: int | None = None  # bytes read
    signals: tuple[Signal, ...] = field(default=())
    error: TiplineError | None = None

    @property
    def ok(self) -> bool:
        """True when the item was hashed."""
        return self.error is None
