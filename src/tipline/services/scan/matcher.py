"""How a scan worker gets its match engine: a JSON-describable loader, run once per
worker process."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tipline.errors import InputError
from tipline.services.matching.match import Match
from tipline.signals.base import Signal

#: Seconds a worker's matcher may rely on its last look for new bank signals.
MATCH_POLL_SECONDS = 2.0


class SignalMatcher(Protocol):
    """What scanning needs from the match engine."""

    def match_signals(self, signals: Sequence[Signal]) -> list[Match]:
        """Matches (including suppressed ones, flagged) for one item's signals."""
        ...


@dataclass(frozen=True, slots=True)
class MatcherLoader:
    """How a worker process builds its matcher: ``target`` is ``module:function``,
    called once per process with ``params`` (JSON values only).

    Indexes are memory-mapped files, so every process on a node shares one copy
    through the page cache; nothing is re-serialized per batch.
    """

    target: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain-data form sent to workers."""
        return {"target": self.target, "params": self.params}

    def load(self) -> SignalMatcher:
        """Import ``target`` and call it with ``params``."""
        module, _, name = self.target.partition(":")
        if not module or not name:
            raise InputError(f"matcher loader must be 'module:function', got {self.target!r}")
        factory: Callable[..., SignalMatcher] = getattr(importlib.import_module(module), name)
        return factory(**self.params)


def default_matcher_loader(
    database_url: str | None = None,
    *,
    index_dir: str | Path | None = None,
    poll_interval: float = MATCH_POLL_SECONDS,
) -> MatcherLoader:
    """The loader for the enabled banks of the store: each worker process opens the
    memory-mapped index files in ``index_dir`` (default: the configured index folder,
    which must be shared storage for a multi-node Ray cluster)."""
    return MatcherLoader(
        f"{__name__}:store_matcher",
        {
            "database_url": database_url,
            "index_dir": None if index_dir is None else str(index_dir),
            "poll_interval": poll_interval,
        },
    )


def store_matcher(
    database_url: str | None = None,
    index_dir: str | None = None,
    poll_interval: float = MATCH_POLL_SECONDS,
) -> SignalMatcher:
    """Open the Matcher of :mod:`tipline.services.matching` (runs once per worker)."""
    from tipline.services.matching import Matcher

    return Matcher.open(database_url, index_dir=index_dir, poll_interval=poll_interval)
