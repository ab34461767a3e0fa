"""``tipline match`` against banks in the database: run in-process through the console
script's ``main``, and once as the real console script."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _cli import run_tipline

TIPLINE = str(Path(sys.executable).with_name("tipline"))


@pytest.fixture
def setup(db_url, tmp_path, reference_dir):
    env = {
        **os.environ,
        "TIPLINE_DATA_DIR": str(tmp_path / "data"),
        "TIPLINE_DATABASE_URL": db_url,
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        proc = run_tipline(args, env=env, cwd=tmp_path)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    photos = tmp_path / "photos"
    photos.mkdir()
    src = reference_dir / "pdq" / "bridge-mods"
    for name in ("aaa-orig.jpg", "blur-a-lot.jpg", "shrink-a-lot.jpg"):
        shutil.copy(src / name, photos / name)
    shutil.copy(reference_dir / "pdq" / "pen-and-coaster.png", photos / "other.png")
    hashed = run("hash", "-s", "pdq", str(photos / "aaa-orig.jpg"))
    assert hashed.returncode == 0
    (tmp_path / "known.txt").write_text(hashed.stdout)
    assert run("bank", "create", "known", "-t", "pdq=31").returncode == 0
    assert run("bank", "import", "known", str(tmp_path / "known.txt")).returncode == 0
    pdq_hex = hashed.stdout.split()[1]
    return run, photos, pdq_hex


def test_match_photos_text_jsonl_csv_and_exit_status(setup, tmp_path):
    run, photos, pdq_hex = setup
    entry = f"pdq:{pdq_hex}"
    r = run("match", str(photos))
    assert r.returncode == 0, r.stderr
    lines = sorted(r.stdout.splitlines())
    assert len(lines) == 3  # the three bridge variants, not the other picture
    first = lines[0].split("\t")
    assert first[0].endswith("aaa-orig.jpg") and first[1:5] == ["known", entry, "pdq", "distance=0"]
    assert all("other.png" not in line for line in lines)

    r = run("match", str(photos), "--format", "jsonl", "--fail-on-match")
    assert r.returncode == 1
    rows = [json.loads(line) for line in r.stdout.splitlines()]  # one object per match
    assert {Path(x["item"]).name for x in rows} == {
        "aaa-orig.jpg",
        "blur-a-lot.jpg",
        "shrink-a-lot.jpg",
    }
    assert all(isinstance(x["distance"], int) and x["bank"] == "known" for x in rows)
    assert r.stderr == ""

    # `json` is the deprecated spelling: the same rows as one array, and a warning.
    r = run("match", str(photos), "--format", "json")
    assert r.returncode == 0
    assert json.loads(r.stdout) == rows
    assert "deprecated" in r.stderr and "jsonl" in r.stderr
    r = run("match", str(photos), "--format", "xml")
    assert r.returncode == 2 and "'xml' is not one of" in r.stderr
    # One set of formats for `hash` and `match`.
    for command in ("hash", "match"):
        assert "<text|jsonl|csv>" in run(command, "--help").stdout

    r = run("match", str(photos / "other.png"), "--fail-on-match", "--format", "csv")
    assert r.returncode == 0
    assert next(csv.reader(io.StringIO(r.stdout)))[:5] == [
        "item",
        "bank",
        "entry_id",
        "signal_type",
        "distance",
    ]

    r = run("match", "--hash", f"pdq:{pdq_hex.upper()}", "--bank", "known")
    assert r.stdout.split("\t")[:5] == [
        f"pdq:{pdq_hex.upper()}",
        "known",
        entry,
        "pdq",
        "distance=0",
    ]
    r = run("match", "--hash", "pdq:123")
    assert r.returncode == 2 and r.stderr.startswith("error: pdq hash must be 64 hex")
    r = run("match", "--hash", f"pdq:{pdq_hex}", "--bank", "nope")
    assert r.returncode == 2 and "no bank named 'nope'" in r.stderr
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    r = run("match", str(tmp_path / "broken.jpg"))
    assert r.returncode == 3 and r.stderr.startswith("error: ")


def test_match_allow_bank_and_disable_between_runs(setup):
    run, photos, pdq_hex = setup
    assert run("bank", "create", "fp", "--allow").returncode == 0
    assert (
        run(
            "bank",
            "add",
            "fp",
            f"pdq:{pdq_hex}",
            "--entry-id",
            "bridge",
            "--source",
            "benign stock photo",
        ).returncode
        == 0
    )
    r = run("match", str(photos / "aaa-orig.jpg"), "--fail-on-match")
    assert r.returncode == 0  # suppressed matches do not fail the pipeline
    assert "suppressed by fp/bridge: benign stock photo" in r.stdout
    assert run("bank", "disable", "fp", "bridge", "-r", "reviewed").returncode == 0
    assert run("bank", "disable", "known", f"pdq:{pdq_hex}", "-r", "x").returncode == 0
    r = run("match", str(photos / "aaa-orig.jpg"), "--fail-on-match")
    assert r.returncode == 0 and r.stdout == ""


def test_no_match_is_said_on_stderr(setup, tmp_path):
    run, photos, pdq_hex = setup
    r = run("match", str(photos / "other.png"))
    assert r.returncode == 0 and r.stdout == ""
    assert r.stderr.strip() == "no matches (1 item, 1 bank)"
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run("match", str(empty), "--format", "jsonl")
    assert r.returncode == 0 and r.stdout == ""
    assert r.stderr.strip() == "no matches (0 items, 1 bank)"
    assert run("bank", "create", "second").returncode == 0
    r = run("match", "--hash", "pdq:" + "f" * 64, "--hash", "md5:" + "0" * 32)
    assert r.returncode == 0 and r.stdout == ""
    assert r.stderr.strip() == "no matches (2 items, 2 banks)"
    r = run("match", "--hash", f"pdq:{pdq_hex}", "--bank", "second")
    assert r.stderr.strip() == "no matches (1 item, 1 bank)"
    r = run("match", "--hash", f"pdq:{pdq_hex}")  # a match: no summary line
    assert r.stdout.strip() and r.stderr == ""


def test_no_match_without_any_bank(tmp_path, reference_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")}
    env["TIPLINE_DATA_DIR"] = str(tmp_path / "data")
    picture = reference_dir / "pdq" / "pen-and-coaster.png"
    r = subprocess.run(
        [TIPLINE, "match", str(picture)], capture_output=True, text=True, env=env,
        cwd=tmp_path, timeout=180, check=False,
    )  # fmt: skip
    assert r.returncode == 0 and r.stdout == ""
    assert r.stderr.strip() == "no matches (1 item, 0 banks)"
