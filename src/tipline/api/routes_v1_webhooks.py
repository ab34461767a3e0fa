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
from tipline.services.database import in_transaction

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
    return in_transaction(ctx.sessions, webhooks.list_webhooks, actor=who)


@router.post("/webhooks", response_model=WebhookCreated, status_code=201, responses=problems(400))
def create_webhook(
    body: WebhookIn, ctx: ServiceContext = Depends(get_ctx), who: Principal = Depends(_admin)
) -> dict[str, Any]:
    """Add a receiver; the response holds its signing secret, shown only once."""
    hook, secret = in_transaction(
        ctx.sessions,
        webhooks.create_webhook,
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
    return webhooks.describe(
        in_transaction(ctx.sessions, webhooks.get_webhook, webhook_id, actor=who)
    )


@router.patch("/webhooks/{webhook_id}", response_model=WebhookOut, responses=problems(404))
def patch_webhook(
    body: WebhookPatch,
    webhook_id: str = Path(..., min_length=1, max_length=64),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_admin),
) -> dict[str, Any]:
    """Enable or disable a receiver."""
    hook = in_transaction(ctx.sessions, webhooks.set_enabled, webhook_id, body.enabled, actor=who)
    return webhooks.describe(hook)


@router.delete("/webhooks/{webhook_id}", status_code=204, responses=problems(404))
def delete_webhook(
    webhook_id: str = Path(..., min_length=1, max_length=64),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_admin),
) -> Response:
    """Remove a receiver (pending deliveries to it are dropped)."""
    in_transaction(ctx.sessions, webhooks.delete_webhook, webhook_id, actor=who)
    return Response(status_code=204)


@router.get("/rules", response_model=list[RuleOut], responses=problems())
def list_rules(
    ctx: ServiceContext = Depends(get_ctx), who: Principal = Depends(_admin)
) -> list[dict[str, Any]]:
    """Action rules visible to the key's tenant."""
    return in_transaction(ctx.sessions, actions.list_rules, actor=who)


@router.post("/rules", response_model=RuleOut, status_code=201, responses=problems(400, 404, 409))
def create_rule(
    body: RuleIn, ctx: ServiceContext = Depends(get_ctx), who: Principal = Depends(_admin)
) -> RuleOut:
    """Add an action rule."""
    rule = in_transaction(
        ctx.sessions,
        actions.add_rule,
        action=body.action,
        bank=body.bank,
        webhook_id=body.webhook_id,
        actor=who,
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
    in_transaction(ctx.sessions, actions.delete_rule, rule_id, actor=who)
    return Response(status_code=204)
