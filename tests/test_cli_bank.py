"""``tipline bank`` and ``tipline db``: the console script itself (``db upgrade``, the
progress bar on a terminal) and the commands run in-process through its ``main``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _cli import run_tipline
from _drift_image import drift_jpeg
from _terminal import run_on_terminal
from tipline.demo import sample_images

TIPLINE = str(Path(sys.executable).with_name("tipline"))


@pytest.fixture
def cli(db_url, tmp_path):
    env = {
        **os.environ,
        "TIPLINE_DATA_DIR": str(tmp_path / "data"),
        "TIPLINE_DATABASE_URL": db_url,
        "COLUMNS": "200",
    }

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = run_tipline(args, stdin=stdin, env=env, cwd=tmp_path)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    return run


def test_db_upgrade_on_embedded_default(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TIPLINE_DATABASE_URL"}
    env["TIPLINE_DATA_DIR"] = str(tmp_path / "tipline-data")
    proc = subprocess.run(
        [TIPLINE, "db", "upgrade"], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    # every head of the migration graph is named (0001_banks itself is no longer one)
    assert "0001_banks," not in proc.stdout and "tipline.db" in proc.stdout
    assert _banks_head() in proc.stdout
    assert (tmp_path / "tipline-data" / "tipline.db").exists()


@pytest.mark.slow
def test_bank_lifecycle(cli, tmp_path):
    r = cli("bank", "create", "known", "-d", "Known items", "-t", "pdq=24")
    assert r.returncode == 0 and "created bank known" in r.stdout
    r = cli("bank", "create", "known")
    assert r.returncode == 2 and r.stderr.strip() == "error: bank 'known' already exists"
    assert cli("bank", "create", "fp", "--allow").returncode == 0
    r = cli(
        "bank",
        "add",
        "known",
        "pdq:" + "a" * 64,
        "md5:" + "b" * 32,
        "--entry-id",
        "E1",
        "-l",
        "A1",
        "-l",
        "B2",
        "--source",
        "unit test",
    )
    assert r.returncode == 0 and "added E1 to known" in r.stdout
    r = cli("bank", "add", "known", "pdq:1234")
    assert r.returncode == 2 and r.stderr.startswith("error: pdq hash must be 64 hex")
    r = cli("bank", "list", "--json")
    banks = {b["name"]: b for b in json.loads(r.stdout)}
    assert banks["known"]["entries"] == 1 and banks["known"]["thresholds"] == {"pdq": 24}
    assert banks["fp"]["allow_bank"] is True
    r = cli("bank", "show", "known", "--entry", "E1")
    assert "thresholds   pdq=24" in r.stdout and "labels=A1,B2" in r.stdout
    assert "pdq " + "a" * 64 in r.stdout
    r = cli("bank", "disable", "known", "E1")
    assert r.returncode == 2 and "needs a reason" in r.stderr
    assert cli("bank", "disable", "known", "E1", "-r", "false positive").returncode == 0
    doc = json.loads(cli("bank", "show", "known", "-e", "E1", "--json").stdout)
    assert doc["disabled_entries"] == 1
    assert doc["entries_shown"][0]["disabled_reason"] == "false positive"
    assert cli("bank", "enable", "known", "E1").returncode == 0
    assert cli("bank", "disable", "known").returncode == 0
    r = cli("bank", "set", "known", "-t", "pdq=30")
    assert "pdq=30" in r.stdout
    r = cli("bank", "list")
    assert "DISABLED" in r.stdout and "thresholds pdq=30" in r.stdout
    r = cli("bank", "show", "missing")
    assert r.returncode == 2 and r.stderr.strip() == "error: no bank named 'missing'"


def test_bank_auto_report_policy_is_set_and_shown(cli):
    r = cli("bank", "create", "trusted", "--auto-report", "exact")
    assert r.returncode == 0, r.stderr
    assert json.loads(cli("bank", "show", "trusted", "--json").stdout)["auto_report"] == "exact"
    r = cli("bank", "set", "trusted", "--auto-report", "OFF")
    assert r.returncode == 0 and "auto-report off" in r.stdout, r.stderr
    assert "auto-report  off" in cli("bank", "show", "trusted").stdout
    r = cli("bank", "set", "trusted", "--auto-report", "always")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "error: auto-report policy must be one of default, off, exact, trusted, not 'always'"
    )
    r = cli("bank", "create", "other")
    banks = {b["name"]: b for b in json.loads(cli("bank", "list", "--json").stdout)}
    assert banks["other"]["auto_report"] == "default" and banks["trusted"]["auto_report"] == "off"


def test_bank_add_media_files_stores_the_reference_pdq(cli, tmp_path):
    data, reference, fast = drift_jpeg()
    (tmp_path / "drift.jpg").write_bytes(data)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a picture")
    other = tmp_path / "other.png"
    other.write_bytes(sample_images()[0].read_bytes())
    assert cli("bank", "create", "known").returncode == 0

    r = cli("bank", "add", "known", "drift.jpg", "--entry-id", "D1", "-l", "A1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "added D1 to known (drift.jpg)"
    shown = json.loads(cli("bank", "show", "known", "--entry", "D1", "--json").stdout)
    signals = {s["type"]: s["value"] for s in shown["entries_shown"][0]["signals"]}
    assert signals["pdq"] == reference != fast  # what pdqhash computes, not the fast decode
    assert set(signals) == {"pdq", "md5", "sha256"}
    # A query of the same file still matches it (fast decode, a few bits away).
    assert "known\tD1\tpdq" in cli("match", "drift.jpg").stdout

    # One entry per file; a bad file is reported and the others are still added.
    r = cli("bank", "add", "known", "broken.jpg", str(other), "-l", "B2")
    assert r.returncode == 1
    assert r.stderr.startswith("error: broken.jpg: ") and "Traceback" not in r.stderr
    assert r.stdout.startswith("added ") and r.stdout.rstrip().endswith(f"({other})")
    assert json.loads(cli("bank", "show", "known", "--json").stdout)["entries"] == 2

    r = cli("bank", "add", "known", "drift.jpg", "--entry-id", "D1")  # the id again
    assert r.returncode == 1 and "already has an entry 'D1'" in r.stderr
    r = cli("bank", "add", "known", "drift.jpg", "md5:" + "b" * 32)
    assert r.returncode == 2 and "not both" in r.stderr
    r = cli("bank", "add", "known", "missing.jpg")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: missing.jpg: no such file, and not a TYPE:VALUE hash"
    r = cli("bank", "add", "known", "drift.jpg", str(other), "--entry-id", "X")
    assert r.returncode == 2 and "--entry-id needs a single file" in r.stderr


def test_import_errors_summary_and_atomic(cli, tmp_path):
    cli("bank", "create", "known")
    lines = [f"pdq {i:064x}" for i in range(1, 6)] + ["pdq xyz", f"pdq {1:064x}"]
    path = tmp_path / "list.txt"
    path.write_text("\n".join(lines) + "\n")
    r = cli("bank", "import", "known", str(path), "--atomic")
    assert r.returncode == 1
    assert "rolled back" in r.stdout
    assert f"{path}:6: pdq hash must be 64 hex characters, got 3" in r.stderr
    assert f"{path}:7: duplicate entry" in r.stderr
    r = cli("bank", "import", "known", str(path), "--json")
    assert r.returncode == 1
    summary = json.loads(r.stdout)
    assert (summary["imported"], summary["errors"], summary["duplicates"]) == (5, 1, 1)
    r = cli("bank", "import", "known", "-", "-f", "hma", stdin=f"pdq {9:064x}\n")
    assert r.returncode == 0 and "imported 1 entries" in r.stdout
    xml = tmp_path / "n.xml"
    xml.write_text(
        "<queryResult><images><image><member id='1'>ESP</member><id>n1</id>"
        f"<fingerprints><md5>{'c' * 32}</md5><pdna>x</pdna></fingerprints></image>"
        "</images></queryResult>"
    )
    r = cli("bank", "import", "known", str(xml))
    assert r.returncode == 0
    assert "unsupported fingerprint type PDNA (photo): 1" in r.stdout
    r = cli("bank", "import", "known", str(tmp_path / "nope.txt"))
    assert r.returncode == 2 and "cannot open" in r.stderr


# every format's round trip runs through the service in test_banks.py; here the CLI wiring
@pytest.mark.parametrize("fmt", ["vics", "ncmec"])
def test_export_then_import_gives_the_same_entries(cli, tmp_path, fmt):
    cli("bank", "create", "a")
    cli("bank", "create", "b")
    if fmt == "vics":
        rows = "".join(f"{i},md5,{i:032x},vics:1,vics\n" for i in range(1, 30))
    else:
        rows = "".join(f"n{i},md5,{i:032x},A1,ncmec member 4 (X)\n" for i in range(1, 30))
    src = tmp_path / "in.csv"
    src.write_text("entry_id,signal_type,signal_value,labels,source\n" + rows)
    assert cli("bank", "import", "a", str(src)).returncode == 0
    out = tmp_path / f"out.{fmt}"
    r = cli("bank", "export", "a", "-f", fmt, "-o", str(out))
    assert r.returncode == 0 and "exported 29 entries" in r.stdout
    r = cli("bank", "import", "b", str(out), "-f", fmt)
    assert r.returncode == 0, r.stderr
    a = cli("bank", "export", "a", "-f", "csv").stdout.splitlines()
    b = cli("bank", "export", "b", "-f", "csv").stdout.splitlines()
    assert len(a) == 30 and sorted(a) == sorted(b)


def test_import_shows_progress_only_on_a_terminal(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TIPLINE_DATABASE_URL"}
    env["TIPLINE_DATA_DIR"] = str(tmp_path / "data")
    assert run_tipline(["bank", "create", "b"], env=env).returncode == 0  # set-up: in-process
    path = tmp_path / "list.txt"
    path.write_text("".join(f"pdq {i:064x}\n" for i in range(1, 3001)))
    proc, seen = run_on_terminal(
        [TIPLINE, "bank", "import", "b", str(path), "--batch-size", "500"], env=env
    )
    assert proc.returncode == 0
    assert b"importing" in seen  # the bar, on the terminal
    assert b"imported 3000 entries" in proc.stdout and b"importing" not in proc.stdout


def test_export_of_a_missing_bank_writes_nothing(cli, tmp_path):
    r = cli("bank", "export", "nosuchbank", "-f", "csv")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == "error: no bank named 'nosuchbank'"
    out = tmp_path / "out.csv"
    r = cli("bank", "export", "nosuchbank", "-o", str(out))
    assert r.returncode == 2 and r.stderr.strip() == "error: no bank named 'nosuchbank'"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out")) == []
    assert cli("bank", "create", "here").returncode == 0
    nowhere = tmp_path / "no" / "such" / "dir.csv"
    r = cli("bank", "export", "here", "-o", str(nowhere))
    assert r.returncode == 2 and r.stderr.strip() == f"error: cannot write {nowhere}: " + (
        "No such file or directory"
    )


def test_bank_delete(cli, tmp_path):
    pdq = "pdq:" + "ab" * 32
    assert cli("bank", "create", "gone").returncode == 0
    assert cli("bank", "add", "gone", pdq, "--entry-id", "e1").returncode == 0
    assert cli("bank", "create", "kept").returncode == 0
    assert cli("bank", "add", "kept", pdq, "--entry-id", "k1").returncode == 0
    asked = cli("bank", "delete", "gone", stdin="")  # not a terminal: no silent deletion
    assert asked.returncode == 2 and "--yes" in asked.stderr
    assert len(asked.stderr.strip().splitlines()) == 1
    r = cli("bank", "delete", "gone", "--yes")
    assert r.returncode == 0 and r.stdout.strip() == "deleted bank gone (1 entries)"
    assert [b["name"] for b in json.loads(cli("bank", "list", "--json").stdout)] == ["kept"]
    matched = cli("match", "--hash", pdq, "--format", "jsonl")
    assert [json.loads(line)["bank"] for line in matched.stdout.splitlines()] == ["kept"]
    again = cli("bank", "delete", "gone", "--yes")
    assert again.returncode == 2 and again.stderr.strip() == "error: no bank named 'gone'"
    assert cli("bank", "create", "gone").returncode == 0  # the name is free, and empty
    listed = json.loads(cli("bank", "list", "--json").stdout)
    assert [(b["name"], b["entries"]) for b in listed] == [("gone", 0), ("kept", 1)]
    audit = cli("audit", "verify")
    assert audit.returncode == 0, audit.stderr


def test_import_threatexchange_dataset_csv_and_export_vpdq_for_pytx(cli, tmp_path):
    """``threatexchange dataset -P --csv`` output imports as is; ``--format hma`` writes
    vPDQ in the JSON form python-threatexchange reads."""
    import csv

    frames = json.dumps([f"{i + 1:064x},100,{float(i):.3}" for i in range(3)])
    path = tmp_path / "collab.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["signal_type", "signal_str", "collab", "category", "tags"])
        writer.writeheader()
        writer.writerow(
            {
                "signal_type": "pdq",
                "signal_str": "a" * 64,
                "collab": "Sample",
                "category": "POSITIVE_CLASS",
                "tags": "t1 t2",
            }
        )
        writer.writerow(
            {
                "signal_type": "vpdq",
                "signal_str": frames,
                "collab": "Sample",
                "category": "POSITIVE_CLASS",
                "tags": "",
            }
        )
        writer.writerow(
            {
                "signal_type": "pdq",
                "signal_str": "b" * 64,
                "collab": "Sample",
                "category": "NEGATIVE_CLASS",
                "tags": "",
            }
        )
    assert cli("bank", "create", "known").returncode == 0
    r = cli("bank", "import", "known", str(path))
    assert r.returncode == 0, r.stderr
    assert "imported 2 entries" in r.stdout
    out = cli("bank", "export", "known", "--format", "hma").stdout.splitlines()
    assert out[0] == "pdq " + "a" * 64
    assert out[1] == f"vpdq {frames}"
    vpdq = pytest.importorskip("threatexchange.extensions.vpdq.vpdq")
    assert vpdq.VPDQSignal.validate_signal_str(frames) == frames


def _banks_head() -> str:
    """The head of the ``banks`` branch, read from the migration scripts."""
    from alembic.script import ScriptDirectory

    import tipline.store

    folder = os.path.join(os.path.dirname(tipline.store.__file__), "migrations")
    head = ScriptDirectory(folder).get_revision("banks@head")
    assert head is not None
    return str(head.revision)
