"""The clearinghouse's own material gets the reference PDQ and bank-side region
descriptors (issue #15, issue #11): a photo published by an analyst's confirmation is read
back from the vault (audited) and hashed again with the reference decode, whatever
decode the intake used; its crops and small rotations are stored with its hash-list
entry, and a crop of it filed later is known material, labelled ``tier=region``; a
damaged vault item costs only its descriptors, and its PDQ when the intake decoded it
fast. Real clearinghouse server over HTTP, SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select

from _intake_media import bits, drifting_photo, pdq_of, pictures, report_xml, variant
from _intake_server import IntakeServer, intake_server
from test_clearinghouse_analyst import PASSWORDS, _api, file_report, wait_triaged
from tipline.services.audit import verify
from tipline.services.auth import create_key
from tipline.services.vault.blobs import BlobStore
from tipline.signals.decode import DecodeMode
from tipline.signals.hashing import HashOptions, hash_bytes
from tipline.store.audit import AuditRecord
from tipline.store.bank_tables import BankEntryRow, BankRegionRow, BankSignalRow
from tipline.store.clearinghouse import IntakeFileRow
from tipline.store.db import transaction
from tipline.store.vault import EvidenceItemRow

BANK = "clearinghouse-confirmed"


@contextmanager
def _serving(db_url: str, folder: Path, **overrides: object) -> Iterator[tuple[IntakeServer, str]]:
    """A clearinghouse with the test's providers, and an analyst's API key."""
    with intake_server(db_url, folder, intake_max_file_bytes=1 << 20, **overrides) as running:
        for name, password in PASSWORDS.items():
            running.add_provider(name, password)
        with transaction(running.sessions) as s:
            key = create_key(s, name="analyst", role="analyst").secret
        yield running, key


@pytest.fixture
def srv(db_url: str, tmp_path: Path) -> Iterator[tuple[IntakeServer, str]]:
    with _serving(db_url, tmp_path / "ch") as running:
        yield running


def _pdq(data: bytes, mode: DecodeMode) -> str:
    result = hash_bytes(data, "x.jpg", HashOptions(signals=("pdq",), decode=mode))
    return result.signals[0].value


def _entry_signals(server: IntakeServer, sha256: str) -> dict[str, str]:
    """``type -> value`` of the published entry ``sha256``."""
    with server.sessions() as s:
        rows = s.execute(
            select(BankSignalRow.type, BankSignalRow.value)
            .join(BankEntryRow, BankEntryRow.id == BankSignalRow.entry_pk)
            .where(BankEntryRow.entry_id == sha256)
        ).all()
    return {kind: value for kind, value in rows}


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


def test_a_published_photo_gets_the_reference_pdq(srv: tuple[IntakeServer, str]) -> None:
    server, key = srv
    photo = drifting_photo()
    fast, exact = _pdq(photo, DecodeMode.FAST), _pdq(photo, DecodeMode.EXACT)
    assert fast != exact  # the picture's two decodes differ, so the test can tell
    r1, (f1,) = file_report(server, "esp-a", [photo], xml=report_xml())
    wait_triaged(server, r1)
    with server.sessions() as s:
        row = s.get(IntakeFileRow, f1)
        assert row is not None
        (stored,) = [x for x in row.signals if x["type"] == "pdq" and not x["variant"]]
    # the intake de-duplicates by the fast decode's PDQ, and says so
    assert (stored["value"], stored["decode"]) == (fast, "fast")
    view = _file_view(server, key, r1)["pdq"]
    assert view == {"value": fast, "quality": stored["quality"], "decode": "fast"}
    with _api(server, key) as api:
        confirmed = api.post(f"/v1/clearinghouse/reports/{r1}/confirm", json={})
    assert confirmed.status_code == 200, confirmed.text
    sha = hashlib.sha256(photo).hexdigest()
    assert confirmed.json()["published"] == [sha]
    # the hash list gets the reference PDQ, as every bank entry
    published = _entry_signals(server, sha)
    assert published["pdq"] == exact
    assert published["md5"] == hashlib.md5(photo).hexdigest()
    (decision,) = _audits(server, "clearinghouse.confirm")
    assert "pdq_left_out" not in decision and "regions_failed" not in decision
    # a re-upload is known material through the published entry
    r2, _ = file_report(server, "esp-b", [photo], xml=report_xml())
    wait_triaged(server, r2)
    assert _file_view(server, key, r2)["state"] == "known"


@pytest.mark.parametrize("decode", ["fast", "exact"])
def test_a_damaged_vault_item_costs_only_its_descriptors(
    db_url: str, tmp_path: Path, decode: str
) -> None:
    with _serving(db_url, tmp_path / "ch", intake_decode=decode) as (server, key):
        _damaged_vault_item(server, key, DecodeMode(decode))


def _damaged_vault_item(server: IntakeServer, key: str, decode: DecodeMode) -> None:
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
    # the good photo's PDQ is read back and hashed the reference way; the damaged one's
    # is the intake's when that was the reference decode, else left out (and audited)
    assert _entry_signals(server, hashlib.sha256(good).hexdigest())["pdq"] == _pdq(
        good, DecodeMode.EXACT
    )
    bad_entry = _entry_signals(server, hashlib.sha256(bad).hexdigest())
    assert bad_entry["sha256"] == hashlib.sha256(bad).hexdigest()
    if decode is DecodeMode.EXACT:
        assert bad_entry["pdq"] == _pdq(bad, DecodeMode.EXACT)
        assert "pdq_left_out" not in decision
    else:
        assert "pdq" not in bad_entry
        assert decision["pdq_left_out"] == [hashlib.sha256(bad).hexdigest()]
