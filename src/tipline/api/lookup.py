"""Matching for the HTTP layer: the per-process Matcher, tenant filtering, metrics.

The Matcher (:mod:`tipline.services.matching`) matches against every enabled bank and
applies allow banks for the caller's tenant (an allow bank only suppresses its own
tenant's matches); which of its matches a caller may see is the service's rule
(:mod:`tipline.services.matching.visibility`), applied here with a cached bank -> tenant
map.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence

from sqlalchemy.orm import Session

from tipline.api.context import ServiceContext
from tipline.services import banks
from tipline.services.auth import Principal
from tipline.services.matching import Matcher
from tipline.services.matching.match import Match
from tipline.services.matching.visibility import visible_matches
from tipline.signals.base import Signal

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
    tenants = banks.bank_tenants(ctx.db)
    ctx.services["bank_tenants"] = (now, tenants)
    return tenants


def visible(ctx: ServiceContext, who: Principal, matches: Sequence[Match]) -> list[Match]:
    """The matches ``who`` may see (:func:`visible_matches`), with this process's cached
    bank -> tenant map (re-read when a match names a bank it does not know)."""
    if who.tenant is None or not matches:
        return list(matches)
    tenants = bank_tenants(ctx)
    if any(m.bank not in tenants for m in matches):
        tenants = bank_tenants(ctx, force=True)
    return visible_matches(who, matches, tenants)


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
    for key, pk in banks.entry_numbers(ctx.db, by_bank).items():
        out[key] = pk
        cache[key] = (now, pk)
    return out
