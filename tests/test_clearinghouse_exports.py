"""The referral package's exports on their own: the VICS 2.0 document compared byte for
byte with a golden file, a PDF summary that opens whatever text a report carries, and
the routing vote under hypothesis (the winner has the most votes; the table decides)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pypdf
from hypothesis import given
from hypothesis import strategies as st

from tipline.config import RoutingAgency, RoutingTable
from tipline.services.clearinghouse.geoip import IpStatus, Location
from tipline.services.clearinghouse.routing import IpEvidence, decide
from tipline.services.clearinghouse.summary_pdf import summary_pdf
from tipline.services.clearinghouse.vics import VicsFile, vics_case

GOLDEN = Path(__file__).parent / "golden" / "referral" / "vics.json"
T = datetime(2026, 11, 20, 9, 30, 15, 250000, tzinfo=UTC)


def _files() -> list[VicsFile]:
    common = {"size": 1234, "uploaded_at": T}
    return [
        VicsFile(file_id="f1", file_name="beach.jpg", md5="ab" * 16, sha1="cd" * 20,
                 sha256="ef" * 32, media="photo", pdq="0f" * 32, member="media/f1.jpg",
                 comment="industryClassification A1", **common),  # type: ignore[arg-type]
        VicsFile(file_id="f2", file_name="copy of beach.jpg", md5="ab" * 16, sha1="cd" * 20,
                 sha256="ef" * 32, media="photo", pdq="0f" * 32, member="media/f2.jpg",
                 **common),  # type: ignore[arg-type]
        VicsFile(file_id="f3", file_name="clip.MOV", md5="12" * 16, sha1="34" * 20,
                 sha256="56" * 32, media="video", pdq=None, member=None,
                 **common),  # type: ignore[arg-type]
    ]  # fmt: skip


def test_vics_export_matches_the_golden_file() -> None:
    doc = vics_case(
        case_id="01a227ee-e1d2-e8c8-eb8a-e60608d6c6f1",
        case_number="tipline-intake-7",
        report_path="intake-report-7",
        files=_files(),
        contact_organization="Example clearinghouse",
    )
    data = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    assert data == GOLDEN.read_text()
    media = doc["value"][0]["Media"]
    assert [m["MediaID"] for m in media] == [1, 2]
    assert len(media[0]["MediaFiles"]) == 2 and media[1]["MimeType"] == "video/quicktime"
    assert "RelativeFilePath" not in media[1]


_TEXT = st.text(max_size=300)  # any code point: emoji, RTL, controls, surrogates excluded


@given(name=_TEXT, summary=_TEXT, provider=_TEXT)
def test_the_pdf_opens_whatever_text_a_report_carries(
    name: str, summary: str, provider: str
) -> None:
    pdf = summary_pdf(
        referral_id="01JREF",
        created_at=T,
        created_by="cli",
        report={"id": 7, "provider": provider, "facts": {"annotations": [summary[:20]]}},
        routing={"agency": "x", "explanation": {"summary": summary, "addresses": [
            {"ip": summary[:40], "source": "reported_person", "status": "invalid",
             "counted": False, "why": name}]}},
        files=[{"name": name, "size": 1, "md5": "a" * 32, "sha1": "b" * 40,
                "sha256": "c" * 64, "member": None}],
        media_included=False,
        custody_records=3,
    )  # fmt: skip
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) >= 1
    assert "Referral summary" in reader.pages[0].extract_text()


_PLACES = ["US-CA", "US-NY", "US-", "GB-", "DE-", "FR-"]


@given(
    votes=st.lists(
        st.tuples(st.integers(0, 40), st.sampled_from(_PLACES), st.integers(0, 5)),
        max_size=12,
    )
)
def test_the_vote_goes_to_a_country_with_most_distinct_addresses(
    votes: list[tuple[int, str, int]],
) -> None:
    where = {}
    events = []
    for host, place, hour in votes:
        ip = f"8.0.{_PLACES.index(place)}.{host}"
        where[ip] = place
        events.append(IpEvidence(ip=ip, source="reported_person",
                                 at=datetime(2026, 1, 1, hour, tzinfo=UTC)))  # fmt: skip

    def locate(ip: str) -> Location:
        country, _, sub = where[ip].partition("-")
        return Location(ip, IpStatus.LOCATED, country, sub or None)

    table = RoutingTable(
        agencies={"ca": RoutingAgency(name="CA"), "us": RoutingAgency(name="US"),
                  "gb": RoutingAgency(name="GB"), "rest": RoutingAgency(name="rest")},
        countries={"US": "us", "GB": "gb"}, subdivisions={"US-CA": "ca"}, fallback="rest",
    )  # fmt: skip
    got = decide(events, locate, table)
    if not events:
        assert (got.rule, got.agency, got.country) == ("unlocated", "rest", None)
        return
    per_country: dict[str, set[str]] = {}
    for ip, place in where.items():
        per_country.setdefault(place.split("-")[0], set()).add(ip)
    most = max(len(v) for v in per_country.values())
    assert got.country is not None and len(per_country[got.country]) == most
    assert got.explanation["vote"]["countries"] == {k: len(v) for k, v in per_country.items()}
    expected = {"US": "us", "GB": "gb"}.get(got.country, "rest")
    if got.country == "US" and got.subdivision == "CA":
        expected = "ca"
    assert got.agency == expected
    assert got.ip in where and where[got.ip].startswith(got.country)
