"""The public names of tipline.index are pinned, so the API never changes by accident."""

from __future__ import annotations

import tipline.index


def test_public_names_are_pinned():
    assert sorted(tipline.index.__all__) == [
        "DISTANCE_THRESHOLD",
        "ExactIndex",
        "LiveIndex",
        "MAX_RADIUS",
        "PDQ_BITS",
        "PdqIndex",
        "QUALITY_THRESHOLD",
        "VideoIndex",
        "VideoMatch",
    ]
    assert tipline.index.DISTANCE_THRESHOLD == 31 and tipline.index.QUALITY_THRESHOLD == 50
