"""Submissions, match history, decisions and the review queue (``/v1/submissions`` ...)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from tipline.api.context import ServiceContext, get_ctx
from tipline.api.deps import require
from tipline.api.schemas import SignalIn, SubmissionMeta, canonical_signals, problems
from tipline.services import actions, submissions
from tipline.services.auth import Permission, Principal
from tipline.services.database import in_transaction
from tipline.services.review import decisions, flag

router = APIRouter(prefix="/v1", tags=["submissions"])
_ID = Path(..., min_length=1, max_length=26)


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

    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def of(cls, item: submissions.Submission) -> SubmissionOut:
        """Wire form of a stored submission (its fields by name)."""
        return cls.model_validate(item)


class MatchRecordOut(BaseModel):
    """One match in the history; ``distance`` is an integer (bits for PDQ)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    submission_id: str | None
    at: datetime
    bank: str
    entry_id: str
    signal_type: str
    distance: int
    query_value: str | None
    labels: list[str]
    variant: str | None = Field(
        None, description="the query's variant that matched (e.g. trim); null: as given"
    )


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

    model_config = ConfigDict(from_attributes=True)

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


class FlagIn(BaseModel):
    """Why a submission that matched no bank should be reviewed."""

    model_config = ConfigDict(extra="forbid")

    note: str = Field(..., min_length=1, max_length=2000, description="e.g. a user's report")


class FlagOut(BaseModel):
    """The review item made for a flagged submission."""

    item_id: str


def _match_out(row: submissions.MatchRecord) -> MatchRecordOut:
    return MatchRecordOut.model_validate(row)


def _decision_out(row: submissions.Decision) -> DecisionOut:
    return DecisionOut.model_validate(row)


@router.post("/submissions", response_model=SubmissionOut, status_code=201, responses=problems(400))
def create_submission(
    body: SubmissionIn,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.SUBMIT)),
) -> SubmissionOut:
    """Record a submission by its signals (to match media, use ``POST /v1/match``)."""
    signals = canonical_signals(body.signals)
    return SubmissionOut.of(submissions.create_submission(ctx.sessions, who, body.facts(), signals))


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
    found = submissions.list_submissions(
        ctx.sessions,
        who,
        content_id=content_id,
        uploader_account=uploader_account,
        limit=limit,
        before=before,
    )
    return [SubmissionOut.of(s) for s in found]


@router.get("/submissions/{submission_id}", response_model=SubmissionOut, responses=problems(404))
def get_submission(
    submission_id: str = _ID,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.REVIEW)),
) -> SubmissionOut:
    """One submission of the tenant."""
    return SubmissionOut.of(submissions.get_submission(ctx.sessions, who, submission_id))


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
    found = submissions.list_matches(
        ctx.sessions, who, submission_id=submission_id, bank=bank, limit=limit, before=before
    )
    return [_match_out(r) for r in found]


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
    decision = submissions.add_decision(
        ctx.sessions,
        who,
        submission_id,
        submissions.DecisionKind(body.decision),
        reason=body.reason,
        facts=body.facts.model_dump() if body.facts else None,
    )
    return _decision_out(decision)


@router.post(
    "/submissions/{submission_id}/review",
    response_model=FlagOut,
    status_code=201,
    responses=problems(400, 404, 409),
)
def flag_for_review(
    body: FlagIn,
    submission_id: str = _ID,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.SUBMIT)),
) -> FlagOut:
    """Send a recorded submission to the review queue although it matched no bank (a
    user's report, a moderator's suspicion); audited as `review.flag`. 409 when it was
    flagged before. Under `TIPLINE_REVIEW_TWO_PERSON_UNMATCHED` such an item is
    confirmed only by two different reviewers (in the web UI)."""
    return FlagOut(item_id=flag.flag_submission(ctx.sessions, who, submission_id, note=body.note))


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
    return [_decision_out(d) for d in submissions.list_decisions(ctx.sessions, who, submission_id)]


@router.get("/review", responses=problems())
def review_queue(
    status: Literal["pending", "confirmed", "rejected"] = Query("pending"),
    limit: int = Query(100, ge=1, le=1000),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.REVIEW)),
) -> list[dict[str, Any]]:
    """Review-queue items of the tenant, oldest first."""
    return in_transaction(
        ctx.sessions,
        actions.review_queue,
        actor=who,
        status=actions.ReviewStatus(status),
        limit=limit,
    )


@router.post("/review/{item_id}/decision", status_code=204, responses=problems(404, 409))
def decide_review(
    body: ReviewDecisionIn,
    item_id: str = Path(..., min_length=1, max_length=64),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.REVIEW)),
) -> None:
    """Confirm or reject a pending review item (audited). Under the two-person rule an
    item that matched no bank is confirmed in the web UI only (409 here)."""
    decisions.decide_item(
        ctx.sessions,
        who,
        item_id,
        actions.ReviewStatus(body.decision),
        facts=body.facts.model_dump() if body.facts else None,
        two_person_rule=ctx.settings.review_two_person_unmatched,
    )
