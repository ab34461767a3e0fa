"""A clock that moves only when a test says so (for lease, retry and cache timing)."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from tipline.store.base import utcnow

#: How long a test waits for something that normally takes well under a second (a server
#: starting, a background thread finishing) before calling it a hang. Only a hang fails on
#: it: no test passes or fails by how fast a loaded machine is.
HANG_SECONDS = 600.0


class LineWatch:
    """Reads a child's stdout line by line and kills the child when it prints no line for
    HANG_SECONDS (a hang: a slow but progressing child is never killed).

    Iterate :meth:`lines`; afterwards :attr:`stalled` says whether the watchdog killed
    it. :meth:`close` (also on leaving a ``with`` block) stops the watchdog, e.g. when
    the reader stops early.
    """

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None, "start the child with stdout=subprocess.PIPE"
        self.proc = proc
        self._stalled = threading.Event()
        self._timer: threading.Timer | None = None

    @property
    def stalled(self) -> bool:
        return self._stalled.is_set()

    def _hung(self) -> None:
        self._stalled.set()
        self.proc.kill()

    def _rearm(self) -> None:
        self.close()
        self._timer = threading.Timer(HANG_SECONDS, self._hung)
        self._timer.daemon = True
        self._timer.start()

    def lines(self) -> Iterator[str]:
        assert self.proc.stdout is not None
        self._rearm()
        try:
            for line in self.proc.stdout:
                self._rearm()
                yield line
        finally:
            self.close()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def __enter__(self) -> LineWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
