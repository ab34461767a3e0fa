"""What matching answers: one query signal matching one bank entry."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Match:
    """One query signal matching one bank entry."""

    bank: str
    entry_id: str
    signal_type: str
    distance: int  # integer distance in the signal type's unit (bits for PDQ)
    labels: tuple[str, ...] = ()
    query_value: str | None = None
    matched_value: str | None = None
    suppressed_by: str | None = None  # allow-bank entry that suppressed it, "bank/entry_id"
    suppressed_reason: str | None = None
    # video only: share of query frames matched and of compared (bank) frames matched, 0-100
    query_match_percent: float | None = None
    compared_match_percent: float | None = None
    #: the query's variant that matched (``flipx``, ``trim``, ``uncaption``...; None:
    #: the query as given)
    variant: str | None = None
    #: the robust tier that matched: ``region`` (the bank-side tier: a stored crop or
    #: small rotation of the entry's original, named in ``region``); None: the exact tier
    tier: str | None = None
    #: with ``tier="region"``: which region of the original (``crop:l2t0r4b0``, ``rotate:3``)
    region: str | None = None
