"""``tipline worker``: run the database-leased job runner (webhook deliveries, the
vault's purge, report deliveries)."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import typer

from tipline.cli.console import err_console
from tipline.services.database import Database, open_database


def _vault_handlers(db: Database, *, daily: bool) -> dict[str, Any]:
    """The evidence vault's purge job; ``daily``: make sure the next run is queued
    (a long-running worker; a pending future job would keep --exit-when-idle waiting)."""
    from tipline.config import get_settings
    from tipline.services import vault

    the_vault = vault.Vault.from_settings(get_settings())
    if daily:
        vault.ensure_purge_scheduled(db.sessions, now=datetime.now(UTC))
    return {vault.PURGE_JOB_KIND: vault.purge_handler(db.engine, the_vault)}


def _exchange_handlers(db: Database, *, scheduled: bool) -> dict[str, Any]:
    """Exchange syncs: requested ones always; with ``scheduled`` (a long-running
    worker) every enabled exchange's current slot is queued and each run queues the next."""
    from tipline.services import exchanges

    if scheduled:
        exchanges.ensure_scheduled(db)
    return {exchanges.SYNC_JOB_KIND: exchanges.sync_handler(db, reschedule=scheduled)}


def _clearinghouse_handlers(db: Database) -> dict[str, Any]:
    """The clearinghouse's triage job (a finished report its serving process did not
    triage, e.g. because it died); its pipeline and Matcher open on the first such job."""
    from tipline.config import get_settings
    from tipline.services.clearinghouse import triage_job

    return triage_job.worker_handlers(db, get_settings())


def _report_handlers(
    db: Database, in_flight: int, lease_seconds: float
) -> tuple[dict[str, Any], str | None]:
    """Report delivery (``report.deliver`` jobs) when an ISPWS endpoint and account are
    configured; without them the jobs wait (and the note says why). Held match-time
    bundles are released (``report.release`` jobs) either way."""
    from tipline.config import get_settings
    from tipline.services.reports import delivery_job, service, viral

    settings = get_settings()
    # held match-time bundles are released (built, kept, queued) with or without delivery
    release = viral.ReleaseJob(
        db.sessions, settings, service.evidence_from_settings(db.sessions, settings)
    )
    viral.ensure_release_scheduled(db.sessions)
    try:
        handler = service.delivery_job_handler(
            db.sessions, settings, in_flight=in_flight, budget_seconds=lease_seconds / 3
        )
    except service.ReportingNotConfiguredError as exc:
        return {viral.RELEASE_JOB_KIND: release}, f"report delivery off: {exc.message}"
    delivery_job.ensure_delivery_scheduled(db.sessions)
    return {delivery_job.DELIVERY_JOB_KIND: handler, viral.RELEASE_JOB_KIND: release}, None


def worker_command(
    once: bool = typer.Option(False, "--once", help="Run one batch of due jobs and exit."),
    exit_when_idle: bool = typer.Option(
        False, "--exit-when-idle", help="Exit when no job is pending or running."
    ),
    lease_seconds: float = typer.Option(
        60.0, min=1.0, help="Lease length in seconds; must exceed the webhook timeout."
    ),
    batch_size: int = typer.Option(10, min=1, help="Jobs claimed per database round trip."),
    poll_interval: float = typer.Option(1.0, min=0.0, help="Seconds between idle polls."),
    backoff_base: float = typer.Option(2.0, min=0.0, help="First retry delay, seconds."),
    backoff_max: float = typer.Option(3600.0, min=0.0, help="Longest retry delay, seconds."),
    webhook_timeout: float = typer.Option(
        10.0, min=0.1, help="Per-request webhook time limit, seconds."
    ),
    report_in_flight: int = typer.Option(
        8, min=1, max=64, help="Reports delivered at once (report.deliver jobs)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each failed attempt."),
) -> None:
    """Run background jobs until SIGTERM/SIGINT; safe to run on many hosts at once."""
    from tipline.services.jobs import Backoff, JobRunner
    from tipline.services.webhooks import WEBHOOK_JOB_KIND, WebhookDeliverer

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    # httpx logs every request URL at INFO; webhook URLs may carry tokens
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    if webhook_timeout >= lease_seconds:
        raise typer.BadParameter("--webhook-timeout must be shorter than --lease-seconds")
    db = open_database()
    engine = db.engine
    deliverer = WebhookDeliverer(engine, timeout=webhook_timeout)
    reports, reports_note = _report_handlers(db, report_in_flight, lease_seconds)
    handlers = {
        WEBHOOK_JOB_KIND: deliverer,
        **_vault_handlers(db, daily=not once and not exit_when_idle),
        **_exchange_handlers(db, scheduled=not once and not exit_when_idle),
        **_clearinghouse_handlers(db),
        **reports,
    }
    runner = JobRunner(
        engine,
        handlers,
        lease_seconds=lease_seconds,
        batch_size=batch_size,
        poll_interval=poll_interval,
        backoff=Backoff(base=backoff_base, maximum=backoff_max),
    )
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    err_console.print(f"worker {runner.owner}: started", markup=False)
    if reports_note is not None:
        err_console.print(reports_note, markup=False)
    try:
        total = runner.run_once() if once else runner.run(stop, exit_when_idle=exit_when_idle)
    finally:
        deliverer.close()
        for handler in reports.values():
            handler.close()
        engine.dispose()
    err_console.print(f"worker {runner.owner}: {total} jobs run", markup=False)


def register(app: typer.Typer) -> None:
    """Add ``tipline worker`` to the root app."""
    app.command("worker")(worker_command)
