"""``tipline bank import --from hma|pytx``: an HMA database's banks (HMA's own
PostgreSQL schema, created in a database of its own on the test server) and a
python-threatexchange CLI state folder, through the real command."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url

from _cli import run_tipline
from tipline.store.audit import AuditRecord
from tipline.store.bank_tables import BankEntryRow, BankRow

P = [
    "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
    "1f811b9d267fbc6693c0c7f30e041f9df49b836303e10f067fcdfc12c02d01f9",
    "cfb2009ddd21c6dab0046a7745b5984757a8a4535b3377aea2591d32b33ff940",
    "a0fe94f1e5cc1cc8dd855948498dc9243f7ca27336f036d7f212b74bc103c9a7",
    "489db672e9190276d452aeab41eba20f02375fe4092d88defdf491a5c55c5f70",
]
MD5 = "d41d8cd98f00b204e9800998ecf8427e"
#: 2036 (HMA's column is a 32-bit integer) and 2001: far from any test run's clock.
FUTURE, PAST = 2_100_000_000, 1_000_000_000
PASSWORD = "not-the-real-secret"

#: HMA 1.1's tables as its migrations create them (OpenMediaMatch/migrations/versions:
#: 21cb8a3df884 plus the note and bank_content_metadata columns added later).
HMA_SCHEMA = [
    """CREATE TABLE bank (
        id SERIAL PRIMARY KEY,
        name VARCHAR(255) NOT NULL,
        enabled_ratio FLOAT NOT NULL,
        import_from_exchange_id INTEGER UNIQUE)""",
    "CREATE UNIQUE INDEX ix_bank_name ON bank (name)",
    """CREATE TABLE bank_content (
        id SERIAL PRIMARY KEY,
        bank_id INTEGER NOT NULL REFERENCES bank (id) ON DELETE CASCADE,
        imported_from_id INTEGER UNIQUE,
        disable_until_ts INTEGER NOT NULL,
        original_content_uri VARCHAR,
        bank_content_metadata JSON,
        note VARCHAR(255))""",
    "CREATE INDEX ix_bank_content_bank_id ON bank_content (bank_id)",
    """CREATE TABLE content_signal (
        content_id INTEGER NOT NULL REFERENCES bank_content (id) ON DELETE CASCADE,
        signal_type VARCHAR NOT NULL,
        signal_val TEXT NOT NULL,
        create_time TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (content_id, signal_type))""",
    """CREATE INDEX incremental_index_build_idx
        ON content_signal (signal_type, create_time, content_id)""",
]


@pytest.fixture
def hma_db(postgres_url: str) -> str:
    """A PostgreSQL schema of its own holding HMA's tables, dropped afterwards: to a
    reader, a schema first on the search path is what HMA's own database is (a database
    per test made PostgreSQL checkpoint at every DROP DATABASE, 36-41 s under load). The
    URL carries a password (the local server ignores it) that must never be shown."""
    return make_url(postgres_url).set(password=PASSWORD).render_as_string(hide_password=False)


def _fill(url: str, *, with_note_and_metadata: bool = True) -> dict[str, int]:
    """Three banks as HMA stores them; returns content ids by role."""
    engine = create_engine(url)
    try:
        return _fill_with(engine, with_note_and_metadata)
    finally:
        engine.dispose()


def _fill_with(engine: Engine, with_note_and_metadata: bool) -> dict[str, int]:
    ids: dict[str, int] = {}
    with engine.begin() as conn:
        for stmt in HMA_SCHEMA:
            conn.execute(text(stmt))
        if not with_note_and_metadata:  # HMA before 1.0.x's later migrations
            conn.execute(text("ALTER TABLE bank_content DROP COLUMN note"))
            conn.execute(text("ALTER TABLE bank_content DROP COLUMN bank_content_metadata"))

        def bank(name: str, ratio: float) -> int:
            return int(
                conn.execute(
                    text("INSERT INTO bank (name, enabled_ratio) VALUES (:n, :r) RETURNING id"),
                    {"n": name, "r": ratio},
                ).scalar_one()
            )

        def content(role: str, bank_id: int, until: int, signals: dict[str, str], **extra: object):
            cols = "bank_id, disable_until_ts"
            vals = ":b, :u"
            params: dict[str, object] = {"b": bank_id, "u": until}
            if with_note_and_metadata:
                cols += ", note, bank_content_metadata"
                vals += ", :note, CAST(:meta AS JSON)"
                meta = extra.get("metadata")
                params |= {
                    "note": extra.get("note"),
                    "meta": None if meta is None else json.dumps(meta),
                }
            cid = int(
                conn.execute(
                    text(f"INSERT INTO bank_content ({cols}) VALUES ({vals}) RETURNING id"), params
                ).scalar_one()
            )
            for kind, value in signals.items():
                conn.execute(
                    text(
                        "INSERT INTO content_signal (content_id, signal_type, signal_val) "
                        "VALUES (:c, :t, :v)"
                    ),
                    {"c": cid, "t": kind, "v": value},
                )
            ids[role] = cid

        known = bank("KNOWN_PHOTOS", 1.0)
        content("noted", known, 1, {"pdq": P[0]}, note="first", metadata={"case": "a-1"})
        content("disabled", known, 0, {"pdq": P[1], "video_md5": MD5})
        content("later", known, FUTURE, {"pdq": P[2]})
        content("past", known, PAST, {"pdq": P[3]})
        content("unsupported", known, 1, {"clip": "0.1,0.2"})
        content("bad", known, 1, {"pdq": "not-a-hash"})
        content("empty", known, 1, {})
        half = bank("HALF_BANK", 0.5)
        vpdq = json.dumps([f"{P[4]},100,0.000", f"{P[4]},90,1.000"])
        content("video", half, 1, {"vpdq": vpdq})
        off = bank("OFF_BANK", 0.0)
        content("off", off, 1, {"pdq": P[4]})
    return ids


def _tipline(db_url: str, tmp_path: Path):
    env = {**os.environ, "TIPLINE_DATA_DIR": str(tmp_path / "data"), "TIPLINE_DATABASE_URL": db_url}

    def run(*args: str):
        proc = run_tipline(args, env=env, cwd=tmp_path)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    return run


def _entries(db_url: str, bank: str) -> dict[str, BankEntryRow]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            bank_id = conn.execute(select(BankRow.id).where(BankRow.name == bank)).scalar_one()
            rows = conn.execute(select(BankEntryRow).where(BankEntryRow.bank_id == bank_id)).all()
            return {r.entry_id: r for r in rows}
    finally:
        engine.dispose()


def test_import_from_an_hma_database(hma_db: str, db_url: str, tmp_path: Path) -> None:
    ids = _fill(hma_db)
    run = _tipline(db_url, tmp_path)
    done = run("bank", "import", "--from", "hma", hma_db)
    assert done.returncode == 1, done.stderr  # one bad content
    out = done.stdout.splitlines()
    assert (
        "KNOWN_PHOTOS: imported 4 entries into KNOWN_PHOTOS (created); 0 duplicates, "
        "1 bad contents, 2 without a supported fingerprint" in out
    )
    assert "unsupported fingerprint type clip: 1 (not matchable, not stored)" in out
    assert (
        "HALF_BANK: imported 1 entries into HALF_BANK (created); 0 duplicates, 0 bad contents"
        in out
    )
    assert any("note: HMA matches 0.5 of lookups" in line for line in out)
    assert f"error: hma/KNOWN_PHOTOS/content:{ids['bad']}: pdq:" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr

    known = _entries(db_url, "KNOWN_PHOTOS")
    assert set(known) == {f"hma-{ids[r]}" for r in ("noted", "disabled", "later", "past")}
    noted = known[f"hma-{ids['noted']}"]
    assert (noted.note, noted.content_metadata, noted.disabled) == ("first", {"case": "a-1"}, False)
    assert noted.source == "hma database"
    disabled = known[f"hma-{ids['disabled']}"]
    assert disabled.disabled and disabled.disable_until is None
    later = known[f"hma-{ids['later']}"]
    assert later.disabled and later.disable_until == FUTURE
    assert not known[f"hma-{ids['past']}"].disabled

    listed = run("bank", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    enabled = {b["name"]: b["enabled"] for b in json.loads(listed.stdout)}
    assert enabled == {"KNOWN_PHOTOS": True, "HALF_BANK": True, "OFF_BANK": False}
    exported = run("bank", "export", "KNOWN_PHOTOS", "--format", "hma")
    assert sorted(exported.stdout.split()) == sorted(
        ["pdq", P[0], "pdq", P[1], "video_md5", MD5, "pdq", P[2], "pdq", P[3]]
    )
    video = run("bank", "export", "HALF_BANK", "--format", "hma")
    assert video.stdout.startswith("vpdq [") and P[4] in video.stdout

    # Matching honours HMA's disable_until_ts: the disabled and the not-yet ones do not match.
    for value, hits in ((P[0], 1), (P[1], 0), (P[2], 0), (P[3], 1)):
        m = run("match", "--hash", f"pdq:{value}", "--bank", "KNOWN_PHOTOS")
        assert len(m.stdout.splitlines()) == hits, (value, m.stdout, m.stderr)

    # Importing again adds nothing: every content is already there.
    again = run("bank", "import", "--from", "hma", hma_db, "--only", "KNOWN_PHOTOS", "--json")
    assert again.returncode == 1
    (summary,) = json.loads(again.stdout)["imports"]
    assert (summary["source"], summary["imported"], summary["duplicates"], summary["created"]) == (
        "KNOWN_PHOTOS",
        0,
        4,
        False,
    )

    engine = create_engine(db_url)
    with engine.connect() as conn:
        audits = (
            conn.execute(select(AuditRecord.details).where(AuditRecord.action == "bank.import"))
            .scalars()
            .all()
        )
    engine.dispose()
    assert len(audits) == 4 and all('"from":"hma"' in d for d in audits)
    assert all(PASSWORD not in d and "***" in d for d in audits)


def test_hma_before_notes_and_metadata_and_refusals(
    hma_db: str, db_url: str, tmp_path: Path
) -> None:
    ids = _fill(hma_db, with_note_and_metadata=False)
    long_name = "L" * 201  # valid in HMA (255), too long for tipline (200)
    engine = create_engine(hma_db)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO bank (name, enabled_ratio) VALUES (:n, 1)"), {"n": long_name}
        )
    engine.dispose()
    run = _tipline(db_url, tmp_path)
    whole = run("bank", "import", "--from", "hma", hma_db)
    assert whole.returncode == 1
    assert f"error: bank '{long_name}' not imported: invalid bank name" in whole.stderr
    assert "KNOWN_PHOTOS: imported 4 entries" in whole.stdout  # the others still are
    done = run(
        "bank", "import", "--from", "hma", hma_db, "--only", "OFF_BANK", "--only", "HALF_BANK"
    )
    assert done.returncode == 1, done.stderr  # already there: duplicates
    assert [line.split(":")[0] for line in done.stdout.splitlines() if ": imported" in line] == [
        "OFF_BANK",
        "HALF_BANK",
    ]
    assert set(_entries(db_url, "OFF_BANK")) == {f"hma-{ids['off']}"}

    for args, message in (
        (["--only", "NO_SUCH_BANK"], "has no bank 'NO_SUCH_BANK'"),
        (["extra-arg"], "takes one argument"),
        (["--atomic"], "do not go with --from"),
    ):
        bad = run("bank", "import", "--from", "hma", hma_db, *args)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
        assert PASSWORD not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    not_hma = (
        (db_url, "is not an HMA database (no table bank)")  # tipline's own database
        if db_url.startswith("postgresql")
        else (  # no such database (and a password that must not be shown)
            make_url(hma_db).set(database="nodb_hma").render_as_string(hide_password=False),
            'database "nodb_hma',
        )
    )
    for url, message in (
        not_hma,
        ("sqlite:///x.db", "takes HMA's PostgreSQL URL"),
        ("not a url", "takes the database URL of HMA"),
    ):
        bad = run("bank", "import", "--from", "hma", url)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
        assert PASSWORD not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert "OFF_BANK" in run("bank", "list").stdout  # nothing half-stored by the failures


class _Trap:
    """Unpickling this would create ``path``: proof that the pickle is never loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # pickle protocol
        return (Path.touch, (self.path,))


def test_import_from_a_pytx_state_folder(db_url: str, tmp_path: Path) -> None:
    state = tmp_path / ".threatexchange"
    (state / "collab_configs").mkdir(parents=True)
    (state / "fetched" / "fb_threatexchange").mkdir(parents=True)
    trap = tmp_path / "unpickled"
    (state / "fetched" / "fb_threatexchange" / "te.state.pickle").write_bytes(
        pickle.dumps(_Trap(trap))
    )
    (state / "config.json").write_text('{"fb_threatexchange_api_token": "never-read"}')
    typed = tmp_path / "typed.txt"
    typed.write_text(f"tipline_pdq {P[0]}\npdq {P[1]}\nurl https://example.invalid/\n\n")
    bare = tmp_path / "bare.txt"
    bare.write_text(f"{P[2]}\n{P[0]}\n")

    def collab(file: str, **cfg: object) -> None:
        (state / "collab_configs" / file).write_text(json.dumps({"enabled": True, **cfg}))

    collab("typed.json", name="Typed list", api="local_file", filename=str(typed), signal_type=None)
    collab("bare.json", name="bare", api="local_file", filename=str(bare), signal_type="pdq")
    collab("te.json", name="My TE collab", api="fb_threatexchange", privacy_groups=[1])
    collab("gone.json", name="gone", api="local_file", filename=str(tmp_path / "missing.txt"))

    run = _tipline(db_url, tmp_path)
    assert run("bank", "create", "moved").returncode == 0
    done = run("bank", "import", "moved", str(state), "--from", "pytx")
    assert done.returncode == 1
    assert not trap.exists()
    assert "refused: collab 'My TE collab' (fb_threatexchange)" in done.stderr
    assert (
        "threatexchange dataset -c 'My TE collab' -P --csv > 'My TE collab.csv' && "
        "tipline bank import moved 'My TE collab.csv'" in done.stderr
    )
    assert "error: collab 'gone': cannot open" in done.stderr
    assert f"{typed}:3: unknown signal type 'url'" in done.stderr
    # Collaborations in config file order; the second list repeats one hash of the
    # first: one duplicate, counted, not doubled.
    assert done.stdout.splitlines() == [
        "bare: imported 2 entries into moved; 0 duplicates, 0 bad lines",
        "Typed list: imported 1 entries into moved; 1 duplicates, 1 bad lines",
    ]
    entries = _entries(db_url, "moved")
    assert set(entries) == {f"pdq:{P[0]}", f"pdq:{P[1]}", f"pdq:{P[2]}"}
    assert entries[f"pdq:{P[0]}"].source == "pytx collab bare"
    assert entries[f"pdq:{P[1]}"].source == "pytx collab Typed list"

    for args, message in (
        (["moved", str(tmp_path), "--from", "pytx"], "is not a threatexchange state folder"),
        (["nope", str(state), "--from", "pytx"], "nope"),
        (["moved", "--from", "pytx"], "takes the bank and the state folder"),
    ):
        bad = run("bank", "import", *args)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
