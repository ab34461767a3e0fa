"""Matching: bank signals in the database -> memory-mapped indexes -> matches.

* :mod:`.matcher` - :class:`Matcher`: freshness, merges, index hits turned into
  :class:`~tipline.banks.model.Match` values (thresholds, disables, allow banks);
* :mod:`.index_files` - the index-file lifecycle: build from the database, open and
  check, merge, ``meta.json``;
* :mod:`.signal_rows` - bank signals in memory, grouped by their type's index kind.
"""

from tipline.services.matching.matcher import (
    DEFAULT_MERGE_AFTER,
    DEFAULT_POLL_SECONDS,
    Matcher,
    open_matcher,
)

__all__ = ["DEFAULT_MERGE_AFTER", "DEFAULT_POLL_SECONDS", "Matcher", "open_matcher"]
