"""Which matches a caller may be told about: the tenant rule of matching, in one place
for every adapter (HTTP API, CLI, scans).

A match is visible when its bank is the caller's tenant's or shared; a suppression by an
allow bank the caller cannot see is dropped from the match (another tenant's allow list
must not change what this tenant is told). Callers without a tenant (admin keys, the
CLI) see every match as the Matcher answered it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from tipline.services.auth import Principal, can_see_tenant
from tipline.services.matching.match import Match


def visible_matches(
    who: Principal, matches: Sequence[Match], tenants: Mapping[str, str | None]
) -> list[Match]:
    """The ``matches`` ``who`` may see, given each bank's tenant (``tenants``: bank name
    -> tenant, None = shared; a bank missing from it is not visible)."""
    if who.tenant is None:
        return list(matches)
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
