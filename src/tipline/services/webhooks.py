"""Webhooks: configured receivers, signed JSON POSTs delivered as jobs.

Each delivery is a job (kind :data:`WEBHOOK_JOB_KIND`) with the idempotency key
``webhook:<webhook id>:<event id>``, sent as the ``Idempotency-Key`` header so receivers
can drop the duplicates that at-least-once delivery allows. The body is signed:
``X-Tipline-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed by the secret>``;
the body's ``sent_at`` (also in ``X-Tipline-Timestamp``, Unix seconds) is covered by
the signature, so receivers can refuse replays with :func:`verify_signature`.
Secrets are never logged, audited or listed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from ulid import ULID

from tipline import __version__
from tipline._optional import require
from tipline.config import Settings, get_settings
from tipline.errors import FetchError, InputError, NotFoundError, TiplineError
from tipline.services import audit, fetch, jobs
from tipline.services.auth import Permission, Principal, require_tenant, tenant_clause
from tipline.store.base import utcnow
from tipline.store.jobs import Webhook

log = logging.getLogger(__name__)

WEBHOOK_JOB_KIND = "webhook.deliver"
SIGNATURE_HEADER = "X-Tipline-Signature"
TIMESTAMP_HEADER = "X-Tipline-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_MAX_URL = 2_000


class DeliveryError(TiplineError):
    """A webhook receiver did not accept a delivery (non-2xx, timeout, unreachable)."""

    status = 502
    code = "webhook-delivery"


def sign(secret: str, body: bytes) -> str:
    """The signature header value: ``sha256=`` + hex HMAC-SHA256 of ``body``."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str,
    body: bytes,
    signature: str | None,
    *,
    timestamp: str | None = None,
    max_age_seconds: float = 300.0,
    now: float | None = None,
) -> bool:
    """For receivers: True when ``signature`` is ours for ``body`` (constant-time).

    With ``timestamp`` (the ``X-Tipline-Timestamp`` header, Unix seconds) the delivery
    must also be at most ``max_age_seconds`` old (or early) and match the signed body's
    ``sent_at``, which refuses replays of old deliveries.
    """
    if not signature or not signature.startswith("sha256="):
        return False
    if not hmac.compare_digest(sign(secret, body).encode(), signature.encode()):
        return False
    if timestamp is None:
        return True
    try:
        sent = int(timestamp)
        signed_sent = json.loads(body).get("sent_at")
    except (ValueError, AttributeError):
        return False
    current = time.time() if now is None else now
    return signed_sent == sent and abs(current - sent) <= max_age_seconds


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > _MAX_URL:
        raise InputError("webhook URL must be an absolute http(s) URL of at most 2000 characters")
    if parts.username is not None or parts.password is not None:
        raise InputError("webhook URLs with credentials are refused")
    try:
        _ = parts.port
    except ValueError:
        raise InputError("webhook URL has a malformed port") from None


def check_target(
    url: str, *, settings: Settings | None = None, resolver: fetch.Resolver | None = None
) -> fetch.IPAddress:
    """The address to send to: the SSRF guard of :mod:`tipline.services.fetch` applied to
    a receiver's URL. Every address the host resolves to must be public or in the
    ``fetch_allow_private`` allow-list (metadata endpoints never); FetchError otherwise.

    Called when a receiver is configured and again before every delivery (DNS answers
    change); the delivery then connects to the checked address.
    """
    settings = settings or get_settings()
    resolver = resolver or fetch.system_resolver
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        literal: fetch.IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    try:
        addrs = [literal] if literal is not None else resolver(host, port)
    except (OSError, ValueError) as exc:  # the system resolver's own errors are FetchErrors
        raise FetchError(f"cannot resolve host {host!r}: {type(exc).__name__}") from None
    if not addrs:
        raise FetchError(f"host {host!r} has no addresses")
    allow = fetch.parse_networks(settings.fetch_allow_private)
    refused = [a for a in addrs if not fetch.address_allowed(a, allow)]
    if refused:
        raise FetchError(f"refused: {host!r} resolves to a non-public address ({refused[0]})")
    return addrs[0]


def _pinned(url: str, addr: fetch.IPAddress) -> tuple[str, dict[str, str], str]:
    """(URL naming ``addr``, Host header, TLS server name) for a request to ``url``'s host
    at the checked address, so a DNS change after the check cannot redirect it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    default = 443 if parts.scheme == "https" else 80
    port = parts.port or default
    ip_host = f"[{addr}]" if addr.version == 6 else str(addr)
    name = f"[{host}]" if ":" in host else host
    host_header = name if port == default else f"{name}:{port}"
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    return f"{parts.scheme}://{ip_host}:{port}{target}", {"Host": host_header}, host


def _banks_json(banks: Sequence[str] | None) -> str | None:
    if banks is None:
        return None
    if isinstance(banks, str) or not all(isinstance(b, str) and b for b in banks):
        raise InputError("webhook banks must be a list of bank names")
    return json.dumps(sorted(set(banks)))


def webhook_banks(webhook: Webhook) -> list[str] | None:
    """The bank filter (None: every bank)."""
    return None if webhook.banks is None else list(json.loads(webhook.banks))


def accepts(webhook: Webhook, bank: str) -> bool:
    """True when ``webhook`` is enabled and its bank filter lets ``bank`` through."""
    banks = webhook_banks(webhook)
    return webhook.enabled and (banks is None or bank in banks)


def describe(webhook: Webhook) -> dict[str, Any]:
    """A JSON-ready view without the secret."""
    return {
        "id": webhook.id,
        "tenant": webhook.tenant,
        "url": webhook.url,
        "banks": webhook_banks(webhook),
        "enabled": webhook.enabled,
        "created_at": webhook.created_at.isoformat(),
    }


def create_webhook(
    session: Session,
    *,
    url: str,
    banks: Sequence[str] | None = None,
    secret: str | None = None,
    tenant: str | None = None,
    enabled: bool = True,
    actor: Principal | None = None,
    settings: Settings | None = None,
    resolver: fetch.Resolver | None = None,
) -> tuple[Webhook, str]:
    """Configure a receiver; returns it and its signing secret (generated when None).

    The URL must pass the fetch SSRF guard (:func:`check_target`: public addresses, or
    the ``fetch_allow_private`` allow-list of ``settings``); InputError otherwise.
    """
    actor = actor or Principal.cli()
    actor.require(Permission.WEBHOOK_ADMIN)
    if actor.tenant is not None:
        tenant = actor.tenant
    _check_url(url)
    try:
        check_target(url, settings=settings, resolver=resolver)
    except FetchError as exc:
        raise InputError(f"webhook URL {exc.message}") from None
    if secret is not None and not 16 <= len(secret) <= 200:
        raise InputError("webhook secret must be 16-200 characters")
    secret = secret or secrets.token_urlsafe(32)
    webhook = Webhook(
        id=str(ULID()),
        tenant=tenant,
        url=url,
        secret=secret,
        banks=_banks_json(banks),
        enabled=enabled,
        created_at=utcnow(),
    )
    session.add(webhook)
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="webhook.create",
        target=("webhook", webhook.id),
        details={"host": urlsplit(url).hostname, "banks": webhook_banks(webhook)},
        tenant=tenant,
    )
    return webhook, secret


def get_webhook(session: Session, webhook_id: str, *, actor: Principal | None = None) -> Webhook:
    """A webhook visible to ``actor``; :class:`NotFoundError` otherwise."""
    actor = actor or Principal.cli()
    webhook = session.get(Webhook, webhook_id)
    if webhook is None:
        raise NotFoundError(f"no webhook {webhook_id!r}")
    # webhook configs are never shared across tenants, not even read-only
    require_tenant(actor, webhook.tenant, write=True, what=f"webhook {webhook_id!r}")
    return webhook


def set_enabled(
    session: Session, webhook_id: str, enabled: bool, *, actor: Principal | None = None
) -> Webhook:
    """Enable or disable a webhook (pending deliveries to a disabled one are dropped)."""
    actor = actor or Principal.cli()
    actor.require(Permission.WEBHOOK_ADMIN)
    webhook = get_webhook(session, webhook_id, actor=actor)
    require_tenant(actor, webhook.tenant, write=True, what=f"webhook {webhook_id!r}")
    webhook.enabled = enabled
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="webhook.enable" if enabled else "webhook.disable",
        target=("webhook", webhook.id),
        tenant=webhook.tenant,
    )
    return webhook


def delete_webhook(session: Session, webhook_id: str, *, actor: Principal | None = None) -> None:
    """Remove a webhook (pending deliveries to it are dropped)."""
    actor = actor or Principal.cli()
    actor.require(Permission.WEBHOOK_ADMIN)
    webhook = get_webhook(session, webhook_id, actor=actor)
    require_tenant(actor, webhook.tenant, write=True, what=f"webhook {webhook_id!r}")
    session.delete(webhook)
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="webhook.delete",
        target=("webhook", webhook_id),
        tenant=webhook.tenant,
    )


def list_webhooks(session: Session, *, actor: Principal | None = None) -> list[dict[str, Any]]:
    """Webhooks visible to ``actor``, without secrets."""
    actor = actor or Principal.cli()
    actor.require(Permission.WEBHOOK_ADMIN)
    query = select(Webhook).where(tenant_clause(actor, Webhook.tenant, include_shared=False))
    return [describe(w) for w in session.execute(query.order_by(Webhook.id)).scalars()]


def idempotency_key(webhook_id: str, event_id: str) -> str:
    """The delivery's idempotency key: one per (webhook, event)."""
    return f"webhook:{webhook_id}:{event_id}"


def enqueue_delivery(
    session: Session,
    webhook: Webhook,
    event_id: str,
    event: Mapping[str, Any],
    *,
    max_attempts: int = jobs.DEFAULT_MAX_ATTEMPTS,
) -> str:
    """Queue one delivery of ``event`` to ``webhook`` (again for the same event: no-op)."""
    return jobs.enqueue(
        session,
        WEBHOOK_JOB_KIND,
        {"webhook_id": webhook.id, "event_id": event_id, "event": dict(event)},
        idempotency_key=idempotency_key(webhook.id, event_id),
        max_attempts=max_attempts,
        tenant=webhook.tenant,
    )


class WebhookDeliverer:
    """The job handler for :data:`WEBHOOK_JOB_KIND`: one signed POST per attempt.

    ``transport`` is an optional ``httpx.BaseTransport`` (tests, proxies); ``timeout`` is
    the whole request's limit in seconds and must stay below the runner's lease.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        transport: Any = None,
        timeout: float = 10.0,
        settings: Settings | None = None,
        resolver: fetch.Resolver | None = None,
    ) -> None:
        httpx = require("httpx")
        self._factory = sessionmaker(engine, expire_on_commit=False)
        # trust_env=False: a proxy from the environment would connect on our behalf,
        # bypassing the address check.
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": f"tipline/{__version__}"},
        )
        self._httpx = httpx
        self._settings = settings or get_settings()
        self._resolver = resolver

    def close(self) -> None:
        """Close pooled connections."""
        self._client.close()

    def __call__(self, job: jobs.JobContext) -> None:
        """Deliver once; return on 2xx, raise :class:`DeliveryError` otherwise."""
        webhook_id = str(job.payload["webhook_id"])
        with self._factory() as session:
            webhook = session.get(Webhook, webhook_id)
        if webhook is None or not webhook.enabled:
            log.info("job %s: webhook %s gone or disabled; delivery dropped", job.id, webhook_id)
            return
        sent_at = int(time.time())
        key = job.idempotency_key or job.id
        document = {
            "idempotency_key": key,
            "event_id": job.payload.get("event_id"),
            "event": job.payload.get("event"),
            "attempt": job.attempt,
            "sent_at": sent_at,
        }
        body = audit.canonical_json(document).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(webhook.secret, body),
            TIMESTAMP_HEADER: str(sent_at),
            IDEMPOTENCY_HEADER: key,
        }
        host = urlsplit(webhook.url).hostname
        try:
            # checked again at each delivery: the host's DNS answer may have changed
            addr = check_target(webhook.url, settings=self._settings, resolver=self._resolver)
        except FetchError as exc:
            raise DeliveryError(f"receiver {exc.message}") from None
        pinned_url, host_header, server_name = _pinned(webhook.url, addr)
        try:
            # streamed and never read: a hostile receiver cannot make us buffer its body
            with self._client.stream(
                "POST",
                pinned_url,
                content=body,
                headers={**headers, **host_header},
                extensions={"sni_hostname": server_name},
            ) as response:
                status = response.status_code
        except self._httpx.TimeoutException:
            raise DeliveryError(f"receiver {host} timed out") from None
        except self._httpx.HTTPError as exc:
            # the exception text may quote the URL (which can carry a token): name the type
            raise DeliveryError(f"receiver {host} unreachable ({type(exc).__name__})") from None
        if not 200 <= status < 300:
            raise DeliveryError(f"receiver {host} answered HTTP {status}")
