"""Run the ``tipline`` command inside the test process, as the console script would.

For tests where the process itself is not what is tested: a fresh interpreter costs
0.2-1.5 s of CPU before the command starts (the root imports only the command's module,
but most commands need SQLAlchemy, numpy or numba; more on a loaded machine). The command
gets exactly the given environment (``TIPLINE_*`` variables not in it are removed), its
own stdin/stdout/stderr (not terminals, as with ``subprocess.run(capture_output=True)``),
the given working folder, fresh settings, and goes through :func:`tipline.cli.main.main`,
so expected errors become one line and exit status 2 exactly as in the console script.
An unexpected exception is rendered as the interpreter would (a traceback on stderr,
exit status 1), so tests asserting "no traceback" keep their meaning.

A command that installs SIGINT/SIGTERM handlers (``worker --exit-when-idle``) may run
here: the handlers are put back when it returns. Servers (``serve``), long-running
workers and what is tested as a process (terminals, exit codes of the interpreter,
signals, crashes) still run in a subprocess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from typer.testing import CliRunner

from tipline.cli.main import main
from tipline.config import get_settings

_RUNNER = CliRunner()


@contextmanager
def _cwd(path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def run_tipline(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: str | bytes | None = None,
    encoding: str = "utf-8",
) -> subprocess.CompletedProcess[str]:
    """``tipline ARGS`` in this process; returns what ``subprocess.run(..., text=True,
    capture_output=True)`` would (``returncode``, ``stdout``, ``stderr``).

    ``env`` is the complete environment the command sees (default: this process's);
    ``encoding`` decodes what it wrote.
    """
    overrides: dict[str, str | None] = {}
    if env is not None:
        overrides = {k: v for k, v in env.items() if os.environ.get(k) != v}
        overrides.update({k: None for k in os.environ if k not in env})
    argv = ["tipline", *args]
    code = 0
    get_settings.cache_clear()
    old_argv = sys.argv
    handlers = (
        {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        if threading.current_thread() is threading.main_thread()
        else {}
    )
    try:
        with _cwd(cwd), _RUNNER.isolation(input=stdin, env=overrides) as (out, err, _):
            sys.argv = argv
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if isinstance(exc.code, str):
                    sys.stderr.write(exc.code + "\n")
            except BaseException:  # what the interpreter prints for an uncaught exception
                sys.stderr.write(traceback.format_exc())
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            stdout = out.getvalue().decode(encoding, "replace")
            stderr = err.getvalue().decode(encoding, "replace")
    finally:
        sys.argv = old_argv
        get_settings.cache_clear()
        for signum, handler in handlers.items():
            if handler is not None:  # None: not installed from Python
                signal.signal(signum, handler)
    return subprocess.CompletedProcess(argv, code, stdout, stderr)
