"""Wire models shared by the native API routes, and the documented error responses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from tipline.signals.base import Signal
from tipline.signals.hashing import HashResult


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
