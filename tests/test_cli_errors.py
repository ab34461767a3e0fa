"""Every CLI failure is one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from _cli import run_tipline

TIPLINE = str(Path(sys.executable).with_name("tipline"))

#: commands that open the database first thing (``serve`` would otherwise keep running)
_COMMANDS = (("bank", "list"), ("serve", "--port", "0"), ("apikey", "list"))


def _refused_url() -> str:
    with socket.socket() as s:  # a port nobody listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"


def _env(**env: str) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")}
    full.update(env, COLUMNS="300")
    return full


@pytest.fixture(autouse=True)
def _serve_never_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve`` runs in this process (:mod:`_cli`) in most cases: reaching uvicorn
    instead of the error fails the test rather than serving."""
    import uvicorn

    def serving(*args: object, **kwargs: object) -> None:
        raise AssertionError("serve started serving instead of failing")

    monkeypatch.setattr(uvicorn, "run", serving)


def _run(
    tmp_path: Path, args: tuple[str, ...], *, process: bool = False, **env: str
) -> subprocess.CompletedProcess[str]:
    """``tipline ARGS`` in this process (:mod:`_cli`: the same entry point, ``serve``
    stopped before it serves, ``worker`` runs with ``--once``), or with ``process`` as
    the console script, for its own exit status and stderr (a fresh interpreter costs
    ~1 s of CPU)."""
    full = _env(**env)
    if not process:
        return run_tipline(args, env=full, cwd=tmp_path)
    return subprocess.run(
        [TIPLINE, *args], capture_output=True, text=True, env=full, cwd=tmp_path,
        timeout=120, check=False,
    )  # fmt: skip


def _assert_one_line(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("args", _COMMANDS, ids=lambda a: a[0])
def test_refused_postgresql_port(tmp_path: Path, args: tuple[str, ...]) -> None:
    url = _refused_url()
    proc = _run(
        tmp_path,
        args,
        process=args[0] == "bank",
        TIPLINE_DATABASE_URL=url,
        TIPLINE_DATA_DIR=str(tmp_path),
    )
    _assert_one_line(proc, "unavailable", "Connection refused", url.rsplit("/", 1)[0])
    assert proc.stdout == ""


@pytest.mark.postgres
@pytest.mark.parametrize("args", _COMMANDS, ids=lambda a: a[0])
def test_postgresql_database_that_does_not_exist(
    tmp_path: Path, postgres_admin_url: str, args: tuple[str, ...]
) -> None:
    url = make_url(postgres_admin_url).set(database="tipline_no_such_db_3f9a")
    shown = url.render_as_string(hide_password=True)
    proc = _run(tmp_path, args, TIPLINE_DATABASE_URL=url.render_as_string(hide_password=False))
    _assert_one_line(proc, shown, 'database "tipline_no_such_db_3f9a" does not exist')


def test_password_is_not_shown(tmp_path: Path) -> None:
    url = _refused_url().replace("postgres@", "postgres:hunter2-secret@")
    line = _assert_one_line(_run(tmp_path, ("bank", "list"), TIPLINE_DATABASE_URL=url))
    assert "hunter2" not in line and "***" in line


_DATA_DIRS: dict[str, Callable[[Path], str]] = {
    "proc": lambda tmp: "/proc",
    "under-proc": lambda tmp: "/proc/tipline-data",
    "a-file": lambda tmp: str(tmp / "plain.txt"),
    "under-a-file": lambda tmp: str(tmp / "plain.txt" / "data"),
}


@pytest.mark.parametrize("args", _COMMANDS[:2], ids=lambda a: a[0])
@pytest.mark.parametrize("where", sorted(_DATA_DIRS))
def test_unusable_data_dir(tmp_path: Path, where: str, args: tuple[str, ...]) -> None:
    (tmp_path / "plain.txt").write_text("not a folder\n")
    data_dir = _DATA_DIRS[where](tmp_path)
    # ``serve`` runs as the console script for one folder
    proc = _run(
        tmp_path, args, process=args[0] == "serve" and where == "proc", TIPLINE_DATA_DIR=data_dir
    )
    _assert_one_line(proc, data_dir, "TIPLINE_DATA_DIR")
    assert (tmp_path / "plain.txt").read_text() == "not a folder\n"


@pytest.mark.parametrize(
    "args", [("worker", "--once"), ("match", "."), ("scan", ".")], ids=lambda a: a[0]
)
def test_other_commands_on_a_refused_port(tmp_path: Path, args: tuple[str, ...]) -> None:
    proc = _run(tmp_path, args, TIPLINE_DATABASE_URL=_refused_url())
    _assert_one_line(proc, "unavailable", "Connection refused")
