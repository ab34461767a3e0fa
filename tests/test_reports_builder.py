"""Report builder: every sample validates against NCMEC's schema (checked with lxml
against the reference copy, independently of the builder's own check) and matches its
golden file byte for byte."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from _report_samples import SAMPLES, auto_reported, maximal, minimal
from tipline.errors import InputError
from tipline.services.reports import builder
from tipline.services.reports.model import FileAnnotation

GOLDEN = Path(__file__).parent / "golden" / "reports"
UPDATE = os.environ.get("TIPLINE_UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="module")
def reference_schema(reference_dir: Path) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(reference_dir / "cybertipline" / "cyber_tipline.xsd")))


def _documents(name: str) -> list[tuple[str, bytes]]:
    content = SAMPLES[name]()
    docs = [(f"{name}.report.xml", builder.build_report(content))]
    for i, file in enumerate(content.files):
        docs.append(
            (
                f"{name}.file{i}.xml",
                builder.build_file_details(file, report_id=4_000_000 + i, file_id=f"{i:032x}"),
            )
        )
    return docs


def test_packaged_schema_is_the_reference(reference_dir: Path) -> None:
    assert (
        builder.schema_bytes()
        == (reference_dir / "cybertipline" / "cyber_tipline.xsd").read_bytes()
    )


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_validates_and_matches_golden(name: str, reference_schema: etree.XMLSchema) -> None:
    for file_name, data in _documents(name):
        root = etree.fromstring(data)
        assert reference_schema.validate(root), (file_name, reference_schema.error_log)
        golden = GOLDEN / file_name
        if UPDATE:
            golden.write_bytes(data)
        assert golden.read_bytes() == data, f"{file_name} differs from its golden file"


def test_unviewed_file_says_so_explicitly() -> None:
    content = auto_reported()
    root = etree.fromstring(builder.build_file_details(content.files[0], report_id=1, file_id="f"))
    assert root.findtext("fileViewedByEsp") == "false"
    assert root.findtext("exifViewedByEsp") == "false"


def test_viewed_flags_are_copied_exactly() -> None:
    base = minimal().files[0]
    for viewed, exif in [(True, False), (False, True), (True, True), (False, False)]:
        file = replace(base, viewed_by_esp=viewed, exif_viewed_by_esp=exif)
        root = etree.fromstring(builder.build_file_details(file, report_id=1, file_id="f"))
        assert root.findtext("fileViewedByEsp") == str(viewed).lower()
        assert root.findtext("exifViewedByEsp") == str(exif).lower()


def test_potential_meme_moves_into_annotations_when_there_are_any() -> None:
    base = minimal().files[0]
    plain = etree.fromstring(
        builder.build_file_details(replace(base, potential_meme=True), report_id=1, file_id="f")
    )
    assert plain.findtext("potentialMeme") == "true"
    tagged = etree.fromstring(
        builder.build_file_details(
            replace(base, potential_meme=True, annotations=frozenset({FileAnnotation.INFANT})),
            report_id=1,
            file_id="f",
        )
    )
    assert tagged.find("potentialMeme") is None
    assert tagged.findtext("fileAnnotations/potentialMeme") == "true"
    assert tagged.findtext("fileAnnotations/infant") == "true"


def test_times_are_utc_with_zone() -> None:
    root = etree.fromstring(builder.build_report(maximal()))
    assert root.findtext("incidentSummary/incidentDateTime") == "2026-11-20T09:30:15.25Z"


def test_control_characters_do_not_break_the_document() -> None:
    root = etree.fromstring(builder.build_report(maximal()))
    assert root.findtext("personOrUserReported/screenName") == "sunny_days <&> \ufffdbell"


def test_bad_values_are_input_errors() -> None:
    with pytest.raises(InputError, match="timezone"):
        builder.build_report(
            replace(minimal(), incident_at=minimal().incident_at.replace(tzinfo=None))
        )
    with pytest.raises(InputError, match="at least one file"):
        builder.build_report(replace(minimal(), files=()))
    content = maximal()
    user = replace(
        content.users[0],
        location=replace(content.users[0].location, country="usa"),  # type: ignore[arg-type]
    )
    with pytest.raises(InputError, match="ISO 3166"):
        builder.build_report(replace(content, users=(user,)))


def test_validator_rejects_a_broken_document() -> None:
    root = builder.report_tree(minimal())
    root.remove(root.find("reporter"))
    with pytest.raises(builder.ReportSchemaError, match="reporter"):
        builder.validate_tree(root)


def test_untrusted_parser_refuses_entities() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><report>&a;</report>'
    with pytest.raises(InputError):
        builder.validate_bytes(bomb)
    with pytest.raises(InputError, match="malformed"):
        builder.validate_bytes(b"<report><unclosed></report>")


def test_threads_share_validators_and_each_gets_its_own_answer() -> None:
    """Validators are shared between threads (one at a time each): 16 threads checking
    good and broken documents at once each get their own document's verdict, and no
    more validators are compiled than threads ran at once."""
    from concurrent.futures import ThreadPoolExecutor

    good = builder.build_report(minimal())

    def broken() -> etree._Element:
        root = etree.fromstring(good)
        root.remove(root.find("reporter"))
        return root

    def check(i: int) -> str:
        root = broken() if i % 3 == 0 else etree.fromstring(good)
        try:
            builder.validate_tree(root)
        except builder.ReportSchemaError as exc:
            return "reporter" if "reporter" in str(exc) else str(exc)
        return "ok"

    with ThreadPoolExecutor(16) as pool:
        verdicts = list(pool.map(check, range(480)))
    assert verdicts == ["reporter" if i % 3 == 0 else "ok" for i in range(480)]
    assert 1 <= len(builder._IDLE_SCHEMAS) <= 16


def _strftime_datetime(value: datetime) -> str:
    """xml_datetime as it was written first (strftime), the twin of its fast path."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


@given(
    st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=-11)), timezone(timedelta(hours=13, minutes=45))]
        ),
    )
)
def test_xml_datetime_writes_what_strftime_wrote(value: datetime) -> None:
    assert builder.xml_datetime(value) == _strftime_datetime(value)
