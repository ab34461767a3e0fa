"""CPU of one audited append in an open transaction on PostgreSQL: the one-statement
append (``tipline_audit_append_one``, migration 0042) against the two-statement one
(lock the head, then insert and move it), alternated in the same process.

Each append is timed alone (``time.process_time`` around ``audit.append`` in a
transaction that already ran a statement, as the intake's calls do); the chain is
verified at the end. PostgreSQL's own CPU is not counted.

Usage::

    TIPLINE_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python bench/audit_append.py [--appends 300] [--rounds 6]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "src"))
sys.path.insert(0, str(BENCH_DIR))

from sqlalchemy import text  # noqa: E402

from clearinghouse_triage import database  # noqa: E402
from tipline.services import audit  # noqa: E402
from tipline.store.db import make_engine, session_factory, upgrade  # noqa: E402
from tipline.store.models import import_all_models  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--appends", type=int, default=300, help="appends per round and side")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    url = os.environ.get("TIPLINE_TEST_POSTGRES_URL")
    if not url:
        raise SystemExit("set TIPLINE_TEST_POSTGRES_URL (the one-statement append is PostgreSQL's)")
    import_all_models()
    sides: dict[str, Callable[..., list[dict[str, Any]]]] = {
        "one statement": audit._pg_append,
        "two statements": audit._pg_append_two_trips,
    }
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as tmp, database(url, Path(tmp)) as db_url:
        engine = make_engine(db_url)
        try:
            upgrade(engine)
            sessions = session_factory(engine)
            for _ in range(args.rounds):
                for name, impl in sides.items():
                    audit._pg_append = impl  # type: ignore[assignment]
                    spent = 0.0
                    for i in range(args.appends):
                        with sessions() as session, session.begin():
                            session.execute(text("SELECT 1"))
                            start = time.process_time()
                            audit.append(
                                session,
                                actor="bench",
                                action="bench.append",
                                target=("report", str(i)),
                                details={"n": i, "files": [1, 2], "note": "ünïcode"},
                            )
                            spent += time.process_time() - start
                    cpu[name].append(1000 * spent / args.appends)
            audit._pg_append = sides["one statement"]  # type: ignore[assignment]
            with sessions() as session:
                print(audit.verify(session).describe())
        finally:
            engine.dispose()
    for name, values in cpu.items():
        shown = " ".join(f"{v:.3f}" for v in values)
        print(f"{name:<15} ms of CPU per append: {shown}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
