"""Benign media and report documents for clearinghouse tests.

Pictures are the Debian wallpapers under /usr/share/backgrounds, shrunk and then
transformed (resize, crop, brightness, re-encoding): each transform of one wallpaper is
"the same picture" in the ground truth, different wallpapers are different pictures.
Wallpapers shipped as several sizes of one picture, flat pictures, pictures whose
transforms stray over :data:`MAX_SPREAD` bits and pictures closer than
:data:`MIN_APART` bits to one already chosen are left out, so the truth is sound.
"""

from __future__ import annotations

import functools
import io
import re
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from PIL import Image, ImageEnhance, ImageFilter

from tipline.services.clearinghouse.intake import INTAKE_HASH_OPTIONS
from tipline.signals.decode import FAST_MIN_SIDE, DecodeMode
from tipline.signals.hashing import HashOptions, hash_bytes

WALLPAPERS = Path("/usr/share/backgrounds")
#: smallest PDQ distance (bits) between two chosen pictures
MIN_APART = 90
#: PDQ quality a chosen picture has at least (flat pictures are left out)
MIN_QUALITY = 80
#: largest PDQ distance (bits) of a chosen picture's transforms from it
MAX_SPREAD = 22
#: names of the transforms :func:`variant` knows
VARIANTS = ("base", "small", "blur", "gray", "bright", "recoded")


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def pdq_quality(data: bytes) -> tuple[str, int]:
    """The PDQ hash and quality the intake computes (its default decode)."""
    result = hash_bytes(
        data, "x.jpg", HashOptions(signals=("pdq",), decode=INTAKE_HASH_OPTIONS.decode)
    )
    found = next(s for s in result.signals if s.type == "pdq")
    return found.value, int(found.quality or 0)


def pdq_of(data: bytes) -> str:
    """The PDQ hash the intake computes."""
    return pdq_quality(data)[0]


def bits(a: str, b: str) -> int:
    """Hamming distance of two hex hashes, bits."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


@functools.cache
def _bases() -> tuple[Image.Image, ...]:
    paths = sorted(
        p
        for p in WALLPAPERS.rglob("*")
        if p.suffix.lower() in (".jpg", ".png") and not re.search(r"_\d+x\d+\.", p.name)
    )
    chosen: list[tuple[Image.Image, str]] = []
    for path in paths:
        with Image.open(path) as opened:
            opened.draft("RGB", (640, 640))
            image = opened.convert("RGB")
        image.thumbnail((400, 400))
        value, quality = pdq_quality(_jpeg(image, 90))
        if quality < MIN_QUALITY or any(bits(value, other) < MIN_APART for _, other in chosen):
            continue
        if max(bits(value, pdq_of(_transform(image, v))) for v in VARIANTS) > MAX_SPREAD:
            continue  # a picture PDQ cannot follow through the transforms
        chosen.append((image, value))
    return tuple(image for image, _ in chosen)


@functools.cache
def drifting_photo() -> bytes:
    """A wallpaper at its own size (short side >= 1024 px, so the fast decode reduces
    it) as a JPEG whose fast-decode PDQ differs from its reference PDQ (skips the test
    when no wallpapers are installed; fails when none of them drifts)."""
    if not WALLPAPERS.is_dir():
        pytest.skip("no wallpapers under /usr/share/backgrounds (scripts/setup installs them)")
    for path in sorted(WALLPAPERS.rglob("*")):
        if path.suffix.lower() not in (".jpg", ".png"):
            continue
        with Image.open(path) as opened:
            if min(opened.size) < 2 * FAST_MIN_SIDE:
                continue
            data = _jpeg(opened, 80)
        if len(data) > 512 * 1024:
            continue
        fast, exact = (
            hash_bytes(data, "x.jpg", HashOptions(signals=("pdq",), decode=mode)).signals[0]
            for mode in (DecodeMode.FAST, DecodeMode.EXACT)
        )
        if int(exact.quality or 0) >= MIN_QUALITY and fast.value != exact.value:
            return data
    raise AssertionError("no wallpaper whose fast-decode PDQ differs from its reference PDQ")


def pictures(count: int) -> list[int]:
    """Indexes of ``count`` distinct pictures (skips the test when there are fewer)."""
    if not WALLPAPERS.is_dir():
        pytest.skip("no wallpapers under /usr/share/backgrounds (scripts/setup installs them)")
    bases = _bases()
    if len(bases) < count:
        pytest.skip(f"only {len(bases)} distinct wallpapers, {count} needed")
    return list(range(count))


def variant(picture: int, name: str) -> bytes:
    """JPEG bytes of one transform of picture ``picture``."""
    return _transform(_bases()[picture], name)


def _transform(image: Image.Image, name: str) -> bytes:
    w, h = image.size
    if name == "base":
        return _jpeg(image, 90)
    if name == "small":
        return _jpeg(image.resize((w * 3 // 4, h * 3 // 4)), 75)
    if name == "blur":
        return _jpeg(image.filter(ImageFilter.GaussianBlur(1.2)), 85)
    if name == "gray":
        return _jpeg(image.convert("L"), 85)
    if name == "bright":
        return _jpeg(ImageEnhance.Brightness(image).enhance(1.12), 80)
    if name == "recoded":
        return _jpeg(image, 60)
    raise ValueError(name)


def report_xml(
    *,
    incident: str = "Child Pornography (possession, manufacture, and distribution)",
    incident_at: str = "2026-11-20T09:30:15Z",
    escalate: str | None = None,
    annotations: tuple[str, ...] = (),
    batched: bool = False,
    esp_id: str | None = None,
    screen_name: str | None = None,
    emails: tuple[str, ...] = (),
    ips: tuple[tuple[str, bool], ...] = (),
    devices: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """A schema-valid ``<report>`` with the given parts (``ips``: (address, proxy))."""
    summary = [f"<incidentType>{escape(incident)}</incidentType>"]
    if escalate:
        summary.append(f"<escalateToHighPriority>{escape(escalate)}</escalateToHighPriority>")
    if annotations:
        inner = "".join(f"<{a}>true</{a}>" for a in annotations)
        summary.append(f"<reportAnnotations>{inner}</reportAnnotations>")
    summary.append(f"<incidentDateTime>{incident_at}</incidentDateTime>")
    person: list[str] = []
    if emails:
        mails = "".join(f"<email>{escape(e)}</email>" for e in emails)
        person.append(f"<personOrUserReportedPerson>{mails}</personOrUserReportedPerson>")
    if esp_id:
        person.append(f"<espIdentifier>{escape(esp_id)}</espIdentifier>")
    if screen_name:
        person.append(f"<screenName>{escape(screen_name)}</screenName>")
    for address, proxy in ips:
        flag = "<possibleProxy>true</possibleProxy>" if proxy else ""
        person.append(f"<ipCaptureEvent><ipAddress>{address}</ipAddress>{flag}</ipCaptureEvent>")
    for kind, value in devices:
        person.append(
            f"<deviceId><idType>{escape(kind)}</idType><idValue>{escape(value)}</idValue></deviceId>"
        )
    reported = f"<personOrUserReported>{''.join(person)}</personOrUserReported>" if person else ""
    head = '<batchedReport reason="VIRAL_POTENTIAL_MEME"/>' if batched else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<report>'
        f"{head}<incidentSummary>{''.join(summary)}</incidentSummary>"
        "<reporter><reportingPerson><email>reports@example.org</email></reportingPerson>"
        f"</reporter>{reported}</report>"
    ).encode()


def file_details_xml(
    report_id: int,
    file_id: str,
    *,
    classification: str | None = None,
    annotations: tuple[str, ...] = (),
    upload_ip: str | None = None,
) -> bytes:
    """A schema-valid ``<fileDetails>``."""
    parts = [f"<reportId>{report_id}</reportId><fileId>{file_id}</fileId>"]
    if annotations:
        inner = "".join(f"<{a}>true</{a}>" for a in annotations)
        parts.append(f"<fileAnnotations>{inner}</fileAnnotations>")
    if classification:
        parts.append(f"<industryClassification>{classification}</industryClassification>")
    if upload_ip:
        parts.append(f"<ipCaptureEvent><ipAddress>{upload_ip}</ipAddress></ipCaptureEvent>")
    return f"<fileDetails>{''.join(parts)}</fileDetails>".encode()
