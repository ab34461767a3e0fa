"""Listeners on SQLAlchemy's ``Session`` class, registered once per process."""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session


class SessionHooks:
    """``(event name, listener)`` pairs listened on the ``Session`` class the first time
    :meth:`ensure` runs, and never again in this process. One listener per process, not
    one per session: registering and collecting listeners on each session cost more CPU
    than the hooks themselves, which do nothing for a session that has nothing queued."""

    def __init__(self, *listeners: tuple[str, Callable[..., None]]) -> None:
        self._listeners = listeners
        self._lock = threading.Lock()
        self.done = False

    def ensure(self) -> None:
        """Register the listeners unless this process already has."""
        if self.done:
            return
        with self._lock:
            if not self.done:
                for name, listener in self._listeners:
                    event.listen(Session, name, listener)
                self.done = True
