"""Sync an exchange: pull pages from its adapter and apply each in its own transaction.

Each page and the checkpoint after it commit together (compare-and-set on the stored
checkpoint, under a row lock), so a sync killed at any moment resumes after the last
committed page, and two syncs of one exchange running at once (two workers, or the CLI
beside a worker) cannot both apply the same page: the later one stops with a conflict.
A failure is recorded on the exchange (last error, time) and raised. After the pages,
an adapter that takes feedback (NCMEC) is sent the votes our reviewers' decisions owe
(see ``feedback.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tipline.errors import ConflictError, TiplineError
from tipline.services import audit
from tipline.services.database import Database
from tipline.services.exchanges import feedback
from tipline.services.exchanges.apply import apply_deltas
from tipline.services.exchanges.configure import get_row, spec_of
from tipline.services.exchanges.feedback import FeedbackReport
from tipline.services.exchanges.http import Fetcher
from tipline.services.exchanges.model import ExchangeAdapter, ExchangeSpec, Page, Totals
from tipline.services.exchanges.registry import build_adapter
from tipline.store.db import transaction


@dataclass(slots=True)
class SyncReport:
    """What one sync did."""

    name: str
    totals: Totals = field(default_factory=Totals)
    checkpoint: dict[str, Any] | None = None
    seconds: float = 0.0
    feedback: FeedbackReport | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "name": self.name,
            "totals": self.totals.as_json(),
            "feedback": self.feedback.as_json() if self.feedback else None,
            "checkpoint": self.checkpoint,
            "seconds": round(self.seconds, 3),
        }


#: builds the adapter of a spec (tests pass one with an injected fetcher)
AdapterFactory = Callable[[ExchangeSpec], ExchangeAdapter]


def _default_factory(spec: ExchangeSpec) -> ExchangeAdapter:
    return build_adapter(spec, fetcher=Fetcher(spec.name))


def _apply(
    db: Database, name: str, expected: dict[str, Any] | None, page: Page, actor: str
) -> Totals:
    with transaction(db.sessions) as s:
        row = get_row(s, name, for_update=True)
        if row.checkpoint != expected:
            raise ConflictError(
                f"exchange {name!r} was advanced by another sync meanwhile; run it again"
            )
        totals = apply_deltas(s, name, row.bank, page.deltas, exchange_id=row.id)
        totals.invalid += page.invalid
        running = Totals.from_json(row.totals)
        running.add(totals)
        row.totals = running.as_json()
        row.checkpoint = dict(page.checkpoint)
        if page.source_time is not None:
            row.source_time = page.source_time
        s.flush()
        audit.append(
            s,
            actor=actor,
            action="exchange.page",
            target=("exchange", name),
            details={"checkpoint": dict(page.checkpoint), **totals.as_json()},
        )
    return totals


def _record(db: Database, name: str, **values: Any) -> None:
    with transaction(db.sessions) as s:
        row = get_row(s, name, for_update=True)
        for key, value in values.items():
            setattr(row, key, value)


def sync_exchange(
    db: Database,
    name: str,
    *,
    actor: str = audit.CLI_ACTOR,
    factory: AdapterFactory | None = None,
    max_pages: int | None = None,
    on_page: Callable[[Totals], None] | None = None,
) -> SyncReport:
    """Sync ``name`` until its source has nothing more (or ``max_pages`` pages)."""
    started = time.monotonic()
    with db.sessions() as s:
        row = get_row(s, name)
        spec, checkpoint = spec_of(row), row.checkpoint
    report = SyncReport(name, checkpoint=checkpoint)
    _record(db, name, last_attempt_at=datetime.now(UTC))
    adapter: ExchangeAdapter | None = None
    try:
        adapter = (factory or _default_factory)(spec)
        for page in adapter.fetch(checkpoint):
            totals = _apply(db, name, checkpoint, page, actor)
            checkpoint = dict(page.checkpoint)
            report.totals.add(totals)
            report.checkpoint = checkpoint
            if on_page is not None:
                on_page(totals)
            if max_pages is not None and report.totals.pages >= max_pages:
                break
        if isinstance(adapter, feedback.VoteSender):
            collected = feedback.collect(db, name)
            report.feedback = feedback.send(db, name, adapter, actor=actor)
            report.feedback.collected = collected
    except TiplineError as exc:
        _fail(db, name, exc.message, actor)
        raise
    finally:
        if adapter is not None:
            adapter.close()
    report.seconds = time.monotonic() - started
    with transaction(db.sessions) as s:
        row = get_row(s, name, for_update=True)
        row.last_success_at = datetime.now(UTC)
        row.last_error = None
        row.last_error_at = None
        s.flush()
        audit.append(
            s,
            actor=actor,
            action="exchange.sync",
            target=("exchange", name),
            details=report.totals.as_json(),
        )
    return report


def probe_exchange(
    db: Database, name: str, *, factory: AdapterFactory | None = None
) -> dict[str, Any]:
    """Ask the source who we are and who shares (NCMEC: status and members); a source
    without such calls answers ``{}``."""
    with db.sessions() as s:
        spec = spec_of(get_row(s, name))
    adapter = (factory or _default_factory)(spec)
    try:
        probe = getattr(adapter, "probe", None)
        return dict(probe()) if callable(probe) else {}
    finally:
        adapter.close()


def _fail(db: Database, name: str, message: str, actor: str) -> None:
    with transaction(db.sessions) as s:
        row = get_row(s, name, for_update=True)
        row.last_error = message[:2000]
        row.last_error_at = datetime.now(UTC)
        s.flush()
        audit.append(
            s,
            actor=actor,
            action="exchange.sync.failed",
            target=("exchange", name),
            details={"error": message[:500]},
        )
