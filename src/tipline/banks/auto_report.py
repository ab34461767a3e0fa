"""A bank's auto-report policy: which of its matches are reported at match time,
without human review (the report says the file was NOT viewed).

``default``
    today's settings-based behaviour: an exact digest match (MD5, SHA-1, SHA-256 of
    the bytes, distance 0) is reported when the bank is listed in the settings'
    ``report_auto_banks``.
``off``
    never reported at match time, even when the bank is listed in the settings.
``exact``
    an exact digest match is reported, whether or not the settings list the bank.
``trusted``
    the bank's entries were confirmed by a trusted source: an exact digest match is
    reported, and so is a PDQ match at distance 0 of the query as given (the same
    perceptual hash, not a near match, a normalised variant or a region).

A match suppressed by an allow bank is never reported. Pure: the caller says whether
the settings list the bank.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from tipline.errors import InputError

AutoReport = Literal["default", "off", "exact", "trusted"]
MODES: Final[tuple[str, ...]] = get_args(AutoReport)

#: digest signal types: a distance-0 match is the same bytes
EXACT_SIGNAL_TYPES: Final = frozenset({"md5", "sha1", "sha256", "video_md5", "video_sha256"})


def check_mode(value: str) -> AutoReport:
    """``value`` as a policy name; InputError for anything else."""
    mode = value.strip().lower()
    if mode not in MODES:
        raise InputError(f"auto-report policy must be one of {', '.join(MODES)}, not {value!r}")
    return mode  # type: ignore[return-value]


def reports(
    mode: str,
    *,
    listed: bool,
    signal_type: str,
    distance: int,
    variant: str | None = None,
    tier: str | None = None,
) -> bool:
    """Whether a (not suppressed) match of a bank with policy ``mode`` is auto-reported;
    ``listed``: the settings' ``report_auto_banks`` name the bank."""
    if distance != 0 or mode == "off":
        return False
    exact = signal_type in EXACT_SIGNAL_TYPES
    if mode == "default":
        return listed and exact
    if mode == "exact":
        return exact
    if mode == "trusted":
        return exact or (signal_type == "pdq" and variant is None and tier is None)
    return False
