"""Seed data for the web UI tests: users, a bank holding the hash of a generated benign
picture, a review rule, and matches of that picture recorded through the same service
the API uses (submission, match history, review item and the media kept in the vault)."""

from __future__ import annotations

import hashlib
import io
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image, ImageDraw

from _clock import HANG_SECONDS
from tipline.config import Settings
from tipline.services import actions, banks, submissions, web_auth
from tipline.services.auth import Principal, Role
from tipline.services.database import Database, in_transaction
from tipline.services.matching.match import Match
from tipline.services.vault import Vault
from tipline.services.vault.keys import MasterKey
from tipline.signals.base import Signal
from tipline.signals.hashing import HashOptions, hash_bytes

PASSWORD = "correct horse battery staple"
T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def picture(seed: int = 0, size: tuple[int, int] = (480, 360)) -> bytes:
    """A benign, high-contrast generated picture (checkerboard and coloured discs): a
    blur changes it a lot, so blurred and sharp renderings are easy to tell apart."""
    im = Image.new("RGB", size, (250, 250, 250))
    draw = ImageDraw.Draw(im)
    step = 24
    for y in range(0, size[1], step):
        for x in range(0, size[0], step):
            if (x // step + y // step + seed) % 2 == 0:
                draw.rectangle([x, y, x + step - 1, y + step - 1], fill=(20, 20, 20))
    colours = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (240, 200, 30)]
    for k, colour in enumerate(colours):
        cx = 60 + ((k * 110 + seed * 37) % (size[0] - 120))
        cy = 60 + ((k * 70 + seed * 53) % (size[1] - 120))
        draw.ellipse([cx - 45, cy - 45, cx + 45, cy + 45], fill=colour)
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def settings_for(data_dir: Path, database_url: str | None = None, **extra: object) -> Settings:
    """Settings of a test service: vault key, reporter details, plain-HTTP cookies."""
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        vault_master_key=MasterKey.generate().to_base64(),  # type: ignore[arg-type]
        report_reporter_email="reports@example.org",
        report_platform="Example Photos",
        web_cookie_secure=False,
        **extra,  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class Seeded:
    """Ids of what :func:`seed` made."""

    items: list[str]
    pictures: list[bytes]


def seed(
    db: Database, settings: Settings, *, tenant: str | None = "acme", count: int = 2
) -> Seeded:
    """Users ``alice`` and ``bob`` (reviewers of ``tenant``), ``eve`` (reviewer of
    another tenant), a bank ``known`` with ``count`` pictures, and one matched upload of
    each picture sent to review with its media kept in the vault."""
    for name, user_tenant in (("alice", tenant), ("bob", tenant), ("eve", "other")):
        web_auth.add_user(db.sessions, name, PASSWORD, role=Role.REVIEWER, tenant=user_tenant)
    banks.create_bank(db, "known", tenant=tenant)
    in_transaction(
        db.sessions, actions.add_rule, action=actions.ActionKind.ENQUEUE_REVIEW, tenant=tenant
    )
    vault = Vault.from_settings(settings)
    items: list[str] = []
    pics: list[bytes] = []
    for n in range(count):
        item_id, data = add_matched_picture(db, vault, "known", n, tenant=tenant)
        items.append(item_id)
        pics.append(data)
    return Seeded(items, pics)


def add_matched_picture(
    db: Database, vault: Vault, bank: str, n: int, *, tenant: str | None = "acme"
) -> tuple[str, bytes]:
    """Picture ``n`` (labelled A2 when ``n`` is odd) added to ``bank`` and one matched
    upload of it sent to review with its media kept: (review item id, picture)."""
    who = Principal("uploader-key", Role.MATCHER, tenant)
    data = picture(n)
    hashed = hash_bytes(data, f"p{n}.png", HashOptions(signals=("pdq", "md5")))
    assert hashed.ok, hashed.error
    pdq = next(s for s in hashed.signals if s.type == "pdq")
    entry = banks.add_entry(db, bank, [f"pdq:{pdq.value}"], labels=["A2"] if n % 2 else [])
    found = [
        Match(
            bank=bank,
            entry_id=entry.entry_id,
            signal_type="pdq",
            distance=0,
            labels=entry.labels,
            query_value=pdq.value,
        )
    ]
    recorded = submissions.match_and_record(
        db.sessions,
        who,
        hashed.signals,
        lambda _s: found,
        submission=submissions.SubmissionFacts(
            content_id=f"upload-{n}",
            uploader_account=f"account-{n}",
            upload_ip="198.51.100.23",
            upload_port=53211,
            uploaded_at=T0,
            file_name=f"holiday-{n}.png",
        ),
        media=data,
        vault=vault,
    )
    assert recorded.submission_id is not None
    queue = in_transaction(db.sessions, actions.review_queue, actor=Principal("admin", Role.ADMIN))
    (item_id,) = [str(i["id"]) for i in queue if i["event_id"] == recorded.submission_id]
    return item_id, data


def video(tmp: Path, seconds: int = 3) -> bytes:
    """A benign generated video (ffmpeg's colour test pattern), MPEG-4 in MP4."""
    out = tmp / "pattern.mp4"
    subprocess.run(
        [
            *("ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "lavfi"),
            *("-i", f"testsrc=duration={seconds}:size=320x240:rate=10", "-c:v", "mpeg4"),
            str(out),
        ],
        check=True,
        timeout=HANG_SECONDS,
    )
    return out.read_bytes()


def seed_video(
    db: Database, settings: Settings, data: bytes, *, tenant: str | None = "acme"
) -> str:
    """A matched upload of the video ``data`` (its file digest in bank ``known``), sent
    to review with the media kept; returns the review item id."""
    digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
    entry = banks.add_entry(db, "known", [f"video_md5:{digest}"])
    found = [Match(bank="known", entry_id=entry.entry_id, signal_type="video_md5", distance=0)]
    recorded = submissions.match_and_record(
        db.sessions,
        Principal("uploader-key", Role.MATCHER, tenant),
        [Signal("video_md5", digest)],
        lambda _s: found,
        submission=submissions.SubmissionFacts(content_id="video-1", file_name="clip.mp4"),
        media=data,
        vault=Vault.from_settings(settings),
    )
    queue = in_transaction(db.sessions, actions.review_queue, actor=Principal("admin", Role.ADMIN))
    return next(str(i["id"]) for i in queue if i["event_id"] == recorded.submission_id)
