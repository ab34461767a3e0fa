"""API keys: creation, hashing, authentication, revocation, roles, tenants, CLI."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select, text

from _cli import run_tipline
from tipline.errors import AuthError, InputError, NotFoundError, PermissionDeniedError
from tipline.services import audit, auth
from tipline.services.auth import Permission, Principal, Role
from tipline.store.audit import AuditRecord
from tipline.store.auth import ApiKey
from tipline.store.db import make_engine, session_factory, transaction
from tipline.store.jobs import ReviewItem


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)  # db_url is migrated already
    yield eng
    eng.dispose()


def _create(engine: Engine, role: str = "matcher", tenant: str | None = None) -> auth.CreatedKey:
    with transaction(session_factory(engine)) as session:
        return auth.create_key(session, name="upload path", role=role, tenant=tenant)


def _auth(engine: Engine, presented: str | None) -> Principal:
    with transaction(session_factory(engine)) as session:
        return auth.authenticate(session, presented)


def test_create_and_authenticate(engine: Engine) -> None:
    key = _create(engine, "curator", tenant="acme")
    assert key.secret.startswith(f"tpl_{key.key_id}_") and len(key.secret) > 50
    principal = _auth(engine, key.secret)
    assert principal == Principal(key.key_id, Role.CURATOR, "acme")


def test_secret_is_stored_only_as_a_hash(engine: Engine) -> None:
    key = _create(engine)
    secret_part = key.secret.split("_", 2)[2]
    with engine.connect() as conn:
        dumped = " ".join(
            str(v) for row in conn.execute(text("SELECT * FROM api_keys")) for v in row
        )
        audit_rows = " ".join(r[0] for r in conn.execute(text("SELECT details FROM audit_log")))
    assert secret_part not in dumped and secret_part not in audit_rows
    with transaction(session_factory(engine)) as session:
        stored = session.execute(select(ApiKey)).scalar_one()
        assert len(stored.secret_sha256) == 64
        assert "secret" not in repr(stored)
        actions = session.execute(select(AuditRecord.action)).scalars().all()
    assert actions == ["apikey.create"]


@pytest.mark.parametrize(
    "presented",
    [None, "", "garbage", "tpl_", "tpl_abc_def", "xyz_000000000000_abc", "tpl_" + "a" * 300],
)
def test_malformed_keys_are_refused(engine: Engine, presented: str | None) -> None:
    with pytest.raises(AuthError):
        _auth(engine, presented)


def test_wrong_secret_unknown_id_and_revoked(engine: Engine) -> None:
    key = _create(engine)
    other = _create(engine)
    with pytest.raises(AuthError, match="invalid API key"):
        _auth(engine, key.secret[:-1] + ("A" if key.secret[-1] != "A" else "B"))
    # another key's secret with this key's id
    with pytest.raises(AuthError):
        _auth(engine, f"tpl_{key.key_id}_{other.secret.split('_', 2)[2]}")
    with pytest.raises(AuthError):
        _auth(engine, f"tpl_ffffffffffff_{key.secret.split('_', 2)[2]}")
    with transaction(session_factory(engine)) as session:
        auth.revoke_key(session, key.key_id)
        auth.revoke_key(session, key.key_id)  # idempotent
    with pytest.raises(AuthError):
        _auth(engine, key.secret)
    assert _auth(engine, other.secret).key_id == other.key_id
    with transaction(session_factory(engine)) as session, pytest.raises(NotFoundError):
        auth.revoke_key(session, "000000000000")


def test_unknown_role_is_an_input_error(engine: Engine) -> None:
    with pytest.raises(InputError, match="hasher, matcher"):
        _create(engine, "root")


#: The permission matrix, spelled out independently of ROLE_PERMISSIONS.
EXPECTED = {
    Role.HASHER: {"hash"},
    Role.MATCHER: {"hash", "match", "submit"},
    Role.CURATOR: {"hash", "match", "bank.read", "bank.write"},
    Role.REVIEWER: {"review", "bank.read", "evidence.read", "report"},
    Role.ANALYST: {"intake.read", "intake.decide", "bank.read", "evidence.read", "route"},
    Role.ADMIN: {p.value for p in Permission},
}


@pytest.mark.parametrize("role", list(Role))
def test_permission_matrix(role: Role) -> None:
    principal = Principal("k", role)
    for permission in Permission:
        assert principal.can(permission) == (permission.value in EXPECTED[role])
        if permission.value not in EXPECTED[role]:
            with pytest.raises(PermissionDeniedError):
                principal.require(permission)
    assert auth.ROLE_PERMISSIONS[Role.ADMIN] >= auth.ROLE_PERMISSIONS[role]


def test_only_admins_manage_keys(engine: Engine) -> None:
    with transaction(session_factory(engine)) as session:
        with pytest.raises(PermissionDeniedError):
            auth.create_key(session, name="x", role="admin", actor=Principal("k", Role.CURATOR))
        tenant_admin = Principal("k", Role.ADMIN, "acme")
        with pytest.raises(PermissionDeniedError):
            auth.create_key(session, name="x", role="hasher", tenant="other", actor=tenant_admin)
        auth.create_key(session, name="x", role="hasher", tenant="acme", actor=tenant_admin)
        auth.create_key(session, name="y", role="hasher", tenant="other")
        seen = auth.list_keys(session, actor=tenant_admin)
    assert [k["tenant"] for k in seen] == ["acme"]


@pytest.mark.parametrize(
    ("principal_tenant", "resource_tenant", "write", "allowed"),
    [
        (None, None, True, True),
        (None, "acme", True, True),
        ("acme", "acme", True, True),
        ("acme", "other", False, False),
        ("acme", None, False, True),
        ("acme", None, True, False),
    ],
)
def test_tenant_rule(
    principal_tenant: str | None, resource_tenant: str | None, write: bool, allowed: bool
) -> None:
    principal = Principal("k", Role.CURATOR, principal_tenant)
    assert auth.can_see_tenant(principal, resource_tenant, write=write) is allowed
    if not allowed:
        with pytest.raises(NotFoundError):
            auth.require_tenant(principal, resource_tenant, write=write)


def test_tenant_clause_filters_queries(engine: Engine) -> None:
    from tipline.store.base import utcnow

    with transaction(session_factory(engine)) as session:
        for i, tenant in enumerate(["acme", "other", None, "acme"]):
            session.add(
                ReviewItem(
                    id=f"r{i}", tenant=tenant, event_id=f"e{i}", bank="b", details="{}",
                    status="pending", created_at=utcnow(),
                )
            )  # fmt: skip
    cases = {
        Principal("k", Role.REVIEWER, "acme"): ({"r0", "r3"}, {"r0", "r2", "r3"}),
        Principal("k", Role.REVIEWER, None): ({"r0", "r1", "r2", "r3"},) * 2,
    }
    with transaction(session_factory(engine)) as session:
        for principal, (own, with_shared) in cases.items():
            for shared, expected in ((False, own), (True, with_shared)):
                clause = auth.tenant_clause(principal, ReviewItem.tenant, include_shared=shared)
                got = set(session.execute(select(ReviewItem.id).where(clause)).scalars())
                # brute-force twin: the per-row rule
                rows = session.execute(select(ReviewItem.id, ReviewItem.tenant)).all()
                brute = {
                    rid for rid, t in rows
                    if auth.can_see_tenant(principal, t) and (shared or t is not None
                                                              or principal.tenant is None)
                }  # fmt: skip
                assert got == expected == brute


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``tipline ARGS`` in-process, through the console script's ``main``."""
    return run_tipline(args, env=dict(os.environ, TIPLINE_DATABASE_URL=url))


def test_cli_create_list_revoke(engine: Engine, db_url: str) -> None:
    created = _cli(db_url, "apikey", "create", "--name", "intake", "--role", "matcher",
                   "--tenant", "acme")  # fmt: skip
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("tpl_") and "cannot be shown again" in created.stderr
    principal = _auth(engine, secret)
    assert principal.role is Role.MATCHER and principal.tenant == "acme"
    listed = _cli(db_url, "apikey", "list")
    assert listed.returncode == 0 and principal.key_id in listed.stdout
    assert secret.split("_", 2)[2] not in listed.stdout + listed.stderr
    assert "active" in listed.stdout
    assert _cli(db_url, "apikey", "revoke", principal.key_id).returncode == 0
    with pytest.raises(AuthError):
        _auth(engine, secret)
    assert "revoked" in _cli(db_url, "apikey", "list").stdout
    bad = _cli(db_url, "apikey", "create", "--name", "x", "--role", "root")
    assert bad.returncode != 0
    with transaction(session_factory(engine)) as session:
        assert audit.verify(session).ok


def test_cli_revoke_accepts_the_whole_key(engine: Engine, db_url: str) -> None:
    key = _create(engine)
    revoked = _cli(db_url, "apikey", "revoke", key.secret)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stderr.strip() == f"revoked key {key.key_id}"
    with pytest.raises(AuthError):
        _auth(engine, key.secret)
    secret_part = key.secret.split("_", 2)[2]
    missing = _cli(db_url, "apikey", "revoke", f"tpl_ffffffffffff_{secret_part}")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: no API key with id 'ffffffffffff'"
    with transaction(session_factory(engine)) as session:
        details = " ".join(str(r.details) for r in session.execute(select(AuditRecord)).scalars())
    assert secret_part not in details


def test_demo_start_replaces_its_key(engine: Engine, db_url: str) -> None:
    from tipline.config import Settings
    from tipline.demo import seed_demo
    from tipline.services.database import open_database

    mine = _create(engine)  # a key of another name survives
    settings = Settings(database_url=db_url)
    db = open_database(db_url, settings=settings)
    try:
        first = seed_demo(settings, db)
        second = seed_demo(settings, db)
    finally:
        db.close()
    with transaction(session_factory(engine)) as session:
        keys = auth.list_keys(session)
    active = [k for k in keys if k["revoked_at"] is None]
    assert sorted(k["name"] for k in active) == ["demo", "upload path"]
    assert mine.key_id in {k["key_id"] for k in active}
    demo_secret = second.split("(shown once): ", 1)[1].split()[0]
    assert _auth(engine, demo_secret).role is Role.ADMIN
    with pytest.raises(AuthError):
        _auth(engine, first.split("(shown once): ", 1)[1].split()[0])
