"""``tipline analyst``: the clearinghouse analyst's desk on the command line — the triage
queue, one report, confirm (publish) or reject, route to an agency. Each command is one
service call, acting as the local operator (audited as ``cli``)."""

from __future__ import annotations

import json
from typing import Any

import typer

from tipline.cli.console import err_console, out_console
from tipline.config import get_settings
from tipline.services.auth import Principal
from tipline.services.clearinghouse import decisions, queue, routing
from tipline.services.clearinghouse.dedup import DedupSettings
from tipline.services.database import open_database
from tipline.services.vault import Vault
from tipline.signals.limits import MediaLimits

analyst_app = typer.Typer(
    help="The clearinghouse analyst's desk: queue, show, confirm, reject, route.",
    no_args_is_help=True,
)


def _out(text: str) -> None:
    out_console.print(text, markup=False, highlight=False, soft_wrap=True)


def _json(value: Any) -> None:
    _out(json.dumps(value, sort_keys=True, default=str))


def _as_dict(value: Any) -> dict[str, Any]:
    return {name: getattr(value, name) for name in value.__slots__}


@analyst_app.command("queue")
def queue_command(
    status: str = typer.Option(
        "pending", "--status", help="pending (the queue), confirmed or rejected."
    ),
    limit: int = typer.Option(20, "--limit", help="Reports to list (1-1000)."),
    offset: int = typer.Option(0, "--offset", help="Reports to skip."),
    as_json: bool = typer.Option(False, "--json", help="One report (JSON) per line."),
) -> None:
    """Triaged reports, highest score first, with the factors that scored most."""
    db = open_database()
    try:
        items = queue.queue(db.sessions, Principal.cli(), status=status, limit=limit, offset=offset)
    finally:
        db.close()
    for item in items:
        if as_json:
            _json(_as_dict(item))
            continue
        top = sorted(item.factors, key=lambda f: -abs(float(f["points"])))[:3]
        why = ", ".join(f"{f['name']} {float(f['points']):+g}" for f in top)
        _out(
            f"{item.report_id}\t{item.score:g}\t{item.files} files ({item.new_files} new, "
            f"{item.known_files} known)\t{item.provider}\t{item.incident_type or '-'}\t{why}"
        )
    if not as_json:
        err_console.print(f"{len(items)} {status} report(s)", markup=False)


@analyst_app.command("show")
def show_command(
    report_id: int = typer.Argument(..., help="Intake report id."),
    as_json: bool = typer.Option(False, "--json", help="The whole report view as JSON."),
) -> None:
    """One report: state, incident, files, de-duplication, triage (audited)."""
    db = open_database()
    try:
        view = queue.report_view(db.sessions, Principal.cli(), report_id)
    finally:
        db.close()
    if as_json:
        _json(view)
        return
    report = view["report"]
    triage = view.get("triage") or {}
    incident = view.get("incident") or {}
    _out(
        f"report {report['report_id']}\t{report['status']}\tprovider {report['provider']}\t"
        f"incident {incident.get('incident_type') or '-'}\t"
        f"score {triage.get('score', '-')}\t{triage.get('status', 'not triaged')}"
    )
    for factor in triage.get("factors", []):
        _out(f"  factor {factor['name']}\t{float(factor['points']):+g}\t{factor.get('detail', '')}")
    for f in view.get("files", []):
        _out(
            f"  file {f['file_id']}\t{f.get('state') or '-'}\t"
            f"cluster {f.get('cluster_id') or '-'}\t{f.get('media') or 'other'}\t"
            f"{f['size']} bytes\tmd5 {f['md5']}"
        )
    linked = view.get("linked_reports") or []
    if linked:
        _out(f"  linked reports: {', '.join(str(r['report_id']) for r in linked)}")


def _decided(decision: decisions.Decision) -> None:
    published = f", {len(decision.published)} hash(es) published to {decision.bank}"
    err_console.print(
        f"report {decision.report_id} {decision.status}{published if decision.bank else ''}",
        markup=False,
    )


@analyst_app.command("confirm")
def confirm_command(
    report_id: int = typer.Argument(..., help="Intake report id (pending)."),
    files: list[str] = typer.Option(
        None, "--file", help="File id to publish (repeatable; default: every file not known)."
    ),
    classification: str | None = typer.Option(
        None, "--classification", help="Industry classification: A1, A2, B1 or B2."
    ),
    note: str | None = typer.Option(None, "--note", help="Why (kept with the decision)."),
) -> None:
    """Confirm a pending report and publish its new material's hashes."""
    settings = get_settings()
    db = open_database(settings=settings)
    try:
        decision = decisions.confirm(
            db.sessions,
            Principal.cli(),
            report_id,
            bank=settings.clearinghouse_publish_bank,
            settings=DedupSettings.of(settings),
            vault=Vault.from_settings(settings),
            limits=MediaLimits.of(settings),
            file_ids=files or None,
            classification=classification,
            note=note,
        )
    finally:
        db.close()
    _decided(decision)


@analyst_app.command("reject")
def reject_command(
    report_id: int = typer.Argument(..., help="Intake report id (pending)."),
    note: str | None = typer.Option(None, "--note", help="Why (kept with the decision)."),
) -> None:
    """Reject a pending report (nothing is published)."""
    db = open_database()
    try:
        decision = decisions.reject(db.sessions, Principal.cli(), report_id, note=note)
    finally:
        db.close()
    _decided(decision)


@analyst_app.command("route")
def route_command(
    report_id: int = typer.Argument(..., help="Intake report id (finished)."),
    agency: str | None = typer.Option(
        None, "--agency", help="Send it to this agency of the routing table (an override)."
    ),
    note: str | None = typer.Option(None, "--note", help="Why (kept with an override)."),
) -> None:
    """Route a report by the routing table, or to the agency named."""
    settings = get_settings()
    db = open_database(settings=settings)
    try:
        d = routing.route_one(
            db.sessions, settings, report_id, actor=Principal.cli(), agency=agency, note=note
        )
    finally:
        db.close()
    _out(f"{d.report_id}\t{d.agency or 'unrouted'}\t{d.rule}\t{d.rule_key or '-'}")


def register(app: typer.Typer) -> None:
    """Add ``analyst`` to the root command."""
    app.add_typer(analyst_app, name="analyst")
