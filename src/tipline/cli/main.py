"""The ``tipline`` command: one Typer app, each command group in its own module."""

from __future__ import annotations

import importlib
import sys

import typer

from tipline import __version__
from tipline.cli.console import err_console
from tipline.errors import TiplineError

app = typer.Typer(
    name="tipline",
    help=(
        "Hash media and match it against banks of known-material hashes; "
        "build and deliver CyberTipline reports from reviewed matches."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

#: Command modules; each exposes ``register(app)``. Add new groups here.
_COMMAND_MODULES: tuple[str, ...] = (
    "hash",
    "apikey",
    "audit",
    "worker",
    "scan",
    "serve",
    "bank",
    "match",
    "db",
    "vault",
    "report",
    "provider",
    "simulate",
    "exchange",
    "user",
    "referral",
    "analyst",
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


for _name in _COMMAND_MODULES:
    importlib.import_module(f"tipline.cli.{_name}").register(app)


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
