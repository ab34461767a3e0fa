"""Limits on free-form input that is stored and later served back (submission
metadata, entry labels).

Free JSON is checked before anything is written: a document nested deeper than the
JSON encoder, the database or the response serializer can take would otherwise be
stored and then break every later read of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from tipline.errors import InputError

#: Deepest nesting of objects/arrays accepted in submission metadata.
MAX_METADATA_DEPTH = 16
#: Largest submission metadata accepted, in bytes of compact UTF-8 JSON.
MAX_METADATA_BYTES = 64 * 1024
#: Most labels on one bank entry, and the longest label in characters.
MAX_LABELS = 64
MAX_LABEL_CHARS = 200


def check_metadata(value: Any, *, what: str = "metadata") -> dict[str, Any]:
    """``value`` if it is a JSON object within :data:`MAX_METADATA_DEPTH` levels and
    :data:`MAX_METADATA_BYTES` bytes; InputError otherwise.

    The depth is measured without recursion, so a hostile document cannot exhaust the
    stack while it is checked.
    """
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object")
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_METADATA_DEPTH:
            raise InputError(f"{what} is nested deeper than {MAX_METADATA_DEPTH} levels")
        if isinstance(node, dict):
            for key, child in node.items():
                if not isinstance(key, str):
                    raise InputError(f"{what} keys must be strings")
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, dict | list))
    try:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} is not plain JSON: {exc}") from None
    if size > MAX_METADATA_BYTES:
        raise InputError(f"{what} is {size} bytes; the limit is {MAX_METADATA_BYTES} bytes")
    return value


def check_labels(labels: Iterable[str]) -> tuple[str, ...]:
    """Stripped, non-empty labels: at most :data:`MAX_LABELS`, each at most
    :data:`MAX_LABEL_CHARS` printable characters; InputError otherwise."""
    out: list[str] = []
    for label in labels:
        clean = label.strip()
        if not clean:
            continue
        if len(clean) > MAX_LABEL_CHARS or not clean.isprintable():
            raise InputError(
                f"a label must be 1-{MAX_LABEL_CHARS} printable characters, got {len(clean)}"
            )
        out.append(clean)
    if len(out) > MAX_LABELS:
        raise InputError(f"an entry takes at most {MAX_LABELS} labels, got {len(out)}")
    return tuple(out)
