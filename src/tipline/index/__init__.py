"""Match indexes: exact PDQ radius search, exact digests, live updates, vPDQ videos.

Public names (pinned by ``tests/test_index_api.py``):

* :class:`PdqIndex` - immutable exact Hamming radius index over 256-bit PDQ hashes.
* :class:`LiveIndex` - PDQ index directory with live add/disable and background merge.
* :class:`ExactIndex` - MD5/SHA-1/SHA-256 exact-value index.
* :class:`VideoIndex` / :class:`VideoMatch` - vPDQ matching with query/compared %.

All indexes save to versioned, checksummed, memory-mappable files (no pickle) and raise
:class:`tipline.errors.IndexCorruptError` when a file is truncated or damaged.
"""

from __future__ import annotations

from tipline.index.exact import ExactIndex
from tipline.index.live import LiveIndex
from tipline.index.pdq import MAX_RADIUS, PDQ_BITS, PdqIndex
from tipline.index.video import DISTANCE_THRESHOLD, QUALITY_THRESHOLD, VideoIndex, VideoMatch

__all__ = [
    "DISTANCE_THRESHOLD",
    "MAX_RADIUS",
    "PDQ_BITS",
    "QUALITY_THRESHOLD",
    "ExactIndex",
    "LiveIndex",
    "PdqIndex",
    "VideoIndex",
    "VideoMatch",
]
