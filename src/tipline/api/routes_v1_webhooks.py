"""Webhook receivers and per-bank action rules (``/v1/webhooks``, ``/v1/rules``)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from tipline.api.context import ServiceContext, get_ctx
from tipline.api.deps import require
from tipline.api.schemas import problems
from tipline.services import actions, webhooks
from tipline.services.auth import Permission, Principal
from tipline.store.db import transaction

router = APIRouter(prefix="/v1", tags=["webhooks"])
_admin = require(Permission.WEBHOOK_ADMIN)


class WebhookIn(BaseModel):
    """A receiver: its URL, optional bank filter and optional signing secret."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(..., min_length=1, max_length=2048, description="http(s) URL")
    banks: list[str] | None = Field(None, max_length=1000, description="null = every bank")
    secret: str | None = Field(None, min_length=16, max_length=200)
    enabled: bool = True


class WebhookOut(BaseModel):
    """A receiver as listed (the secret is never shown again)."""

    id: str
    tenant: str | None
    url: str
    banks: list[str] | None
    enabled: bool
    created_at: str


class WebhookCreated(WebhookOut):
    """A new receiver with its signing secret (shown only now)."""

    secret: str


class WebhookPatch(BaseModel):
    """Change a receiver."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool


class RuleIn(BaseModel):
    """On a match in ``bank`` (null = any bank), run ``action``."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["enqueue_review", "webhook"]
    bank: str | None = Field(None, max_length=200)
    webhook_id: str | None = Field(None, max_length=64)


class RuleOut(BaseModel):
    """An action rule."""

    id: str
    tenant: str | None
    bank: str | None
    action: str
    webhook_id: str | None
    enabled: bool


@router.get("/webhooks", response_model=list[WebhookOut], responses=problems())
def list_webhooks(
    ctx: ServiceContext = Depends(get_ctx), who: Principal = Depends(_admin)
) -> list[dict[str, Any]]:
    """Receivers visible to the key's tenant."""
    with ctx.sessions() as session:
        return webhooks.list_webhooks(session, actor=who)


@router.post("/webhooks", response_model=WebhookCreated, status_code=201, responses=problems(400))
def create_webhook(
    body: WebhookIn, ctx: ServiceContext = Depends(get_ctx), who: Principal = Depends(_admin)
) -> dict[str, Any]:
    """Add a receiver; the response holds its signing secret, shown only once."""
    with transaction(ctx.sessions) as session:
        hook, secret = webhooks.create_webhook(
            session,
            url=body.url,
            banks=body.banks,
            secret=body.secret,
            enabled=body.enabled,
            actor=who,
            settings=ctx.settings,
        )
        return {**webhooks.describe(hook), "secret": secret}


@router.get("/webhooks/{webhook_id}", response_model=WebhookOut, responses=problems(404))
def get_webhook(
    webhook_id: str = Path(..., min_length=1, max_length=64),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_admin),
) -> dict[str, Any]:
    """One receiver."""
    with ctx.sessions() as session:
        return webhooks.describe(webhooks.get_webhook(session, webhook_id, actor=who))


@router.patch("/webhooks/{webhook_id}", response_model=WebhookOut, responses=problems(404))
def patch_webhook(
    body: WebhookPatch,
    webhook_id: str = Path(..., min_length=1, max_length=64),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_admin),
) -> dict[str, Any]:
    """Enable or disable a receiver."""
    with transaction(ctx.sessions) as session:
        hook = webhooks.set_enabled(session, webhook_id, body.enabled, actor=who)
        return webhooks.describe(hook)


@router.delete("/webhooks/{webhook_id}", status_code=204, responses=problems(404))
def delete_webhook(
    webhook_id: str = Path(..., min_length=1, max_length=64),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_admin),
) -> Response:
    """Remove a receiver (pending deliveries to it are dropped)."""
    with transaction(ctx.sessions) as session:
        webhooks.delete_webhook(session, webhook_id, actor=who)
    return Response(status_code=204)


@router.get("/rules", response_model=list[RuleOut], responses=problems())
def list_rules(
    ctx: ServiceContext = Depends(get_ctx), who: Principal = Depends(_admin)
) -> list[dict[str, Any]]:
    """Action rules visible to the key's tenant."""
    with ctx.sessions() as session:
        return actions.list_rules(session, actor=who)


@router.post("/rules", response_model=RuleOut, status_code=201, responses=problems(400, 404, 409))
def create_rule(
    body: RuleIn, ctx: ServiceContext = Depends(get_ctx), who: Principal = Depends(_admin)
) -> RuleOut:
    """Add an action rule."""
    with transaction(ctx.sessions) as session:
        rule = actions.add_rule(
            session, action=body.action, bank=body.bank, webhook_id=body.webhook_id, actor=who
        )
        return RuleOut(
            id=rule.id,
            tenant=rule.tenant,
            bank=rule.bank,
            action=rule.action,
            webhook_id=rule.webhook_id,
            enabled=rule.enabled,
        )


@router.delete("/rules/{rule_id}", status_code=204, responses=problems(404))
def delete_rule(
    rule_id: str = Path(..., min_length=1, max_length=64),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_admin),
) -> Response:
    """Remove an action rule."""
    with transaction(ctx.sessions) as session:
        actions.delete_rule(session, rule_id, actor=who)
    return Response(status_code=204)
