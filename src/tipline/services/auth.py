"""API keys, roles, permissions and tenant isolation.

A key looks like ``tpl_<key id>_<secret>``. The key id (12 hex digits) is public and
used for lookup and in the audit log; only the SHA-256 of the secret (256 random bits)
is stored, and presented secrets are compared in constant time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, or_, select, true
from sqlalchemy.orm import Session

from tipline.errors import AuthError, InputError, NotFoundError, PermissionDeniedError
from tipline.services import audit
from tipline.store.auth import ApiKey
from tipline.store.base import utcnow

KEY_PREFIX = "tpl"
_KEY_ID_HEX = 12
_SECRET_BYTES = 32
_MAX_PRESENTED = 200
#: compared against when the key id is unknown, so timing does not reveal which ids exist
_DUMMY_SHA256 = hashlib.sha256(b"tipline-no-such-key").hexdigest()


class Role(enum.Enum):
    """What a key may do; see :data:`ROLE_PERMISSIONS`."""

    HASHER = "hasher"
    MATCHER = "matcher"
    CURATOR = "curator"
    REVIEWER = "reviewer"
    ANALYST = "analyst"
    ADMIN = "admin"


class Permission(enum.Enum):
    """One capability checked by the HTTP layer and the services."""

    HASH = "hash"  # compute signals of uploaded or fetched media
    MATCH = "match"  # look up media or hashes against banks
    SUBMIT = "submit"  # record submissions (content id, uploader metadata)
    BANK_READ = "bank.read"  # list banks and entries
    BANK_WRITE = "bank.write"  # create/update/delete banks, add/disable entries
    REVIEW = "review"  # read the review queue, decide, see matched media
    REPORT = "report"  # build, list, download, retract and retry CyberTipline reports
    WEBHOOK_ADMIN = "webhook.admin"  # configure webhooks and action rules
    KEY_ADMIN = "key.admin"  # create/revoke API keys
    AUDIT_READ = "audit.read"  # read and verify the audit log
    EVIDENCE_READ = "evidence.read"  # list, show and download preserved evidence (vault)
    EVIDENCE_ADMIN = "evidence.admin"  # legal holds, retention, verify, purge, key rotation
    INTAKE_READ = "intake.read"  # clearinghouse: queue, received reports, clusters
    INTAKE_DECIDE = "intake.decide"  # clearinghouse: confirm (publishes hashes) or reject
    ROUTE = "route"  # clearinghouse: route intake reports, build referral packages


#: The permission matrix. Admin holds every permission.
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.HASHER: frozenset({Permission.HASH}),
    Role.MATCHER: frozenset({Permission.HASH, Permission.MATCH, Permission.SUBMIT}),
    Role.CURATOR: frozenset(
        {Permission.HASH, Permission.MATCH, Permission.BANK_READ, Permission.BANK_WRITE}
    ),
    Role.REVIEWER: frozenset(
        {Permission.REVIEW, Permission.BANK_READ, Permission.EVIDENCE_READ, Permission.REPORT}
    ),
    Role.ANALYST: frozenset(
        {
            Permission.INTAKE_READ,
            Permission.INTAKE_DECIDE,
            Permission.BANK_READ,
            Permission.EVIDENCE_READ,
            Permission.ROUTE,
        }
    ),
    Role.ADMIN: frozenset(Permission),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: key id (or ``cli``), role, tenant (None = not tenant-bound)."""

    key_id: str
    role: Role
    tenant: str | None = None

    @classmethod
    def cli(cls) -> Principal:
        """The local operator: admin, not bound to a tenant."""
        return cls(key_id=audit.CLI_ACTOR, role=Role.ADMIN, tenant=None)

    def can(self, permission: Permission) -> bool:
        """True when the role grants ``permission``."""
        return permission in ROLE_PERMISSIONS[self.role]

    def require(self, permission: Permission) -> None:
        """Raise :class:`PermissionDeniedError` unless the role grants ``permission``."""
        if not self.can(permission):
            raise PermissionDeniedError(f"role {self.role.value!r} may not {permission.value!r}")


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key: ``secret`` is the full presented key, shown once and never stored."""

    key_id: str
    name: str
    role: Role
    tenant: str | None
    secret: str


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_role(value: str | Role) -> Role:
    """A :class:`Role` from its name; :class:`InputError` listing valid names otherwise."""
    if isinstance(value, Role):
        return value
    try:
        return Role(value.lower())
    except ValueError:
        names = ", ".join(role.value for role in Role)
        raise InputError(f"unknown role {value!r}; expected one of: {names}") from None


def _check_tenant_name(tenant: str | None) -> None:
    if tenant is not None and (not tenant or len(tenant) > 64 or not tenant.isprintable()):
        raise InputError("tenant must be 1-64 printable characters")


def create_key(
    session: Session,
    *,
    name: str,
    role: Role | str,
    tenant: str | None = None,
    actor: Principal | None = None,
) -> CreatedKey:
    """Create a key and audit it; the returned secret cannot be recovered later."""
    actor = actor or Principal.cli()
    actor.require(Permission.KEY_ADMIN)
    role = parse_role(role)
    if not name or len(name) > 200:
        raise InputError("key name must be 1-200 characters")
    _check_tenant_name(tenant)
    if actor.tenant is not None and tenant != actor.tenant:
        raise PermissionDeniedError("a tenant admin may only create keys for its own tenant")
    key_id = secrets.token_hex(_KEY_ID_HEX // 2)
    secret_part = secrets.token_urlsafe(_SECRET_BYTES)
    session.add(
        ApiKey(
            id=key_id,
            name=name,
            role=role.value,
            tenant=tenant,
            secret_sha256=_sha256(secret_part),
            created_at=utcnow(),
            created_by=actor.key_id,
        )
    )
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="apikey.create",
        target=("apikey", key_id),
        details={"name": name, "role": role.value, "key_tenant": tenant},
        tenant=tenant,
    )
    return CreatedKey(key_id, name, role, tenant, f"{KEY_PREFIX}_{key_id}_{secret_part}")


def key_id_of(text: str) -> str:
    """The key id in ``text``: a bare id, ``tpl_<id>`` or a whole key ``tpl_<id>_<secret>``
    (the secret is dropped unread, so it never reaches a message or the audit log)."""
    text = text.strip()
    if text.startswith(f"{KEY_PREFIX}_"):
        return text.split("_", 2)[1]
    return text


def revoke_key(session: Session, key_id: str, *, actor: Principal | None = None) -> str:
    """Revoke a key given by id or as the whole key (idempotent); returns its id.
    :class:`NotFoundError` for an unknown id."""
    actor = actor or Principal.cli()
    actor.require(Permission.KEY_ADMIN)
    key_id = key_id_of(key_id)
    key = session.get(ApiKey, key_id)
    if key is None or not can_see_tenant(actor, key.tenant):
        raise NotFoundError(f"no API key with id {key_id!r}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
        audit.append(
            session,
            actor=actor,
            action="apikey.revoke",
            target=("apikey", key_id),
            tenant=key.tenant,
        )
    return key_id


def replace_key(
    session: Session, *, name: str, role: Role | str, actor: Principal | None = None
) -> CreatedKey:
    """Revoke every active tenant-less key called ``name`` with ``role``, then create a
    new one: a tool that makes "its" key on each start leaves one active key, not many."""
    actor = actor or Principal.cli()
    role = parse_role(role)
    active = select(ApiKey.id).where(
        ApiKey.name == name,
        ApiKey.role == role.value,
        ApiKey.tenant.is_(None),
        ApiKey.revoked_at.is_(None),
    )
    for old_id in session.execute(active).scalars().all():
        revoke_key(session, old_id, actor=actor)
    return create_key(session, name=name, role=role, actor=actor)


def list_keys(session: Session, *, actor: Principal | None = None) -> list[dict[str, Any]]:
    """Every key visible to ``actor`` (id, name, role, tenant, dates); never secrets."""
    actor = actor or Principal.cli()
    actor.require(Permission.KEY_ADMIN)
    query = select(ApiKey).where(tenant_clause(actor, ApiKey.tenant, include_shared=False))
    return [
        {
            "key_id": key.id,
            "name": key.name,
            "role": key.role,
            "tenant": key.tenant,
            "created_at": key.created_at,
            "created_by": key.created_by,
            "revoked_at": key.revoked_at,
        }
        for key in session.execute(query.order_by(ApiKey.created_at)).scalars()
    ]


def authenticate(session: Session, presented_key: str | None) -> Principal:
    """The principal for a presented key; :class:`AuthError` when missing/invalid/revoked.

    The error message never says which part was wrong.
    """
    if not presented_key:
        raise AuthError("missing API key")
    invalid = AuthError("invalid API key")
    if len(presented_key) > _MAX_PRESENTED:
        raise invalid
    parts = presented_key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != _KEY_ID_HEX:
        raise invalid
    key = session.get(ApiKey, parts[1])
    stored = key.secret_sha256 if key is not None else _DUMMY_SHA256
    matches = hmac.compare_digest(stored.encode("ascii"), _sha256(parts[2]).encode("ascii"))
    if key is None or not matches or key.revoked_at is not None:
        raise invalid
    return Principal(key_id=key.id, role=Role(key.role), tenant=key.tenant)


def can_see_tenant(
    principal: Principal, resource_tenant: str | None, *, write: bool = False
) -> bool:
    """Tenant isolation rule.

    A principal without a tenant sees everything. A tenant-bound principal sees its own
    tenant's objects and reads (never writes) shared objects (``resource_tenant`` None).
    """
    if principal.tenant is None:
        return True
    if resource_tenant is None:
        return not write
    return resource_tenant == principal.tenant


def require_tenant(
    principal: Principal, resource_tenant: str | None, *, write: bool = False, what: str = "object"
) -> None:
    """Raise :class:`NotFoundError` (not 403: existence is not revealed) across tenants."""
    if not can_see_tenant(principal, resource_tenant, write=write):
        raise NotFoundError(f"{what} not found")


def tenant_clause(
    principal: Principal, column: Any, *, include_shared: bool = True
) -> ColumnElement[bool]:
    """A WHERE clause limiting ``column`` (a tenant column) to what ``principal`` sees."""
    if principal.tenant is None:
        return true()
    if include_shared:
        return or_(column == principal.tenant, column.is_(None))
    return column == principal.tenant  # type: ignore[no-any-return]
