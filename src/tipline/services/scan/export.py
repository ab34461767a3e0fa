"""Export a scan's recorded items (``tipline scan --out results.jsonl|.csv``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from tipline.errors import InputError
from tipline.store import scans as store


def item_json(row: store.ScanItemRow) -> dict[str, Any]:
    """One recorded item as the JSON object written to ``--out *.jsonl``."""
    return {
        "content_id": row.content_id,
        "path": row.path,
        "status": row.status,
        "media": row.media,
        "size": row.size,
        "signals": row.signals,
        "matches": row.matches,
        "error": None
        if row.error_message is None
        else {"code": row.error_code, "message": row.error_message},
    }


CSV_COLUMNS = ("content_id", "path", "status", "media", "size", "signals", "matches", "error")


def write_results(session: Any, scan_id: str, out: Path) -> int:
    """Write every recorded item of ``scan_id`` to ``out`` (``.jsonl`` or ``.csv``),
    in enumeration order, atomically (temp file + rename). Returns the item count.

    In CSV, ``signals`` is ``type:value`` joined by spaces and ``matches`` is
    ``bank/entry_id:signal_type:distance`` joined by spaces.
    """
    suffix = out.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise InputError(f"--out must end in .jsonl or .csv, got {out.name!r}")
    tmp = out.with_name(out.name + ".tmp")
    count = 0
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n") if suffix == ".csv" else None
        if writer is not None:
            writer.writerow(CSV_COLUMNS)
        for row in store.iter_items(session, scan_id):
            count += 1
            if writer is None:
                fh.write(json.dumps(item_json(row), separators=(",", ":")) + "\n")
                continue
            signals = " ".join(
                f"{s['type']}:{s['value']}" for s in row.signals if not s.get("variant")
            )
            matches = " ".join(
                f"{m['bank']}/{m['entry_id']}:{m['signal_type']}:{m['distance']}"
                for m in row.matches
                if m.get("suppressed_by") is None
            )
            writer.writerow(
                [
                    row.content_id,
                    row.path,
                    row.status,
                    row.media or "",
                    "" if row.size is None else row.size,
                    signals,
                    matches,
                    row.error_message or "",
                ]
            )
    tmp.replace(out)
    return count
