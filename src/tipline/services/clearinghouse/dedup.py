"""De-duplication of a finished report's files across every report and provider, and
the known-versus-new check against the clearinghouse's own hash lists.

One Matcher answers both questions for each file, through the match indexes
(:mod:`tipline.services.matching`): received files are entries of the system bank
:data:`FILES_BANK` (entry id = file id; MD5, SHA-1, SHA-256, and PDQ or vPDQ), so a
file's hits in that bank are the earlier files it duplicates (exact digests, PDQ within
``clearinghouse_pdq_distance`` bits, vPDQ within ``clearinghouse_vpdq_distance``), and
its unsuppressed hits in any other bank are known material. Files of the same report
are compared with each other by the signal types' own (brute-force) distances, since
they are not in the index yet.

A file's state: ``known`` (a known-bank match), ``seen`` (matches earlier received
files only) or ``new`` (neither). Every match to an earlier file is kept as a link
(signal and distance), which is what explains the file's cluster
(:mod:`.clusters`). A file that is an exact copy of an indexed file, or within
``clearinghouse_near_copy_bits`` PDQ bits of one, is represented by it and not indexed
itself: viral copies do not grow the index.

Call :func:`dedup_report` in a transaction that holds the de-duplication lock
(:func:`.clusters.lock`), after refreshing the Matcher: then every file finished before
is in the index and two reports are never de-duplicated against each other's
half-written state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from tipline.banks.model import Bank, BankSignal
from tipline.config import Settings
from tipline.errors import NotFoundError
from tipline.services.matching import Matcher
from tipline.signals.base import Signal, get_signal_type
from tipline.signals.vpdq import QUALITY_THRESHOLD as VPDQ_FRAME_QUALITY
from tipline.signals.vpdq import parse_vpdq_text
from tipline.store import bank_repository as repo
from tipline.store.clearinghouse import IntakeFileRow

#: the system bank holding every indexed received file
FILES_BANK = "system:clearinghouse-files"
#: links kept per file (the closest first)
MAX_LINKS = 50
#: signals by strength of evidence, for picking a file's best link
_SIGNAL_RANK = {"sha256": 0, "sha1": 1, "md5": 2, "pdq": 3, "vpdq": 4}
DIGESTS = ("md5", "sha1", "sha256")


@dataclass(frozen=True, slots=True)
class DedupSettings:
    """Distances and floors of de-duplication (see :class:`tipline.config.Settings`)."""

    pdq_distance: int = 31
    vpdq_distance: int = 20
    min_pdq_quality: int = 50
    near_copy_bits: int = 8

    @classmethod
    def of(cls, settings: Settings) -> DedupSettings:
        """The values of ``settings``."""
        return cls(
            pdq_distance=settings.clearinghouse_pdq_distance,
            vpdq_distance=settings.clearinghouse_vpdq_distance,
            min_pdq_quality=settings.clearinghouse_min_pdq_quality,
            near_copy_bits=settings.clearinghouse_near_copy_bits,
        )


@dataclass(frozen=True, slots=True)
class Link:
    """This file matched ``other_file_id`` with ``signal`` at ``distance`` (bits for
    PDQ, percent for vPDQ, 0 for digests)."""

    other_file_id: str
    signal: str
    distance: int

    def rank(self) -> tuple[int, int]:
        """Stronger evidence sorts first."""
        return (_SIGNAL_RANK.get(self.signal, 9), self.distance)


@dataclass(slots=True)
class FileDedup:
    """The outcome for one file (``cluster_id`` is set by :mod:`.clusters`)."""

    file_id: str
    signals: tuple[Signal, ...]
    links: list[Link]
    known: list[dict[str, Any]]
    indexed: bool
    cluster_id: int = 0
    state: str = field(init=False)

    def __post_init__(self) -> None:
        self.state = "known" if self.known else ("seen" if self.links else "new")


def file_signals(row: IntakeFileRow, settings: DedupSettings) -> tuple[Signal, ...]:
    """The signals a file is de-duplicated by: its digests, its PDQ hash when its
    quality reaches the floor, its vPDQ hash when a frame is good enough to match."""
    out = [Signal(type=t, value=str(getattr(row, t))) for t in DIGESTS]
    for item in row.signals or ():
        kind, value = item.get("type"), item.get("value")
        if not isinstance(value, str) or item.get("variant"):
            continue
        if kind == "pdq" and int(item.get("quality") or 0) >= settings.min_pdq_quality:
            out.append(Signal(type="pdq", value=value, quality=item.get("quality")))
        elif kind == "vpdq" and any(
            f.quality >= VPDQ_FRAME_QUALITY for f in parse_vpdq_text(value)
        ):
            out.append(Signal(type="vpdq", value=value))
    return tuple(out)


def files_bank(
    session: Session,
    settings: DedupSettings,
    *,
    matcher: Matcher | None = None,
    known: int | None = None,
) -> int:
    """The id of :data:`FILES_BANK`, created (or its thresholds brought in line with
    ``settings``) inside the caller's transaction.

    ``known``: the id this returned before; taken without a query when ``matcher``
    (just refreshed) sees the bank with these thresholds (banks are never deleted, and
    a bank created in a transaction that rolled back is not seen)."""
    thresholds = {"pdq": settings.pdq_distance, "vpdq": settings.vpdq_distance}
    if known is not None and matcher is not None:
        seen = matcher.bank(FILES_BANK)
        if seen is not None and seen.thresholds == thresholds:
            return known
    return _files_bank(session, thresholds)


def _files_bank(session: Session, thresholds: dict[str, int]) -> int:
    try:
        row = repo.get_bank(session, FILES_BANK)
    except NotFoundError:  # the first report ever
        bank = Bank(
            name=FILES_BANK,
            description="clearinghouse: every received file, for de-duplication",
            thresholds=thresholds,
        )
        return int(repo.create_bank(session, bank).id)
    if {k: int(v) for k, v in (row.thresholds or {}).items()} != thresholds:
        repo.update_bank(session, FILES_BANK, thresholds=thresholds)
    return int(row.id)


def _within(a: FileDedup, b: FileDedup, settings: DedupSettings) -> Link | None:
    """The strongest match of ``a`` to ``b`` (both of one report), by brute force."""
    mine = {s.type: s.value for s in a.signals}
    theirs = {s.type: s.value for s in b.signals}
    for kind in ("sha256", "sha1", "md5"):
        if mine.get(kind) is not None and mine.get(kind) == theirs.get(kind):
            return Link(b.file_id, kind, 0)
    for kind, limit in (("pdq", settings.pdq_distance), ("vpdq", settings.vpdq_distance)):
        if kind in mine and kind in theirs:
            found = get_signal_type(kind).match(mine[kind], [theirs[kind]], limit)
            if found:
                return Link(b.file_id, kind, int(found[0][1]))
    return None


def _represented(links: Sequence[Link], indexed: set[str], settings: DedupSettings) -> bool:
    """Whether an indexed file already stands for this one (exact or near copy)."""
    for link in links:
        if link.other_file_id not in indexed:
            continue
        if link.signal in DIGESTS or (
            link.signal == "pdq" and link.distance <= settings.near_copy_bits
        ):
            return True
    return False


def dedup_report(
    session: Session,
    matcher: Matcher,
    rows: Sequence[IntakeFileRow],
    settings: DedupSettings,
    *,
    report_id: int,
    now: datetime,
    bank_id: int | None = None,
    indexed: list[repo.SignalChange] | None = None,
) -> list[FileDedup]:
    """Match every file of one report (``rows``, in upload order) against the index and
    the report's earlier files; index the files no indexed file represents. Cluster ids
    are left to :func:`.clusters.assign`. ``bank_id``: :data:`FILES_BANK`'s id, when
    the caller has it (:func:`files_bank`). ``indexed``, when given, receives the signal
    rows written to the index (for :meth:`~tipline.services.matching.Matcher.adopt`
    once committed).

    The index is asked for every file at once (one read of the entries hit): files of
    the report are not in the index yet, so this finds what one file at a time would."""
    if bank_id is None:
        bank_id = files_bank(session, settings)
    outcomes: list[FileDedup] = []
    in_index: set[str] = set()
    wanted = [file_signals(row, settings) for row in rows]
    found = matcher.match_many(wanted, session=session)
    for row, signals, matches in zip(rows, wanted, found, strict=True):
        best: dict[str, Link] = {}
        known: dict[tuple[str, str], dict[str, Any]] = {}
        for m in matches:
            if m.bank == FILES_BANK:
                link = Link(m.entry_id, m.signal_type, m.distance)
                in_index.add(m.entry_id)
            elif m.suppressed_by is None:
                key = (m.bank, m.entry_id)
                if key not in known or m.distance < known[key]["distance"]:
                    known[key] = {
                        "bank": m.bank,
                        "entry_id": m.entry_id,
                        "signal": m.signal_type,
                        "distance": m.distance,
                        "labels": list(m.labels),
                    }
                    if m.tier is not None:  # robust tier: a crop or rotation of the entry
                        known[key] |= {"tier": m.tier, "region": m.region}
                continue
            else:
                continue
            if link.other_file_id not in best or link.rank() < best[link.other_file_id].rank():
                best[link.other_file_id] = link
        outcome = FileDedup(row.id, signals, [], list(known.values()), indexed=False)
        for earlier in outcomes:
            link_or_none = _within(outcome, earlier, settings)
            if link_or_none is not None:
                best[earlier.file_id] = link_or_none
        links = sorted(best.values(), key=lambda x: (x.rank(), x.other_file_id))[:MAX_LINKS]
        outcome = FileDedup(
            row.id,
            signals,
            links,
            list(known.values()),
            indexed=not _represented(links, in_index, settings),
        )
        if outcome.indexed:
            in_index.add(row.id)
        outcomes.append(outcome)
    entries = [
        repo.NewEntry(
            entry_id=o.file_id,
            signals=tuple(BankSignal(s.type, s.value) for s in o.signals),
            source=f"intake report {report_id}",
            added_at=now,
        )
        for o in outcomes
        if o.indexed
    ]
    repo.insert_entries(session, bank_id, entries, changes=indexed)
    return outcomes
