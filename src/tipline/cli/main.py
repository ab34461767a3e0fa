"""The ``tipline`` command: one Typer app, each command or group in its own module.

The modules are imported lazily: ``tipline bank ...`` imports ``tipline.cli.bank`` and
what it needs, not the sixteen other command modules (each pulls in SQLAlchemy, numba,
the services...), so a command starts in a fraction of the CPU an eager app costs. The
root's ``--help`` lists every command from :data:`COMMANDS` without importing any of
them; tests/test_cli_lazy.py holds that table to the modules' own registrations and
help texts.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from tipline import __version__
from tipline.cli.console import err_console
from tipline.errors import TiplineError

#: Command name -> (module under ``tipline.cli``, the one-line help ``tipline --help``
#: shows). Each module's ``register(app)`` adds exactly that command to ``app``. The
#: order is the listing's: single commands first, then groups (as Typer lists them).
#: Add new commands here.
COMMANDS: dict[str, tuple[str, str]] = {
    "hash": (
        "hash",
        "Hash media: one line per signal (text), one object per file (jsonl) or CSV rows.",
    ),
    "worker": (
        "worker",
        "Run background jobs until SIGTERM/SIGINT; safe to run on many hosts at once.",
    ),
    "scan": ("scan", "Scan media: hash, match against the enabled banks, record every item."),
    "serve": ("serve", "Serve the native /v1 API and the HMA-compatible endpoints."),
    "match": ("match", "Match media or hashes against every enabled bank."),
    "simulate": (
        "simulate",
        "Submit simulated reports (benign wallpapers and drawings) like a provider would.",
    ),
    "apikey": ("apikey", "Create, revoke and list API keys."),
    "audit": ("audit", "Verify and read the audit log."),
    "bank": ("bank", "Manage banks: named hash lists with thresholds, allow-banks and entries."),
    "db": ("db", "Database maintenance."),
    "vault": ("vault", "The evidence vault: preserved files and report XML, encrypted at rest."),
    "report": ("report", "Build, deliver and manage CyberTipline reports."),
    "provider": (
        "provider",
        "Reporting providers allowed to file reports with the clearinghouse intake.",
    ),
    "exchange": (
        "exchange",
        "Hash exchanges: sync shared hash lists into banks; sign the published feed.",
    ),
    "user": ("user", "Web UI users (reviewers, admins)."),
    "referral": (
        "referral",
        "Route clearinghouse reports to agencies and build referral packages.",
    ),
    "analyst": (
        "analyst",
        "The clearinghouse analyst's desk: queue, show, confirm, reject, route.",
    ),
}


def load_command(name: str, like: typer.Typer | None = None) -> Any:
    """Import the module of command ``name`` (a key of :data:`COMMANDS`) and build its
    click command as the root app ``like`` (default :data:`app`) builds its commands:
    same markup mode, exception and suggestion settings."""
    module_name, _ = COMMANDS[name]
    root = like or app
    holder = typer.Typer(
        pretty_exceptions_short=root.pretty_exceptions_short,
        rich_markup_mode=root.rich_markup_mode,
        suggest_commands=root.suggest_commands,
    )
    importlib.import_module(f"tipline.cli.{module_name}").register(holder)
    built = typer.main.get_group(holder).commands
    if list(built) != [name]:
        raise RuntimeError(f"tipline.cli.{module_name}.register added {list(built)}, not {name}")
    return built[name]


class _Listed(TyperCommand):
    """A command's name and one-line help for listings; its module is not imported."""


class LazyGroup(TyperGroup):
    """The root group: knows every command of :data:`COMMANDS` by name and one-line
    help, and imports a command's module only when that command is looked up to run
    (or to show its own help).

    Typer's own listing and typo suggestions read ``self.commands``, which holds a
    :class:`_Listed` stand-in until the real command is built. (Typer vendors click and
    does not publish its types, hence the ``Any`` in these signatures.)
    """

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for name, (_, text) in COMMANDS.items():
            self.commands.setdefault(name, _Listed(name=name, help=text))
        self._listing = False  # while the root's help is written: commands are only listed

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = self.commands.get(cmd_name)
        if isinstance(command, _Listed) and not self._listing:
            command = self.commands[cmd_name] = load_command(cmd_name)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="tipline",
    cls=LazyGroup,
    help=(
        "Hash media and match it against banks of known-material hashes; "
        "build and deliver CyberTipline reports from reviewed matches."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tipline {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """tipline: hash and match media, review matches, build and deliver reports."""


def main() -> None:
    """Console-script entry point: expected errors (and errors the operating system
    reports) become one line and exit status 2."""
    try:
        app()
    except TiplineError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(2)
    except OSError as exc:  # refused by the system (permissions, full disk, missing path)
        where = f"{exc.filename}: " if exc.filename else ""
        err_console.print(f"error: {where}{exc.strerror or exc}", markup=False, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
