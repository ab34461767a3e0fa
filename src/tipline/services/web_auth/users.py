"""Password users of the web UI, tied to the API's roles and tenants.

A user acts as a :class:`~tipline.services.auth.Principal` whose ``key_id`` is
``user:<name>`` (what the audit log and decisions record), with the user's role and
tenant: the same permission matrix and tenant isolation as an API key. Passwords are
hashed with argon2id (argon2-cffi's defaults); a login to an unknown or disabled name
costs the same hash as a real one.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from ulid import ULID

from tipline.errors import ConflictError, InputError, NotFoundError
from tipline.services import audit
from tipline.services.auth import Principal, Role, parse_role
from tipline.store.base import utcnow
from tipline.store.db import transaction
from tipline.store.web import WebSessionRow, WebUserRow

MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,47}$")
TARGET = "web_user"
#: the audit/decision actor id of a web user
ACTOR_PREFIX = "user:"
#: reveal levels: 0 heavy blur + grey, 1 light blur + grey, 2 grey, 3 colour
MAX_LEVEL = 3
#: items always open blurred: a reviewer's default is level 0 or 1
MAX_DEFAULT_LEVEL = 1

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """The hash an unknown name is verified against (made on first use: an argon2id hash
    costs ~0.3 s of CPU, which every CLI command and server start paid at import)."""
    return _hasher.hash("tipline-no-such-user-password")


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A web user (never the password hash)."""

    id: str
    name: str
    role: Role
    tenant: str | None
    enabled: bool
    #: default reveal level of the item page (0 = most blurred)
    default_level: int
    #: own daily exposure limit (None: the organisation's)
    daily_limit: int | None
    created_at: datetime

    @classmethod
    def of(cls, row: WebUserRow) -> UserInfo:
        """From a row."""
        prefs = row.prefs or {}
        limit = prefs.get("daily_limit")
        return cls(
            id=row.id,
            name=row.name,
            role=Role(row.role),
            tenant=row.tenant,
            enabled=row.enabled,
            default_level=int(prefs.get("default_level", 0)),
            daily_limit=int(limit) if isinstance(limit, int) else None,
            created_at=row.created_at,
        )

    @property
    def principal(self) -> Principal:
        """Who this user is to the services."""
        return Principal(key_id=f"{ACTOR_PREFIX}{self.name}", role=self.role, tenant=self.tenant)


def check_name(name: str) -> str:
    """A user name: 1-48 letters, digits, '.', '_', '@' or '-' (InputError otherwise)."""
    if not _NAME.match(name):
        raise InputError("user name: 1-48 letters, digits, '.', '_', '@' or '-'")
    return name


def check_password(password: str) -> str:
    """A new password: 12-1024 characters (InputError otherwise)."""
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise InputError(
            f"a password needs {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
        )
    return password


def hash_password(password: str) -> str:
    """The argon2id hash (PHC string) of ``password``."""
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored``; an absent hash still costs a verify."""
    try:
        return _hasher.verify(stored or _dummy_hash(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _get(session: Session, name: str) -> WebUserRow:
    row = session.scalar(select(WebUserRow).where(WebUserRow.name == name))
    if row is None:
        raise NotFoundError(f"no web user {name!r}")
    return row


def add_user(
    sessions: sessionmaker[Session],
    name: str,
    password: str,
    *,
    role: Role | str = Role.REVIEWER,
    tenant: str | None = None,
    actor: str = audit.CLI_ACTOR,
) -> UserInfo:
    """Create a user (audited as ``web.user_add``; never the password)."""
    check_name(name)
    check_password(password)
    parsed = parse_role(role)
    if tenant is not None and (not tenant or len(tenant) > 64 or not tenant.isprintable()):
        raise InputError("tenant must be 1-64 printable characters")
    hashed = hash_password(password)
    now = utcnow()
    with transaction(sessions) as session:
        if session.scalar(select(WebUserRow.id).where(WebUserRow.name == name)):
            raise ConflictError(f"web user {name!r} exists")
        row = WebUserRow(
            id=str(ULID()),
            name=name,
            password_hash=hashed,
            role=parsed.value,
            tenant=tenant,
            enabled=True,
            prefs={},
            created_at=now,
            created_by=actor,
            password_changed_at=now,
        )
        session.add(row)
        session.flush()
        audit.append(
            session,
            actor=actor,
            action="web.user_add",
            target=(TARGET, name),
            details={"role": parsed.value, "user_tenant": tenant},
            tenant=tenant,
        )
        return UserInfo.of(row)


def _end_sessions(session: Session, user_id: str) -> int:
    result = session.execute(
        update(WebSessionRow)
        .where(WebSessionRow.user_id == user_id, WebSessionRow.ended_at.is_(None))
        .values(ended_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


def set_password(
    sessions: sessionmaker[Session], name: str, password: str, *, actor: str = audit.CLI_ACTOR
) -> UserInfo:
    """Change a user's password and end every session of theirs (audited)."""
    check_password(password)
    hashed = hash_password(password)
    with transaction(sessions) as session:
        row = _get(session, name)
        row.password_hash = hashed
        row.password_changed_at = utcnow()
        ended = _end_sessions(session, row.id)
        session.flush()
        audit.append(
            session,
            actor=actor,
            action="web.user_passwd",
            target=(TARGET, name),
            details={"sessions_ended": ended},
            tenant=row.tenant,
        )
        return UserInfo.of(row)


def disable_user(
    sessions: sessionmaker[Session], name: str, *, actor: str = audit.CLI_ACTOR
) -> UserInfo:
    """Refuse every further login of the user and end their sessions (audited)."""
    with transaction(sessions) as session:
        row = _get(session, name)
        ended = _end_sessions(session, row.id)
        if row.enabled:
            row.enabled = False
            row.disabled_at = utcnow()
        session.flush()
        audit.append(
            session,
            actor=actor,
            action="web.user_disable",
            target=(TARGET, name),
            details={"sessions_ended": ended},
            tenant=row.tenant,
        )
        return UserInfo.of(row)


def list_users(sessions: sessionmaker[Session]) -> list[UserInfo]:
    """Every user, by name."""
    with sessions() as session:
        return [
            UserInfo.of(r) for r in session.scalars(select(WebUserRow).order_by(WebUserRow.name))
        ]


def set_preferences(
    sessions: sessionmaker[Session],
    user: UserInfo,
    *,
    default_level: int,
    daily_limit: int | None,
) -> UserInfo:
    """A reviewer's own defaults: the reveal level items open at and a daily exposure
    limit (may only be lower than the organisation's, enforced where it is read)."""
    if not 0 <= default_level <= MAX_DEFAULT_LEVEL:
        raise InputError(f"default level must be 0 to {MAX_DEFAULT_LEVEL} (blurred)")
    if daily_limit is not None and not 0 <= daily_limit <= 100_000:
        raise InputError("daily limit must be 0 to 100000")
    prefs: dict[str, Any] = {"default_level": default_level}
    if daily_limit is not None:
        prefs["daily_limit"] = daily_limit
    with transaction(sessions) as session:
        row = session.get(WebUserRow, user.id)
        if row is None:
            raise NotFoundError(f"no web user {user.name!r}")
        row.prefs = prefs
        session.flush()
        audit.append(
            session,
            actor=user.principal,
            action="web.preferences",
            target=(TARGET, user.name),
            details=prefs,
        )
        return UserInfo.of(row)
