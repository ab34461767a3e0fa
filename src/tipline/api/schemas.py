"""Wire models shared by the native API routes, and the documented error responses."""

from __future__ import annotations

from datetime import datetime
from ipaddress import ip_address
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tipline.errors import InputError
from tipline.services import input_limits
from tipline.services.reports.facts import account_from_json
from tipline.services.submissions import SubmissionFacts
from tipline.signals.base import Signal, get_signal_type
from tipline.signals.hashing import HashResult


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

    def facts(self) -> SubmissionFacts:
        """The facts as the submissions service takes them."""
        return SubmissionFacts(
            content_id=self.content_id,
            uploader_account=self.uploader_account,
            upload_ip=self.upload_ip,
            uploaded_at=self.uploaded_at,
            upload_port=self.upload_port,
            file_name=self.file_name,
            uploader_screen_name=self.uploader_screen_name,
            uploader_profile_url=self.uploader_profile_url,
            account=self.account,
            metadata=self.metadata,
        )


def canonical_signals(signals: list[SignalIn]) -> list[dict[str, Any]]:
    """Validated ``{"type", "value"}`` dicts (HashFormatError on a bad one)."""
    out: list[dict[str, Any]] = []
    for sig in signals:
        kind = get_signal_type(sig.type.strip().lower())
        out.append({"type": kind.name, "value": kind.parse(sig.value)})
    return out


class Problem(BaseModel):
    """RFC 9457 problem document (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str
    message: str = Field(description="Same as detail; what HMA clients read")
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": Problem.model_json_schema()}},
    }


#: OpenAPI ``responses`` entries for the problem documents an endpoint can return.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _problem("Bad input"),
    401: _problem("Missing or invalid API key"),
    403: _problem("The key lacks the role or tenant"),
    404: _problem("No such object"),
    409: _problem("Conflicts with an existing object"),
    413: _problem("Body or media too large"),
    415: _problem("Unsupported media"),
    422: _problem("Invalid request or undecodable media"),
    503: _problem("Not ready"),
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` mapping for ``statuses`` (always with 400/401/403/413/422:
    an undecodable body is a 400 on every endpoint)."""
    wanted = {400, 401, 403, 413, 422, *statuses}
    return {s: PROBLEM_RESPONSES[s] for s in sorted(wanted)}


class SignalOut(BaseModel):
    """One signal of hashed media. ``quality`` 0-100 for PDQ, null for digests."""

    type: str
    value: str
    quality: int | None = None
    low_quality: bool = False
    variant: str | None = None

    @classmethod
    def of(cls, signal: Signal) -> SignalOut:
        """Wire form of a :class:`Signal` (video frames are not included)."""
        return cls(
            type=signal.type,
            value=signal.value,
            quality=signal.quality,
            low_quality=signal.low_quality,
            variant=signal.variant,
        )


class HashOut(BaseModel):
    """Signals of one uploaded or fetched item."""

    media: str = Field(description="photo or video")
    size: int = Field(description="bytes hashed")
    signals: list[SignalOut]

    @classmethod
    def of(cls, result: HashResult) -> HashOut:
        """Wire form of a successful :class:`HashResult`."""
        return cls(
            media=result.media or "photo",
            size=result.size or 0,
            signals=[SignalOut.of(s) for s in result.signals],
        )
