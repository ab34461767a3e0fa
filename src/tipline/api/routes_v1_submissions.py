"""Submissions, match history, decisions and the review queue (``/v1/submissions`` ...)."""

from __future__ import annotations

from datetime import datetime
from ipaddress import ip_address
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tipline.api.audit_log import record
from tipline.api.context import ServiceContext, get_ctx
from tipline.api.deps import require
from tipline.api.schemas import problems
from tipline.errors import InputError
from tipline.services import actions, input_limits
from tipline.services.auth import Permission, Principal
from tipline.services.reports.facts import account_from_json
from tipline.signals.base import get_signal_type
from tipline.store import submissions as store
from tipline.store.db import transaction

router = APIRouter(prefix="/v1", tags=["submissions"])
_ID = Path(..., min_length=1, max_length=26)


class SignalIn(BaseModel):
    """A signal given by value: type name and hash/digest text."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(..., min_length=1, max_length=40)
    value: str = Field(..., min_length=1, max_length=100_000)


class SubmissionMeta(BaseModel):
    """What the platform knows about the content (needed later for reports)."""

    model_config = ConfigDict(extra="forbid")

    content_id: str = Field(..., min_length=1, max_length=256, description="platform's id")
    uploader_account: str | None = Field(None, max_length=256)
    upload_ip: str | None = Field(None, max_length=64, description="IPv4 or IPv6 address")
    uploaded_at: datetime | None = Field(None, description="aware ISO 8601 time")
    upload_port: int | None = Field(
        None, ge=0, le=65535, description="source port of the upload (needed behind CGNAT)"
    )
    file_name: str | None = Field(None, max_length=1024, description="name as uploaded")
    uploader_screen_name: str | None = Field(None, max_length=256)
    uploader_profile_url: str | None = Field(None, max_length=2048)
    account: dict[str, Any] | None = Field(
        None,
        description="uploader account facts for reports: ip_events [{ip, event (Login, "
        "Registration, Purchase, Upload, Other, Unknown), at, port, possible_proxy}], "
        "devices [{id_type, value, event, at}], emails, display_names, "
        "temporarily_disabled_at, reenabled_at, permanently_disabled_at, location "
        "{city, region, country (ISO 3166 alpha-2), verified, at}",
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description=f"free JSON object, at most {input_limits.MAX_METADATA_DEPTH} levels deep "
        f"and {input_limits.MAX_METADATA_BYTES} bytes",
    )

    @field_validator("account", mode="before")
    @classmethod
    def _account(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError("account must be an object")
        input_limits.check_metadata(value)
        try:
            account_from_json(value)
        except InputError as exc:
            raise ValueError(exc.message) from None
        return value

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, value: Any) -> Any:
        # before pydantic walks it: depth and size are checked without recursion
        return input_limits.check_metadata(value) if isinstance(value, dict) else value

    @field_validator("upload_ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return str(ip_address(value.strip()))

    @field_validator("uploaded_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("uploaded_at needs a time zone (e.g. 2026-01-01T12:00:00Z)")
        return value


class SubmissionIn(SubmissionMeta):
    """A submission recorded by its signals (no media bytes)."""

    signals: list[SignalIn] = Field(default_factory=list, max_length=64)


class SubmissionOut(BaseModel):
    """A stored submission."""

    id: str
    tenant: str | None
    content_id: str
    uploader_account: str | None
    upload_ip: str | None
    uploaded_at: datetime | None
    upload_port: int | None = None
    file_name: str | None = None
    uploader_screen_name: str | None = None
    uploader_profile_url: str | None = None
    account: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any]
    signals: list[dict[str, Any]]
    created_at: datetime
    created_by: str

    @classmethod
    def of(cls, row: store.SubmissionRow) -> SubmissionOut:
        """Wire form of a row."""
        return cls(
            id=row.id,
            tenant=row.tenant,
            content_id=row.content_id,
            uploader_account=row.uploader_account,
            upload_ip=row.upload_ip,
            uploaded_at=row.uploaded_at,
            upload_port=row.upload_port,
            file_name=row.file_name,
            uploader_screen_name=row.uploader_screen_name,
            uploader_profile_url=row.uploader_profile_url,
            account=row.account or {},
            metadata=row.meta,
            signals=row.signals,
            created_at=row.created_at,
            created_by=row.created_by,
        )


class MatchRecordOut(BaseModel):
    """One match in the history; ``distance`` is an integer (bits for PDQ)."""

    id: int
    submission_id: str | None
    at: datetime
    bank: str
    entry_id: str
    signal_type: str
    distance: int
    query_value: str | None
    labels: list[str]


class ReviewFactsIn(BaseModel):
    """What the reviewer viewed and concluded. A report says a file was viewed only
    when ``viewed`` is true here (absent: NOT viewed)."""

    model_config = ConfigDict(extra="forbid")

    viewed: bool = Field(False, description="the reviewer viewed the file itself")
    exif_viewed: bool = Field(False, description="the reviewer viewed its EXIF data")
    classification: Literal["A1", "A2", "B1", "B2"] | None = None
    file_annotations: list[
        Literal[
            "animeDrawingVirtualHentai",
            "potentialMeme",
            "viral",
            "possibleSelfProduction",
            "physicalHarm",
            "violenceGore",
            "bestiality",
            "liveStreaming",
            "infant",
            "generativeAi",
        ]
    ] = Field(default_factory=list, max_length=10)
    report_annotations: list[
        Literal[
            "sextortion",
            "csamSolicitation",
            "minorToMinorInteraction",
            "spam",
            "sadisticOnlineExploitation",
        ]
    ] = Field(default_factory=list, max_length=5)
    escalation_reason: str | None = Field(
        None, max_length=2000, description="set only to escalate (immediate risk to a child)"
    )
    potential_meme: bool = False


class DecisionIn(BaseModel):
    """A reviewer's decision on a submission."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["confirmed", "false_positive", "escalated", "dismissed"]
    reason: str = Field("", max_length=10_000)
    facts: ReviewFactsIn | None = Field(
        None, description="what the reviewer viewed and concluded (reports use it)"
    )


class DecisionOut(BaseModel):
    """A recorded decision."""

    id: str
    submission_id: str
    decision: str
    reason: str
    facts: dict[str, Any] = Field(default_factory=dict)
    decided_by: str
    decided_at: datetime


class ReviewDecisionIn(BaseModel):
    """Confirm or reject a review-queue item (with what the reviewer viewed)."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["confirmed", "rejected"]
    facts: ReviewFactsIn | None = None


def canonical_signals(signals: list[SignalIn]) -> list[dict[str, Any]]:
    """Validated ``{"type", "value"}`` dicts (HashFormatError on a bad one)."""
    out: list[dict[str, Any]] = []
    for sig in signals:
        kind = get_signal_type(sig.type.strip().lower())
        out.append({"type": kind.name, "value": kind.parse(sig.value)})
    return out


def _match_out(row: store.MatchRecordRow) -> MatchRecordOut:
    return MatchRecordOut(
        id=row.id,
        submission_id=row.submission_id,
        at=row.at,
        bank=row.bank,
        entry_id=row.entry_id,
        signal_type=row.signal_type,
        distance=row.distance,
        query_value=row.query_value,
        labels=list(row.labels),
    )


def _decision_out(row: store.DecisionRow) -> DecisionOut:
    return DecisionOut(
        id=row.id,
        submission_id=row.submission_id,
        decision=row.decision,
        reason=row.reason,
        facts=row.facts or {},
        decided_by=row.decided_by,
        decided_at=row.decided_at,
    )


@router.post("/submissions", response_model=SubmissionOut, status_code=201, responses=problems(400))
def create_submission(
    body: SubmissionIn,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.SUBMIT)),
) -> SubmissionOut:
    """Record a submission by its signals (to match media, use ``POST /v1/match``)."""
    signals = canonical_signals(body.signals)
    with transaction(ctx.sessions) as session:
        row = store.create_submission(
            session,
            tenant=who.tenant,
            content_id=body.content_id,
            created_by=who.key_id,
            uploader_account=body.uploader_account,
            upload_ip=body.upload_ip,
            uploaded_at=body.uploaded_at,
            upload_port=body.upload_port,
            file_name=body.file_name,
            uploader_screen_name=body.uploader_screen_name,
            uploader_profile_url=body.uploader_profile_url,
            account=body.account,
            metadata=body.metadata,
            signals=signals,
        )
        record(session, who, "submission.create", target=("submission", row.id))
        return SubmissionOut.of(row)


@router.get("/submissions", response_model=list[SubmissionOut], responses=problems())
def list_submissions(
    content_id: str | None = Query(None, max_length=256),
    uploader_account: str | None = Query(None, max_length=256),
    before: str | None = Query(None, max_length=26, description="id cursor (exclusive)"),
    limit: int = Query(100, ge=1, le=1000),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.REVIEW)),
) -> list[SubmissionOut]:
    """The tenant's submissions, newest first."""
    with ctx.sessions() as session:
        rows = store.list_submissions(
            session,
            who.tenant,
            content_id=content_id,
            uploader_account=uploader_account,
            limit=limit,
            before=before,
        )
        return [SubmissionOut.of(r) for r in rows]


@router.get("/submissions/{submission_id}", response_model=SubmissionOut, responses=problems(404))
def get_submission(
    submission_id: str = _ID,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.REVIEW)),
) -> SubmissionOut:
    """One submission of the tenant."""
    with ctx.sessions() as session:
        return SubmissionOut.of(store.get_submission(session, who.tenant, submission_id))


@router.get("/matches", response_model=list[MatchRecordOut], responses=problems())
def list_matches(
    submission_id: str | None = Query(None, max_length=26),
    bank: str | None = Query(None, max_length=200),
    before: int | None = Query(None, ge=0, le=2**62, description="id cursor (exclusive)"),
    limit: int = Query(100, ge=1, le=1000),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.REVIEW)),
) -> list[MatchRecordOut]:
    """The tenant's match history, newest first."""
    with ctx.sessions() as session:
        rows = store.list_matches(
            session, who.tenant, submission_id=submission_id, bank=bank, limit=limit, before=before
        )
        return [_match_out(r) for r in rows]


@router.post(
    "/submissions/{submission_id}/decisions",
    response_model=DecisionOut,
    status_code=201,
    responses=problems(404),
)
def add_decision(
    body: DecisionIn,
    submission_id: str = _ID,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.REVIEW)),
) -> DecisionOut:
    """Record a decision on a submission (audited)."""
    with transaction(ctx.sessions) as session:
        row = store.add_decision(
            session,
            who.tenant,
            submission_id,
            store.DecisionKind(body.decision),
            decided_by=who.key_id,
            reason=body.reason,
            facts=body.facts.model_dump() if body.facts else None,
        )
        record(
            session,
            who,
            "submission.decide",
            target=("submission", submission_id),
            details={"decision": body.decision},
        )
        return _decision_out(row)


@router.get(
    "/submissions/{submission_id}/decisions",
    response_model=list[DecisionOut],
    responses=problems(404),
)
def list_decisions(
    submission_id: str = _ID,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.REVIEW)),
) -> list[DecisionOut]:
    """Decisions on one submission, newest first."""
    with ctx.sessions() as session:
        store.get_submission(session, who.tenant, submission_id)
        return [_decision_out(r) for r in store.list_decisions(session, who.tenant, submission_id)]


@router.get("/review", responses=problems())
def review_queue(
    status: Literal["pending", "confirmed", "rejected"] = Query("pending"),
    limit: int = Query(100, ge=1, le=1000),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.REVIEW)),
) -> list[dict[str, Any]]:
    """Review-queue items of the tenant, oldest first."""
    with ctx.sessions() as session:
        return actions.review_queue(
            session, actor=who, status=actions.ReviewStatus(status), limit=limit
        )


@router.post("/review/{item_id}/decision", status_code=204, responses=problems(404, 409))
def decide_review(
    body: ReviewDecisionIn,
    item_id: str = Path(..., min_length=1, max_length=64),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.REVIEW)),
) -> None:
    """Confirm or reject a pending review item (audited)."""
    with transaction(ctx.sessions) as session:
        actions.decide(
            session,
            item_id,
            actions.ReviewStatus(body.decision),
            actor=who,
            facts=body.facts.model_dump() if body.facts else None,
        )
