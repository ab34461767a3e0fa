"""Reporting providers: the ISPWS accounts of the clearinghouse intake.

Passwords are stored as scrypt hashes (random salt per account) and never logged or
audited; a login to an unknown or disabled account costs the same scrypt as a real one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from ulid import ULID

from tipline.errors import ConflictError, InputError, NotFoundError
from tipline.services import audit
from tipline.store.base import utcnow
from tipline.store.clearinghouse import IntakeProviderRow
from tipline.store.db import transaction

#: scrypt cost (N, r, p): about 16 MiB and tens of milliseconds per login
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD_CHARS = 12
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
TARGET = "intake_provider"


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """A provider account (never its password)."""

    id: str
    name: str
    enabled: bool
    created_at: datetime
    disabled_at: datetime | None

    @classmethod
    def of(cls, row: IntakeProviderRow) -> ProviderInfo:
        """From a row."""
        return cls(row.id, row.name, row.enabled, row.created_at, row.disabled_at)


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64 parts)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


_DUMMY_HASH = f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44


def check_password(password: str, stored: str) -> bool:
    """True when ``password`` matches the ``stored`` hash (constant-time compare)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=32,
        )
        return hmac.compare_digest(computed, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


def add_provider(
    sessions: sessionmaker[Session], name: str, password: str, *, actor: str = audit.CLI_ACTOR
) -> ProviderInfo:
    """Create an account (audited as ``intake.provider_add``)."""
    if not _NAME.match(name):
        raise InputError("provider name: 1-64 letters, digits, '.', '_', '@' or '-'")
    if len(password) < MIN_PASSWORD_CHARS:
        raise InputError(f"provider password must be at least {MIN_PASSWORD_CHARS} characters")
    hashed = hash_password(password)
    with transaction(sessions) as session:
        if session.scalar(select(IntakeProviderRow).where(IntakeProviderRow.name == name)):
            raise ConflictError(f"provider {name!r} exists")
        row = IntakeProviderRow(
            id=str(ULID()),
            name=name,
            password_hash=hashed,
            enabled=True,
            created_at=utcnow(),
            created_by=actor,
        )
        session.add(row)
        session.flush()
        audit.append(
            session,
            actor=actor,
            action="intake.provider_add",
            target=(TARGET, row.id),
            details={"name": name},
        )
        return ProviderInfo.of(row)


def list_providers(sessions: sessionmaker[Session]) -> list[ProviderInfo]:
    """Every account, by name."""
    with sessions() as session:
        rows = session.scalars(select(IntakeProviderRow).order_by(IntakeProviderRow.name))
        return [ProviderInfo.of(row) for row in rows]


def disable_provider(
    sessions: sessionmaker[Session], name: str, *, actor: str = audit.CLI_ACTOR
) -> ProviderInfo:
    """Refuse every further login of ``name`` (audited as ``intake.provider_disable``)."""
    with transaction(sessions) as session:
        row = session.scalar(select(IntakeProviderRow).where(IntakeProviderRow.name == name))
        if row is None:
            raise NotFoundError(f"no provider {name!r}")
        if row.enabled:
            row.enabled = False
            row.disabled_at = utcnow()
            session.flush()
            audit.append(
                session,
                actor=actor,
                action="intake.provider_disable",
                target=(TARGET, row.id),
                details={"name": name},
            )
        return ProviderInfo.of(row)


#: credentials verified by this process: HMAC-SHA256 of the presented password keyed by
#: the stored hash (no password is kept; a changed hash invalidates its entries)
_VERIFIED: OrderedDict[str, None] = OrderedDict()
_VERIFIED_MAX = 4096
_VERIFIED_LOCK = threading.Lock()


def _token(stored: str, name: str, password: str) -> str:
    message = f"{name}\x00{password}".encode()
    return hmac.new(stored.encode(), message, hashlib.sha256).hexdigest()


def login(session: Session, name: str, password: str) -> ProviderInfo | None:
    """The enabled provider these credentials open, or None.

    Every ISPWS call carries the password, and scrypt costs about 40 ms of CPU, so a
    process remembers credentials it has verified (as a keyed digest); the account's
    row, and so a disable, is still read on every call.
    """
    row = session.scalar(select(IntakeProviderRow).where(IntakeProviderRow.name == name))
    if row is not None:
        token = _token(row.password_hash, name, password)
        with _VERIFIED_LOCK:
            known = token in _VERIFIED
            if known:
                _VERIFIED.move_to_end(token)
        if known:
            return ProviderInfo.of(row) if row.enabled else None
    good = check_password(password, row.password_hash if row is not None else _DUMMY_HASH)
    if row is None or not good:
        return None
    with _VERIFIED_LOCK:
        _VERIFIED[token] = None
        while len(_VERIFIED) > _VERIFIED_MAX:
            _VERIFIED.popitem(last=False)
    return ProviderInfo.of(row) if row.enabled else None
