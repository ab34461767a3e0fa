"""The batching step of a group-commit writer thread (the audit log's and the report
outbox's): wait for one piece of work, then take what is already queued."""

from __future__ import annotations

import queue
from typing import TypeVar

T = TypeVar("T")


def next_batch(work: queue.SimpleQueue[T | None], max_batch: int) -> tuple[list[T], bool]:
    """Block for the first item, then take the items already queued, up to
    ``max_batch``. ``None`` in the queue means stop: the items before it are returned
    with ``True`` (an empty list when it came first)."""
    first = work.get()
    if first is None:
        return [], True
    batch = [first]
    while len(batch) < max_batch:
        try:
            more = work.get_nowait()
        except queue.Empty:
            break
        if more is None:
            return batch, True
        batch.append(more)
    return batch, False
