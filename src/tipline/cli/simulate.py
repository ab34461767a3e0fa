"""``tipline simulate``: submit a realistic stream of benign simulated reports to a
CyberTipline-compatible (ISPWS) service, writing the ground truth beside it."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tipline.cli.console import err_console
from tipline.errors import InputError
from tipline.services.clearinghouse import simulate as sim


def simulate_command(
    url: str | None = typer.Option(
        None,
        "--url",
        help="ISPWS base URL, e.g. http://127.0.0.1:8000/ispws (loopback only "
        "unless --allow-remote).",
    ),
    users: list[str] = typer.Option(
        ["esp-sim"], "--user", "-u", help="Reporting provider account; repeat for several."
    ),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read one password per --user from standard input."
    ),
    truth: Path = typer.Option(
        Path("simulation-truth.jsonl"), "--truth", help="Ground truth (JSON lines) to write."
    ),
    geo_db: Path | None = typer.Option(
        None, "--geo-db", help="Also write the synthetic geography as a .mmdb file."
    ),
    reports: int = typer.Option(20, "--reports", "-n", min=1, help="Reports to submit."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same stream."),
    viral_bursts: int = typer.Option(1, "--viral-bursts", min=0),
    burst_reports: int = typer.Option(6, "--burst-reports", min=1),
    photo_side: int = typer.Option(320, "--photo-side", help="Longest photo side, pixels."),
    wallpapers: Path | None = typer.Option(
        Path("/usr/share/backgrounds"), "--wallpapers", help="Wallpaper folder (half the items)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Render and write the truth only."),
    allow_remote: bool = typer.Option(
        False, "--allow-remote", help="Allow a URL that is not a loopback address."
    ),
) -> None:
    """Submit simulated reports (benign wallpapers and drawings) like a provider would."""
    if url is None and not dry_run:
        raise InputError("--url is required (or --dry-run)")
    credentials: dict[str, str] = {}
    if url is not None and not dry_run:
        if not password_stdin:
            raise InputError("--password-stdin is required: one password per --user")
        for name in users:
            line = sys.stdin.readline().rstrip("\r\n")
            if not line:
                raise InputError(f"no password for {name} on standard input")
            credentials[name] = line
    spec = sim.SimulationSpec(
        seed=seed,
        reports=reports,
        viral_bursts=viral_bursts,
        burst_reports=burst_reports,
        providers=tuple(dict.fromkeys(users)),
        photo_side=photo_side,
        wallpapers=wallpapers,
    )
    # a progress bar only on a terminal (a disabled one still writes a blank line)
    progress = (
        Progress(
            TextColumn("simulating"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        )
        if err_console.is_terminal
        else None
    )
    with progress or contextlib.nullcontext():
        task = progress.add_task("simulate", total=reports) if progress else None
        stats = sim.simulate(
            spec,
            url=None if dry_run else url,
            credentials=credentials,
            truth_path=truth,
            geo_path=geo_db,
            allow_remote=allow_remote,
            progress=(
                (lambda done, total: progress.update(task, completed=done, total=total))
                if progress is not None and task is not None
                else None
            ),
        )
    verb = "rendered" if dry_run else "submitted"
    err_console.print(
        f"{verb} {stats.reports} report(s), {stats.files} file(s) ({stats.videos} video), "
        f"{stats.bytes} bytes; truth in {truth}",
        markup=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``simulate`` to the root command."""
    app.command("simulate")(simulate_command)
