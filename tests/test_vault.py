"""Evidence vault on SQLite and PostgreSQL: round trips, wrong keys and damaged files
are refused with a clear message (and audited), retention and legal holds decide what
the purge job (run by the real job runner) erases, key rotation rewraps without
touching the files, and every action leaves an audit record."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

from tipline.errors import (
    ConflictError,
    EvidenceIntegrityError,
    NotFoundError,
    PermissionDeniedError,
    VaultKeyError,
)
from tipline.services import audit, jobs
from tipline.services import vault as v
from tipline.services.auth import Principal, Role
from tipline.services.jobs import JobRunner
from tipline.services.vault.blobs import BlobStore
from tipline.services.vault.keys import Keyring, MasterKey
from tipline.store.audit import AuditRecord
from tipline.store.db import make_engine, session_factory, transaction, upgrade
from tipline.store.vault import EvidenceItemRow

ADMIN = Principal.cli()
REVIEWER = Principal("rev000000001", Role.REVIEWER)
MATCHER = Principal("mat000000001", Role.MATCHER)
T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def key() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def vault(tmp_path: Path, key: MasterKey, clock: Clock) -> v.Vault:
    return v.Vault(BlobStore(tmp_path / "vault"), Keyring(key), chunk_size=4096, clock=clock)


def _store(
    sessions: sessionmaker[Session], vault: v.Vault, data: bytes, **kwargs: object
) -> v.EvidenceInfo:
    with transaction(sessions) as session:
        return v.store(
            session,
            vault,
            data,
            kind=kwargs.pop("kind", v.EvidenceKind.MEDIA),  # type: ignore[arg-type]
            actor=kwargs.pop("actor", ADMIN),  # type: ignore[arg-type]
            **kwargs,  # type: ignore[arg-type]
        )


def _actions(sessions: sessionmaker[Session], item_id: str | None = None) -> list[str]:
    with sessions() as session:
        query = select(AuditRecord.action).order_by(AuditRecord.seq)
        if item_id is not None:
            query = query.where(AuditRecord.target_id == item_id)
        return list(session.execute(query).scalars())


def test_round_trip_by_file_memory_and_stream(
    sessions: sessionmaker[Session], vault: v.Vault, tmp_path: Path
) -> None:
    data = os.urandom(3 * 4096 + 17)
    info = _store(sessions, vault, data, media_type="image/jpeg", filename="a.jpg")
    assert info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.retain_until == T0 + timedelta(days=365)
    # the file on disk is ciphertext
    blob = vault.blobs.path(info.id).read_bytes()
    assert data[:64] not in blob and len(blob) == 64 + len(data) + 4 * 16
    assert (vault.blobs.path(info.id).stat().st_mode & 0o777) == 0o600
    out = tmp_path / "out.bin"
    v.read_to_file(sessions, vault, info.id, out, actor=REVIEWER)
    assert out.read_bytes() == data
    assert v.read_bytes(sessions, vault, info.id, actor=ADMIN) == data
    got, chunks = v.open_content(sessions, vault, info.id, actor=ADMIN)
    assert b"".join(chunks) == data and got.sha256 == info.sha256
    shown = v.show(sessions, info.id, actor=REVIEWER)
    assert shown.media_type == "image/jpeg" and not shown.held
    assert [i.id for i in v.list_items(sessions, actor=REVIEWER)] == [info.id]
    assert _actions(sessions, info.id) == [
        "vault.store",
        "vault.read",
        "vault.read",
        "vault.read",
        "vault.show",
    ]
    assert "vault.list" in _actions(sessions)


def test_rows_and_audit_never_hold_key_material(
    sessions: sessionmaker[Session], vault: v.Vault, key: MasterKey
) -> None:
    info = _store(sessions, vault, b"x" * 100)
    with sessions() as session:
        details = " ".join(session.execute(select(AuditRecord.details)).scalars())
        row = session.get(EvidenceItemRow, info.id)
        assert row is not None and row.wrapped_key is not None
    assert key.to_base64() not in details
    assert key.secret not in row.wrapped_key
    assert row.key_id == key.key_id and key.key_id in details
    assert "wrapped" not in repr(row)


def test_wrong_master_key_is_named_and_nothing_is_returned(
    sessions: sessionmaker[Session], vault: v.Vault, tmp_path: Path, key: MasterKey
) -> None:
    info = _store(sessions, vault, b"secret evidence")
    other = v.Vault(vault.blobs, Keyring(MasterKey.generate()), chunk_size=4096)
    out = tmp_path / "out.bin"
    with pytest.raises(VaultKeyError, match=f"wrapped by master key {key.key_id}"):
        v.read_to_file(sessions, other, info.id, out, actor=ADMIN)
    assert not out.exists()
    no_key = v.Vault(vault.blobs, None)
    with pytest.raises(VaultKeyError, match="TIPLINE_VAULT_MASTER_KEY"):
        v.read_bytes(sessions, no_key, info.id, actor=ADMIN)
    # a key with the right id but altered wrapped key: caught by the wrap's tag
    with transaction(sessions) as session:
        row = session.get(EvidenceItemRow, info.id)
        assert row is not None and row.wrapped_key is not None
        row.wrapped_key = row.wrapped_key[:-1] + bytes([row.wrapped_key[-1] ^ 1])
    with pytest.raises(EvidenceIntegrityError, match="wrapped data key fails"):
        v.read_bytes(sessions, vault, info.id, actor=ADMIN)


@pytest.mark.parametrize("where", ["header", "body", "tag"])
def test_flipped_byte_on_disk_is_detected_audited_and_leaves_no_file(
    sessions: sessionmaker[Session], vault: v.Vault, tmp_path: Path, where: str
) -> None:
    info = _store(sessions, vault, os.urandom(10_000))
    path = vault.blobs.path(info.id)
    blob = bytearray(path.read_bytes())
    position = {"header": 20, "body": 64 + 4096 + 16 + 5, "tag": len(blob) - 1}[where]
    blob[position] ^= 0x01
    path.write_bytes(bytes(blob))
    out = tmp_path / "out.bin"
    with pytest.raises(EvidenceIntegrityError, match=f"item {info.id}: .*chunk"):
        v.read_to_file(sessions, vault, info.id, out, actor=ADMIN)
    assert not out.exists() and not list(tmp_path.glob(".out.bin*"))
    assert _actions(sessions, info.id)[-1] == "vault.integrity_failure"
    report = v.verify(sessions, vault, actor=ADMIN)
    assert not report.ok and [i for i, _ in report.failures] == [info.id]


def test_truncated_file_is_named_even_at_a_chunk_boundary(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    info = _store(sessions, vault, os.urandom(3 * 4096))
    path = vault.blobs.path(info.id)
    blob = path.read_bytes()
    path.write_bytes(blob[: 64 + 2 * (4096 + 16)])
    with pytest.raises(EvidenceIntegrityError, match="truncated"):
        v.read_bytes(sessions, vault, info.id, actor=ADMIN)
    # even with the recorded size forged to match, the cut is caught by the final flag
    with transaction(sessions) as session:
        row = session.get(EvidenceItemRow, info.id)
        assert row is not None
        row.blob_size = 64 + 2 * (4096 + 16)
    with pytest.raises(EvidenceIntegrityError, match="final chunk 1 failed"):
        v.read_bytes(sessions, vault, info.id, actor=ADMIN)


def test_stream_fails_before_the_damaged_chunk_is_yielded(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    data = os.urandom(3 * 4096)
    info = _store(sessions, vault, data)
    path = vault.blobs.path(info.id)
    blob = bytearray(path.read_bytes())
    blob[64 + 2 * (4096 + 16) + 1] ^= 1  # inside the last chunk
    path.write_bytes(bytes(blob))
    _info, chunks = v.open_content(sessions, vault, info.id, actor=ADMIN)
    got = []
    with pytest.raises(EvidenceIntegrityError, match="final chunk 2"):
        for chunk in chunks:
            got.append(chunk)
    # only authenticated chunks came out (the last good one is held back until the
    # item's digests are checked)
    assert b"".join(got) == data[:4096]
    assert _actions(sessions, info.id)[-1] == "vault.integrity_failure"


def test_swapped_files_between_items_are_detected(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    a = _store(sessions, vault, b"a" * 5000)
    b = _store(sessions, vault, b"b" * 5000)
    pa, pb = vault.blobs.path(a.id), vault.blobs.path(b.id)
    blob_a, blob_b = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(blob_b)
    pb.write_bytes(blob_a)
    for item in (a, b):
        with pytest.raises(EvidenceIntegrityError, match="swapped or misplaced"):
            v.read_bytes(sessions, vault, item.id, actor=ADMIN)
    # swapping the rows' wrapped keys instead is caught by the key wrap's binding
    pa.write_bytes(blob_a)
    pb.write_bytes(blob_b)
    with transaction(sessions) as session:
        ra, rb = session.get(EvidenceItemRow, a.id), session.get(EvidenceItemRow, b.id)
        assert ra is not None and rb is not None
        ra.wrapped_key, rb.wrapped_key = rb.wrapped_key, ra.wrapped_key
    with pytest.raises(EvidenceIntegrityError, match="altered or moved"):
        v.read_bytes(sessions, vault, a.id, actor=ADMIN)


@pytest.mark.parametrize("damage", ["header", "body", "tag", "truncated", "swapped", "digest"])
def test_the_reports_read_path_detects_damage_without_the_file_digest(
    sessions: sessionmaker[Session], vault: v.Vault, damage: str
) -> None:
    """A report's upload reads through VaultEvidence.opener, which skips the encrypted
    file's SHA-256: every kind of damage is still refused (AES-GCM per chunk, the
    plaintext's SHA-256 against the row)."""
    from tipline.services.vault.evidence import VaultEvidence

    data = os.urandom(3 * 4096)
    info = _store(sessions, vault, data)
    other = _store(sessions, vault, os.urandom(3 * 4096))
    path = vault.blobs.path(info.id)
    blob = bytearray(path.read_bytes())
    with transaction(sessions) as session:
        assert VaultEvidence(vault).opener(session, info.id)() == data
    if damage in ("header", "body", "tag"):
        blob[{"header": 20, "body": 64 + 4096 + 16 + 5, "tag": len(blob) - 1}[damage]] ^= 1
        path.write_bytes(bytes(blob))
    elif damage == "truncated":
        path.write_bytes(bytes(blob[: 64 + 2 * (4096 + 16)]))
        with transaction(sessions) as session:  # the recorded size forged to match
            row = session.get(EvidenceItemRow, info.id)
            assert row is not None
            row.blob_size = 64 + 2 * (4096 + 16)
    elif damage == "swapped":
        path.write_bytes(vault.blobs.path(other.id).read_bytes())
    else:
        with transaction(sessions) as session:
            row = session.get(EvidenceItemRow, info.id)
            assert row is not None
            row.sha256 = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(EvidenceIntegrityError), transaction(sessions) as session:
        VaultEvidence(vault).opener(session, info.id)()


def test_edited_digest_in_the_row_is_detected(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    info = _store(sessions, vault, b"data")
    with transaction(sessions) as session:
        row = session.get(EvidenceItemRow, info.id)
        assert row is not None
        row.sha256 = "0" * 64
    with pytest.raises(EvidenceIntegrityError, match="content SHA-256"):
        v.read_bytes(sessions, vault, info.id, actor=ADMIN)


def test_store_rolled_back_leaves_no_file(sessions: sessionmaker[Session], vault: v.Vault) -> None:
    with pytest.raises(RuntimeError), transaction(sessions) as session:
        info = v.store(session, vault, b"abc", kind=v.EvidenceKind.MEDIA, actor=ADMIN)
        assert vault.blobs.path(info.id).exists()
        raise RuntimeError("caller fails after storing")
    assert list(vault.blobs.ids()) == []
    with sessions() as session:
        assert session.execute(select(EvidenceItemRow)).first() is None


def test_reading_needs_the_role_and_the_tenant(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    acme = Principal("acme00000001", Role.REVIEWER, "acme")
    other = Principal("othr00000001", Role.REVIEWER, "other")
    info = _store(sessions, vault, b"acme's evidence", actor=Principal("m", Role.MATCHER, "acme"))
    assert info.tenant == "acme"
    assert v.read_bytes(sessions, vault, info.id, actor=acme) == b"acme's evidence"
    with pytest.raises(PermissionDeniedError):
        v.read_bytes(sessions, vault, info.id, actor=MATCHER)
    with pytest.raises(NotFoundError):
        v.read_bytes(sessions, vault, info.id, actor=other)
    assert v.list_items(sessions, actor=other) == []
    untenanted = _store(sessions, vault, b"cli evidence")
    with pytest.raises(NotFoundError):
        v.show(sessions, untenanted.id, actor=acme)
    with pytest.raises(PermissionDeniedError):
        v.place_hold(sessions, info.id, reason="case 1", actor=acme)
    with pytest.raises(PermissionDeniedError):
        v.purge(sessions, vault, actor=REVIEWER)


def _run_purge_job(engine: Engine, vault: v.Vault) -> None:
    with transaction(session_factory(engine)) as session:
        v.schedule_purge(session, at=datetime.now(UTC))
    runner = JobRunner(engine, {v.PURGE_JOB_KIND: v.purge_handler(engine, vault)})
    assert runner.run_once() == 1
    with session_factory(engine)() as session:
        assert jobs.counts(session)["done"] >= 1


def test_purge_job_erases_expired_items_and_keeps_held_ones(
    engine: Engine, sessions: sessionmaker[Session], vault: v.Vault, clock: Clock
) -> None:
    expired = _store(sessions, vault, b"old")
    held = _store(sessions, vault, b"held")
    hold = v.place_hold(sessions, held.id, reason="subpoena 2026-17", actor=ADMIN)
    clock.now = T0 + timedelta(days=200)
    young = _store(sessions, vault, b"young")
    clock.now = T0 + timedelta(days=366)
    _run_purge_job(engine, vault)
    assert not vault.blobs.path(expired.id).exists()
    assert vault.blobs.path(held.id).exists() and vault.blobs.path(young.id).exists()
    gone = v.show(sessions, expired.id, actor=ADMIN)
    assert gone.purged_at == clock.now and gone.purged_by == "worker"
    with sessions() as session:
        row = session.get(EvidenceItemRow, expired.id)
        assert row is not None and row.wrapped_key is None  # crypto-shredded
    with pytest.raises(ConflictError, match="purged"):
        v.read_bytes(sessions, vault, expired.id, actor=ADMIN)
    assert "vault.purge" in _actions(sessions, expired.id)
    assert "vault.purge" not in _actions(sessions, held.id)
    # the next day's run is scheduled
    with sessions() as session:
        assert jobs.counts(session)["pending"] == 1
    # released: the next purge erases it
    v.release_hold(sessions, held.id, actor=ADMIN, hold_id=hold.id)
    report = v.purge(sessions, vault, actor=ADMIN)
    assert report.purged == [held.id] and report.held == 0
    assert v.read_bytes(sessions, vault, young.id, actor=ADMIN) == b"young"
    assert _actions(sessions, held.id)[-3:] == ["vault.hold", "vault.release", "vault.purge"]


def test_report_sets_retention_from_the_report_and_extend_only_grows(
    sessions: sessionmaker[Session], vault: v.Vault, clock: Clock
) -> None:
    info = _store(sessions, vault, b"<report/>", kind=v.EvidenceKind.REPORT_XML)
    reported = T0 + timedelta(days=30)
    with transaction(sessions) as session:
        v.mark_reported(
            session, vault, [info.id], report_id="R-1", reported_at=reported, actor=ADMIN
        )
    shown = v.show(sessions, info.id, actor=ADMIN)
    assert shown.report_id == "R-1" and shown.retain_until == reported + timedelta(days=365)
    with pytest.raises(ConflictError, match="only be extended"):
        v.extend_retention(sessions, info.id, until=T0 + timedelta(days=100), actor=ADMIN)
    later = T0 + timedelta(days=1000)
    assert v.extend_retention(sessions, info.id, until=later, actor=ADMIN).retain_until == later
    clock.now = T0 + timedelta(days=999)
    assert v.purge(sessions, vault, actor=ADMIN).purged == []
    clock.now = later
    assert v.purge(sessions, vault, actor=ADMIN).purged == [info.id]
    assert "vault.reported" in _actions(sessions, info.id)
    assert "vault.extend" in _actions(sessions, info.id)


def test_holds_are_counted_released_one_by_one_and_refused_when_none(
    sessions: sessionmaker[Session], vault: v.Vault, clock: Clock
) -> None:
    info = _store(sessions, vault, b"x")
    first = v.place_hold(sessions, info.id, reason="case A", actor=ADMIN)
    v.place_hold(sessions, info.id, reason="case B", actor=ADMIN)
    v.release_hold(sessions, info.id, hold_id=first.id, actor=ADMIN)
    assert v.show(sessions, info.id, actor=ADMIN).held
    clock.now = T0 + timedelta(days=400)
    report = v.purge(sessions, vault, actor=ADMIN)
    assert report.purged == [] and report.held == 1
    assert len(v.release_hold(sessions, info.id, actor=ADMIN)) == 1
    with pytest.raises(ConflictError, match="no active"):
        v.release_hold(sessions, info.id, actor=ADMIN)


def test_rotation_rewraps_without_touching_files(
    sessions: sessionmaker[Session], vault: v.Vault, key: MasterKey
) -> None:
    items = [_store(sessions, vault, os.urandom(5000 + i)) for i in range(5)]
    before = {i.id: vault.blobs.path(i.id).read_bytes() for i in items}
    mtimes = {i.id: vault.blobs.path(i.id).stat().st_mtime_ns for i in items}
    new = MasterKey.generate()
    seen: list[tuple[int, int]] = []
    report = v.rotate_key(
        sessions, vault, new, actor=ADMIN, progress=lambda d, t: seen.append((d, t))
    )
    assert report.rewrapped == 5 and report.already == 0 and not report.failures
    assert seen[-1] == (5, 5)
    assert {i.id: vault.blobs.path(i.id).read_bytes() for i in items} == before
    assert {i.id: vault.blobs.path(i.id).stat().st_mtime_ns for i in items} == mtimes
    new_vault = v.Vault(vault.blobs, Keyring(new), chunk_size=4096)
    for item in items:
        assert (
            hashlib.sha256(v.read_bytes(sessions, new_vault, item.id, actor=ADMIN)).hexdigest()
            == item.sha256
        )
        with pytest.raises(VaultKeyError, match=f"configured key is {key.key_id}"):
            v.read_bytes(sessions, vault, item.id, actor=ADMIN)
    # a rerun (e.g. after an interruption) finds nothing left to do
    again = v.rotate_key(sessions, v.Vault(vault.blobs, Keyring(key, (new,))), new, actor=ADMIN)
    assert again.rewrapped == 0 and again.already == 5
    assert v.verify(sessions, new_vault, actor=ADMIN).ok
    assert "vault.rotate_key" in _actions(sessions)


def test_verify_checks_everything_and_finds_stray_files(
    sessions: sessionmaker[Session], vault: v.Vault, clock: Clock
) -> None:
    items = [_store(sessions, vault, os.urandom(n)) for n in (0, 1, 4096, 9000)]
    progress: list[int] = []
    report = v.verify(sessions, vault, actor=ADMIN, progress=lambda d, _t: progress.append(d))
    assert report.ok and report.checked == 4 and report.bytes_checked == 1 + 4096 + 9000
    assert progress == [1, 2, 3, 4]
    stray = vault.blobs.path("01JDXSTRAY0000000000000000")
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"junk")
    vault.blobs.path(items[2].id).unlink()
    report = v.verify(sessions, vault, actor=ADMIN)
    assert not report.ok
    assert report.stray_files == ["01JDXSTRAY0000000000000000"]
    assert report.failures == [(items[2].id, f"item {items[2].id}: its file is missing")]
    with sessions() as session:
        last = (
            session.execute(
                select(AuditRecord)
                .where(AuditRecord.action == "vault.verify")
                .order_by(AuditRecord.seq.desc())
            )
            .scalars()
            .first()
        )
        assert last is not None
        assert json.loads(last.details)["failed"] == 1
    # purge removes the stray file once it is older than the grace period
    clock.now = datetime.now(UTC) + timedelta(days=2)
    assert clock.now < items[0].retain_until
    assert v.purge(sessions, vault, actor=ADMIN).files_removed == 1
    assert not stray.exists()


def test_audit_chain_still_verifies(sessions: sessionmaker[Session], vault: v.Vault) -> None:
    info = _store(sessions, vault, b"x")
    v.read_bytes(sessions, vault, info.id, actor=ADMIN)
    v.place_hold(sessions, info.id, reason="r", actor=ADMIN)
    with sessions() as session:
        assert audit.verify(session).ok


def test_migration_downgrades_and_upgrades(engine: Engine) -> None:
    from alembic import command
    from alembic.config import Config

    from tipline.store.db import _MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "vault@base")
    assert "vault_items" not in inspect(engine).get_table_names()
    assert "audit_log" in inspect(engine).get_table_names()
    upgrade(engine)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM vault_items")).scalar() == 0


def test_reports_evidence_interface(sessions: sessionmaker[Session], vault: v.Vault) -> None:
    from tipline.services.reports.evidence import EvidenceFiles
    from tipline.services.vault.evidence import VaultEvidence

    evidence: EvidenceFiles = VaultEvidence(vault)
    acme = Principal("m", Role.MATCHER, "acme")
    first = _store(sessions, vault, b"photo 1", actor=acme, submission_id="S1", filename="1.jpg")
    _store(sessions, vault, b"other tenant", submission_id="S1")
    _store(sessions, vault, b"<xml/>", actor=acme, submission_id="S1", kind=v.EvidenceKind.OTHER)
    with transaction(sessions) as session:
        files = evidence.media_of(session, "acme", "S1")
        assert [(f.evidence_id, f.file_name, f.size) for f in files] == [(first.id, "1.jpg", 7)]
        assert evidence.read(session, first.id) == b"photo 1"
        xml_id = evidence.keep_report_xml(session, "acme", "R-9", b"<report/>")
        assert xml_id is not None
        evidence.mark_reported(session, [first.id, xml_id], "R-9", T0 + timedelta(days=3))
    kept = v.show(sessions, xml_id, actor=ADMIN)
    assert kept.kind == "report_xml" and kept.report_id == "R-9" and kept.tenant == "acme"
    assert v.read_bytes(sessions, vault, xml_id, actor=ADMIN) == b"<report/>"
    assert v.show(sessions, first.id, actor=ADMIN).retain_until == T0 + timedelta(days=368)
    assert _actions(sessions, first.id) == [
        "vault.store",
        "vault.read",
        "vault.reported",
        "vault.show",
    ]


def test_report_documents_kept_together_are_synced_audited_and_rolled_back(
    sessions: sessionmaker[Session], vault: v.Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tipline.services.vault import blobs
    from tipline.services.vault.evidence import VaultEvidence

    evidence = VaultEvidence(vault)
    synced: list[str] = []
    real = blobs._fsync_file
    monkeypatch.setattr(blobs, "_fsync_file", lambda p: (synced.append(p.name), real(p)))
    docs = [("acme", f"R-{i}", f"<report n='{i}'/>".encode()) for i in range(5)]
    with transaction(sessions) as session:
        ids = evidence.keep_report_xmls(session, docs)
    assert len(set(ids)) == 5 and sorted(synced) == sorted(f"{i}{blobs.SUFFIX}" for i in ids)
    for (tenant, report_id, xml), item in zip(docs, ids, strict=True):
        assert item is not None
        kept = v.show(sessions, item, actor=ADMIN)
        assert (kept.kind, kept.report_id, kept.tenant) == ("report_xml", report_id, tenant)
        assert v.read_bytes(sessions, vault, item, actor=ADMIN) == xml
        assert _actions(sessions, item)[0] == "vault.store"
    # a rolled-back batch leaves no file and no row
    before = set(vault.blobs.ids())
    with pytest.raises(RuntimeError), transaction(sessions) as session:
        evidence.keep_report_xmls(session, docs[:2])
        raise RuntimeError("the report rows failed")
    assert set(vault.blobs.ids()) == before
    # a file lost before its sync is refused, not registered
    with pytest.raises(EvidenceIntegrityError), transaction(sessions) as session:
        sealed = v.seal(session, vault, b"<report/>", sync=False)
        vault.blobs.path(sealed.item_id).unlink()
        v.sync_files(vault, [(sealed.item_id, sealed.sealed.blob_size)])
    with sessions() as session:
        assert audit.verify(session).ok


def test_keep_for_review_stores_once_per_match(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    with transaction(sessions) as session:
        none = v.keep_for_review(session, vault, b"img", review_item_ids=[], actor=MATCHER)
        kept = v.keep_for_review(
            session,
            vault,
            b"img",
            review_item_ids=["R1", "R2"],
            actor=MATCHER,
            submission_id="S1",
            content_id="c-1",
        )
    assert none is None and kept is not None
    shown = v.show(sessions, kept.id, actor=ADMIN)
    assert (shown.review_item_id, shown.submission_id, shown.content_id) == ("R1", "S1", "c-1")
    assert shown.meta["review_items"] == ["R1", "R2"] and shown.stored_by == MATCHER.key_id
    assert list(vault.blobs.ids()) == [kept.id]


def test_without_a_master_key_review_media_is_not_kept_and_that_is_audited(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    keyless = v.Vault(vault.blobs, None)
    with transaction(sessions) as session:
        kept = v.keep_for_review(
            session, keyless, b"img", review_item_ids=["R1"], actor=MATCHER, submission_id="S1"
        )
    assert kept is None and list(vault.blobs.ids()) == []
    with sessions() as session:
        record = session.execute(
            select(AuditRecord).where(AuditRecord.action == "vault.not_kept")
        ).scalar_one()
    assert record.target_id == "R1" and "no vault master key" in record.details


def test_sealed_before_the_match_is_registered_or_dropped(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    with transaction(sessions) as session:
        unused = v.seal(session, vault, b"no review")
        assert vault.blobs.path(unused.item_id).exists()
        assert v.keep_for_review(session, vault, unused, review_item_ids=[], actor=MATCHER) is None
        assert not vault.blobs.path(unused.item_id).exists()
        used = v.seal(session, vault, b"to review")
        kept = v.keep_for_review(session, vault, used, review_item_ids=["R9"], actor=MATCHER)
    assert kept is not None and kept.id == used.item_id
    assert v.read_bytes(sessions, vault, kept.id, actor=ADMIN) == b"to review"
    with pytest.raises(RuntimeError), transaction(sessions) as session:
        lost = v.seal(session, vault, b"rolled back")
        raise RuntimeError("the match failed")
    assert not vault.blobs.path(lost.item_id).exists()


def test_a_file_that_vanished_before_it_could_be_kept_is_audited(
    sessions: sessionmaker[Session], vault: v.Vault, tmp_path: Path
) -> None:
    present = tmp_path / "scanned.jpg"
    present.write_bytes(b"scanned")
    with transaction(sessions) as session:
        kept = v.keep_for_review(
            session, vault, present, review_item_ids=["R1"], actor=ADMIN, content_id="a"
        )
        gone = v.keep_for_review(
            session, vault, tmp_path / "gone.jpg", review_item_ids=["R2"], actor=ADMIN
        )
    assert kept is not None and gone is None
    assert v.read_bytes(sessions, vault, kept.id, actor=ADMIN) == b"scanned"
    with sessions() as session:
        record = session.execute(
            select(AuditRecord).where(AuditRecord.action == "vault.not_kept")
        ).scalar_one()
    assert record.target_id == "R2" and "cannot read" in record.details


def test_recording_a_match_keeps_media_only_when_a_rule_sends_it_to_review(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    from tipline.services import actions, submissions
    from tipline.services.matching.match import Match
    from tipline.signals.base import Signal

    with transaction(sessions) as session:
        actions.add_rule(session, action="enqueue_review", bank="reviewed")
    signals = [Signal(type="md5", value="0" * 32)]
    reviewed = Match(bank="reviewed", entry_id="e1", signal_type="md5", distance=0)
    unwatched = Match(bank="other", entry_id="e2", signal_type="md5", distance=0)
    suppressed = Match(
        bank="reviewed", entry_id="e3", signal_type="md5", distance=0, suppressed_by="allow/x"
    )
    outcomes = [
        submissions.Outcome(signals, [reviewed], submissions.SubmissionFacts("c-1"), media=b"1"),
        submissions.Outcome(signals, [unwatched], submissions.SubmissionFacts("c-2"), media=b"2"),
        submissions.Outcome(signals, [suppressed], submissions.SubmissionFacts("c-3"), media=b"3"),
        submissions.Outcome(signals, [reviewed], submissions.SubmissionFacts("c-4")),
    ]
    with transaction(sessions) as session:
        ids = submissions.record_batch(session, MATCHER, outcomes, vault=vault)
    items = v.list_items(sessions, actor=ADMIN)
    assert [(i.content_id, i.submission_id) for i in items] == [("c-1", ids[0])]
    assert v.read_bytes(sessions, vault, items[0].id, actor=ADMIN) == b"1"
    with sessions() as session:
        queue = actions.review_queue(session, actor=ADMIN)
    assert items[0].review_item_id == next(q["id"] for q in queue if q["content_id"] == "c-1")
    assert list(vault.blobs.ids()) == [items[0].id]  # the unwatched one was dropped
    # the same event again creates no review item, so nothing more is kept
    with transaction(sessions) as session:
        submissions.record_batch(
            session,
            MATCHER,
            [submissions.Outcome(signals, [reviewed], event_id=ids[0], media=b"1")],
            vault=vault,
        )
    assert len(v.list_items(sessions, actor=ADMIN)) == 1 and len(list(vault.blobs.ids())) == 1


def test_scanned_files_are_kept_by_path_and_a_vanished_one_is_audited(
    sessions: sessionmaker[Session], vault: v.Vault, tmp_path: Path
) -> None:
    from tipline.services import actions, submissions
    from tipline.services.matching.match import Match

    with transaction(sessions) as session:
        actions.add_rule(session, action="enqueue_review", bank="reviewed")
    hit = [Match(bank="reviewed", entry_id="e1", signal_type="md5", distance=0)]
    present = tmp_path / "present.jpg"
    present.write_bytes(b"scanned bytes")
    outcomes = [
        submissions.Outcome((), hit, event_id="scan:1", content_id="a", media=present),
        submissions.Outcome((), hit, event_id="scan:2", content_id="b", media=tmp_path / "gone"),
    ]
    with transaction(sessions) as session:
        submissions.record_batch(session, ADMIN, outcomes, vault=vault)
    (item,) = v.list_items(sessions, actor=ADMIN)
    assert item.content_id == "a"
    assert v.read_bytes(sessions, vault, item.id, actor=ADMIN) == b"scanned bytes"
    assert "vault.not_kept" in _actions(sessions)


def test_media_of_many_equals_media_of_one_by_one(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    """The batched lookup the report builder uses, against the per-submission one: other
    tenants' items, non-media items, purged items and submissions without media."""
    from tipline.services.vault.evidence import VaultEvidence

    evidence = VaultEvidence(vault)
    acme = Principal("m", Role.MATCHER, "acme")
    _store(sessions, vault, b"a1", actor=acme, submission_id="S1", filename="1.jpg")
    _store(sessions, vault, b"a2", actor=acme, submission_id="S1", filename="2.jpg")
    _store(sessions, vault, b"shared", submission_id="S1")
    _store(sessions, vault, b"n1", submission_id="S2")
    _store(sessions, vault, b"<x/>", actor=acme, submission_id="S3", kind=v.EvidenceKind.OTHER)
    gone = _store(sessions, vault, b"gone", actor=acme, submission_id="S4")
    _store(sessions, vault, b"kept", actor=acme, submission_id="S4")
    with transaction(sessions) as session:
        row = session.get(EvidenceItemRow, gone.id)
        assert row is not None
        row.purged_at = T0
    wanted = [("acme", "S1"), (None, "S2"), ("acme", "S3"), ("acme", "S4"), (None, "S5")]
    with transaction(sessions) as session:
        many = evidence.media_of_many(session, wanted)
        one_by_one = {sid: evidence.media_of(session, tenant, sid) for tenant, sid in wanted}
        assert many == one_by_one
        assert [len(many[sid]) for _, sid in wanted] == [2, 1, 0, 1, 0]
        assert evidence.media_of_many(session, [(None, "S1")]) == {
            "S1": evidence.media_of(session, None, "S1")
        }
        assert evidence.media_of_many(session, []) == {}
