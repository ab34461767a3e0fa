"""Run a command whose stderr is a terminal (a pty), as a person at a shell would."""

from __future__ import annotations

import os
import pty
import subprocess
import threading
from collections.abc import Mapping, Sequence


def run_on_terminal(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 120
) -> tuple[subprocess.CompletedProcess[bytes], bytes]:
    """Run ``argv`` with stdout piped and stderr on a fresh pty.

    Both are drained while the command runs (so neither can fill up and stall it).
    Returns the finished process (its ``stdout`` captured) and every byte the terminal
    received.
    """
    main_fd, child_fd = pty.openpty()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=child_fd,
            stdin=subprocess.DEVNULL,
            env=None if env is None else dict(env),
        )
    finally:
        os.close(child_fd)
    stdout: list[bytes] = []

    def drain() -> None:
        assert proc.stdout is not None
        with proc.stdout:
            stdout.append(proc.stdout.read())

    reader = threading.Thread(target=drain)
    reader.start()
    seen = b""
    try:
        while True:
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(main_fd)
    returncode = proc.wait(timeout=timeout)
    reader.join(timeout)
    return subprocess.CompletedProcess(list(argv), returncode, b"".join(stdout)), seen
