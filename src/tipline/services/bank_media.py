"""Media added to a bank is hashed with the reference decode.

Banks are shared: exported, served through the HMA-compatible API, exchanged with
other organisations whose matchers decode photos in full (``pdqhash``,
python-threatexchange, HMA). tipline's default fast decode (reduced, luma-only JPEG
decode) lands a few bits from that reference PDQ (``bench/decode_drift.py``), which is
harmless for a query but, stored in a bank, would be passed on to everyone matching
against the list. So every hash that goes INTO a bank is computed with
:attr:`DecodeMode.EXACT`; only the query side may use the fast decode. (The
clearinghouse's published photos are hashed again this way from the vault:
:mod:`tipline.services.clearinghouse.published_photos`.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from tipline.banks.model import BankEntry
from tipline.config import Settings
from tipline.errors import InputError
from tipline.services import banks
from tipline.services.database import Database
from tipline.services.regions.descriptors import media_regions
from tipline.signals.decode import DecodeMode
from tipline.signals.hashing import HashOptions, HashResult, hash_path
from tipline.signals.limits import MediaLimits

#: Options for media whose signals are stored in a bank (default signals).
BANK_HASH_OPTIONS: Final = HashOptions(decode=DecodeMode.EXACT)


def entry_signals(result: HashResult) -> list[str]:
    """``TYPE:VALUE`` strings of a hashed item for a bank entry (no dihedral variants).

    Raises the result's error (bad or unsupported media), or InputError when the media
    produced no signal.
    """
    if result.error is not None:
        raise result.error
    signals = [f"{s.type}:{s.value}" for s in result.signals if s.variant is None]
    if not signals:
        raise InputError("the media produced no signals")
    return signals


def add_media_file(
    db: Database,
    bank: str,
    path: str,
    *,
    entry_id: str | None = None,
    labels: Sequence[str] = (),
    source: str | None = None,
    actor: str = banks.DEFAULT_ACTOR,
    settings: Settings | None = None,
) -> BankEntry:
    """Hash the photo or video at ``path`` (reference decode) and add its signals as one
    entry of ``bank`` with a photo's region descriptors (crops and small rotations,
    :mod:`tipline.services.regions`) (audited). Media errors carry ``path``."""
    limits = MediaLimits.of(settings) if settings is not None else None
    result = hash_path(path, BANK_HASH_OPTIONS, limits=limits)
    if result.error is not None and result.error.path is None:
        result.error.path = path
    data = b""
    if result.media == "photo":
        with open(path, "rb") as f:
            data = f.read()
    return add_media_bytes(
        db, bank, data, result, entry_id=entry_id, labels=labels, source=source, actor=actor,
        limits=limits,
    )  # fmt: skip


def add_media_bytes(
    db: Database,
    bank: str,
    data: bytes,
    result: HashResult,
    *,
    entry_id: str | None = None,
    labels: Sequence[str] = (),
    source: str | None = None,
    actor: banks.Actor = banks.DEFAULT_ACTOR,
    limits: MediaLimits | None = None,
) -> BankEntry:
    """Add uploaded media already hashed with :data:`BANK_HASH_OPTIONS` (``result``) as
    one entry of ``bank``, with a photo's region descriptors (audited)."""
    signals = entry_signals(result)
    regions = media_regions(data, limits) if result.media == "photo" else []
    return banks.add_entry(
        db,
        bank,
        signals,
        entry_id=entry_id,
        labels=labels,
        source=source,
        actor=actor,
        regions=regions,
    )
