"""The media a signal type hashes: one photo or one video, each read or decoded once.

The hashing pipeline (:mod:`tipline.signals.hashing`) builds one :class:`Photo` or
:class:`Video` per item and hands it to every requested signal type's ``hash_photo``
or ``hash_video``. Expensive views - a photo's decoded pixels, a video's hashed frames,
a video file's digests - are computed on first use and shared, so PDQ, MD5 and a
plugin's own hash all come from one read of the file.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from tipline.errors import MediaError
from tipline.signals.base import VideoFrame
from tipline.signals.limits import MediaLimits

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from tipline.signals.budget import PixelBudget
    from tipline.signals.decode import DecodeMode

#: Bytes read per chunk when streaming a video file's digests.
_DIGEST_CHUNK = 1 << 20


class Photo:
    """One photo: its original bytes, and its pixels decoded on first use.

    ``decode`` chooses the decoder (:class:`~tipline.signals.decode.DecodeMode`);
    ``dihedral`` asks perceptual types for their eight rotation/flip variants too;
    ``normalize`` for the variants of the picture without borders, caption bars and
    screenshot frames (:mod:`tipline.signals.normalize`);
    ``budget`` is the process's decoded-pixel budget the decode reserves from.
    """

    def __init__(
        self,
        data: bytes,
        fmt: str,
        *,
        decode: DecodeMode,
        dihedral: bool = False,
        limits: MediaLimits | None = None,
        budget: PixelBudget | None = None,
        exif_raw: bool = False,
        normalize: bool = False,
    ) -> None:
        self.data = data
        self.format = fmt
        self.decode = decode
        self.dihedral = dihedral
        #: perceptual types also hash the picture without borders, captions, frames
        self.normalize = normalize
        #: perceptual types also hash the pixels as stored, before EXIF orientation
        self.exif_raw = exif_raw
        #: the EXIF orientation the decode applied (1: none), known once decoded
        self.orientation = 1
        self.limits = limits or MediaLimits()
        self.budget = budget
        self._pixels: npt.NDArray[np.uint8] | None = None

    @property
    def fast(self) -> bool:
        """True when the fast (DCT-domain reduced) decoder is in use."""
        from tipline.signals.decode import DecodeMode

        return self.decode is DecodeMode.FAST

    def pixels(self) -> npt.NDArray[np.uint8]:
        """``H x W x 3`` uint8 pixels (decoded once; may be a read-only view).

        Raises MediaError subclasses for undecodable input, DecompressionBombError
        past ``limits.max_image_pixels`` and BusyError when the decoded pixels do not fit
        in ``budget`` (when one is given).
        """
        if self._pixels is None:
            from tipline.signals.decode import decode_oriented

            self._pixels, self.orientation = decode_oriented(
                self.data,
                mode=self.decode,
                max_pixels=self.limits.max_image_pixels,
                fmt=self.format,
                budget=self.budget,
            )
        return self._pixels

    def raw_pixels(self) -> npt.NDArray[np.uint8] | None:
        """The pixels as stored in the file (EXIF orientation undone), or None when the
        file has no orientation to undo."""
        pixels = self.pixels()
        if self.orientation == 1:
            return None
        from tipline.signals.decode import unorient

        return unorient(pixels, self.orientation)


class Video:
    """One video file: its PDQ-hashed frames and streamed digests, each computed once.

    Digests named in ``digests`` (hashlib algorithm names) start streaming the file on
    a thread at once, overlapping frame decoding. Use as a context manager, or call
    :meth:`close`, so that thread is always joined.
    """

    def __init__(
        self,
        path: str,
        *,
        fps: float = 1.0,
        limits: MediaLimits | None = None,
        digests: Iterable[str] = (),
        normalize: bool = False,
    ) -> None:
        self.path = path
        self.fps = fps
        self.limits = limits or MediaLimits()
        #: perceptual types also hash the frames without letterbox / pillarbox bars
        self.normalize = normalize
        self._frames: list[VideoFrame] | None = None
        self._trimmed: list[VideoFrame] | None = None
        self._digests = _FileDigests(path, sorted(set(digests)))
        if self._digests.hashers:
            self._digests.start()

    def frames(self) -> list[VideoFrame]:
        """The hashed frames (``fps`` per second of video, 0 = every frame), decoded once.

        Raises MediaError / UnsupportedMediaError / DecompressionBombError for bad input
        and MissingExtraError when video support is not installed.
        """
        if self._frames is None:
            if self.normalize:
                from tipline.signals.video import hash_video_normalized

                hashed = hash_video_normalized(self.path, self.fps, limits=self.limits)
                self._frames, self._trimmed = hashed.frames, hashed.trimmed
            else:
                from tipline.signals.video import hash_video_frames

                self._frames = hash_video_frames(self.path, self.fps, limits=self.limits)
        return self._frames

    def trimmed_frames(self) -> list[VideoFrame] | None:
        """With ``normalize``, the frames hashed without the letterbox / pillarbox bars
        found once for the whole video (None: no bars, or ``normalize`` off); decoded
        with :meth:`frames`, in the same pass."""
        self.frames()
        return self._trimmed

    def digest(self, algorithm: str) -> str:
        """Hex digest (hashlib ``algorithm``) of the file's bytes."""
        if algorithm not in self._digests.hashers:
            try:
                with open(self.path, "rb") as fh:
                    return hashlib.file_digest(fh, algorithm).hexdigest()
            except OSError as exc:
                raise MediaError(f"cannot read: {exc.strerror or exc}") from None
        return self._digests.result()[algorithm]

    def close(self) -> None:
        """Wait for the digest thread (a decoding error stays the one reported)."""
        if self._digests.hashers and self._digests.is_alive():
            self._digests.join()

    def __enter__(self) -> Video:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _FileDigests(threading.Thread):
    """Digests of a file, streamed in 1 MiB chunks on a thread (hashlib drops the GIL)."""

    def __init__(self, path: str, algorithms: list[str]) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.hashers = {a: hashlib.new(a) for a in algorithms}
        self.error: OSError | None = None

    def run(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                while chunk := fh.read(_DIGEST_CHUNK):
                    for h in self.hashers.values():
                        h.update(chunk)
        except OSError as exc:
            self.error = exc

    def result(self) -> dict[str, str]:
        self.join()
        if self.error is not None:
            raise MediaError(f"cannot read: {self.error.strerror or self.error}")
        return {a: h.hexdigest() for a, h in self.hashers.items()}
