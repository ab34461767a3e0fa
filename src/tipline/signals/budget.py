"""A budget of decoded pixels shared by the decodes running in one process.

Decoding memory grows with the pixels decoded, not with the bytes uploaded: a 500 KB
PNG can claim 169 million pixels (half a gigabyte as RGB, more while it is converted).
The per-image pixel limit bounds one decode; this budget bounds the sum of the decodes
running at once, so concurrent uploads cannot multiply that peak. A decode that does
not fit is refused at once with :class:`~tipline.errors.BusyError` (the HTTP API
answers 503 with ``Retry-After``) instead of waiting: the caller decides whether to
retry. One image larger than the whole budget is admitted when nothing else is being
decoded, so a budget below the pixel limit never makes an image impossible.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tipline.errors import BusyError, InputError


class PixelBudget:
    """At most ``capacity`` decoded pixels at a time (thread-safe)."""

    def __init__(self, capacity: int, *, retry_after: int = 1) -> None:
        """``capacity`` in pixels; ``retry_after`` (seconds) is what refused callers are
        told to wait."""
        if capacity < 1:
            raise InputError("the decoded-pixel budget must be at least 1 pixel")
        self.capacity = int(capacity)
        self.retry_after = int(retry_after)
        self._lock = threading.Lock()
        self._used = 0

    @property
    def in_use(self) -> int:
        """Pixels reserved right now."""
        return self._used

    @contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        """Hold ``pixels`` of the budget for the ``with`` block; BusyError when they do
        not fit beside what is held (an oversized request fits only into an idle budget).
        """
        pixels = max(0, int(pixels))
        with self._lock:
            if self._used > 0 and self._used + pixels > self.capacity:
                raise BusyError(
                    f"busy: decoding {pixels} more pixels would pass this worker's budget "
                    f"of {self.capacity} decoded pixels; retry shortly",
                    retry_after=self.retry_after,
                )
            self._used += pixels
        try:
            yield
        finally:
            with self._lock:
                self._used -= pixels
