"""Shared rich consoles: results to stdout, diagnostics and progress to stderr."""

from __future__ import annotations

from rich.console import Console

out_console = Console(soft_wrap=True, highlight=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)
