"""Decisions taken from the desk: confirm or reject a triaged report, route a finished
one now, build its referral package. Each calls the clearinghouse's own service (which checks the
permission, refuses a second decision with a conflict, and audits); this module only
takes the settings the desk runs with."""

from __future__ import annotations

import enum
import shutil
import tempfile
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from tipline.config import Settings
from tipline.errors import InputError
from tipline.services.auth import Principal
from tipline.services.clearinghouse import decisions, referral, routing
from tipline.services.clearinghouse.dedup import DedupSettings
from tipline.services.vault import Vault
from tipline.signals.limits import MediaLimits


class Verdict(enum.Enum):
    """An analyst's verdict on a report."""

    CONFIRM = "confirm"
    REJECT = "reject"


def decide(
    sessions: sessionmaker[Session],
    settings: Settings,
    who: Principal,
    report_id: int,
    verdict: str,
    *,
    classification: str | None = None,
    note: str | None = None,
) -> decisions.Decision:
    """Confirm (its new material's hashes go to the publish bank,
    ``TIPLINE_CLEARINGHOUSE_PUBLISH_BANK``) or reject a pending report; audited as
    ``clearinghouse.confirm`` / ``clearinghouse.reject``."""
    try:
        chosen = Verdict(verdict)
    except ValueError:
        raise InputError("the verdict is confirm or reject") from None
    note = (note or "").strip() or None
    if chosen is Verdict.REJECT:
        return decisions.reject(sessions, who, report_id, note=note)
    return decisions.confirm(
        sessions,
        who,
        report_id,
        bank=settings.clearinghouse_publish_bank,
        settings=DedupSettings.of(settings),
        vault=Vault.from_settings(settings),
        limits=MediaLimits.of(settings),
        classification=(classification or "").strip() or None,
        note=note,
    )


def route(
    sessions: sessionmaker[Session], settings: Settings, who: Principal, report_id: int
) -> routing.DecisionInfo:
    """Route a finished report now with the settings' geolocation database and table
    (audited as ``routing.decide``); the new decision is the one in force."""
    return routing.route(sessions, settings, [report_id], actor=who)[0]


def build_package(
    sessions: sessionmaker[Session], vault: Vault, who: Principal, report_id: int
) -> referral.ReferralInfo:
    """Build the referral package of a routed report, media as its routing rule allows,
    into a private temporary folder (audited as ``referral.package``, each media file
    read as ``vault.read``). The caller sends ``info.path`` and then removes its folder
    with :func:`discard_package`."""
    folder = Path(tempfile.mkdtemp(prefix="tipline-referral-"))
    try:
        return referral.build_referral(
            sessions, vault, report_id, folder / "referral.zip", actor=who
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def discard_package(info: referral.ReferralInfo) -> None:
    """Remove a package built by :func:`build_package` and its folder."""
    shutil.rmtree(info.path.parent, ignore_errors=True)
