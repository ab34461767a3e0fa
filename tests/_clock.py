"""A clock that moves only when a test says so (for lease, retry and cache timing)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

from tipline.store.base import utcnow

#: How long a test waits for something that normally takes well under a second (a server
#: starting, a background thread finishing) before calling it a hang. Only a hang fails on
#: it: no test passes or fails by how fast a loaded machine is.
HANG_SECONDS = 600.0


class ManualClock:
    """Starts at the real current instant; :meth:`advance` moves it forward.

    Satisfies :class:`tipline.services.jobs.Clock`. Create it after enqueueing jobs that
    should be due at once (they are stamped with the real time).
    """

    def __init__(self) -> None:
        self._start = utcnow()
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self, session: Any = None) -> datetime:
        with self._lock:
            return self._start + timedelta(seconds=self._offset)

    def monotonic(self) -> float:
        with self._lock:
            return self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock never goes back")
        with self._lock:
            self._offset += seconds
