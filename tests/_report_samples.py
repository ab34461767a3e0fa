"""Fixed report contents used by the builder tests and golden files (all values invented)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from tipline.services.reports.model import (
    Classification,
    DeviceIdentifier,
    EstimatedLocation,
    FileAnnotation,
    IncidentType,
    IpCapture,
    IpEvent,
    ReportAnnotation,
    ReportContent,
    ReportedFile,
    ReportedUser,
    Reporter,
)

T0 = datetime(2026, 11, 20, 9, 30, 15, tzinfo=UTC)
REPORTER = Reporter(email="reports@example.org")
FULL_REPORTER = Reporter(
    email="trust-safety@example.org",
    first_name="Dana",
    last_name="Okafor",
    phone="+1 555 0100",
    company_template="Example Photos files reports from its review team.",
    terms_of_service="https://example.org/terms",
    legal_url="https://example.org/legal",
)


def _file(n: int, *, viewed: bool, name: str = "IMG_0001.jpg", **kw: object) -> ReportedFile:
    return ReportedFile(
        file_name=name,
        md5=f"{n:032x}",
        sha1=f"{n:040x}",
        size=1000 + n,
        viewed_by_esp=viewed,
        exif_viewed_by_esp=viewed,
        **kw,  # type: ignore[arg-type]
    )


def minimal() -> ReportContent:
    return ReportContent(
        report_id="01JDMINIMAL0000000000000000"[:26],
        incident_type=IncidentType.CHILD_PORNOGRAPHY,
        incident_at=T0,
        reporter=REPORTER,
        files=(_file(1, viewed=True),),
    )


def maximal() -> ReportContent:
    upload = IpCapture(
        ip="2001:db8::17", event=IpEvent.UPLOAD, at=T0, port=51234, possible_proxy=False
    )
    user = ReportedUser(
        esp_identifier="user-8812",
        esp_service="Example Photos",
        screen_name="sunny_days <&> \x07bell",
        display_names=("Sunny",),
        profile_urls=("https://photos.example.org/u/user-8812",),
        emails=("sunny@example.net",),
        ip_events=(
            IpCapture(
                ip="198.51.100.7",
                event=IpEvent.REGISTRATION,
                at=T0 - timedelta(days=300),
                port=40001,
            ),
            IpCapture(ip="198.51.100.9", event=IpEvent.LOGIN, at=T0 - timedelta(hours=2)),
            upload,
        ),
        devices=(
            DeviceIdentifier(id_type="IDFA", value="6D92078A-8246-4BA4-AE5B-76104861E7DC"),
            DeviceIdentifier(
                id_type="cookie", value="c-77a1", event=IpEvent.LOGIN, at=T0 - timedelta(hours=2)
            ),
        ),
        temporarily_disabled_at=T0 + timedelta(minutes=5),
        reenabled_at=None,
        permanently_disabled_at=T0 + timedelta(days=1),
        location=EstimatedLocation(
            city="Springfield", region="IL", country="US", verified=False, at=T0
        ),
    )
    return ReportContent(
        report_id="01JDMAXIMAL0000000000000000"[:26],
        incident_type=IncidentType.CHILD_PORNOGRAPHY,
        incident_at=datetime(2026, 11, 20, 4, 30, 15, 250000, tzinfo=timezone(timedelta(hours=-5))),
        reporter=FULL_REPORTER,
        files=(
            _file(
                2,
                viewed=True,
                name="beach photo (1).jpg",
                uploaded_at=T0,
                upload_ip=upload,
                annotations=frozenset({FileAnnotation.VIRAL, FileAnnotation.GENERATIVE_AI}),
                potential_meme=True,
                classification=Classification.B1,
                publicly_available=False,
                location="https://photos.example.org/p/2",
                hashes=(
                    ("PDQ", "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"),
                ),
            ),
        ),
        users=(user,),
        platform="Example Photos",
        escalation_reason="Reviewer saw signs of ongoing contact with a child.",
        annotations=frozenset({ReportAnnotation.SEXTORTION, ReportAnnotation.SPAM}),
        urls=("https://photos.example.org/p/2",),
        additional_info="Matched bank 'known-a' entry 17 at distance 4 (PDQ).",
    )


def video() -> ReportContent:
    return ReportContent(
        report_id="01JDVIDEO000000000000000000"[:26],
        incident_type=IncidentType.CHILD_PORNOGRAPHY,
        incident_at=T0,
        reporter=REPORTER,
        files=(
            _file(
                3,
                viewed=False,
                name="clip.mp4",
                uploaded_at=T0,
                classification=Classification.A1,
                hashes=(("vPDQ", "frames=120 md5=aa"),),
            ),
        ),
        users=(ReportedUser(esp_identifier="user-5"),),
    )


def bundled() -> ReportContent:
    users = tuple(
        ReportedUser(
            esp_identifier=f"user-{i}",
            ip_events=(IpCapture(ip=f"203.0.113.{i}", event=IpEvent.UPLOAD, at=T0, port=1000 + i),),
        )
        for i in range(3)
    )
    files = tuple(
        _file(
            10 + i,
            viewed=False,
            name=f"meme-{i}.png",
            uploaded_at=T0 + timedelta(minutes=i),
            potential_meme=True,
            upload_ip=users[i].ip_events[0],
        )
        for i in range(3)
    )
    return ReportContent(
        report_id="01JDBUNDLE00000000000000000"[:26],
        incident_type=IncidentType.CHILD_PORNOGRAPHY,
        incident_at=T0,
        reporter=REPORTER,
        files=files,
        users=users,
        batched_viral=True,
    )


def multi_file() -> ReportContent:
    files = tuple(
        _file(20 + i, viewed=i % 2 == 0, name=f"album/{i}.jpg", uploaded_at=T0) for i in range(4)
    )
    return ReportContent(
        report_id="01JDMULTI000000000000000000"[:26],
        incident_type=IncidentType.CHILD_PORNOGRAPHY,
        incident_at=T0,
        reporter=REPORTER,
        files=files,
        users=(ReportedUser(esp_identifier="user-77", screen_name="collector"),),
    )


def auto_reported() -> ReportContent:
    return ReportContent(
        report_id="01JDAUTO0000000000000000000"[:26],
        incident_type=IncidentType.CHILD_PORNOGRAPHY,
        incident_at=T0,
        reporter=REPORTER,
        files=(_file(30, viewed=False, name="upload.jpg", uploaded_at=T0),),
        users=(ReportedUser(esp_identifier="user-9"),),
        additional_info="Reported on an exact match of an entry a trusted source confirmed; "
        "no person at the platform viewed the file.",
    )


SAMPLES = {
    "minimal": minimal,
    "maximal": maximal,
    "video": video,
    "bundled": bundled,
    "multi_file": multi_file,
    "auto_reported": auto_reported,
}
