"""The tenant rule of matching (services/matching/visibility): one home for the API, the
CLI and scans; checked against a brute-force statement of the rule."""

from __future__ import annotations

import itertools

from tipline.services.auth import Principal, Role
from tipline.services.matching.match import Match
from tipline.services.matching.visibility import visible_matches

#: bank -> tenant (None: shared); "ghost" is not in the map (deleted since the match)
TENANTS: dict[str, str | None] = {"shared": None, "a-bank": "a", "b-bank": "b", "a-allow": "a"}
BANKS = ("shared", "a-bank", "b-bank", "ghost")
ALLOWS = (None, "a-allow/fp1", "shared/fp2", "b-bank/fp3", "ghost/fp4")


def _matches() -> list[Match]:
    return [
        Match(bank, f"e{i}", "pdq", i, suppressed_by=allow, suppressed_reason=allow and "fp")
        for i, (bank, allow) in enumerate(itertools.product(BANKS, ALLOWS))
    ]


def _sees(tenant: str | None, bank: str) -> bool:
    return tenant is None or (bank in TENANTS and TENANTS[bank] in (None, tenant))


def test_each_caller_sees_its_tenants_and_shared_banks_and_only_their_suppressions() -> None:
    matches = _matches()
    for tenant in (None, "a", "b", "c"):
        who = Principal(key_id="k", role=Role.MATCHER, tenant=tenant)
        got = visible_matches(who, matches, TENANTS)
        expected = []
        for m in matches:
            if not _sees(tenant, m.bank):
                continue
            if m.suppressed_by and not _sees(tenant, m.suppressed_by.split("/")[0]):
                m = Match(m.bank, m.entry_id, m.signal_type, m.distance)
            expected.append(m)
        assert got == expected, tenant
    assert visible_matches(Principal.cli(), matches, {}) == matches  # the CLI and scans
