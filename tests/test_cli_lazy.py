"""The ``tipline`` command loads its command modules lazily, and nothing shows it.

The root group lists every command from ``tipline.cli.main.COMMANDS`` without importing
their modules. The table is held to the modules themselves: every module of
``tipline.cli`` with a ``register(app)`` is in it under the name it registers, and the
root's help (and its typo suggestions) equal those of an app that imports them all.
Starting a command imports only its own module, and a command's help not what only its
work needs: checked on ``sys.modules`` of a fresh interpreter.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys

import pytest
import typer
import typer.main
from typer.testing import CliRunner

import tipline.cli
from tipline.cli import main as cli_main


def _registering_modules() -> dict[str, str]:
    """Command name -> module, from every ``tipline.cli`` module with ``register``."""
    found: dict[str, str] = {}
    for info in pkgutil.iter_modules(tipline.cli.__path__):
        module = importlib.import_module(f"tipline.cli.{info.name}")
        register = getattr(module, "register", None)
        if register is None:
            continue
        holder = typer.Typer()
        register(holder)
        for name in typer.main.get_group(holder).commands:
            assert name not in found, f"{name} registered by {found.get(name)} and {info.name}"
            found[name] = info.name
    return found


def _eager_app() -> typer.Typer:
    """The root app as it was before lazy loading: every module registered up front."""
    eager = typer.Typer(
        name="tipline",
        help=cli_main.app.info.help,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    eager.callback()(cli_main._root)
    for name, (module, _) in cli_main.COMMANDS.items():
        importlib.import_module(f"tipline.cli.{module}").register(eager)
        assert list(typer.main.get_group(eager).commands)[-1] == name
    return eager


def test_the_table_names_every_registered_command() -> None:
    table = {name: module for name, (module, _) in cli_main.COMMANDS.items()}
    assert table == _registering_modules()


@pytest.mark.parametrize(
    "args",
    [["--help"], [], ["bnk"], ["nosuch"], ["--nope"], ["--version"], ["bank"], ["db", "--help"]],
    ids=" ".join,
)
def test_root_behaves_as_the_eager_app(args: list[str]) -> None:
    runner = CliRunner()
    env = {"COLUMNS": "120", "TERMINAL_WIDTH": "120"}
    lazy = runner.invoke(cli_main.app, args, env=env)
    eager = runner.invoke(_eager_app(), args, env=env)
    assert (lazy.exit_code, lazy.stdout, lazy.stderr) == (
        eager.exit_code,
        eager.stdout,
        eager.stderr,
    )
    if args == ["--help"]:
        for name in cli_main.COMMANDS:
            assert f" {name} " in lazy.stdout
    if args == ["bnk"]:
        assert "Did you mean 'bank'?" in lazy.stderr


_PROBE = """
import json, sys
from tipline.cli.main import main
sys.argv = ["tipline", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _modules_after(args: list[str]) -> set[str]:
    """The modules a fresh interpreter holds after ``tipline ARGS`` (which must exit 0)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    answer = json.loads(proc.stderr.strip().splitlines()[-1])
    assert answer["code"] == 0, proc.stderr
    return set(answer["modules"])


def test_root_help_imports_no_command_module() -> None:
    loaded = _modules_after(["--help"])
    commands = {f"tipline.cli.{module}" for module, _ in cli_main.COMMANDS.values()}
    assert not loaded & commands
    assert "sqlalchemy" not in loaded
    assert "numba" not in loaded
    assert "numpy" not in loaded


def test_a_command_imports_only_its_own_module() -> None:
    loaded = _modules_after(["db", "--help"])
    commands = {f"tipline.cli.{module}" for module, _ in cli_main.COMMANDS.values()}
    assert loaded & commands == {"tipline.cli.db"}
    assert "sqlalchemy" not in loaded  # only `db upgrade` needs it


def test_bank_help_does_not_load_the_media_hashing() -> None:
    loaded = _modules_after(["bank", "--help"])
    assert "tipline.cli.bank" in loaded
    assert "numba" not in loaded and "tipline.services.bank_media" not in loaded
