"""The clearinghouse's own material gets bank-side region descriptors (issue #15): a
photo published by an analyst's confirmation is read back from the vault (audited), its
crops and small rotations are stored with its hash-list entry, and a crop of it filed
later is known material, labelled ``tier=region``; a damaged vault item costs only its
descriptors. Real clearinghouse server over HTTP, SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select

from _intake_media import bits, pdq_of, pictures, report_xml, variant
from _intake_server import IntakeServer, intake_server
from test_clearinghouse_analyst import PASSWORDS, _api, file_report, wait_triaged
from tipline.services.audit import verify
from tipline.services.auth import create_key
from tipline.services.vault.blobs import BlobStore
from tipline.store.audit import AuditRecord
from tipline.store.bank_tables import BankEntryRow, BankRegionRow
from tipline.store.clearinghouse import IntakeFileRow
from tipline.store.db import transaction
from tipline.store.vault import EvidenceItemRow

BANK = "clearinghouse-confirmed"


@pytest.fixture
def srv(db_url: str, tmp_path: Path) -> Iterator[tuple[IntakeServer, str]]:
    with intake_server(db_url, tmp_path / "ch", intake_max_file_bytes=1 << 20) as running:
        for name, password in PASSWORDS.items():
            running.add_provider(name, password)
        with transaction(running.sessions) as s:
            key = create_key(s, name="analyst", role="analyst").secret
        yield running, key


def _cropped(data: bytes, right: float, bottom: float) -> bytes:
    """A JPEG of the picture with ``right`` and ``bottom`` shares cut off (a corner crop)."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    out = io.BytesIO()
    image.crop((0, 0, w - round(w * right), h - round(h * bottom))).save(out, "JPEG", quality=88)
    return out.getvalue()


def _audits(server: IntakeServer, action: str) -> list[dict[str, Any]]:
    with server.sessions() as s:
        rows = s.scalars(select(AuditRecord).where(AuditRecord.action == action)).all()
        return [{"target": r.target_id, **json.loads(r.details or "{}")} for r in rows]


def _file_view(server: IntakeServer, key: str, report_id: int) -> dict[str, Any]:
    with _api(server, key) as api:
        view = api.get(f"/v1/clearinghouse/reports/{report_id}").json()
    (file,) = view["files"]
    return dict(file)


def test_a_crop_of_confirmed_material_is_known_by_its_region(
    srv: tuple[IntakeServer, str],
) -> None:
    server, key = srv
    a, b = pictures(2)
    original = variant(a, "base")
    r1, (f1,) = file_report(server, "esp-a", [original], xml=report_xml())
    wait_triaged(server, r1)
    with _api(server, key) as api:
        confirmed = api.post(f"/v1/clearinghouse/reports/{r1}/confirm", json={})
    assert confirmed.status_code == 200, confirmed.text
    sha = hashlib.sha256(original).hexdigest()
    assert confirmed.json()["published"] == [sha]

    with server.sessions() as s:
        pk = s.scalar(select(BankEntryRow.id).where(BankEntryRow.entry_id == sha))
        stored = s.scalars(select(BankRegionRow.region).where(BankRegionRow.entry_pk == pk)).all()
        vault_id = s.scalar(select(IntakeFileRow.vault_id).where(IntakeFileRow.id == f1))
    assert len(stored) > 400 and "crop:l0t0r8b8" in stored
    # the read back from the vault is audited, before the confirmation that used it
    (read,) = [r for r in _audits(server, "vault.read") if r.get("via") == "publish"]
    assert read["target"] == vault_id and read["intake_file"] == f1 and read["report"] == r1
    (decision,) = _audits(server, "clearinghouse.confirm")
    assert decision["regions"] == len(stored) and "regions_failed" not in decision

    # an 8% corner crop is far from the original's PDQ, yet known through a region
    crop = _cropped(original, 0.08, 0.08)
    assert bits(pdq_of(crop), pdq_of(original)) > 31
    r2, _ = file_report(server, "esp-b", [crop], xml=report_xml())
    # another picture cropped the same way stays new material
    other = _cropped(variant(b, "base"), 0.08, 0.08)
    r3, _ = file_report(server, "esp-b", [other], xml=report_xml())
    wait_triaged(server, r2, r3)
    seen = _file_view(server, key, r2)
    assert seen["state"] == "known"
    (known,) = seen["known"]
    assert (known["bank"], known["entry_id"], known["signal"]) == (BANK, sha, "pdq")
    assert known["tier"] == "region" and known["region"].startswith("crop:")
    assert known["distance"] <= 31
    assert _file_view(server, key, r3)["state"] == "new"
    with server.sessions() as s:
        assert verify(s).ok


def test_a_damaged_vault_item_costs_only_its_descriptors(
    srv: tuple[IntakeServer, str],
) -> None:
    server, key = srv
    a, b = pictures(2)
    good, bad = variant(a, "base"), variant(b, "base")
    r1, (_f_good, f_bad) = file_report(server, "esp-a", [good, bad], xml=report_xml())
    wait_triaged(server, r1)
    with server.sessions() as s:
        vault_id = s.scalar(select(IntakeFileRow.vault_id).where(IntakeFileRow.id == f_bad))
        assert s.get(EvidenceItemRow, vault_id) is not None
    blob = BlobStore(server.settings.resolved_vault_dir()).path(vault_id)
    damaged = bytearray(blob.read_bytes())
    damaged[-40] ^= 0xFF
    blob.write_bytes(bytes(damaged))

    with _api(server, key) as api:
        confirmed = api.post(f"/v1/clearinghouse/reports/{r1}/confirm", json={})
    assert confirmed.status_code == 200, confirmed.text
    shas = {hashlib.sha256(x).hexdigest() for x in (good, bad)}
    assert set(confirmed.json()["published"]) == shas
    (decision,) = _audits(server, "clearinghouse.confirm")
    assert decision["regions_failed"] == {f_bad: "vault content unreadable"}
    (failure,) = _audits(server, "vault.integrity_failure")
    assert failure["target"] == vault_id
    with server.sessions() as s:
        counts = {
            entry: len(
                s.scalars(select(BankRegionRow.id).where(BankRegionRow.entry_pk == pk)).all()
            )
            for entry, pk in s.execute(select(BankEntryRow.entry_id, BankEntryRow.id))
            if entry in shas
        }
    assert counts[hashlib.sha256(bad).hexdigest()] == 0
    assert counts[hashlib.sha256(good).hexdigest()] == decision["regions"] > 0
