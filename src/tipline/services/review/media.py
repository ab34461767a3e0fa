"""What a reviewer sees of an item's media, and what they revealed.

Media is never sent to the browser as stored. Each request renders a variant on the
server from the vault's decrypted bytes, at most :data:`MAX_SIDE` pixels a side:

====== ============================== =====================================
level  rendering                      counts as
====== ============================== =====================================
0      grayscale, heavy Gaussian blur the default; not a view
1      grayscale, light blur          not a view
2      grayscale, sharp               a view (``fileViewedByEsp``), exposure
3      colour, sharp                  a view, exposure
====== ============================== =====================================

A video is never played here: it is shown as a contact sheet of up to
:data:`SHEET_FRAMES` frames spread evenly over its length (ffmpeg, audio dropped), and the
sheet is rendered at the same levels, so it too opens blurred and grey.

A level above 1 is rendered only after the reviewer asked for it (:func:`reveal`,
recorded and audited), so the report's ``fileViewedByEsp`` is what the reviewer
actually revealed, never what a URL could have fetched. A reveal of a new item at
level 2+ counts against the reviewer's daily exposure limit (UTC day).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from PIL import Image, ImageFilter, ImageOps
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from tipline.errors import MediaError, NotFoundError, PermissionDeniedError
from tipline.services import audit
from tipline.services.auth import Principal
from tipline.services.review.queue import visible_item
from tipline.services.vault import Vault
from tipline.services.vault.items import plaintext
from tipline.signals.decode import open_image
from tipline.signals.limits import MediaLimits
from tipline.signals.sniff import SniffedKind, sniff
from tipline.signals.video import probe_video
from tipline.store.base import utcnow
from tipline.store.db import transaction
from tipline.store.jobs import ReviewItem
from tipline.store.vault import EvidenceItemRow
from tipline.store.web import ReviewRevealRow

#: highest reveal level (colour, sharp)
MAX_LEVEL = 3
#: lowest level that shows the file itself (a view; counts as exposure)
VIEW_LEVEL = 2
#: longest side of a rendered variant, pixels
MAX_SIDE = 640
#: Gaussian blur radius per level, as a fraction of the rendered image's longer side
_BLUR = {0: 0.06, 1: 0.02}
#: largest stored media rendered, bytes
MAX_RENDER_BYTES = 64 * 1024**2
#: frames on a video's contact sheet, and its columns
SHEET_FRAMES = 12
SHEET_COLUMNS = 4
#: width of one frame on the sheet, pixels
SHEET_FRAME_WIDTH = 240
#: longest ffmpeg may take to make a sheet, seconds
SHEET_TIMEOUT = 300.0


class ExposureLimitError(PermissionDeniedError):
    """The reviewer reached their daily exposure limit."""

    code = "exposure-limit"


@dataclass(frozen=True, slots=True)
class MediaRef:
    """The stored media of a review item (never its bytes)."""

    evidence_id: str
    media_type: str | None
    filename: str | None
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Exposure:
    """A reviewer's exposure today: items revealed at level 2+ and the limit."""

    today: int
    limit: int

    @property
    def reached(self) -> bool:
        """True when no new item may be revealed today."""
        return self.today >= self.limit


def _day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def exposure_in(session: Session, who: Principal, limit: int, now: datetime) -> Exposure:
    """Distinct items ``who`` revealed at level 2+ since the UTC day began."""
    start = _day_start(now)
    count = session.scalar(
        select(func.count(func.distinct(ReviewRevealRow.item_id))).where(
            ReviewRevealRow.actor == who.key_id,
            ReviewRevealRow.level >= VIEW_LEVEL,
            ReviewRevealRow.at >= start,
            ReviewRevealRow.at < start + timedelta(days=1),
        )
    )
    return Exposure(int(count or 0), limit)


def exposure(
    sessions: sessionmaker[Session], who: Principal, limit: int, *, now: datetime | None = None
) -> Exposure:
    """:func:`exposure_in` in a session of its own."""
    with sessions() as session:
        return exposure_in(session, who, limit, now or utcnow())


def revealed_level(session: Session, who: Principal, item_id: str) -> int:
    """The highest level ``who`` revealed ``item_id`` at (-1: never)."""
    level = session.scalar(
        select(func.max(ReviewRevealRow.level)).where(
            ReviewRevealRow.item_id == item_id, ReviewRevealRow.actor == who.key_id
        )
    )
    return int(level) if level is not None else -1


def media_row(session: Session, item: ReviewItem) -> EvidenceItemRow | None:
    """The live media kept for a review item: linked to it, or to its submission."""
    clauses = [EvidenceItemRow.review_item_id == item.id]
    if len(item.event_id) <= 26:
        clauses.append(EvidenceItemRow.submission_id == item.event_id)
    return session.scalars(
        select(EvidenceItemRow)
        .where(
            or_(*clauses),
            EvidenceItemRow.kind == "media",
            EvidenceItemRow.purged_at.is_(None),
            EvidenceItemRow.tenant.is_(None)
            if item.tenant is None
            else EvidenceItemRow.tenant == item.tenant,
        )
        .order_by(EvidenceItemRow.id)
    ).first()


def media_ref(row: EvidenceItemRow | None) -> MediaRef | None:
    """The facts of a media row."""
    if row is None:
        return None
    return MediaRef(row.id, row.media_type, row.filename, row.size, row.sha256)


def reveal(
    sessions: sessionmaker[Session],
    who: Principal,
    item_id: str,
    level: int,
    *,
    daily_limit: int,
    now: datetime | None = None,
) -> int:
    """Record that ``who`` asked to see ``item_id`` at ``level`` (audited as
    ``review.reveal``); returns the level. :class:`ExposureLimitError` (audited as
    ``review.reveal_refused``) when a new item at level 2+ would pass the limit."""
    if not 0 <= level <= MAX_LEVEL:
        raise MediaError(f"reveal level must be 0 to {MAX_LEVEL}")
    now = now or utcnow()
    refused: Exposure | None = None
    with transaction(sessions) as session:
        item = visible_item(session, who, item_id)
        if level >= VIEW_LEVEL and revealed_level(session, who, item_id) < VIEW_LEVEL:
            seen = exposure_in(session, who, daily_limit, now)
            if seen.reached:
                refused = seen
        if refused is None:
            session.add(
                ReviewRevealRow(
                    item_id=item_id, actor=who.key_id, tenant=item.tenant, level=level, at=now
                )
            )
            session.flush()
        audit.append(
            session,
            actor=who,
            action="review.reveal" if refused is None else "review.reveal_refused",
            target=("review_item", item_id),
            details={"level": level, "exposure_today": refused.today if refused else None},
            tenant=item.tenant,
        )
    if refused is not None:
        raise ExposureLimitError(
            f"daily exposure limit reached ({refused.today} of {refused.limit} items today): "
            "take a break; the item stays blurred"
        )
    return level


@dataclass(frozen=True, slots=True)
class Rendered:
    """A rendered variant: JPEG bytes."""

    data: bytes
    media_type: str
    level: int


def render_image(data: bytes, level: int, *, max_pixels: int, side: int = MAX_SIDE) -> bytes:
    """JPEG of ``data`` at reveal ``level`` (see the module table), at most ``side``
    pixels a side; MediaError when the bytes are not a decodable image."""
    im = open_image(data, max_pixels=max_pixels)
    im.draft("RGB", (side, side))
    try:
        im.load()
        im = ImageOps.exif_transpose(im) or im
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise MediaError(f"cannot decode the image: {exc}") from None
    im = im.convert("RGB")
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    if level < MAX_LEVEL:
        im = im.convert("L")
    radius = _BLUR.get(level)
    if radius is not None:
        im = im.filter(ImageFilter.GaussianBlur(max(im.size) * radius))
    out = io.BytesIO()
    im.save(out, "JPEG", quality=85)
    return out.getvalue()


def contact_sheet(data: bytes, *, limits: MediaLimits) -> bytes:
    """PNG of up to :data:`SHEET_FRAMES` frames of the video ``data``, evenly spread over
    its duration, in rows of :data:`SHEET_COLUMNS` (MediaError when ffmpeg cannot decode
    it). The bytes go through a private temporary file (mode 0600), deleted at once."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise MediaError("ffmpeg is not installed: video contact sheets need it")
    with tempfile.TemporaryDirectory(prefix="tipline-sheet-") as folder:
        path = os.path.join(folder, "media")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        info = probe_video(path, limits=limits)
        duration = info.duration or (info.frames / info.frame_rate if info.frames else 0.0)
        rate = SHEET_FRAMES / max(duration, 0.5)
        rows = -(-SHEET_FRAMES // SHEET_COLUMNS)
        filters = f"fps={rate:.6f},scale={SHEET_FRAME_WIDTH}:-2,tile={SHEET_COLUMNS}x{rows}"
        try:
            command = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", path]
            command += ["-an", "-vf", filters, "-frames:v", "1", "-f", "image2pipe"]
            done = subprocess.run(
                [*command, "-vcodec", "png", "pipe:1"],
                capture_output=True,
                timeout=SHEET_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise MediaError("making the video's contact sheet took too long") from None
    if done.returncode != 0 or not done.stdout:
        last = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no frame"]
        raise MediaError(f"cannot make the video's contact sheet: {last[0][:200]}")
    return done.stdout


def render(
    sessions: sessionmaker[Session],
    vault: Vault,
    who: Principal,
    item_id: str,
    level: int,
    *,
    default_level: int,
    limits: MediaLimits,
) -> Rendered:
    """The item's media at ``level`` (a video as its contact sheet): allowed up to the
    reviewer's default level and up to what they revealed (PermissionDeniedError
    otherwise). Audited as ``vault.read`` (via review, with the level) before anything
    is decrypted."""
    if not 0 <= level <= MAX_LEVEL:
        raise MediaError(f"reveal level must be 0 to {MAX_LEVEL}")
    with transaction(sessions) as session:
        item = visible_item(session, who, item_id)
        allowed = max(min(default_level, VIEW_LEVEL - 1), revealed_level(session, who, item_id))
        if level > allowed:
            raise PermissionDeniedError(f"level {level} was not revealed for this item")
        row = media_row(session, item)
        if row is None:
            raise NotFoundError("no media was kept for this item")
        if row.size > MAX_RENDER_BYTES:
            raise MediaError(f"the media is {row.size} bytes, over {MAX_RENDER_BYTES}")
        audit.append(
            session,
            actor=who,
            action="vault.read",
            target=("evidence", row.id),
            details={"via": "review", "review_item": item_id, "level": level},
            tenant=row.tenant,
        )
    return render_evidence(vault, row, level, limits=limits)


def render_evidence(
    vault: Vault, item: EvidenceItemRow, level: int, *, limits: MediaLimits, side: int = MAX_SIDE
) -> Rendered:
    """A kept picture or video (as its contact sheet) decrypted and rendered at
    ``level``, at most ``side`` pixels a side; the caller has checked and audited."""
    data = b"".join(plaintext(vault, item))
    if sniff(data[:64]).kind is SniffedKind.VIDEO:
        data = contact_sheet(data, limits=limits)
    return Rendered(
        render_image(data, level, max_pixels=limits.max_image_pixels, side=side),
        "image/jpeg",
        level,
    )
