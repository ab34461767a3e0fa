"""Shared rich consoles (results to stdout, diagnostics and progress to stderr) and the
output formats commands print results in."""

from __future__ import annotations

import enum

from rich.console import Console

out_console = Console(soft_wrap=True, highlight=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)


class OutputFormat(enum.Enum):
    """How results are printed on stdout."""

    TEXT = "text"
    JSONL = "jsonl"
    CSV = "csv"
