"""Unauthenticated operational endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel

from tipline import __version__
from tipline.api.context import ServiceContext, get_ctx
from tipline.api.problems import problem
from tipline.api.schemas import PROBLEM_RESPONSES

router = APIRouter(tags=["system"])


class Health(BaseModel):
    """Liveness: the process answers."""

    status: Literal["ok"]
    version: str


class Ready(BaseModel):
    """Readiness: the process can serve (database reachable)."""

    status: Literal["ready"]
    database: Literal["ok"]


@router.get("/v1/health", response_model=Health)
async def health() -> Health:
    """Liveness probe; never touches the database."""
    return Health(status="ok", version=__version__)


@router.get(
    "/v1/ready",
    response_model=Ready,
    responses={503: PROBLEM_RESPONSES[503]},
)
def ready(ctx: ServiceContext = Depends(get_ctx)) -> Ready | Response:
    """Readiness probe: 200 when the database answers, 503 problem document otherwise."""
    if not ctx.database_ready():
        return problem(503, "database unreachable", code="not-ready")
    return Ready(status="ready", database="ok")


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(ctx: ServiceContext = Depends(get_ctx)) -> Response:
    """Prometheus exposition format."""
    body, content_type = ctx.metrics.render()
    return Response(content=body, media_type=content_type)
