"""The Matcher against brute force; live additions across processes; disables; allow
banks; damaged index files rebuilt from the database; background merge; vPDQ."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _clock import HANG_SECONDS
from tipline.banks.formats import ImportFormat
from tipline.banks.model import Bank, BankSignal
from tipline.services import banks as svc
from tipline.services.database import open_database
from tipline.services.matching import Matcher
from tipline.signals.base import Signal
from tipline.signals.hexbits import hamming_hex
from tipline.store import bank_repository as repo

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def db(db_url):
    database = open_database(db_url)
    yield database
    database.close()


def _flip(value: str, n: int, rng: np.random.Generator) -> str:
    bits = rng.choice(256, size=n, replace=False)
    x = int(value, 16)
    for b in bits:
        x ^= 1 << int(b)
    return f"{x:064x}"


def _rand(rng: np.random.Generator) -> str:
    return bytes(rng.integers(0, 256, 32, dtype=np.uint8)).hex()


def _import_csv(db, bank: str, rows: list[tuple[str, str, str]]) -> None:
    text = "entry_id,signal_type,signal_value\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows)
    import io

    s = svc.import_entries(db, bank, io.BytesIO(text.encode()), ImportFormat.CSV)
    assert s.errors == 0 and s.duplicates == 0


def _oracles(db, queries: list[str]) -> list[set[tuple[str, str, int]]]:
    """Brute force over every entry in the database: what must match each query (the
    entries read once for all of them)."""
    entries = []
    for info in svc.list_banks(db):
        bank = info.bank
        if not bank.enabled or bank.is_allow_bank:
            continue
        threshold = bank.thresholds.get("pdq", 31)
        for e in svc.iter_bank_entries(db, bank.name):
            if e.disabled:
                continue
            values = [s.value for s in e.signals if s.type == "pdq"]
            if values:
                entries.append((bank.name, e.entry_id, threshold, values))
    out = []
    for query in queries:
        found = set()
        for bank_name, entry_id, threshold, values in entries:
            d = min(hamming_hex(query, v) for v in values)
            if d <= threshold:
                found.add((bank_name, entry_id, d))
        out.append(found)
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_matches_equal_brute_force_with_live_changes(db, tmp_path, seed):
    rng = np.random.default_rng(seed)
    svc.create_bank(db, "strict", thresholds={"pdq": 20})
    svc.create_bank(db, "loose", thresholds={"pdq": 48})
    svc.create_bank(db, "off", enabled=False)
    queries = [_rand(rng) for _ in range(6)]
    rows: dict[str, list[tuple[str, str, str]]] = {"strict": [], "loose": [], "off": []}
    for qi, q in enumerate(queries):
        for d in range(0, 49):  # a planted near-duplicate at every distance 0-48
            bank = ("strict", "loose", "off")[d % 3]
            rows[bank].append((f"q{qi}-d{d}", "pdq", _flip(q, d, rng)))
    for _ in range(400):
        rows["loose"].append((f"r{len(rows['loose'])}", "pdq", _rand(rng)))
    for bank, r in rows.items():
        _import_csv(db, bank, r)
    svc.set_entries_disabled(db, "loose", ["q0-d4", "q1-d31"], disabled=True, reason="fp")
    with Matcher(db, tmp_path / "index", merge_after=40, poll_interval=0) as m:
        for q, want in zip(queries, _oracles(db, queries), strict=True):
            got = {(x.bank, x.entry_id, x.distance) for x in m.match_hash("pdq", q)}
            assert got == want
        # live: more near-duplicates after the index was built, some disables
        for qi, q in enumerate(queries):
            for d in (0, 7, 25, 45):
                svc.add_entry(db, "loose", [f"pdq:{_flip(q, d, rng)}"], entry_id=f"new{qi}-{d}")
        svc.set_entries_disabled(db, "strict", ["q2-d9"], disabled=True, reason="fp")
        svc.update_bank(db, "off", enabled=True)
        wanted = _oracles(db, queries)
        for q, want in zip(queries, wanted, strict=True):
            got = {(x.bank, x.entry_id, x.distance) for x in m.match_hash("pdq", q)}
            assert got == want
        # several items at once (one read of the entries): what one at a time finds
        items = [[Signal(type="pdq", value=q)] for q in queries] + [[]]
        many = m.match_many(items)
        assert many == [m.match_signals(item) for item in items]
        assert [{(x.bank, x.entry_id, x.distance) for x in found} for found in many[:-1]] == (
            wanted
        )
        if m._merge_thread is not None:
            m._merge_thread.join()
        assert m.stats()["delta"] < 40  # the delta was merged in the background
    with Matcher(db, tmp_path / "index") as m2:  # reopens the merged files
        assert not m2.rebuilt
        for q, want in zip(queries, wanted, strict=True):
            got = {(x.bank, x.entry_id, x.distance) for x in m2.match_hash("pdq", q)}
            assert got == want


def test_exact_digests_before_and_after_open_and_merge(db, tmp_path):
    svc.create_bank(db, "b")
    svc.add_entry(db, "b", ["md5:" + "1" * 32, "sha1:" + "2" * 40], entry_id="old")
    with Matcher(db, tmp_path / "ix", poll_interval=0) as m:
        svc.add_entry(db, "b", ["sha256:" + "3" * 64, "md5:" + "1" * 32], entry_id="new")
        assert [x.entry_id for x in m.match_hash("md5", "1" * 32)] == ["new", "old"]
        assert [x.entry_id for x in m.match_hash("sha256", "3" * 64)] == ["new"]
        assert m.match_hash("sha1", "2" * 39 + "3") == []
        m.merge()
        assert m.stats()["exact"] == {"md5": 2, "sha1": 1, "sha256": 1}
        assert [x.entry_id for x in m.match_hash("md5", "1" * 32)] == ["new", "old"]
        assert [(x.distance, x.matched_value) for x in m.match_hash("sha1", "2" * 40)] == [
            (0, "2" * 40)
        ]


def test_allow_bank_suppresses_with_reason_and_bank_filter(db, tmp_path):
    q = "c" * 64
    near = "c" * 63 + "d"
    svc.create_bank(db, "known")
    svc.create_bank(db, "other")
    svc.create_bank(db, "fp", allow=True, description="false positives")
    svc.add_entry(db, "known", [f"pdq:{q}"], entry_id="K", labels=["A1"])
    svc.add_entry(db, "other", [f"pdq:{near}"], entry_id="O")
    with Matcher(db, tmp_path / "ix", poll_interval=0) as m:
        found = m.match_hash("pdq", q)
        assert [(x.bank, x.entry_id, x.distance, x.labels) for x in found] == [
            ("known", "K", 0, ("A1",)),
            ("other", "O", 1, ()),
        ]
        assert all(x.suppressed_by is None for x in found)
        svc.add_entry(db, "fp", [f"pdq:{near}"], entry_id="stock", source="stock photo")
        found = m.match_hash("pdq", q)
        assert [(x.entry_id, x.suppressed_by, x.suppressed_reason) for x in found] == [
            ("K", "fp/stock", "stock photo"),
            ("O", "fp/stock", "stock photo"),
        ]
        # an allow entry suppresses within its own item only, several items at once too
        far = "3" * 64
        assert m.match_many([[Signal(type="pdq", value=q)], [Signal(type="pdq", value=far)]]) == [
            found,
            [],
        ]
        svc.update_bank(db, "fp", enabled=False)
        assert all(x.suppressed_by is None for x in m.match_hash("pdq", q))
    with Matcher(db, tmp_path / "ix", banks=["other"]) as m:
        assert [x.bank for x in m.match_hash("pdq", q)] == ["other"]


def test_disable_takes_effect_immediately(db, tmp_path):
    q = "e" * 64
    svc.create_bank(db, "known")
    svc.add_entry(db, "known", [f"pdq:{q}"], entry_id="K")
    with Matcher(db, tmp_path / "ix", poll_interval=60.0) as m:  # even without polling
        assert len(m.match_hash("pdq", q)) == 1
        svc.set_entries_disabled(db, "known", ["K"], disabled=True, reason="fp")
        assert m.match_hash("pdq", q) == []
        svc.set_entries_disabled(db, "known", ["K"], disabled=False)
        assert len(m.match_hash("pdq", q)) == 1
        svc.update_bank(db, "known", enabled=False)
        assert m.match_hash("pdq", q) == []


def test_per_bank_threshold_applies_at_match_time(db, tmp_path):
    q = "0" * 64
    svc.create_bank(db, "b", thresholds={"pdq": 10})
    svc.add_entry(db, "b", ["pdq:" + "0" * 60 + "ffff"], entry_id="d16")
    with Matcher(db, tmp_path / "ix", poll_interval=0) as m:
        assert m.match_hash("pdq", q) == []
        svc.update_bank(db, "b", thresholds={"pdq": 16})
        # the bank change moved the change marks: read at once, no wait
        assert [x.distance for x in m.match_hash("pdq", q)] == [16]


_ADDER = """
import sys
from tipline.services import banks as svc
from tipline.services.database import open_database
db = open_database(sys.argv[1])
svc.add_entry(db, "known", ["pdq:" + sys.argv[2]], entry_id="from-a")
"""


def test_hash_added_in_another_process_matches_within_a_second(db, db_url, tmp_path):
    """The first match call ``poll_interval`` (at most 1 s) after another process commits
    a hash finds it. Sleeping only makes that much time pass for sure; no upper bound on
    a loaded machine's timing is assumed."""
    q = "7" * 64
    svc.create_bank(db, "known")
    with Matcher(db, tmp_path / "ix") as m:  # process B
        assert m.poll_interval <= 1.0
        assert m.match_hash("pdq", q) == []
        subprocess.run(  # process A
            [sys.executable, "-c", _ADDER, db_url, q],
            capture_output=True,
            text=True,
            check=True,
            timeout=HANG_SECONDS,
        )
        time.sleep(m.poll_interval)
        found = m.match_hash("pdq", q)
        assert [f.entry_id for f in found] == ["from-a"]


def _segment(index_dir: Path) -> Path:
    return max((index_dir / "pdq").glob("pdq-*.tpi"))


@pytest.mark.parametrize(
    "damage",
    ["flip-byte", "truncate", "meta-garbage", "no-current", "exact-truncated", "other-db"],
)
def test_damaged_index_is_rebuilt_with_one_log_line(db, tmp_path, caplog, damage):
    rng = np.random.default_rng(5)
    svc.create_bank(db, "b")
    values = [_rand(rng) for _ in range(300)]
    _import_csv(db, "b", [(f"e{i}", "pdq", v) for i, v in enumerate(values)])
    svc.add_entry(db, "b", ["md5:" + "9" * 32], entry_id="digest")
    ix = tmp_path / "ix"
    Matcher(db, ix).close()
    if damage == "flip-byte":
        seg = _segment(ix)
        data = bytearray(seg.read_bytes())
        data[len(data) // 2] ^= 0xFF
        seg.write_bytes(bytes(data))
    elif damage == "truncate":
        seg = _segment(ix)
        os.truncate(seg, seg.stat().st_size // 3)
    elif damage == "meta-garbage":
        (ix / "meta.json").write_text("{not json")
    elif damage == "no-current":
        (ix / "pdq" / "CURRENT").unlink()
    elif damage == "exact-truncated":
        exact = next(ix.glob("exact-md5-*.tpi"))
        os.truncate(exact, 10)
    else:
        meta = json.loads((ix / "meta.json").read_text())
        meta["instance"] = "00000000-0000-0000-0000-000000000000"
        (ix / "meta.json").write_text(json.dumps(meta))
    caplog.set_level(logging.INFO, logger="tipline.matching")
    with Matcher(db, ix) as m:
        assert m.rebuilt
        assert [x.entry_id for x in m.match_hash("pdq", values[123])] == ["e123"]
        assert [x.entry_id for x in m.match_hash("md5", "9" * 32)] == ["digest"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "rebuilding it from the database" in warnings[0].getMessage()
    caplog.clear()
    with Matcher(db, ix) as m:  # the rebuilt files open cleanly
        assert not m.rebuilt
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_real_photo_variants_match_like_brute_force(db, tmp_path, reference_dir):
    from tipline.signals.hashing import HashOptions, hash_path

    folder = reference_dir / "pdq" / "bridge-mods"
    photos = sorted(folder.glob("*.jpg"))
    assert photos
    hashes = {}
    for p in photos:
        result = hash_path(str(p), HashOptions(signals=("pdq",)))
        assert result.ok
        hashes[p.stem] = result.signals[0].value
    svc.create_bank(db, "bridge")
    svc.add_entry(db, "bridge", [f"pdq:{hashes['aaa-orig']}"], entry_id="orig", labels=["B1"])
    rng = np.random.default_rng(9)
    _import_csv(db, "bridge", [(f"noise{i}", "pdq", _rand(rng)) for i in range(200)])
    wanted = dict(zip(hashes, _oracles(db, list(hashes.values())), strict=True))
    with Matcher(db, tmp_path / "ix") as m:
        for name, value in hashes.items():
            found = m.match_signals([Signal("pdq", value)])
            assert {(x.bank, x.entry_id, x.distance) for x in found} == wanted[name], name
            d = hamming_hex(value, hashes["aaa-orig"])
            assert [x.entry_id for x in found] == (["orig"] if d <= 31 else [])


def test_vpdq_video_matches_with_percentages(db, tmp_path, reference_dir):
    from tipline.signals.vpdq import parse_vpdq_text

    folder = reference_dir / "video" / "vpdq-sample-hashes"
    a = (folder / "chair-19-sd-bar.txt").read_text()
    b_path = folder / "chair-20-sd-bar.txt"
    if not b_path.exists():
        pytest.skip("sample hash chair-20-sd-bar.txt not shipped")
    b = b_path.read_text()
    other = (folder / "pattern-hd-no-bar.txt").read_text()
    from tipline.signals.base import get_signal_type

    vpdq = get_signal_type("vpdq")
    svc.create_bank(db, "videos")
    svc.add_entry(db, "videos", [vpdq_text_signal(vpdq, a)], entry_id="chair19")
    with Matcher(db, tmp_path / "ix", poll_interval=0) as m:
        svc.add_entry(db, "videos", [vpdq_text_signal(vpdq, other)], entry_id="pattern")
        frames = tuple(parse_vpdq_text(b))
        found = m.match_signals([Signal("vpdq", vpdq.parse(b), frames=frames)])
        assert [x.entry_id for x in found] == ["chair19"]
        expected = vpdq.distance(vpdq.parse(b), vpdq.parse(a))
        assert found[0].distance == expected
        assert found[0].query_match_percent is not None and found[0].query_match_percent > 80
        m.merge()
        again = m.match_signals([Signal("vpdq", vpdq.parse(b))])
        assert [(x.entry_id, x.distance) for x in again] == [("chair19", expected)]


def vpdq_text_signal(vpdq, text: str) -> str:
    return "vpdq:" + vpdq.parse(text)


class _TinyBits:
    """A plugin signal type without a fast index (matched by brute force)."""

    from tipline.signals.base import MediaKind

    name = "tinybits"
    media = MediaKind.ANY
    default_threshold = 2

    def parse(self, text: str) -> str:
        from tipline.signals.hexbits import parse_hex

        return parse_hex(text, 4, self.name)

    def distance(self, a: str, b: str) -> int:
        return hamming_hex(a, b)

    def match(self, query, candidates, threshold):
        return [
            (i, d) for i, c in enumerate(candidates) if (d := self.distance(query, c)) <= threshold
        ]


def test_plugin_signal_type_without_index_survives_merge_and_reopen(db, tmp_path):
    from tipline.signals.base import register_signal_type

    register_signal_type(_TinyBits())
    svc.create_bank(db, "p")
    svc.add_entry(db, "p", ["tinybits:000000ff"], entry_id="base")
    with Matcher(db, tmp_path / "ix", poll_interval=0) as m:
        svc.add_entry(db, "p", ["tinybits:000000fc"], entry_id="live")
        assert [(x.entry_id, x.distance) for x in m.match_hash("tinybits", "000000fe")] == [
            ("base", 1),
            ("live", 1),
        ]
        m.merge()
    with Matcher(db, tmp_path / "ix") as m:
        assert not m.rebuilt
        assert [x.entry_id for x in m.match_hash("tinybits", "000000fd")] == ["base", "live"]


def test_matchers_sharing_an_index_folder_merge_in_turn(db, tmp_path):
    rng = np.random.default_rng(11)
    svc.create_bank(db, "b")
    first = [_rand(rng) for _ in range(50)]
    _import_csv(db, "b", [(f"a{i}", "pdq", v) for i, v in enumerate(first)])
    ix = tmp_path / "shared"
    with Matcher(db, ix, poll_interval=0) as m1, Matcher(db, ix, poll_interval=0) as m2:
        later = [_rand(rng) for _ in range(20)]
        _import_csv(db, "b", [(f"b{i}", "pdq", v) for i, v in enumerate(later)])
        svc.add_entry(db, "b", ["md5:" + "5" * 32], entry_id="digest")
        m1.merge()
        for m in (m1, m2):
            assert [x.entry_id for x in m.match_hash("pdq", later[7])] == ["b7"]
            assert [x.entry_id for x in m.match_hash("pdq", first[3])] == ["a3"]
            assert [x.entry_id for x in m.match_hash("md5", "5" * 32)] == ["digest"]
        svc.add_entry(db, "b", ["pdq:" + "6" * 64], entry_id="last")
        m2.merge()
    with Matcher(db, ix) as m3:
        assert not m3.rebuilt and m3.stats()["delta"] == 0
        for value, entry in ((first[0], "a0"), (later[19], "b19"), ("6" * 64, "last")):
            assert [x.entry_id for x in m3.match_hash("pdq", value)] == [entry]


def _marks(db):
    with db.sessions() as s:
        return repo.change_marks(s)


def test_change_marks_move_with_every_committed_bank_or_signal_write(db):
    """What a Matcher skips its reads on: every committed write of a bank row (the
    trigger of migration 0044, on both dialects) or a signal row moves the marks; a
    rolled-back one does not."""
    before = _marks(db)
    svc.create_bank(db, "b")
    created = _marks(db)
    assert created[1] > before[1] and created[0] == before[0]
    svc.update_bank(db, "b", thresholds={"pdq": 12})
    updated = _marks(db)
    assert updated[1] > created[1]
    svc.add_entry(db, "b", ["pdq:" + "0" * 64], entry_id="e")
    added = _marks(db)
    assert added[0] > updated[0] and added[1] == updated[1]
    with db.sessions() as s:  # written, then rolled back: nothing moves
        repo.create_bank(s, Bank(name="gone"))
        repo.update_bank(s, "b", enabled=False)
        s.rollback()
    assert _marks(db) == added
    svc.delete_bank(db, "b")
    assert _marks(db)[1] > added[1]


def test_adopted_rows_equal_a_fresh_read_and_are_refused_out_of_turn(db, tmp_path):
    """The writer's shortcut (:meth:`Matcher.adopt`) against its twin, a Matcher that
    reads everything from the database: rows are taken only when nothing was committed
    between the Matcher's last read and them, and either way the matches agree."""
    rng = np.random.default_rng(7)
    svc.create_bank(db, "b", thresholds={"pdq": 40})
    queries = [_rand(rng) for _ in range(4)]

    def write(tag: str) -> list[repo.SignalChange]:
        changes: list[repo.SignalChange] = []
        entries = [
            repo.NewEntry(f"{tag}-{i}-{d}", (BankSignal("pdq", _flip(q, d, rng)),))
            for i, q in enumerate(queries)
            for d in (0, 9, 33)
        ]
        with db.sessions.begin() as s:
            bank_id = repo.get_bank(s, "b").id
            repo.insert_entries(s, bank_id, entries, changes=changes)
        return changes

    def found(m: Matcher) -> list[set[tuple[str, int]]]:
        return [{(x.entry_id, x.distance) for x in m.match_hash("pdq", q)} for q in queries]

    with Matcher(db, tmp_path / "ix", poll_interval=3600) as m:
        assert m.adopt(write("first"))  # directly after what it read: taken
        assert m.refresh(force=True) == 0  # and nothing left to read
        second, third = write("second"), write("third")
        assert not m.adopt(third)  # "second" came in between: refused, read instead
        assert m.refresh(force=True) == len(second) + len(third)
        assert not m.adopt(second)  # read already: refused
        assert m.refresh(force=True) == 0
        assert m.adopt(write("fourth"))
        with Matcher(db, tmp_path / "fresh", poll_interval=0) as twin:
            assert found(m) == found(twin) == _oracles_of(db, queries)


def _oracles_of(db, queries):
    return [{(e, d) for _, e, d in want} for want in _oracles(db, queries)]
