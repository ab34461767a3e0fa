"""``tipline vault`` as the real console script: one-line errors and a non-zero exit on
every failure, progress on a terminal, and the key never printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from _cli import run_tipline
from _terminal import run_on_terminal
from tipline.config import Settings
from tipline.errors import TiplineError
from tipline.services import audit
from tipline.services import vault as v
from tipline.services.auth import Principal
from tipline.services.vault.keys import MasterKey, write_key_file
from tipline.store.db import make_engine, session_factory, transaction, upgrade

TIPLINE = str(Path(sys.executable).with_name("tipline"))
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "master.key"
    write_key_file(path, MasterKey.generate())
    return path


@pytest.fixture
def env(db_url: str, tmp_path: Path, key_file: Path) -> dict[str, str]:
    clean = {k: val for k, val in os.environ.items() if not k.startswith("TIPLINE_VAULT")}
    return {
        **clean,
        "TIPLINE_DATA_DIR": str(tmp_path / "data"),
        "TIPLINE_DATABASE_URL": db_url,
        "TIPLINE_VAULT_MASTER_KEY_FILE": str(key_file),
        "TIPLINE_VAULT_CHUNK_BYTES": "4096",
        "COLUMNS": "200",
    }


@pytest.fixture
def inproc(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """``tipline vault ...`` in this process (Typer's runner; a machine with 2 loaded
    cores spends seconds starting each console script). Errors come back as the
    exception, the way ``main()`` would print them."""
    from typer.testing import CliRunner

    from tipline.cli.main import app
    from tipline.config import get_settings

    runner = CliRunner()
    monkeypatch.chdir(tmp_path)

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        for name in [k for k in os.environ if k.startswith("TIPLINE_")]:
            monkeypatch.delenv(name)
        for name, value in {**env, **extra}.items():
            if name.startswith("TIPLINE_") or name == "COLUMNS":
                monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        result = runner.invoke(app, ["vault", *args])
        get_settings.cache_clear()
        error = ""
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            assert isinstance(result.exception, TiplineError), result.exception
            error = f"error: {result.exception}"
        code = result.exit_code if not error else 2
        return subprocess.CompletedProcess(args, code, result.stdout, result.stderr + error)

    return run


@pytest.fixture
def cli(env: dict[str, str], tmp_path: Path) -> Run:
    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        proc = run_tipline(["vault", *args], env={**env, **extra}, cwd=tmp_path)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    return run


def _store(env: dict[str, str], *payloads: bytes) -> list[str]:
    settings = Settings(
        data_dir=Path(env["TIPLINE_DATA_DIR"]),
        database_url=env["TIPLINE_DATABASE_URL"],
        vault_master_key_file=Path(env["TIPLINE_VAULT_MASTER_KEY_FILE"]),
        vault_chunk_bytes=4096,
    )
    engine = make_engine(settings=settings)
    upgrade(engine)
    the_vault = v.Vault.from_settings(settings)
    try:
        with transaction(session_factory(engine)) as session:
            return [
                v.store(
                    session,
                    the_vault,
                    data,
                    kind=v.EvidenceKind.MEDIA,
                    actor=Principal.cli(),
                    submission_id="SUB1",
                ).id
                for data in payloads
            ]
    finally:
        engine.dispose()


def _one_error_line(proc: subprocess.CompletedProcess[str], text: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and text in lines[-1], proc.stderr


def test_vault_commands(inproc: Run, env: dict[str, str], tmp_path: Path, key_file: Path) -> None:
    cli = inproc
    a, b = _store(env, b"first item", os.urandom(10_000))
    listed = cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {r["id"] for r in rows} == {a, b} and rows[0]["submission_id"] == "SUB1"
    assert a in cli("show", a).stdout
    got = cli("get", a, "--out", str(tmp_path / "a.bin"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "a.bin").read_bytes() == b"first item"
    _one_error_line(cli("get", a, "--out", str(tmp_path / "a.bin")), "already exists")
    _one_error_line(cli("show", "NOPE"), "no vault item 'NOPE'")
    held = cli("hold", a, "--reason", "case 42")
    assert held.returncode == 0 and "placed" in held.stdout
    assert cli("show", a, "--json").stdout.count('"active": true') == 1
    assert cli("release", a).returncode == 0
    _one_error_line(cli("release", a), "no active legal hold")
    assert cli("extend", b, "--days", "800").returncode == 0
    _one_error_line(cli("extend", b, "--days", "3"), "only be extended")
    _one_error_line(cli("extend", b), "exactly one of --until and --days")
    ok = cli("verify")
    assert ok.returncode == 0 and "vault OK: 2 items" in ok.stdout
    purged = cli("purge")
    assert purged.returncode == 0 and "purged 0 items" in purged.stdout
    # rotate to a new key given as a file; the old key then no longer opens anything
    new_file = tmp_path / "new.key"
    made = cli("keygen", str(new_file))
    assert made.returncode == 0 and (new_file.stat().st_mode & 0o777) == 0o600
    new_text = new_file.read_text().strip()
    assert new_text not in made.stdout + made.stderr
    rotated = cli("rotate-key", "--new-key-file", str(new_file))
    assert rotated.returncode == 0 and "rewrapped 2 items" in rotated.stdout, rotated.stderr
    _one_error_line(cli("verify"), "2 of 2 items fail")
    assert cli("verify", TIPLINE_VAULT_MASTER_KEY_FILE=str(new_file)).returncode == 0
    # the key never appears in output, audit records included
    engine = make_engine(env["TIPLINE_DATABASE_URL"])
    try:
        with session_factory(engine)() as session:
            records = [audit.record_as_dict(r) for r in audit.recent(session, limit=100)]
    finally:
        engine.dispose()
    actions = [r["action"] for r in records]
    assert {"vault.read", "vault.hold", "vault.release", "vault.extend", "vault.verify"} <= set(
        actions
    )
    assert "vault.rotate_key" in actions
    everything = json.dumps(records) + rotated.stdout + rotated.stderr
    assert new_text not in everything and key_file.read_text().strip() not in everything


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_tampered_and_misconfigured_vaults_fail_in_one_line(
    cli: Run, env: dict[str, str], tmp_path: Path, key_file: Path
) -> None:
    (item,) = _store(env, os.urandom(9000))
    files = list((tmp_path / "data" / "vault").glob(f"*/{item}.tpv"))
    assert len(files) == 1
    blob = bytearray(files[0].read_bytes())
    blob[100] ^= 0x10
    files[0].write_bytes(bytes(blob))
    bad = cli("verify")
    _one_error_line(bad, "1 of 1 items fail")
    assert f"FAIL {item}" in bad.stderr
    _one_error_line(cli("get", item, "-o", str(tmp_path / "x")), "chunk 0 failed authentication")
    assert not (tmp_path / "x").exists()
    wrong = tmp_path / "wrong.key"
    write_key_file(wrong, MasterKey.generate())
    _one_error_line(
        cli("get", item, "-o", str(tmp_path / "y"), TIPLINE_VAULT_MASTER_KEY_FILE=str(wrong)),
        "wrapped by master key",
    )
    key_file.chmod(0o644)
    _one_error_line(cli("verify"), "accessible by group or others")
    key_file.chmod(0o600)
    # through the console script's main() in this process (the real console script runs
    # in test_verify_shows_progress_on_a_terminal)
    no_key = {k: val for k, val in env.items() if k != "TIPLINE_VAULT_MASTER_KEY_FILE"}
    bad_key = run_tipline(
        ["vault", "verify"], env={**no_key, "TIPLINE_VAULT_MASTER_KEY": "bad!"}, cwd=tmp_path
    )
    _one_error_line(bad_key, "TIPLINE_VAULT_MASTER_KEY: not valid base64")
    assert "bad!" not in bad_key.stderr and "Traceback" not in bad_key.stderr
    proc = run_tipline(["vault", "verify"], env=no_key, cwd=tmp_path)
    _one_error_line(proc, "has no master key")
    assert "Traceback" not in proc.stderr
    _one_error_line(cli("rotate-key"), "no new key")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_verify_shows_progress_on_a_terminal(env: dict[str, str]) -> None:
    _store(env, *(os.urandom(100) for _ in range(30)))
    proc, seen = run_on_terminal([TIPLINE, "vault", "verify"], env=env)
    assert proc.returncode == 0, seen
    assert b"verifying" in seen and b"30/30" in seen
    assert b"vault OK: 30 items" in proc.stdout
