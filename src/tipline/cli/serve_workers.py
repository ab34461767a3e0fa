"""Worker processes for ``tipline serve --workers N`` with one listening socket each.

uvicorn's own multi-worker mode shares one listening socket: whichever worker wakes
first accepts every connection waiting in the backlog, so a burst of keep-alive
connections (a load balancer's pool, a load generator) often lands on one worker while
the others idle. Here every worker listens on its own ``SO_REUSEPORT`` socket bound to
the same address, and the kernel spreads new connections over them. The parent binds
the address first (never listening: it only holds the port, and picks it for port 0),
starts the workers, restarts a worker that dies, and stops them all on SIGINT/SIGTERM.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import sys
import threading
from typing import Any

log = logging.getLogger("tipline.serve")

#: uvicorn's exit code for a worker that failed to start (then the server stops)
_STARTUP_FAILURE = 3


def available() -> bool:
    """True where per-worker sockets balance connections (Linux ``SO_REUSEPORT``)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (``host``, ``port``) with ``SO_REUSEPORT`` (not listening)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _worker(options: dict[str, Any], host: str, port: int) -> None:
    """One worker process: its own socket on the shared address, one uvicorn server."""
    import uvicorn

    sock = bind(host, port)
    config = uvicorn.Config(host=host, port=port, **options)
    uvicorn.Server(config).run(sockets=[sock])


def run(options: dict[str, Any], *, host: str, port: int, workers: int) -> int:
    """Serve with ``workers`` processes until SIGINT/SIGTERM; returns the exit code.

    ``options`` are :class:`uvicorn.Config` keyword arguments (app, factory, log level,
    ...) except host and port.
    """
    holder = bind(host, port)
    port = int(holder.getsockname()[1])
    context = multiprocessing.get_context("spawn")
    stop = threading.Event()
    code = 0

    def start() -> Any:
        process = context.Process(target=_worker, args=(options, host, port), daemon=False)
        process.start()
        return process

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    processes = [start() for _ in range(workers)]
    shown = f"[{host}]" if ":" in host else host
    print(f"tipline serve: {workers} workers on http://{shown}:{port}", file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.5):
            for i, process in enumerate(processes):
                if process.is_alive():
                    continue
                if process.exitcode == _STARTUP_FAILURE:
                    log.error("worker %s failed to start; stopping", process.pid)
                    code = _STARTUP_FAILURE
                    stop.set()
                    break
                log.warning("worker %s exited (%s); restarting", process.pid, process.exitcode)
                processes[i] = start()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
        holder.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
