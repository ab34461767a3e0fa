"""From ``/finish`` to the analyst queue: de-duplicate a finished report's files,
cluster them, link the report to others, score it — one transaction per report.

Two paths run the same idempotent :func:`triage_report`:

* the serving process, at once: :class:`TriageWorker` (one background thread) takes
  report ids from the intake's ``on_finish`` hook, so a report is usually triaged
  within milliseconds of its finish;
* the crash-safe path: ``finish`` queued a ``clearinghouse.triage`` job in its own
  transaction (due ``clearinghouse_triage_grace_seconds`` later), which ``tipline
  worker`` runs if the serving process died first. When the thread triages the report
  it marks that job done in the same transaction, so the job normally never runs.

Reports are triaged one at a time across all processes (:func:`.clusters.lock`), which
is what makes "every earlier file is in the index" true for each of them.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from tipline.config import TRIAGE_WEIGHTS, Settings
from tipline.errors import InputError
from tipline.services import audit, jobs
from tipline.services.clearinghouse import clusters, dedup, facts, links, routing, triage
from tipline.services.clearinghouse.intake import (
    FINISHED,
    TARGET_REPORT,
    triage_job_key,
)
from tipline.services.clearinghouse.triage import TRIAGE_JOB_KIND
from tipline.services.database import Database
from tipline.services.matching import Matcher
from tipline.store import bank_repository as bank_repo
from tipline.store.base import utcnow
from tipline.store.clearinghouse import IntakeFileRow, IntakeReportRow
from tipline.store.clearinghouse_triage import TriageRow
from tipline.store.db import transaction
from tipline.store.referrals import RoutingDecisionRow

log = logging.getLogger(__name__)

PENDING, CONFIRMED, REJECTED = "pending", "confirmed", "rejected"
#: actor of the triage audit records
ACTOR = "clearinghouse"
#: the triage table (a report's row is written with one Core statement)
_TRIAGE = cast(Table, TriageRow.__table__)
_REPORTS = cast(Table, IntakeReportRow.__table__)
_FILES = cast(Table, IntakeFileRow.__table__)
_DECISIONS = cast(Table, RoutingDecisionRow.__table__)
#: linked reports whose link factor a new report refreshes, at most
MAX_RESCORED = 50


@dataclass
class Triager:
    """What triage needs: sessions, a Matcher that sees system banks, the settings'
    distances and weights, and a clock."""

    sessions: sessionmaker[Session]
    matcher: Matcher
    dedup: dedup.DedupSettings = field(default_factory=dedup.DedupSettings)
    policy: triage.TriagePolicy = field(
        default_factory=lambda: triage.TriagePolicy(weights=dict(TRIAGE_WEIGHTS))
    )
    clock: Callable[[], datetime] = utcnow
    #: routes each report as it is triaged (None: routing is not configured)
    router: routing.Router | None = None
    #: the id of :data:`.dedup.FILES_BANK` once read (see :func:`.dedup.files_bank`)
    files_bank_id: int | None = None

    @classmethod
    def open(cls, db: Database, settings: Settings, **kwargs: Any) -> Triager:
        """A triager on ``db`` with the index folder, distances and weights of
        ``settings`` (:class:`~tipline.errors.ConfigError` on unknown weights), routing
        every report it triages when a geolocation database is configured
        (:class:`~tipline.errors.ConfigError` when it or the routing table is unusable)."""
        policy = triage.TriagePolicy.of(settings)
        if settings.geoip_database is not None and "router" not in kwargs:
            kwargs["router"] = routing.router_from_settings(db.sessions, settings)
        # triage_report refreshes it under the lock; no extra look per file
        matcher = Matcher(
            db, settings.resolved_index_dir(), poll_interval=3600.0, system_banks=True
        )
        return cls(db.sessions, matcher, dedup.DedupSettings.of(settings), policy, **kwargs)

    def close(self) -> None:
        """Release the Matcher."""
        self.matcher.close()


@dataclass(frozen=True, slots=True)
class TriageOutcome:
    """What :func:`triage_report` did to one report."""

    report_id: int
    score: float
    files: int
    new_files: int
    known_files: int
    linked_reports: int
    clusters: tuple[int, ...]
    #: the agency it was routed to (None: not routed now, or routed to nobody)
    routed_to: str | None = None


def _report_facts(xml: str) -> facts.ReportFacts:
    try:
        return facts.report_facts(xml)
    except InputError:  # stored documents were valid; never block triage on one
        return facts.ReportFacts()


def _file_facts(xml: str | None) -> facts.FileFacts:
    try:
        return facts.file_facts(xml)
    except InputError:
        return facts.FileFacts()


def _rescore_links(
    session: Session, report_ids: Iterable[int], policy: triage.TriagePolicy
) -> list[int]:
    """Bring the link factor of pending linked reports up to date; their ids."""
    done: list[int] = []
    chosen = sorted(report_ids)[:MAX_RESCORED]
    if not chosen:
        return done
    read, write = _rescore_statements()
    # each row with its linked reports counted now (links.counts, in the same read)
    rows = {int(row.report_id): row for row in session.execute(read, {"ids": chosen})}
    changed: list[dict[str, Any]] = []
    for rid in chosen:
        row = rows.get(rid)
        if row is None:
            continue
        count = min(int(row.counted), links.MAX_LINKED)
        if count == row.linked_reports:
            continue
        factor = triage.Factor(
            "linked_reports",
            policy.weight("linked_reports"),
            min(count, policy.link_cap) / policy.link_cap,
            f"{count} other reports share an account, email, IP or device",
        )
        kept = [f for f in row.factors if f.get("name") != "linked_reports"]
        factors = [*kept, factor.as_json()]
        changed.append(
            {
                "rid": rid,
                "new_factors": factors,
                "new_score": round(sum(float(f["points"]) for f in factors), 3),
                "new_linked": count,
            }
        )
        done.append(rid)
    if changed:
        session.execute(write, changed)
    return done


@functools.cache
def _rescore_statements() -> tuple[Any, Any]:
    """(the pending triage rows of ``:ids``, their link factor's update), built once."""
    t = _TRIAGE.c
    counted = links.count_of(t.report_id).label("counted")
    read = select(t.report_id, t.factors, t.linked_reports, counted).where(
        t.report_id.in_(bindparam("ids", expanding=True)), t.status == PENDING
    )
    write = (
        update(_TRIAGE)
        .where(t.report_id == bindparam("rid"))
        .values(
            factors=bindparam("new_factors", type_=t.factors.type),
            score=bindparam("new_score", type_=t.score.type),
            linked_reports=bindparam("new_linked", type_=t.linked_reports.type),
        )
    )
    return read, write


@functools.cache
def _triage_statements() -> tuple[Any, Any]:
    """(the report with its triage row's id and its files in upload order, one row per
    file, or one row with no file; the triage row's insert), built once: each report
    only binds its id."""
    r, f, t = _REPORTS.c, _FILES.c, _TRIAGE.c
    d = _DECISIONS.c
    # whether it was routed by hand before triage (routing's own check, read here)
    decided = select(d.id).where(d.report_id == r.id).limit(1).scalar_subquery()
    report = (
        select(
            r.provider_id,
            r.status,
            r.xml,
            r.finished_at,
            t.report_id.label("triaged"),
            decided.label("decided"),
            # the Matcher's change marks, read here after the lock (no statement of its own)
            *bank_repo.change_marks_columns(),
            f.id,
            f.md5,
            f.sha1,
            f.sha256,
            f.signals,
            f.details_xml,
        )
        .select_from(
            _REPORTS.outerjoin(_TRIAGE, t.report_id == r.id).outerjoin(_FILES, f.report_id == r.id)
        )
        .where(r.id == bindparam("report_id"))
        .order_by(f.uploaded_at, f.id)
    )
    return report, _TRIAGE.insert()


def _lock_and_settle(session: Session, report_id: int) -> None:
    """Take the de-duplication lock (:func:`.clusters.lock`) and settle the report's
    triage job (:func:`.jobs.settle`): one statement on PostgreSQL."""
    key = triage_job_key(report_id)
    if session.get_bind().dialect.name != "postgresql":
        clusters.lock(session)
        jobs.settle(session, key)
        return
    session.execute(
        _lock_and_settle_statement(),
        {"key": key, "now": utcnow()},
        execution_options={"synchronize_session": False},
    )


@functools.cache
def _lock_and_settle_statement() -> Any:
    """:func:`_lock_and_settle`'s statement on PostgreSQL, built once."""
    return clusters.lock_statement().add_cte(jobs.settle_cte())


def triage_report(triager: Triager, report_id: int) -> TriageOutcome | None:
    """De-duplicate, cluster, link and score one finished report, in one transaction;
    None when there is nothing to do (unknown or unfinished report, already triaged)."""
    report_query, insert_triage = _triage_statements()
    with transaction(triager.sessions) as session:
        # every path below settles the job (done now), and a rollback undoes it
        _lock_and_settle(session, report_id)
        # plain rows (report columns, then file id, digests, signals, fileDetails)
        found = session.execute(report_query, {"report_id": report_id}).all()
        report = found[0] if found else None
        if report is None or report.status != FINISHED or report.triaged is not None:
            return None
        # in this transaction, under the lock: every file triaged before is indexed
        marks = (int(report.bank_seq), int(report.bank_list_changes))
        triager.matcher.refresh(force=True, session=session, marks=marks)
        bank_id = dedup.files_bank(
            session, triager.dedup, matcher=triager.matcher, known=triager.files_bank_id
        )
        triager.files_bank_id = bank_id
        rows: list[Any] = [row for row in found if row.id is not None]
        now = triager.clock()
        indexed: list[bank_repo.SignalChange] = []
        outcomes = dedup.dedup_report(
            session,
            triager.matcher,
            rows,
            triager.dedup,
            report_id=report_id,
            now=now,
            bank_id=bank_id,
            indexed=indexed,
        )
        clusters.assign(session, outcomes, report_id=report_id, now=now)
        report_facts = _report_facts(report.xml)
        file_facts = {row.id: _file_facts(row.details_xml) for row in rows}
        identifiers = [*report_facts.identifiers]
        for item in file_facts.values():
            identifiers.extend(item.identifiers)
        linked = links.record_and_link(session, report_id, report.provider_id, identifiers)
        score, factors = triage.score(
            triager.policy,
            report_facts,
            [
                triage.FileTriage(
                    o.state,
                    file_facts[o.file_id],
                    tuple(label for k in o.known for label in k.get("labels", ())),
                )
                for o in outcomes
            ],
            linked_reports=len(linked),
            received_at=report.finished_at or now,
        )
        outcome = TriageOutcome(
            report_id=report_id,
            score=score,
            files=len(outcomes),
            new_files=sum(1 for o in outcomes if o.state == "new"),
            known_files=sum(1 for o in outcomes if o.state == "known"),
            linked_reports=len(linked),
            clusters=tuple(sorted({o.cluster_id for o in outcomes})),
        )
        session.execute(
            insert_triage,
            {
                "report_id": report_id,
                "status": PENDING,
                "score": score,
                "factors": [f.as_json() for f in factors],
                "files": outcome.files,
                "new_files": outcome.new_files,
                "known_files": outcome.known_files,
                "linked_reports": outcome.linked_reports,
                "triaged_at": now,
                "decided_at": None,
                "decided_by": None,
                "note": None,
            },
        )
        rescored = _rescore_links(session, linked, triager.policy)
        routed = None
        if triager.router is not None:
            routed = routing.route_triaged(
                session,
                triager.router,
                report_id,
                str(report.xml),
                [(str(row.id), row.details_xml) for row in rows],
                actor=ACTOR,
                decided=report.decided is not None,
            )
            if routed is not None:
                outcome = replace(outcome, routed_to=routed.agency)
        # at commit, in one append with the routing decision's record (if any)
        audit.defer(
            session,
            actor=ACTOR,
            action="clearinghouse.triage",
            target=(TARGET_REPORT, str(report_id)),
            details={
                "score": score,
                "files": outcome.files,
                "new": outcome.new_files,
                "known": outcome.known_files,
                "clusters": list(outcome.clusters),
                "linked_reports": sorted(linked)[:50],
                "rescored": rescored,
                "routed_to": routed.agency if routed else None,
            },
        )
    # committed: the next report's refresh then finds the marks where these rows left them
    triager.matcher.adopt(indexed)
    return outcome


def check_triage_settings(settings: Settings) -> None:
    """:class:`~tipline.errors.ConfigError` when the triage weights name unknown factors."""
    triage.TriagePolicy.of(settings)


JOB_KINDS = (TRIAGE_JOB_KIND,)


class TriageWorker:
    """Triages finished reports on one background thread of the serving process.

    :meth:`submit` never blocks and never fails the caller: a report whose triage
    fails here is left to its job (``tipline worker``).
    """

    def __init__(self, triager: Triager | Callable[[], Triager]) -> None:
        #: built on the worker thread on first use when given as a factory
        self._triager = triager
        #: report ids, callbacks (:meth:`drain`) and None (stop)
        self._queue: queue.Queue[int | Callable[[], None] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(cls, db: Database, settings: Settings) -> TriageWorker:
        """A worker with a :class:`Triager` of ``settings``, opened (Matcher and all) on
        the first report; the weights are checked now (ConfigError)."""
        check_triage_settings(settings)
        return cls(lambda: Triager.open(db, settings))

    @property
    def triager(self) -> Triager:
        """The triager (opened now if it was given as a factory)."""
        if not isinstance(self._triager, Triager):
            self._triager = self._triager()
        return self._triager

    def _put(self, item: int | Callable[[], None]) -> bool:
        with self._lock:
            if self._closed:
                return False
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tipline-clearinghouse-triage", daemon=True
                )
                self._thread.start()
            self._queue.put(item)
        return True

    def submit(self, report_id: int) -> None:
        """Queue ``report_id`` for triage (starts the thread on first use)."""
        self._put(report_id)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if callable(item):
                item()
                continue
            try:
                triage_report(self.triager, item)
            except Exception:  # the report's job retries it
                log.exception("triage of intake report %s failed; its job will retry", item)

    def drain(self, timeout: float) -> bool:
        """Wait until every report submitted so far was handled (True) or ``timeout``
        seconds passed (False); for tests and orderly shutdowns."""
        done = threading.Event()
        if not self._put(done.set):
            return True
        return done.wait(timeout)

    def close(self) -> None:
        """Finish the queued reports, stop the thread, release the Matcher."""
        with self._lock:
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join()
        if isinstance(self._triager, Triager):
            self._triager.close()
