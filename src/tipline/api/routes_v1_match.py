"""Native matching: upload bytes, fetch a URL, or give hashes; integer distances.

``POST /v1/match`` with a ``content_id`` query parameter also records a submission
(uploader account, upload IP and time), the match history, and runs the bank's action
rules (review queue, webhooks).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from tipline.api import lookup
from tipline.api.audit_log import media_access, record_media_access
from tipline.api.context import ServiceContext, get_ctx
from tipline.api.deps import require
from tipline.api.media import (
    RAW_MEDIA_BODY,
    fetch_media,
    hash_options,
    hash_or_raise,
    hash_upload,
    read_media,
)
from tipline.api.schemas import SignalIn, SignalOut, SubmissionMeta, canonical_signals, problems
from tipline.errors import InputError
from tipline.services import submissions
from tipline.services.auth import Permission, Principal
from tipline.services.matching.match import Match
from tipline.services.reports.auto import AutoReportPolicy
from tipline.services.submissions import SubmissionFacts
from tipline.signals.base import Signal

router = APIRouter(prefix="/v1", tags=["matching"])
_match = require(Permission.MATCH)


class MatchOut(BaseModel):
    """One match. ``distance`` is an integer in the signal type's unit (bits for PDQ,
    0 for digests; 100 minus the match percentage for vPDQ)."""

    bank: str
    entry_id: str
    signal_type: str
    distance: int
    labels: list[str]
    query_value: str | None = None
    matched_value: str | None = None
    suppressed_by: str | None = Field(None, description="allow-bank entry 'bank/entry_id'")
    suppressed_reason: str | None = None
    query_match_percent: float | None = None
    compared_match_percent: float | None = None
    variant: str | None = Field(
        None,
        description="the query's variant that matched (trim, trim-even, uncaption, "
        "trim+uncaption...: normalised; flipx...: dihedral); null: as given",
    )
    tier: str | None = Field(
        None,
        description="robust tier that matched: 'region' (a stored crop or small rotation "
        "of the entry's original, named in 'region'); null: exact PDQ",
    )
    region: str | None = Field(
        None, description="with tier 'region': the region (e.g. crop:l2t0r4b0, rotate:3)"
    )

    @classmethod
    def of(cls, m: Match) -> MatchOut:
        """Wire form of a :class:`Match`."""
        return cls(
            bank=m.bank,
            entry_id=m.entry_id,
            signal_type=m.signal_type,
            distance=m.distance,
            labels=list(m.labels),
            query_value=m.query_value,
            matched_value=m.matched_value,
            suppressed_by=m.suppressed_by,
            suppressed_reason=m.suppressed_reason,
            query_match_percent=m.query_match_percent,
            compared_match_percent=m.compared_match_percent,
            variant=m.variant,
            tier=m.tier,
            region=m.region,
        )


class MatchResult(BaseModel):
    """Matches of one item; ``matched`` is true when any match is not suppressed."""

    matched: bool
    matches: list[MatchOut]
    signals: list[SignalOut]
    submission_id: str | None = None


class SignalsMatchIn(BaseModel):
    """Hashes of one item, optionally with submission facts."""

    model_config = ConfigDict(extra="forbid")

    signals: list[SignalIn] = Field(..., min_length=1, max_length=64)
    submission: SubmissionMeta | None = None


def _result(matches: list[Match], signals: list[Signal], submission_id: str | None) -> MatchResult:
    return MatchResult(
        matched=any(m.suppressed_by is None for m in matches),
        matches=[MatchOut.of(m) for m in matches],
        signals=[SignalOut.of(s) for s in signals],
        submission_id=submission_id,
    )


class UploadFacts:
    """Query parameters that reports need beyond the basic submission facts."""

    def __init__(
        self,
        upload_port: int | None = Query(
            None, ge=0, le=65535, description="source port of the upload (CGNAT)"
        ),
        file_name: str | None = Query(None, max_length=1024, description="name as uploaded"),
        uploader_screen_name: str | None = Query(None, max_length=256),
        uploader_profile_url: str | None = Query(None, max_length=2048),
    ) -> None:
        given = {
            "upload_port": upload_port,
            "file_name": file_name,
            "uploader_screen_name": uploader_screen_name,
            "uploader_profile_url": uploader_profile_url,
        }
        self.values: dict[str, Any] = {k: v for k, v in given.items() if v is not None}


def _submission(
    content_id: str | None,
    uploader_account: str | None,
    upload_ip: str | None,
    uploaded_at: datetime | None,
    extra: UploadFacts | None = None,
) -> SubmissionFacts | None:
    more = extra.values if extra is not None else {}
    if content_id is None:
        if uploader_account or upload_ip or uploaded_at or more:
            raise InputError("submission facts need a content_id")
        return None
    try:
        meta = SubmissionMeta(
            content_id=content_id,
            uploader_account=uploader_account,
            upload_ip=upload_ip,
            uploaded_at=uploaded_at,
            **more,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InputError(f"{where}: {first.get('msg', 'invalid value')}") from None
    return meta.facts()


def _match_and_record_sync(
    ctx: ServiceContext,
    who: Principal,
    signals: list[Signal],
    submission: SubmissionFacts | None,
    media: bytes | None = None,
) -> MatchResult:
    # One transaction (one pooled connection) reads the hits and records the outcome;
    # the media is kept in the evidence vault when a rule sends it to review.
    recorded = submissions.match_and_record(
        ctx.sessions,
        who,
        signals,
        lambda session: lookup.match_signals(ctx, who, signals, session=session),
        submission=submission,
        media=media,
        vault=ctx.vault() if media is not None else None,
        auto_report=AutoReportPolicy.from_settings(ctx.settings),
    )
    return _result(recorded.matches, signals, recorded.submission_id)


async def _match_and_record(
    ctx: ServiceContext,
    who: Principal,
    signals: list[Signal],
    submission: SubmissionFacts | None,
    media: bytes | None = None,
) -> MatchResult:
    return await run_in_threadpool(_match_and_record_sync, ctx, who, signals, submission, media)


def _hash_match_and_record(
    ctx: ServiceContext,
    who: Principal,
    data: bytes,
    name: str,
    submission: SubmissionFacts | None,
    normalize: bool,
) -> MatchResult:
    """Hash, match and record on one worker thread (one hop off the event loop)."""
    result = hash_or_raise(ctx, data, name, hash_options(None, normalize=normalize))
    return _match_and_record_sync(ctx, who, list(result.signals), submission, data)


_CONTENT_ID = Query(None, min_length=1, max_length=256, description="platform's content id")
_UPLOADER = Query(None, max_length=256, description="uploader account")
_UPLOAD_IP = Query(None, max_length=64, description="upload IP address")
_UPLOADED_AT = Query(None, description="upload time, ISO 8601 with zone")
_NORMALIZE = Query(
    True,
    description="also match photos without their borders, letterbox, caption bars and "
    "screenshot frames (each match names the variant; false: the picture as given only)",
)


@router.post(
    "/match", response_model=MatchResult, openapi_extra=RAW_MEDIA_BODY, responses=problems(400, 415)
)
async def match_upload(
    request: Request,
    content_id: str | None = _CONTENT_ID,
    uploader_account: str | None = _UPLOADER,
    upload_ip: str | None = _UPLOAD_IP,
    uploaded_at: datetime | None = _UPLOADED_AT,
    normalize: bool = _NORMALIZE,
    extra: UploadFacts = Depends(),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_match),
) -> MatchResult:
    """Hash the uploaded media and match it against the banks."""
    submission = _submission(content_id, uploader_account, upload_ip, uploaded_at, extra)
    data = await read_media(request)
    # The access record is group-committed while the media is hashed and matched; the
    # answer waits for its commit.
    access = media_access(ctx, who, "match.upload", {"bytes": len(data), "content_id": content_id})
    try:
        out = await run_in_threadpool(
            _hash_match_and_record,
            ctx,
            who,
            data,
            content_id or "upload",
            submission,
            normalize,
        )
    finally:
        await access
    return out


@router.get("/match", response_model=MatchResult, responses=problems(400, 415))
async def match_url(
    url: str = Query(..., max_length=4096, description="http(s) URL of the media"),
    content_id: str | None = _CONTENT_ID,
    uploader_account: str | None = _UPLOADER,
    upload_ip: str | None = _UPLOAD_IP,
    uploaded_at: datetime | None = _UPLOADED_AT,
    normalize: bool = _NORMALIZE,
    extra: UploadFacts = Depends(),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_match),
) -> MatchResult:
    """Fetch ``url`` (SSRF-guarded), hash and match it."""
    submission = _submission(content_id, uploader_account, upload_ip, uploaded_at, extra)
    await record_media_access(ctx, who, "match.url", {"url": url, "content_id": content_id})
    fetched = await fetch_media(ctx, url)
    result = await hash_upload(ctx, fetched.data, url, hash_options(None, normalize=normalize))
    return await _match_and_record(ctx, who, list(result.signals), submission, fetched.data)


@router.post("/match/signals", response_model=MatchResult, responses=problems(400))
async def match_signals(
    body: SignalsMatchIn,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_match),
) -> MatchResult:
    """Match hashes of one item (e.g. computed on the platform's side)."""
    signals = [Signal(type=s["type"], value=s["value"]) for s in canonical_signals(body.signals)]
    submission = body.submission.facts() if body.submission else None
    return await _match_and_record(ctx, who, signals, submission)


@router.get("/lookup", response_model=list[MatchOut], responses=problems(400))
def lookup_hash(
    signal_type: str = Query(..., min_length=1, max_length=40, examples=["pdq"]),
    signal: str = Query(..., min_length=1, max_length=4096, description="hash value"),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_match),
) -> list[MatchOut]:
    """Look one hash up (no submission, no actions): the fast path."""
    return [MatchOut.of(m) for m in lookup.match_hash(ctx, who, signal_type, signal)]
