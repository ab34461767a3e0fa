"""Child processes of test_reports_crash: each delivers the outbox, printing one line
per step-log change so the parent can SIGKILL it at chosen moments.

usage: python _report_crash_driver.py
then one run per line on stdin, a JSON list: [DB_URL, EVIDENCE_DIR, URL, USER,
PASSWORD, SEED] (the password comes from the environment in real use; a test account
here). This process imports the delivery code once (~0.8 s of CPU per interpreter) and
forks a child per run, which opens its own connections and threads and prints
``pid N``, its ``step ...`` lines and ``done {...}``; once the child is gone this
process prints ``exit CODE`` (its exit status, -9 when it was killed). A child dies with
this process (a hung run is ended by killing this one).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _report_fixtures import deliverer, open_db, run

_PR_SET_PDEATHSIG = 1


def deliver(db_url: str, evidence_dir: str, url: str, user: str, password: str, seed: str) -> None:
    engine, sessions = open_db(db_url, migrate=False)  # the parent migrated

    def on_step(report_id: str, step: str, phase: str) -> None:
        sys.stdout.write(f"step {step} {phase}\n")
        sys.stdout.flush()

    d = deliverer(
        sessions,
        Path(evidence_dir),
        url,
        user,
        password,
        timeout=0.2,
        on_step=on_step,
        seed=int(seed),
    )
    stats = run(d, workers=8)
    sys.stdout.write(
        "done " + json.dumps({"finished": stats.finished, "orphans": stats.orphans}) + "\n"
    )
    sys.stdout.flush()
    engine.dispose()


def _child(args: list[str]) -> None:
    code = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before the line above
            os._exit(1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        sys.stdout.write(f"pid {os.getpid()}\n")
        sys.stdout.flush()
        deliver(*args)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    for line in sys.stdin:
        args = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(args)
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(f"exit {os.waitstatus_to_exitcode(status)}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
