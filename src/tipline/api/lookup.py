"""Matching for the HTTP layer: the per-process Matcher, tenant filtering, recording.

The Matcher (:mod:`tipline.services.matching`) matches against every enabled bank and
applies allow banks for the caller's tenant (an allow bank only suppresses its own
tenant's matches); the API keeps only matches in banks the caller's tenant may see, and
drops allow-bank suppression coming from a bank the caller cannot see (another
tenant's allow list must not change what this tenant is told).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.orm import Session
from ulid import ULID

from tipline.api.context import ServiceContext
from tipline.services import actions, input_limits
from tipline.services.auth import Principal, can_see_tenant
from tipline.services.matching import Matcher
from tipline.services.matching.match import Match
from tipline.signals.base import Signal
from tipline.store import submissions as sub_store
from tipline.store.bank_tables import BankEntryRow, BankRow
from tipline.store.db import transaction

#: Seconds a cached bank -> tenant map is trusted.
_TENANTS_TTL = 1.0
_LOCK = threading.Lock()
#: (bank, entry id) -> entry id number is cached this many seconds (ids never change;
#: a deleted entry's number is at worst reported this long after the delete).
_PK_TTL = 60.0
_PK_CACHE_MAX = 200_000


def matcher(ctx: ServiceContext) -> Matcher:
    """This process's Matcher (opened on first use, index files shared by workers)."""
    found = ctx.services.get("matcher")
    if isinstance(found, Matcher):
        return found
    with _LOCK:
        found = ctx.services.get("matcher")
        if not isinstance(found, Matcher):
            found = Matcher(
                ctx.db,
                ctx.settings.resolved_index_dir(),
                poll_interval=ctx.settings.match_poll_seconds,
            )
            ctx.services["matcher"] = found
        return found


def bank_tenants(ctx: ServiceContext, *, force: bool = False) -> dict[str, str | None]:
    """Bank name -> tenant (None = shared), cached for about a second."""
    cached = ctx.services.get("bank_tenants")
    now = time.monotonic()
    if not force and isinstance(cached, tuple) and now - cached[0] < _TENANTS_TTL:
        tenants: dict[str, str | None] = cached[1]
        return tenants
    with ctx.sessions() as session:
        tenants = {
            name: tenant for name, tenant in session.execute(select(BankRow.name, BankRow.tenant))
        }
    ctx.services["bank_tenants"] = (now, tenants)
    return tenants


def visible(ctx: ServiceContext, who: Principal, matches: Sequence[Match]) -> list[Match]:
    """The matches ``who`` may see (banks of its tenant or shared)."""
    if who.tenant is None or not matches:
        return list(matches)
    tenants = bank_tenants(ctx)
    if any(m.bank not in tenants for m in matches):
        tenants = bank_tenants(ctx, force=True)
    out = []
    for m in matches:
        if m.bank not in tenants or not can_see_tenant(who, tenants[m.bank]):
            continue
        if m.suppressed_by is not None:
            allow_bank = m.suppressed_by.rsplit("/", 1)[0]
            if allow_bank not in tenants or not can_see_tenant(who, tenants[allow_bank]):
                m = replace(m, suppressed_by=None, suppressed_reason=None)
        out.append(m)
    return out


def match_signals(
    ctx: ServiceContext,
    who: Principal,
    signals: Sequence[Signal],
    *,
    session: Session | None = None,
) -> list[Match]:
    """Matches of one item's signals visible to ``who``, best first (hits read in
    ``session`` when given)."""
    found = matcher(ctx).match_signals(signals, session=session, tenant=who.tenant)
    for s in signals:
        ctx.metrics.lookups.labels(s.type).inc()
    out = visible(ctx, who, found)
    for m in out:
        ctx.metrics.matches.labels(m.signal_type).inc()
    return out


def match_hash(
    ctx: ServiceContext,
    who: Principal,
    kind: str,
    value: str,
    *,
    entry_pks: dict[tuple[str, str], int] | None = None,
) -> list[Match]:
    """Matches of one hash (validated; HashFormatError) visible to ``who``; ``entry_pks``
    receives (bank, entry id) -> entry id number of the matches (see :func:`entry_pks`)."""
    found = matcher(ctx).match_hash(kind, value, entry_pks=entry_pks, tenant=who.tenant)
    ctx.metrics.lookups.labels(kind).inc()
    return visible(ctx, who, found)


def entry_pks(
    ctx: ServiceContext,
    pairs: Iterable[tuple[str, str]],
    *,
    known: dict[tuple[str, str], int] | None = None,
) -> dict[tuple[str, str], int]:
    """(bank, entry id) -> the entry's integer id (HMA's ``content_id``), cached.

    ``known`` holds numbers just read with the matches (:func:`match_hash`); only the
    pairs missing from it are looked up (cache, then database).
    """
    keys = set(pairs)
    if not keys:
        return {}
    if known:
        found = {k: known[k] for k in keys if k in known}
        if len(found) == len(keys):
            return found
        return found | entry_pks(ctx, keys - found.keys())
    cache: dict[tuple[str, str], tuple[float, int]] = ctx.services.setdefault("entry_pks", {})
    now = time.monotonic()
    out: dict[tuple[str, str], int] = {}
    by_bank: dict[str, set[str]] = {}
    for bank, entry_id in keys:
        hit = cache.get((bank, entry_id))
        if hit is not None and now - hit[0] < _PK_TTL:
            out[(bank, entry_id)] = hit[1]
        else:
            by_bank.setdefault(bank, set()).add(entry_id)
    if not by_bank:
        return out
    if len(cache) > _PK_CACHE_MAX:
        cache.clear()
    with ctx.sessions() as session:
        for bank, ids in by_bank.items():
            # (bank_id, entry_id) is the unique index: look up by both, never entry_id alone.
            rows = session.execute(
                select(BankEntryRow.entry_id, BankEntryRow.id)
                .join(BankRow, BankRow.id == BankEntryRow.bank_id)
                .where(BankRow.name == bank, BankEntryRow.entry_id.in_(sorted(ids)))
            ).all()
            for e, pk in rows:
                out[(bank, str(e))] = int(pk)
                cache[(bank, str(e))] = (now, int(pk))
    return out


def record_outcome(
    ctx: ServiceContext,
    who: Principal,
    matches: Sequence[Match],
    *,
    submission: dict[str, object] | None,
    signals: Sequence[Signal],
    session: Session | None = None,
) -> str | None:
    """Store the submission (when given), the match history and run the action rules.

    Returns the submission id (None without one). Suppressed matches are kept in the
    history but do not trigger actions. Written in ``session`` (the caller commits) when
    given, else in a transaction of its own.
    """
    if submission is None and not matches:
        return None
    if session is None:
        with transaction(ctx.sessions) as own:
            return _record(ctx, who, matches, submission, signals, own)
    return _record(ctx, who, matches, submission, signals, session)


def _record(
    ctx: ServiceContext,
    who: Principal,
    matches: Sequence[Match],
    submission: dict[str, object] | None,
    signals: Sequence[Signal],
    session: Session,
) -> str | None:
    """:func:`record_outcome`'s writes in ``session``."""
    active = [m for m in matches if m.suppressed_by is None]
    submission_id: str | None = None
    if submission is not None:
        input_limits.check_metadata(submission.get("metadata") or {})
        row = sub_store.create_submission(
            session,
            tenant=who.tenant,
            created_by=who.key_id,
            signals=[{"type": s.type, "value": s.value} for s in signals if s.type != "vpdq"],
            **submission,  # type: ignore[arg-type]
        )
        submission_id = row.id
    sub_store.record_matches(
        session,
        who.tenant,
        submission_id,
        [
            sub_store.MatchFact(
                bank=m.bank,
                entry_id=m.entry_id,
                signal_type=m.signal_type,
                distance=m.distance,
                query_value=m.query_value,
                labels=m.labels,
            )
            for m in matches
        ],
    )
    event = actions.MatchEvent(
        event_id=submission_id or str(ULID()),
        hits=[
            actions.MatchHit(
                bank=m.bank, signal_type=m.signal_type, distance=m.distance, entry_id=m.entry_id
            )
            for m in active
        ],
        content_id=str(submission["content_id"]) if submission else None,
        tenant=who.tenant,
    )
    actions.on_match(session, event, actor=who)
    return submission_id
