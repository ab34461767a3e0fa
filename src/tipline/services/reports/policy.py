"""The auto-report decision, one home for match time (:mod:`.auto`) and for
``tipline report auto`` (:func:`tipline.services.reports.service.auto_report_matches`):
each bank's policy (:mod:`tipline.banks.auto_report`) read in the caller's session."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from tipline.banks.auto_report import reports
from tipline.config import Settings
from tipline.store.bank_tables import BankRow

#: (bank, entry id, signal type, distance, variant, tier) of one unsuppressed match
MatchKey = tuple[str, str, str, int, str | None, str | None]


def bank_modes(session: Session, names: Iterable[str]) -> dict[str, str]:
    """Bank name -> auto-report policy, for the banks of ``names`` that exist."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    rows = session.execute(
        select(BankRow.name, BankRow.auto_report).where(BankRow.name.in_(wanted))
    ).all()
    return {str(name): str(mode) for name, mode in rows}


def covered(session: Session, settings: Settings, matches: Iterable[MatchKey]) -> list[str]:
    """Sorted ``bank/entry`` of the matches their bank's policy reports at match time
    (a bank without a row, deleted since, counts as ``default``)."""
    return covered_many(session, settings, [matches])[0]


def covered_many(
    session: Session, settings: Settings, items: Sequence[Iterable[MatchKey]]
) -> list[list[str]]:
    """:func:`covered` for each item's matches, the banks' policies read once."""
    candidates = [[m for m in matches if m[3] == 0] for matches in items]  # distance 0 only
    modes = bank_modes(session, (m[0] for ms in candidates for m in ms))
    listed = set(settings.report_auto_banks)
    return [
        sorted(
            {
                f"{bank}/{entry}"
                for bank, entry, signal_type, distance, variant, tier in ms
                if reports(
                    modes.get(bank, "default"),
                    listed=bank in listed,
                    signal_type=signal_type,
                    distance=distance,
                    variant=variant,
                    tier=tier,
                )
            }
        )
        for ms in candidates
    ]
