"""Server-side sessions of the web UI: login, resume from a cookie, logout, refusals.

The cookie carries 256 random bits; the database keeps only their SHA-256, with the
user, an idle deadline (``last_seen_at`` + idle time) and an absolute one
(``expires_at``). Each session also has a random ``secret``: its CSRF token and its
signed media URLs are HMACs under it, so neither outlives the session nor works in
another. Failed logins, expired sessions and every refusal are audited.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tipline.config import Settings
from tipline.errors import AuthError
from tipline.services import audit
from tipline.services.auth import Principal
from tipline.services.web_auth.users import (
    MAX_PASSWORD_CHARS,
    TARGET,
    UserInfo,
    verify_password,
)
from tipline.store.audit import AuditRecord
from tipline.store.base import utcnow
from tipline.store.db import transaction
from tipline.store.web import WebSessionRow, WebUserRow

_TOKEN_BYTES = 32
#: failed logins of one name within :data:`LOCKOUT_WINDOW` after which that name's
#: logins are refused (whatever the password) until the window has moved on
MAX_FAILURES = 5
LOCKOUT_WINDOW = timedelta(minutes=15)
#: last_seen_at is written at most this often (a page load is not a write each time)
_TOUCH_EVERY = timedelta(seconds=30)


class SessionExpiredError(AuthError):
    """The session cookie is unknown, ended or past a deadline: log in again."""

    code = "session-expired"


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long sessions live."""

    idle: timedelta
    max_age: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionPolicy:
        """The policy the settings give."""
        return cls(
            idle=timedelta(minutes=settings.web_session_idle_minutes),
            max_age=timedelta(hours=settings.web_session_max_hours),
        )


@dataclass(frozen=True, slots=True)
class WebSession:
    """A live session: who, and the keys of its CSRF token and media URLs."""

    id: str
    user: UserInfo
    secret: str = ""
    expires_at: datetime | None = None
    #: when the user logged in (break reminders count from here)
    started_at: datetime | None = None

    @property
    def principal(self) -> Principal:
        """The user as the services see them."""
        return self.user.principal

    def mac(self, message: str) -> str:
        """HMAC-SHA-256 (hex) of ``message`` under this session's secret."""
        return hmac.new(
            bytes.fromhex(self.secret), message.encode("utf-8"), hashlib.sha256
        ).hexdigest()

    @property
    def csrf_token(self) -> str:
        """The token every form of this session carries."""
        return self.mac("csrf")

    def check_csrf(self, presented: str | None) -> bool:
        """True when ``presented`` is this session's CSRF token (constant time)."""
        return bool(presented) and hmac.compare_digest(
            self.csrf_token.encode("ascii"), (presented or "").encode("utf-8", "replace")
        )


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def login(
    sessions: sessionmaker[Session],
    name: str,
    password: str,
    *,
    policy: SessionPolicy,
    now: datetime | None = None,
    client: str | None = None,
) -> tuple[str, WebSession]:
    """Check the password and open a session; returns (cookie token, session).

    A wrong name, wrong password or disabled user raise the same :class:`AuthError`
    and are audited as ``web.login_failed`` (with the reason, never the password).
    After :data:`MAX_FAILURES` failures of one name within :data:`LOCKOUT_WINDOW`
    (counted from those audit records), that name is refused even with the right
    password until the window has moved on: the same for names that do not exist.
    """
    now = now or utcnow()
    name = name.strip()[:64]
    with sessions() as session:
        row = session.scalar(select(WebUserRow).where(WebUserRow.name == name))
        stored = row.password_hash if row is not None else None
        failures = session.scalar(
            select(func.count()).where(
                AuditRecord.action == "web.login_failed",
                AuditRecord.target_id == name,
                AuditRecord.at > now - LOCKOUT_WINDOW,
                AuditRecord.at <= now,
            )
        )
    good = verify_password(stored, password[:MAX_PASSWORD_CHARS])
    reason = None
    if int(failures or 0) >= MAX_FAILURES:
        reason = "too many failed logins"
    elif row is None:
        reason = "unknown user"
    elif not good:
        reason = "wrong password"
    elif not row.enabled:
        reason = "user disabled"
    if reason is not None:
        with transaction(sessions) as session:
            audit.append(
                session,
                actor=f"user:{name}" if name else "anonymous",
                action="web.login_failed",
                target=(TARGET, name) if name else None,
                details={"reason": reason, "client": client},
                tenant=row.tenant if row is not None else None,
            )
        if reason == "too many failed logins":
            raise AuthError("too many failed logins for this name; try again in 15 minutes")
        raise AuthError("wrong user name or password")
    assert row is not None
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    secret = secrets.token_hex(32)
    with transaction(sessions) as session:
        srow = WebSessionRow(
            token_sha256=_sha256(token),
            user_id=row.id,
            secret=secret,
            created_at=now,
            last_seen_at=now,
            expires_at=now + policy.max_age,
        )
        session.add(srow)
        session.flush()
        user = UserInfo.of(row)
        audit.append(
            session,
            actor=user.principal,
            action="web.login",
            target=(TARGET, name),
            details={"client": client, "session": srow.token_sha256[:16]},
        )
    return token, WebSession(srow.token_sha256, user, secret, srow.expires_at, now)


def resume(
    sessions: sessionmaker[Session],
    token: str | None,
    *,
    policy: SessionPolicy,
    now: datetime | None = None,
) -> WebSession:
    """The live session of a cookie token; :class:`SessionExpiredError` otherwise (an
    expired one is ended and audited as ``web.session_expired``)."""
    if not token or len(token) > 200:
        raise SessionExpiredError("not logged in")
    now = now or utcnow()
    key = _sha256(token)
    with transaction(sessions) as session:
        srow = session.get(WebSessionRow, key)
        if srow is None or srow.ended_at is not None:
            raise SessionExpiredError("not logged in (or the session was ended)")
        user_row = session.get(WebUserRow, srow.user_id)
        why = None
        if user_row is None or not user_row.enabled:
            why = "user disabled"
        elif now >= srow.expires_at:
            why = "session too old"
        elif now >= srow.last_seen_at + policy.idle:
            why = "idle too long"
        if why is not None:
            srow.ended_at = now
            session.flush()
            audit.append(
                session,
                actor=f"user:{user_row.name}" if user_row is not None else "anonymous",
                action="web.session_expired",
                target=(TARGET, user_row.name) if user_row is not None else None,
                details={"reason": why, "session": key[:16]},
                tenant=user_row.tenant if user_row is not None else None,
            )
        elif now - srow.last_seen_at >= _TOUCH_EVERY:
            srow.last_seen_at = now
        out = (
            None
            if why is not None or user_row is None
            else WebSession(
                key, UserInfo.of(user_row), srow.secret, srow.expires_at, srow.created_at
            )
        )
    if out is None:
        raise SessionExpiredError(f"the session ended ({why}); log in again")
    return out


def logout(sessions: sessionmaker[Session], web_session: WebSession) -> None:
    """End the session (audited as ``web.logout``)."""
    with transaction(sessions) as session:
        srow = session.get(WebSessionRow, web_session.id)
        if srow is not None and srow.ended_at is None:
            srow.ended_at = utcnow()
            session.flush()
        audit.append(
            session,
            actor=web_session.principal,
            action="web.logout",
            target=(TARGET, web_session.user.name),
            details={"session": web_session.id[:16]},
        )


def refuse(
    sessions: sessionmaker[Session],
    *,
    actor: Principal | str,
    reason: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Audit a refused web request (missing CSRF token, tampered URL, another tenant's
    item...) as ``web.refused``."""
    with transaction(sessions) as session:
        audit.append(
            session,
            actor=actor,
            action="web.refused",
            details={"reason": reason, **(details or {})},
        )
