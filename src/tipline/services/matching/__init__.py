"""Matching: bank signals in the database -> memory-mapped indexes -> matches.

* :mod:`.matcher` - :class:`Matcher`: freshness, merges, index hits turned into
  :class:`~tipline.services.matching.match.Match` values (thresholds, disables, allow
  banks);
* :mod:`.match` - :class:`Match`, what matching answers;
* :mod:`.visibility` - which matches a caller's tenant may be told about;
* :mod:`.index_files` - the index-file lifecycle: build from the database, open and
  check, merge, ``meta.json``;
* :mod:`.signal_rows` - bank signals in memory, grouped by their type's index kind.

Importing the package is cheap: :class:`Matcher` and friends load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tipline.services.matching.match import Match

if TYPE_CHECKING:
    from tipline.services.matching.matcher import (
        DEFAULT_MERGE_AFTER,
        DEFAULT_POLL_SECONDS,
        Matcher,
        allow_applies,
        open_matcher,
    )

__all__ = [
    "DEFAULT_MERGE_AFTER",
    "DEFAULT_POLL_SECONDS",
    "Match",
    "Matcher",
    "allow_applies",
    "open_matcher",
]

_LAZY = frozenset(__all__) - {"Match"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("tipline.services.matching.matcher"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
