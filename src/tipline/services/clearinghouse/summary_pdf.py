"""The PDF summary of a referral package (fpdf2, built-in Helvetica: no font is fetched
or embedded). Text from reports is untrusted: it is reduced to Latin-1 printable
characters and long tokens (hashes, URLs) wrap by character."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tipline._optional import require

_WIDTH = 0  # to the right margin


def _latin1(text: object) -> str:
    clean = "".join(ch if ch.isprintable() else " " for ch in str(text))
    return clean.encode("latin-1", "replace").decode("latin-1")


class _Writer:
    def __init__(self, title: str, created_at: datetime) -> None:
        fpdf = require("fpdf")
        enums = require("fpdf.enums")
        self._enums = enums
        self.pdf = fpdf.FPDF(orientation="P", unit="mm", format="A4")
        self.pdf.set_creation_date(created_at.astimezone(UTC))
        self.pdf.set_title(_latin1(title))
        self.pdf.set_creator("tipline")
        self.pdf.set_auto_page_break(auto=True, margin=15)
        self.pdf.add_page()

    def line(self, text: str, *, size: int = 9, bold: bool = False) -> None:
        self.pdf.set_font("Helvetica", style="B" if bold else "", size=size)
        self.pdf.multi_cell(
            _WIDTH,
            size * 0.5,
            _latin1(text),
            wrapmode=self._enums.WrapMode.CHAR,
            new_x=self._enums.XPos.LMARGIN,
            new_y=self._enums.YPos.NEXT,
        )

    def gap(self) -> None:
        self.pdf.ln(2)

    def bytes(self) -> bytes:
        return bytes(self.pdf.output())


def summary_pdf(
    *,
    referral_id: str,
    created_at: datetime,
    created_by: str,
    report: dict[str, Any],
    routing: dict[str, Any],
    files: Sequence[dict[str, Any]],
    media_included: bool,
    custody_records: int,
) -> bytes:
    """A one-to-few page summary: the report, the routing decision and its reasons,
    every file with its digests, and what the package holds."""
    w = _Writer(f"Referral {referral_id}", created_at)
    w.line("Referral summary", size=16, bold=True)
    w.line(f"Referral {referral_id}, built {created_at.isoformat()} by {created_by}")
    w.gap()
    w.line("Report", size=12, bold=True)
    facts = report.get("facts", {})
    for label, value in (
        ("Intake report", report.get("id")),
        ("Reporting provider", report.get("provider")),
        ("Received", report.get("received_at")),
        ("Finished", report.get("finished_at")),
        ("Incident type", report.get("incident_type")),
        ("Incident time", facts.get("incident_at")),
        ("Escalated", facts.get("escalate_to_high_priority") or "no"),
        ("Annotations", ", ".join(facts.get("annotations", [])) or "none"),
        ("Report XML SHA-256", report.get("xml_sha256")),
    ):
        w.line(f"{label}: {value if value is not None else '-'}")
    w.gap()
    w.line("Routing", size=12, bold=True)
    agency = routing.get("agency_name") or routing.get("agency") or "unrouted"
    w.line(f"Agency: {agency} ({routing.get('agency')})")
    w.line(f"Rule: {routing.get('rule')} {routing.get('rule_key') or ''}".rstrip())
    where = routing.get("country") or "-"
    if routing.get("subdivision"):
        where += f"-{routing['subdivision']}"
    w.line(f"Location: {where}; deciding address: {routing.get('ip') or '-'}")
    explanation = routing.get("explanation", {})
    w.line(f"Why: {explanation.get('summary', '-')}")
    for address in explanation.get("addresses", []):
        place = address.get("country") or ""
        if address.get("subdivision"):
            place += f"-{address['subdivision']}"
        counted = "counted" if address.get("counted") else "not counted"
        w.line(
            f"  {address.get('ip')} ({address.get('source')}, {address.get('event') or '-'}, "
            f"{address.get('at') or '-'}): {address.get('status')} {place} - {counted}: "
            f"{address.get('why')}",
            size=8,
        )
    w.gap()
    w.line(f"Files ({len(files)})", size=12, bold=True)
    for file in files:
        kind = file.get("media") or "not media"
        inside = f"included as {file['member']}" if file.get("member") else "not included"
        w.line(f"{file.get('name')} - {kind}, {file.get('size')} bytes, {inside}", bold=True)
        w.line(f"  MD5 {file.get('md5')}  SHA-1 {file.get('sha1')}", size=8)
        w.line(f"  SHA-256 {file.get('sha256')}", size=8)
    w.gap()
    w.line("Package", size=12, bold=True)
    w.line(
        "Media files are "
        + ("included (the routing rule allows it)." if media_included else "not included.")
    )
    w.line(
        f"report.json holds every fact and hash; vics.json is a Project VIC VICS 2.0 export; "
        f"custody.json holds the {custody_records} audit record(s) of this report, its files "
        "and their evidence up to packaging; SHA256SUMS lists every member."
    )
    return w.bytes()
