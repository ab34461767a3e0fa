"""CPU per start of the ``tipline`` command, against a bare interpreter in the same run.

Each case runs ``python -m tipline.cli.main ARGS`` in a fresh interpreter, ``--rounds``
times, and takes the CPU (user + system) the process used, from ``wait4``'s resource
usage: the interpreter's start, the imports, building the command, and the command
itself. The anchor is ``python -c pass`` (the bare interpreter) measured in the same
rounds, interleaved with the cases, so the ratios stay comparable when other load
moves the absolute figures. With ``--against REV`` the same cases also run on the
``src/`` of that git revision (extracted with ``git archive`` into a temporary folder),
interleaved too, so before/after figures come from one run.

The real-work case, ``bank list``, runs on a SQLite database of its own per tree,
upgraded before the rounds (its upgrade is not counted).

Usage: ``python bench/cli_start.py [--rounds N] [--against REV]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CASES: tuple[tuple[str, ...], ...] = (
    ("--version",),
    ("--help",),
    ("db", "--help"),
    ("bank", "--help"),
    ("hash", "--help"),
    ("worker", "--help"),
    ("serve", "--help"),
    ("vault", "--help"),
    ("bank", "list"),
)


def _cpu_of(cmd: list[str], env: dict[str, str]) -> float:
    """CPU seconds (user + system) of one process running ``cmd`` to its end."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {err.strip()[-300:]}")
    return usage.ru_utime + usage.ru_stime


def _env(src: Path, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")}
    env["PYTHONPATH"] = str(src)
    env["TIPLINE_DATA_DIR"] = str(data_dir)
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="starts per case and tree")
    parser.add_argument("--against", help="a git revision whose src/ is measured too")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="tipline-cli-start-") as tmp:
        trees: dict[str, Path] = {"this tree": REPO / "src"}
        if args.against:
            where = Path(tmp) / "against"
            where.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(REPO), "archive", args.against, "src"],
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
            trees[args.against] = where / "src"
        envs = {}
        for label, src in trees.items():
            envs[label] = _env(src, Path(tmp) / f"data-{len(envs)}")
            _cpu_of([sys.executable, "-m", "tipline.cli.main", "db", "upgrade"], envs[label])

        anchor: list[float] = []
        cpu: dict[tuple[str, tuple[str, ...]], list[float]] = {}
        for _ in range(args.rounds):
            anchor.append(_cpu_of([sys.executable, "-c", "pass"], dict(os.environ)))
            for case in CASES:
                for label in trees:
                    cmd = [sys.executable, "-m", "tipline.cli.main", *case]
                    cpu.setdefault((label, case), []).append(_cpu_of(cmd, envs[label]))

    base = statistics.median(anchor)
    load_after = os.getloadavg()[0]
    print(f"load average (1 min): {load_before:.1f} at the start, {load_after:.1f} at the end")
    print(f"anchor `python -c pass`: {base * 1000:.0f} ms CPU (median of {len(anchor)})")
    labels = list(trees)
    head = "".join(f" | {label[:14]:>14} ms | x anchor" for label in labels)
    print(f"{'tipline ARGS':<16}{head}")
    for case in CASES:
        row = f"{' '.join(case):<16}"
        for label in labels:
            med = statistics.median(cpu[(label, case)])
            row += f" | {med * 1000:>17.0f} | {med / base:>8.1f}"
        print(row)


if __name__ == "__main__":
    main()
