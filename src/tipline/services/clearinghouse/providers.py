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
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Exists, Table, bindparam, select
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


@dataclass(frozen=True, slots=True)
class Caller:
    """Credentials verified against ``password_hash``, the account's stored hash then.

    Whether the account is still enabled (and its hash unchanged) is not known from a
    remembered caller: :func:`still_valid` is that check, as a clause the caller's own
    statement carries (no extra round trip), or :func:`confirm` as a read of its own.
    """

    provider: ProviderInfo
    password_hash: str = field(repr=False)


class Credentials:
    """Credentials one intake verified: a keyed digest of (name, password) -> the
    :class:`Caller`. No password is kept (the key is random per instance); at most
    ``max_entries``, the least recently used dropped first. Safe to share between
    threads."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._known: OrderedDict[str, Caller] = OrderedDict()
        self._lock = threading.Lock()
        self._key = secrets.token_bytes(32)

    def _token(self, name: str, password: str) -> str:
        message = f"{name}\x00{password}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def __len__(self) -> int:
        return len(self._known)

    def get(self, name: str, password: str) -> Caller | None:
        """The caller these credentials opened before (no database read), or None."""
        token = self._token(name, password)
        with self._lock:
            found = self._known.get(token)
            if found is not None:
                self._known.move_to_end(token)
        return found

    def put(self, name: str, password: str, caller: Caller) -> None:
        """Remember verified credentials."""
        with self._lock:
            self._known[self._token(name, password)] = caller
            while len(self._known) > self.max_entries:
                self._known.popitem(last=False)

    def forget(self, provider_id: str | None = None) -> None:
        """Drop the credentials of ``provider_id``, or all of them."""
        with self._lock:
            for token in [
                t for t, c in self._known.items() if provider_id in (None, c.provider.id)
            ]:
                del self._known[token]


_PROVIDERS = cast(Table, IntakeProviderRow.__table__)
#: :func:`still_valid` built once, with bound parameters (:func:`valid_params` gives
#: them): the intake's hot statements embed it without building SQL per call
STILL_VALID: Exists = (
    select(_PROVIDERS.c.id)
    .where(
        _PROVIDERS.c.id == bindparam("caller_id"),
        _PROVIDERS.c.enabled.is_(True),
        _PROVIDERS.c.password_hash == bindparam("caller_hash"),
    )
    .exists()
)


def valid_params(caller: Caller) -> dict[str, Any]:
    """The parameters of :data:`STILL_VALID` for ``caller``."""
    return {"caller_id": caller.provider.id, "caller_hash": caller.password_hash}


def still_valid(caller: Caller) -> ColumnElement[bool]:
    """A boolean SQL expression: the caller's account is enabled and its password hash
    is the one the credentials were verified against (a disable, from any process, is
    seen by the next statement that carries this)."""
    row = IntakeProviderRow
    return (
        select(row.id)
        .where(
            row.id == caller.provider.id,
            row.enabled.is_(True),
            row.password_hash == caller.password_hash,
        )
        .exists()
    )


_CONFIRM = select(STILL_VALID)


def confirm(session: Session, caller: Caller) -> bool:
    """:func:`still_valid`, read now in ``session``."""
    return bool(session.connection().scalar(_CONFIRM, valid_params(caller)))


def login(
    session: Session, name: str, password: str, credentials: Credentials | None = None
) -> Caller | None:
    """The enabled provider these credentials open, read and verified now, or None.

    Every ISPWS call carries the password, and scrypt costs about 40 ms of CPU, so
    verified credentials are remembered in ``credentials``; the intake then checks a
    remembered caller against its account's row in the statement of each call instead
    of calling this again.
    """
    row = session.scalar(select(IntakeProviderRow).where(IntakeProviderRow.name == name))
    if row is not None and credentials is not None:
        cached = credentials.get(name, password)
        if cached is not None and cached.password_hash == row.password_hash:
            return Caller(ProviderInfo.of(row), row.password_hash) if row.enabled else None
    good = check_password(password, row.password_hash if row is not None else _DUMMY_HASH)
    if row is None or not good or not row.enabled:
        return None
    caller = Caller(ProviderInfo.of(row), row.password_hash)
    if credentials is not None:
        credentials.put(name, password, caller)
    return caller
