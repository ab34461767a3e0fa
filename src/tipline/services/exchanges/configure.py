"""Configure exchanges: add, list, show, enable/disable, reset, remove. Every change is
audited; credentials are referenced (variable or file name), never stored."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tipline.errors import ConflictError, InputError, NotFoundError
from tipline.services import audit
from tipline.services.database import Database
from tipline.services.exchanges.model import ExchangeSpec, Totals
from tipline.services.exchanges.registry import kind_of
from tipline.store import bank_repository as repo
from tipline.store.db import transaction
from tipline.store.exchanges import ExchangeFeedbackRow, ExchangeRow

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass(frozen=True, slots=True)
class ExchangeStatus:
    """An exchange's configuration and where its syncs stand. ``lag_seconds``: now minus
    the source's time of the newest applied data (None until the source says)."""

    name: str
    kind: str
    bank: str
    enabled: bool
    interval_seconds: int
    config: dict[str, Any]
    credential: str
    checkpoint: dict[str, Any] | None
    totals: dict[str, Any]
    created_at: datetime
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    lag_seconds: float | None
    #: votes owed to the source by status (pending, sent, failed)
    feedback: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (datetimes as ISO 8601)."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out


def _feedback_counts(session: Session, exchange_id: int) -> dict[str, int]:
    rows = session.execute(
        select(ExchangeFeedbackRow.status, func.count())
        .where(ExchangeFeedbackRow.exchange_id == exchange_id)
        .group_by(ExchangeFeedbackRow.status)
    ).all()
    return {str(k): int(v) for k, v in rows}


def _status(
    row: ExchangeRow, now: datetime, feedback: dict[str, int] | None = None
) -> ExchangeStatus:
    if row.credential_env:
        credential = f"env:{row.credential_env}"
    elif row.credential_file:
        credential = f"file:{row.credential_file}"
    else:
        credential = "none"
    lag = (now - row.source_time).total_seconds() if row.source_time else None
    return ExchangeStatus(
        name=row.name,
        kind=row.kind,
        bank=row.bank,
        enabled=row.enabled,
        interval_seconds=row.interval_seconds,
        config=dict(row.config),
        credential=credential,
        checkpoint=dict(row.checkpoint) if row.checkpoint is not None else None,
        totals=Totals.from_json(row.totals).as_json(),
        created_at=row.created_at,
        last_attempt_at=row.last_attempt_at,
        last_success_at=row.last_success_at,
        last_error=row.last_error,
        last_error_at=row.last_error_at,
        lag_seconds=lag,
        feedback=feedback or {},
    )


def get_row(session: Session, name: str, *, for_update: bool = False) -> ExchangeRow:
    """The exchange ``name`` (NotFoundError otherwise)."""
    stmt = select(ExchangeRow).where(ExchangeRow.name == name)
    if for_update:
        stmt = stmt.with_for_update()
    row = session.execute(stmt).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"no exchange {name!r}")
    return row


def spec_of(row: ExchangeRow) -> ExchangeSpec:
    """The adapter-facing configuration of ``row``."""
    return ExchangeSpec(
        name=row.name,
        kind=row.kind,
        bank=row.bank,
        config=dict(row.config),
        credential_env=row.credential_env,
        credential_file=row.credential_file,
    )


def add_exchange(
    db: Database,
    name: str,
    *,
    kind: str,
    bank: str,
    config: Mapping[str, Any],
    credential_env: str | None = None,
    credential_file: str | None = None,
    interval_seconds: int = 3600,
    actor: audit.ActorLike | str = audit.CLI_ACTOR,
) -> ExchangeStatus:
    """Configure a new exchange feeding ``bank`` (which must exist)."""
    if not _NAME.fullmatch(name):
        raise InputError("an exchange name is 1-64 of a-z 0-9 _ . - (starting alphanumeric)")
    if credential_env and credential_file:
        raise InputError("give a credential environment variable or a file, not both")
    if credential_env and not _ENV.fullmatch(credential_env):
        raise InputError(f"not an environment variable name: {credential_env!r}")
    if interval_seconds < 60:
        raise InputError("the sync interval must be at least 60 seconds")
    checked = kind_of(kind).check_config(config)
    now = datetime.now(UTC)
    with transaction(db.sessions) as s:
        repo.get_bank(s, bank)
        if s.execute(select(ExchangeRow.id).where(ExchangeRow.name == name)).first():
            raise ConflictError(f"exchange {name!r} already exists")
        row = ExchangeRow(
            name=name,
            kind=kind,
            bank=bank,
            config=checked,
            credential_env=credential_env,
            credential_file=credential_file,
            enabled=True,
            interval_seconds=interval_seconds,
            checkpoint=None,
            totals={},
            created_at=now,
        )
        s.add(row)
        s.flush()
        status = _status(row, now)
        audit.append(
            s,
            actor=actor,
            action="exchange.add",
            target=("exchange", name),
            details={"kind": kind, "bank": bank, "config": checked},
        )
        return status


def _tenant_bound(actor: audit.ActorLike | str | None) -> bool:
    """True for a tenant's key: exchanges are service-wide, so such keys see none."""
    return actor is not None and not isinstance(actor, str) and actor.tenant is not None


def list_exchanges(
    db: Database, *, actor: audit.ActorLike | str | None = None
) -> list[ExchangeStatus]:
    """Every exchange, by name (none for a tenant-bound ``actor``)."""
    if _tenant_bound(actor):
        return []
    now = datetime.now(UTC)
    with db.sessions() as s:
        rows = s.execute(select(ExchangeRow).order_by(ExchangeRow.name)).scalars().all()
        return [_status(r, now, _feedback_counts(s, r.id)) for r in rows]


def exchange_status(
    db: Database, name: str, *, actor: audit.ActorLike | str | None = None
) -> ExchangeStatus:
    """One exchange's status (NotFoundError for a tenant-bound ``actor``)."""
    if _tenant_bound(actor):
        raise NotFoundError(f"no exchange {name!r}")
    with db.sessions() as s:
        row = get_row(s, name)
        return _status(row, datetime.now(UTC), _feedback_counts(s, row.id))


def set_enabled(
    db: Database, name: str, enabled: bool, *, actor: audit.ActorLike | str = audit.CLI_ACTOR
) -> ExchangeStatus:
    """Enable or disable scheduled syncs of ``name``."""
    with transaction(db.sessions) as s:
        row = get_row(s, name, for_update=True)
        row.enabled = enabled
        s.flush()
        audit.append(
            s,
            actor=actor,
            action="exchange.enable" if enabled else "exchange.disable",
            target=("exchange", name),
        )
        return _status(row, datetime.now(UTC))


def reset_exchange(
    db: Database, name: str, *, actor: audit.ActorLike | str = audit.CLI_ACTOR
) -> ExchangeStatus:
    """Forget the checkpoint: the next sync starts from the beginning (entries already
    applied are upserted again, so nothing is duplicated)."""
    with transaction(db.sessions) as s:
        row = get_row(s, name, for_update=True)
        old = row.checkpoint
        row.checkpoint = None
        row.source_time = None
        s.flush()
        audit.append(
            s,
            actor=actor,
            action="exchange.reset",
            target=("exchange", name),
            details={"checkpoint": old},
        )
        return _status(row, datetime.now(UTC))


def remove_exchange(
    db: Database, name: str, *, actor: audit.ActorLike | str = audit.CLI_ACTOR
) -> None:
    """Remove the configuration (the bank and its entries stay)."""
    with transaction(db.sessions) as s:
        row = get_row(s, name, for_update=True)
        s.delete(row)
        audit.append(s, actor=actor, action="exchange.remove", target=("exchange", name))
