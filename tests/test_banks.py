"""Banks in the database: use cases, imports (batches, errors, --atomic), round trips."""

from __future__ import annotations

import io
import json

import pytest

from tipline.banks.formats import ImportFormat
from tipline.banks.model import BankSignal
from tipline.errors import ConflictError, HashFormatError, InputError, NotFoundError
from tipline.services import banks as svc
from tipline.services.database import open_database
from tipline.store import bank_repository as repo

PDQ_A = "a" * 64
PDQ_B = "b" * 64
MD5_C = "c" * 32


@pytest.fixture
def db(db_url):
    database = open_database(db_url)
    yield database
    database.close()


def _entries(db, bank):
    return {e.entry_id: e for e in svc.iter_bank_entries(db, bank)}


def test_create_list_show_update(db):
    svc.create_bank(db, "known", description="test", thresholds={"PDQ": 20})
    svc.create_bank(db, "fp", allow=True)
    with pytest.raises(ConflictError):
        svc.create_bank(db, "known")
    with pytest.raises(InputError):
        svc.create_bank(db, "a/b")
    with pytest.raises(HashFormatError):
        svc.create_bank(db, "x", thresholds={"nope": 1})
    with pytest.raises(InputError):
        svc.create_bank(db, "x", thresholds={"pdq": -1})
    infos = svc.list_banks(db)
    assert [(i.bank.name, i.bank.is_allow_bank) for i in infos] == [("fp", True), ("known", False)]
    assert svc.show_bank(db, "known").bank.thresholds == {"pdq": 20}
    bank = svc.update_bank(db, "known", enabled=False, thresholds={"md5": 0})
    assert not bank.enabled and bank.thresholds == {"pdq": 20, "md5": 0}
    with pytest.raises(NotFoundError):
        svc.show_bank(db, "missing")


def test_add_disable_enable_and_change_sequence(db):
    svc.create_bank(db, "known")
    with db.sessions() as s:
        start = repo.current_seq(s)
    e = svc.add_entry(db, "known", [f"pdq:{PDQ_A.upper()}", f"md5:{MD5_C}"], labels=["A1", " "])
    assert e.entry_id == f"pdq:{PDQ_A}" and e.labels == ("A1",)
    assert e.signals == (BankSignal("pdq", PDQ_A), BankSignal("md5", MD5_C))
    assert e.added_at is not None and e.added_at.tzinfo is not None
    with pytest.raises(ConflictError):
        svc.add_entry(db, "known", [f"pdq:{PDQ_A}"])
    with pytest.raises(HashFormatError):
        svc.add_entry(db, "known", ["pdq:abc"])
    svc.add_entry(db, "known", [f"pdq:{PDQ_B}"], entry_id="E2", source="unit test")
    with pytest.raises(InputError):
        svc.set_entries_disabled(db, "known", ["E2"], disabled=True)
    (d,) = svc.set_entries_disabled(db, "known", ["E2"], disabled=True, reason="false positive")
    assert d.disabled and d.disabled_reason == "false positive"
    with pytest.raises(NotFoundError):
        svc.set_entries_disabled(db, "known", ["nope"], disabled=True, reason="x")
    (d,) = svc.set_entries_disabled(db, "known", ["E2"], disabled=False)
    assert not d.disabled and d.disabled_reason is None
    with db.sessions() as s:
        changes = repo.changes_since(s, start)
        signals = repo.signals_since(s, start)
    # every write got a higher sequence number; E2 was written three times
    assert [c[2] for c in changes] == [f"pdq:{PDQ_A}", "E2"]
    assert changes[-1][0] == start + 4
    assert [(x.type, x.seq) for x in signals] == [
        ("pdq", start + 1),
        ("md5", start + 1),
        ("pdq", start + 2),
    ]


def test_writes_are_audited(db):
    from tipline.services import audit

    svc.create_bank(db, "known")
    svc.add_entry(db, "known", [f"pdq:{PDQ_A}"], entry_id="E1")
    svc.set_entries_disabled(db, "known", ["E1"], disabled=True, reason="fp")
    svc.import_entries(db, "known", io.BytesIO(f"pdq {PDQ_B}\n".encode()), ImportFormat.HMA)
    with db.sessions() as s:
        actions = [r.action for r in audit.recent(s, limit=10)]
        assert audit.verify(s).ok
    assert {"bank.create", "entry.add", "entry.disable", "bank.import"} <= set(actions)


def _hma(*lines: str) -> io.BytesIO:
    return io.BytesIO("\n".join(lines).encode() + b"\n")


def test_import_reports_bad_lines_and_duplicates_and_keeps_good_ones(db):
    svc.create_bank(db, "known")
    svc.add_entry(db, "known", [f"pdq:{PDQ_A}"])
    errors = []
    lines = [f"pdq {i:064x}" for i in range(1, 8)]
    lines[2] = "pdq 123"  # line 3: wrong length
    lines[4] = f"pdq {PDQ_A}"  # line 5: already in the bank
    lines.append(f"pdq {1:064x}")  # line 8: duplicate of line 1 (another batch)
    lines.append(f"pdq {50:064x}")  # line 9
    lines.append(f"pdq {50:064x}")  # line 10: duplicate of line 9 (same batch)
    summary = svc.import_entries(
        db,
        "known",
        _hma(*lines),
        ImportFormat.HMA,
        path="h.txt",
        batch_size=3,
        on_error=errors.append,
    )
    assert summary.imported == 6 and summary.errors == 1 and summary.duplicates == 3
    assert sorted(e.line for e in errors) == [3, 5, 8, 10]
    assert any("first at line 9" in str(e) and e.line == 10 for e in errors)
    assert any("already in bank" in str(e) and e.line == 5 for e in errors)
    assert any("already in bank" in str(e) and e.line == 8 for e in errors)
    assert len(_entries(db, "known")) == 7
    assert not summary.rolled_back


def test_atomic_import_is_all_or_nothing(db):
    svc.create_bank(db, "known")
    lines = [f"pdq {i:064x}" for i in range(1, 26)] + ["md5 xyz"]
    s = svc.import_entries(db, "known", _hma(*lines), ImportFormat.HMA, atomic=True, batch_size=10)
    assert s.rolled_back and s.imported == 0 and s.errors == 1
    assert _entries(db, "known") == {}
    s = svc.import_entries(
        db, "known", _hma(*lines[:-1]), ImportFormat.HMA, atomic=True, batch_size=10
    )
    assert not s.rolled_back and s.imported == 25
    assert len(_entries(db, "known")) == 25
    # a duplicate is a bad line too
    s = svc.import_entries(
        db, "known", _hma(lines[0], f"pdq {99:064x}"), ImportFormat.HMA, atomic=True
    )
    assert s.rolled_back and s.duplicates == 1 and len(_entries(db, "known")) == 25


def test_ncmec_import_counts_unsupported_and_applies_deletions(db):
    svc.create_bank(db, "ncmec")
    doc = f"""<queryResult><images>
<image><member id="1">ESP</member><id>i1</id><classification>A1</classification>
<fingerprints><md5>{MD5_C}</md5><pdna>x</pdna></fingerprints></image>
<image><member id="1">ESP</member><id>i2</id><fingerprints><pdna>x</pdna></fingerprints></image>
</images><videos><video><id>v1</id><fingerprints><md5>{"d" * 32}</md5><tmk_pdqf>t</tmk_pdqf>
</fingerprints></video></videos></queryResult>"""
    s = svc.import_entries(db, "ncmec", io.BytesIO(doc.encode()), ImportFormat.NCMEC)
    assert s.imported == 2 and s.skipped_no_signal == 1
    assert s.unsupported == {"PDNA (photo)": 2, "TMK_PDQF (video)": 1}
    entries = _entries(db, "ncmec")
    assert entries["i1"].labels == ("A1",) and entries["i1"].source == "ncmec member 1 (ESP)"
    assert entries["v1"].signals == (BankSignal("video_md5", "d" * 32),)
    deletion = b"<q><deletedImages><deletedImage><id>i1</id></deletedImage></deletedImages></q>"
    s = svc.import_entries(db, "ncmec", io.BytesIO(deletion), ImportFormat.NCMEC)
    assert s.deleted == 1
    gone = svc.get_entry(db, "ncmec", "i1")
    assert gone.disabled and gone.disabled_reason == "deleted upstream"


def test_vics_import_reports_ignored_fields(db):
    svc.create_bank(db, "vics")
    doc = {
        "value": [
            {"MediaID": 5, "MD5": MD5_C, "Category": 1, "Series": "s", "Extra": 1},
            {"MediaID": 6, "SHA1": "e" * 40, "Series": "t"},
        ]
    }
    s = svc.import_entries(db, "vics", io.BytesIO(json.dumps(doc).encode()), ImportFormat.VICS)
    assert s.imported == 2 and s.ignored_fields == {"Series": 2, "Extra": 1}
    assert _entries(db, "vics")["5"].labels == ("vics:1",)


SAMPLES = {
    ImportFormat.HMA: "".join(f"pdq {i:064x}\n" for i in range(1, 40)) + f"md5 {MD5_C}\n",
    ImportFormat.HMA_CSV: "signal_type,signal_value,entry_id,labels\n"
    + "".join(f"pdq,{i:064x},e{i},A{i % 2 + 1}\n" for i in range(1, 40)),
    ImportFormat.CSV: "entry_id,signal_type,signal_value,labels,source\n"
    + "".join(f"e{i},pdq,{i:064x},B1;A2,feed\ne{i},sha256,{i:064x},,\n" for i in range(1, 40)),
    ImportFormat.VICS: json.dumps(
        {
            "value": [
                {"MediaID": i, "MD5": f"{i:032x}", "SHA1": f"{i:040x}", "Category": i % 3}
                for i in range(1, 40)
            ]
        }
    ),
    ImportFormat.NCMEC: "<queryResult><images>"
    + "".join(
        f"<image><member id='3'>M</member><id>n{i}</id><classification>B2</classification>"
        f"<fingerprints><md5>{i:032x}</md5><pdq>{i:064x}</pdq></fingerprints></image>"
        for i in range(1, 40)
    )
    + "</images><videos><video><id>v</id><fingerprints><md5>"
    + "f" * 32
    + "</md5></fingerprints></video></videos></queryResult>",
}


@pytest.mark.parametrize("fmt", list(ImportFormat))
def test_import_export_import_round_trip(db, fmt):
    svc.create_bank(db, "first")
    svc.create_bank(db, "second")
    s1 = svc.import_entries(db, "first", io.BytesIO(SAMPLES[fmt].encode()), fmt, batch_size=7)
    assert s1.errors == 0 and s1.duplicates == 0 and s1.imported >= 39
    out = io.BytesIO()
    report = svc.export_entries(db, "first", fmt, out)
    assert report.entries == s1.imported and report.skipped_signals == {}
    s2 = svc.import_entries(db, "second", io.BytesIO(out.getvalue()), fmt)
    assert (s2.imported, s2.errors, s2.duplicates) == (s1.imported, 0, 0)

    def key(e):
        return (e.entry_id, sorted((s.type, s.value) for s in e.signals), e.labels, e.source)

    first, second = _entries(db, "first"), _entries(db, "second")
    assert sorted(map(key, first.values())) == sorted(map(key, second.values()))
