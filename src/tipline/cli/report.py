"""``tipline report``: CyberTipline reports — build from a decision (or many, one
transaction per batch), list with delivery state, show, download the XML, retract,
retry, read the operator queue, and deliver the queued reports to the configured ISPWS
endpoint (with a progress bar)."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tipline.cli.console import err_console, out_console
from tipline.config import get_settings
from tipline.errors import InputError
from tipline.services.auth import Principal
from tipline.services.reports import batch, sending, service
from tipline.services.reports.outbox import ReportStatus

report_app = typer.Typer(
    help="Build, deliver and manage CyberTipline reports.", no_args_is_help=True
)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _line(s: service.ReportSummary) -> str:
    remote = s.remote_id if s.remote_id is not None else "-"
    step = f"next {s.step} (attempt {s.attempts + 1})" if s.step else "-"
    if s.step == "held" and s.next_attempt_at is not None:  # a match-time viral bundle
        step = (
            f"held until {s.next_attempt_at.isoformat(timespec='seconds')}: "
            f"{s.held_uploads} upload(s) by {s.held_accounts} account(s) so far, "
            "document built at release"
        )
    orphans = f"\torphans {s.orphans}" if s.orphans else ""
    error = f"\t{s.last_error}" if s.last_error else ""
    return (
        f"{s.id}\t{s.status}\t{s.kind}\t{s.files} file(s)\tremote {remote}\t{step}{orphans}{error}"
    )


@report_app.command("create")
def create_command(
    decision_id: str = typer.Argument(..., help="A confirmed decision's id."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Build and queue the report of a confirmed decision."""
    settings = get_settings()
    with service.reports_database(settings) as sessions:
        s = service.create_from_decision(sessions, Principal.cli(), decision_id, settings=settings)
    out_console.print(_json(dataclasses.asdict(s)) if as_json else _line(s), markup=False)


@report_app.command("create-many")
def create_many_command(
    decision_ids: list[str] = typer.Argument(None, help="Confirmed decisions' ids."),
    from_file: Path | None = typer.Option(
        None, "--from-file", help="Also read decision ids from this file, one per line."
    ),
    batch_size: int = typer.Option(
        64, "--batch-size", min=1, max=1000, help="Decisions per database transaction."
    ),
    threads: int = typer.Option(
        2, "--threads", min=1, max=64, help="Threads building documents at once."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per decision."),
) -> None:
    """Build and queue the reports of many confirmed decisions, one transaction per
    batch (a decision that cannot be reported does not stop the others). Exits
    non-zero when any decision was not reported."""
    ids = list(decision_ids or [])
    if from_file is not None:
        try:
            text = from_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read {from_file}: {exc}") from None
        ids += [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        raise InputError("no decision ids given")
    if len(ids) > 1_000_000:
        raise InputError("at most 1,000,000 decisions per run")
    settings = get_settings()
    with service.reports_database(settings) as sessions:
        progress = Progress(
            TextColumn("reporting"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        )
        with progress:
            task = progress.add_task("create", total=len(ids))
            outcomes = batch.create_from_decisions(
                sessions,
                Principal.cli(),
                ids,
                settings=settings,
                batch_size=batch_size,
                threads=threads,
                on_batch=lambda n: progress.advance(task, n),
            )
    failed = 0
    for o in outcomes:
        if o.report is None:
            failed += 1
            if as_json:
                out_console.print(
                    _json({"decision": o.decision_id, "error": o.error}), markup=False
                )
            else:
                err_console.print(f"{o.decision_id}: {o.error}", markup=False)
        elif as_json:
            out_console.print(
                _json({"decision": o.decision_id, **dataclasses.asdict(o.report)}), markup=False
            )
        else:
            out_console.print(_line(o.report), markup=False)
    if failed:
        raise InputError(f"{failed} of {len(ids)} decision(s) not reported")


@report_app.command("auto")
def auto_command(
    submission_ids: list[str] = typer.Argument(..., help="Submission ids."),
) -> None:
    """Report submissions without review where the auto-report policy covers them;
    viral uploads of one perceptual cluster become one batched report."""
    settings = get_settings()
    with service.reports_database(settings) as sessions:
        made = service.auto_report_many(sessions, submission_ids, settings=settings)
    if not made:
        raise InputError(
            "nothing to report: no submission has an exact match in a bank of "
            "report_auto_banks that is not already reported"
        )
    for s in made:
        out_console.print(_line(s), markup=False)


@report_app.command("list")
def list_command(
    status: str | None = typer.Option(
        None, "--status", help="queued, delivering, finished, failed or retracted."
    ),
    limit: int = typer.Option(100, "--limit", "-n", min=1, max=1000),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Reports, newest first, with their delivery state."""
    try:
        wanted = ReportStatus(status) if status else None
    except ValueError:
        raise InputError(f"unknown status {status!r}") from None
    settings = get_settings()
    with service.reports_database(settings) as sessions:
        rows = service.list_reports(sessions, Principal.cli(), status=wanted, limit=limit)
    for s in rows:
        out_console.print(_json(dataclasses.asdict(s)) if as_json else _line(s), markup=False)


@report_app.command("show")
def show_command(
    report_id: str = typer.Argument(...),
    as_json: bool = typer.Option(False, "--json", help="Print as one JSON object."),
) -> None:
    """One report: delivery state, files, step log, operator items."""
    settings = get_settings()
    with service.reports_database(settings) as sessions:
        detail = service.get_report(sessions, Principal.cli(), report_id)
    if as_json:
        out_console.print(_json(dataclasses.asdict(detail)), markup=False, soft_wrap=True)
        return
    out_console.print(_line(detail.summary), markup=False)
    for f in detail.files:
        viewed = "viewed" if f["viewed_by_esp"] else "NOT viewed"
        out_console.print(
            f"  file {f['seq']}\t{f['file_name']}\t{f['size']} bytes\tmd5 {f['md5']}\t{viewed}"
            f"\tremote {f['remote_file_id'] or '-'}",
            markup=False,
        )
    for e in detail.events:
        out_console.print(f"  {e['at']}\t{e['step']}\t{e['phase']}\t{e['detail']}", markup=False)
    for item in detail.operator_items:
        out_console.print(
            f"  operator: {item['step']} code {item['response_code']}: {item['message']}",
            markup=False,
        )


@report_app.command("xml")
def xml_command(
    report_id: str = typer.Argument(...),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file."),
) -> None:
    """The report document exactly as built and submitted (refused while the report
    is a held viral bundle: its document is built at release)."""
    settings = get_settings()
    with service.reports_database(settings) as sessions:
        data = service.report_xml(sessions, Principal.cli(), report_id)
    if output is None:
        out_console.print(data.decode("utf-8"), markup=False, highlight=False, end="")
        return
    if output.exists():
        raise InputError(f"{output}: already exists")
    output.write_bytes(data)


@report_app.command("retract")
def retract_command(report_id: str = typer.Argument(...)) -> None:
    """Withdraw an unfinished report (on the receiver at the next delivery run)."""
    settings = get_settings()
    with service.reports_database(settings) as sessions:
        s = service.retract(sessions, Principal.cli(), report_id)
    out_console.print(_line(s), markup=False)


@report_app.command("retry")
def retry_command(report_id: str = typer.Argument(...)) -> None:
    """Queue a failed report again at the step that failed."""
    settings = get_settings()
    with service.reports_database(settings) as sessions:
        s = service.retry(sessions, Principal.cli(), report_id)
    out_console.print(_line(s), markup=False)


@report_app.command("queue")
def queue_command() -> None:
    """The operator queue: refused reports with the receiver's message."""
    settings = get_settings()
    with service.reports_database(settings) as sessions:
        items = service.operator_queue(sessions, Principal.cli())
    for i in items:
        out_console.print(
            f"{i['report_id']}\t{i['step']}\tcode {i['response_code']}\t{i['message']}",
            markup=False,
        )


@report_app.command("status")
def status_command() -> None:
    """Ask the configured ISPWS endpoint whether it is up and accepts the account."""
    out_console.print(service.receiver_status(get_settings()), markup=False)


@report_app.command("deliver")
def deliver_command(
    workers: int = typer.Option(1, "--workers", "-w", min=1, max=64, help="Parallel calls."),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="Wait for reports backing off before a retry."
    ),
) -> None:
    """Deliver every queued report to the configured ISPWS endpoint, then exit.

    Held viral bundles whose hold is over are released first (as ``tipline worker``
    does), so they are delivered in the same run. Safe to interrupt or kill at any
    moment: the next run resumes from the database. Exits non-zero when a report went
    to the operator queue. With --no-wait, reports backing off before a retry are left
    for the next run.
    """
    settings = get_settings()
    lock = threading.Lock()
    with service.reports_database(settings) as sessions:
        total = service.pending_deliveries(sessions)
        progress = Progress(
            TextColumn("delivering"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        )
        with progress:
            task = progress.add_task("deliver", total=total)

            def on_step(_report: str, step: str, phase: str) -> None:
                if (step == "finish" and phase == "ok") or phase == "rejected":
                    with lock:
                        progress.advance(task)

            stats = sending.deliver_due(
                sessions,
                settings=settings,
                workers=workers,
                on_step=on_step,
                wait_for_retries=wait,
            )
    err_console.print(
        f"finished {stats.finished}, failed {stats.failed}, retracted {stats.retracted}; "
        f"{stats.calls} calls, {stats.retries} retries; {stats.orphans} possible orphan "
        "report(s) left open on the receiver by lost submit answers (never finished)",
        markup=False,
    )
    if stats.failed:
        raise InputError(
            f"{stats.failed} report(s) went to the operator queue (tipline report queue)"
        )


def register(app: typer.Typer) -> None:
    """Add ``tipline report`` to the root app."""
    app.add_typer(report_app, name="report")
